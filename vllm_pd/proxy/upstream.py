"""Calls to vLLM servers: one bounded ``UpstreamClient`` per instance, a timeout on every call.

``UpstreamFailure`` means "this instance failed; another may succeed" (refused, reset, timed out, 5xx);
a 4xx is the client's fault and comes back as an ``UpstreamReply`` to pass on unchanged.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from vllm_pd.proxy.client import HTTPError, Response, UpstreamClient
from vllm_pd.proxy.config import ProxyConfig


class UpstreamFailure(Exception):
    def __init__(self, url: str, reason: str, status: int | None = None, body: bytes = b"",
                 content_type: str = "application/json") -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.status = status
        self.body = body
        self.content_type = content_type


@dataclass(frozen=True)
class UpstreamReply:
    status: int
    content_type: str
    body: bytes


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# vLLM's API server closes a connection idle for VLLM_HTTP_TIMEOUT_KEEP_ALIVE (5 s by default). Kept
# longer here, a pooled connection could be reused just as the server closed it: the leg then fails
# with the request unsent (seen in CI). Dropping ours first costs one reconnect.
UPSTREAM_KEEPALIVE_S = 4.0


def open_client(url: str, config: ProxyConfig) -> UpstreamClient:
    return UpstreamClient(url, config.max_connections, UPSTREAM_KEEPALIVE_S, config.timeouts.connect_s)


async def post(client: UpstreamClient, path: str, body: bytes, headers: dict[str, str],
               timeout_s: float | None) -> UpstreamReply:
    """POST and read the whole answer within ``timeout_s``; 5xx and transport errors raise ``UpstreamFailure``."""
    try:
        reply = UpstreamReply(*await client.fetch("POST", path, body, headers, timeout_s))
    except (HTTPError, TimeoutError) as exc:
        raise UpstreamFailure(client.url, describe(exc)) from None
    if reply.status >= 500:
        raise UpstreamFailure(client.url, f"HTTP {reply.status}", reply.status, reply.body, reply.content_type)
    return reply


async def open_stream(client: UpstreamClient, path: str, body: bytes, headers: dict[str, str],
                      timeout_s: float | None) -> Response:
    """POST and return the open answer (status 200) once its headers are in, within ``timeout_s``;
    the caller must ``release()`` or ``close()`` it on every path."""
    try:
        resp = await client.request("POST", path, body, headers, timeout_s)
    except (HTTPError, TimeoutError) as exc:
        raise UpstreamFailure(client.url, describe(exc)) from None
    if resp.status == 200:
        return resp
    try:
        async with asyncio.timeout(timeout_s):
            data = await resp.read()
    except (HTTPError, TimeoutError) as exc:
        raise UpstreamFailure(client.url, describe(exc), resp.status) from None
    finally:
        resp.release()
    if resp.status >= 500:
        raise UpstreamFailure(client.url, f"HTTP {resp.status}", resp.status, data, resp.content_type)
    raise ClientSideError(UpstreamReply(resp.status, resp.content_type, data))


class ClientSideError(Exception):
    """A 4xx from upstream: the request itself is bad; pass it on unchanged."""

    def __init__(self, reply: UpstreamReply) -> None:
        super().__init__(f"HTTP {reply.status}")
        self.reply = reply
