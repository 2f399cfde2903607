"""HTTP calls to vLLM servers: one bounded aiohttp session per instance, a timeout on every call.

``UpstreamFailure`` means "this instance failed; another may succeed" (refused, reset, timed out, 5xx);
a 4xx is the client's fault and comes back as an ``UpstreamReply`` to pass on unchanged.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDictProxy

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
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# vLLM's API server closes a connection idle for VLLM_HTTP_TIMEOUT_KEEP_ALIVE (5 s by default). Kept
# longer here, a pooled connection could be reused just as the server closed it: the leg then fails
# with "Can not write request body" (seen in CI). Dropping ours first costs one reconnect.
UPSTREAM_KEEPALIVE_S = 4.0


def open_session(config: ProxyConfig) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=config.max_connections, keepalive_timeout=UPSTREAM_KEEPALIVE_S,
                                     enable_cleanup_closed=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=config.timeouts.connect_s,
                                    sock_read=config.timeouts.read_s)
    # No cookie jar: upstreams set none worth keeping, and filtering cookies costs per request.
    return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False,
                                 cookie_jar=aiohttp.DummyCookieJar(), skip_auto_headers=("User-Agent",))


def _content_type(headers: CIMultiDictProxy[str]) -> str:
    return headers.get("Content-Type", "application/json")


async def post(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str],
               timeout: aiohttp.ClientTimeout) -> UpstreamReply:
    """POST and read the whole answer; 5xx and transport errors raise ``UpstreamFailure``."""
    try:
        async with session.post(url, data=body, headers=headers, timeout=timeout) as resp:
            data = await resp.read()
            reply = UpstreamReply(resp.status, _content_type(resp.headers), data)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise UpstreamFailure(url, describe(exc)) from None
    if reply.status >= 500:
        raise UpstreamFailure(url, f"HTTP {reply.status}", reply.status, reply.body, reply.content_type)
    return reply


async def open_stream(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str],
                      timeout: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
    """POST and return the open response (status 200); the caller must ``close()`` it on every path."""
    try:
        resp = await session.post(url, data=body, headers=headers, timeout=timeout)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise UpstreamFailure(url, describe(exc)) from None
    if resp.status == 200:
        return resp
    try:
        data = await resp.read()
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise UpstreamFailure(url, describe(exc), resp.status) from None
    finally:
        resp.close()
    if resp.status >= 500:
        raise UpstreamFailure(url, f"HTTP {resp.status}", resp.status, data, _content_type(resp.headers))
    raise ClientSideError(UpstreamReply(resp.status, _content_type(resp.headers), data))


class ClientSideError(Exception):
    """A 4xx from upstream: the request itself is bad; pass it on unchanged."""

    def __init__(self, reply: UpstreamReply) -> None:
        super().__init__(f"HTTP {reply.status}")
        self.reply = reply
