"""The decode leg. The client's status is committed only once the decoder has answered: before its first
bytes any failure raises ``DecodeFailed`` (the caller may retry elsewhere); after them, a failure ends
the stream with an SSE error event.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
from aiohttp import web

from vllm_pd.proxy.client import HTTPError, Response
from vllm_pd.proxy.instance import Instance
from vllm_pd.proxy.relay import StreamStats, chunk_has_error, error_event
from vllm_pd.proxy.state import Exchange, ProxyState
from vllm_pd.proxy.upstream import UpstreamFailure, describe, open_stream, post
from vllm_pd.proxy.wire import PDHandoff, decode_decode_reply


class DecodeFailed(Exception):
    """The decoder failed before any output reached the client: safe to retry on another instance."""

    def __init__(self, failure: UpstreamFailure) -> None:
        super().__init__(str(failure))
        self.failure = failure


@dataclass
class DecodeResult:
    """What the leg observed, for metrics and online correction."""

    response: web.StreamResponse
    ttft_s: float | None  # from the request's arrival at the proxy
    tpot_s: float | None
    output_tokens: int
    prompt_tokens: int | None
    failed: bool = False
    client_left: bool = False  # the client hung up mid-stream: neither a failure nor an SLO outcome
    handoff: PDHandoff | None = None


async def unary_decode(state: ProxyState, ex: Exchange, inst: Instance, body: bytes,
                       headers: dict[str, str]) -> DecodeResult:
    with ex.waiting():
        reply = await post(state.clients[inst.url], ex.req.endpoint, body, ex.upstream_headers,
                           state.config.timeouts.request_s)
    if reply.status != 200:
        resp = web.Response(body=reply.body, status=reply.status, content_type=None, headers=headers)
        resp.content_type = reply.content_type
        return DecodeResult(resp, None, None, 0, None, failed=False)
    try:
        parsed = decode_decode_reply(reply.body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise DecodeFailed(UpstreamFailure(inst.url, "decode answer is not the expected JSON", 502, reply.body)) from None
    if parsed.failed:
        raise DecodeFailed(UpstreamFailure(inst.url, "decode reported finish_reason=error", 502, reply.body))
    ex.stop_clock()
    resp = web.Response(body=reply.body, status=200, headers=headers)
    resp.content_type = reply.content_type
    usage = parsed.usage
    handoff = parsed.kv_transfer_params.pd_handoff if parsed.kv_transfer_params else None
    return DecodeResult(resp, None, None, usage.completion_tokens if usage else 0,
                        usage.prompt_tokens if usage else None, handoff=handoff)


async def stream_decode(state: ProxyState, ex: Exchange, inst: Instance, body: bytes, headers: dict[str, str],
                        request: web.Request, on_first_chunk: Callable[[], None]) -> DecodeResult:
    timeouts = state.config.timeouts
    with ex.waiting():
        upstream = await open_stream(state.clients[inst.url], ex.req.endpoint, body, ex.upstream_headers,
                                     timeouts.read_s)
    clean = False
    try:
        first = await _first_chunk(ex, upstream, inst.url, timeouts.first_token_s)
        first_at = time.monotonic()
        on_first_chunk()
        out = web.StreamResponse(status=200, headers=headers)
        out.content_type = upstream.content_type.split(";")[0]
        try:
            await out.prepare(request)
            await out.write(first)
            ex.stop_clock()
            stats = StreamStats(first_at)
            stats.see(first)
            clean = await _relay(upstream, out, stats, inst.url, timeouts.read_s)
            await out.write_eof()
        except ConnectionResetError:  # the client left; closing the upstream below aborts the request in vLLM
            return DecodeResult(out, None, None, 0, None, client_left=True)
        return _stream_result(ex, out, stats, first_at, failed=not clean or stats.errored)
    finally:
        if clean:
            upstream.release()
        else:
            upstream.close()  # the decoder sees the connection drop and aborts the request


async def _first_chunk(ex: Exchange, upstream: Response, url: str, bound_s: float) -> bytes:
    try:
        with ex.waiting():
            first = await upstream.read_chunk(bound_s)
    except (HTTPError, TimeoutError) as exc:
        raise DecodeFailed(UpstreamFailure(url, describe(exc))) from None
    if not first:
        raise DecodeFailed(UpstreamFailure(url, "decode closed the stream before any output"))
    if chunk_has_error(first):
        raise DecodeFailed(UpstreamFailure(url, "decode stream began with an error", 502, first))
    return first


async def _relay(upstream: Response, out: web.StreamResponse, stats: StreamStats, url: str, read_s: float) -> bool:
    """Pass chunks through until the decoder ends the stream (or is silent for ``read_s``); False if it
    failed midway.

    Only upstream read errors are handled here; a failed write (the client left) propagates to the caller.
    """
    while True:
        try:
            chunk = await upstream.read_chunk(read_s)
        except (HTTPError, TimeoutError) as exc:
            await out.write(error_event(f"decode instance {url} failed mid-stream: {describe(exc)}"))
            return False
        if not chunk:
            return True
        stats.see(chunk)
        await out.write(chunk)


def _stream_result(ex: Exchange, out: web.StreamResponse, stats: StreamStats, first_at: float,
                   failed: bool) -> DecodeResult:
    tokens = stats.output_tokens()
    tpot = (stats.last_at - first_at) / (tokens - 1) if tokens > 1 else None
    prompt, _ = stats.usage()
    return DecodeResult(out, first_at - ex.started, tpot, tokens, prompt, failed=failed)
