"""How the client classifies and times answers, against scripted HTTP answers at the transport seam.

(The end-to-end tests run the same client against real vLLM servers and the proxy.)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from vllm_pd.bench.client import Job, fetch_model, send_request
from vllm_pd.bench.records import Outcome, RequestRecord

JOB = Job(index=3, arrival_s=0.0, input_tokens=4, output_tokens=3, prompt=[1, 2, 3, 4])
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def chunk(text: str = "x", **extra) -> bytes:
    return b"data: " + json.dumps({"choices": [{"text": text, **extra}]}).encode() + b"\n\n"


USAGE = b'data: {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 3}}\n\n'
DONE = b"data: [DONE]\n\n"


async def _serve_and_send(handler: Handler, timeout_s: float) -> tuple[RequestRecord, dict]:
    seen: dict = {}

    async def wrapped(request: web.Request) -> web.StreamResponse:
        seen["body"] = await request.json()
        seen["request_id"] = request.headers.get("X-Request-Id")
        return await handler(request)

    app = web.Application()
    app.router.add_post("/v1/completions", wrapped)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as session:
            record = await send_request(session, "ep", f"http://127.0.0.1:{port}", "m", 2.0, JOB,
                                        timeout_s=timeout_s)
    finally:
        await runner.cleanup()
    return record, seen


def send(handler: Handler, timeout_s: float = 5.0) -> tuple[RequestRecord, dict]:
    return asyncio.run(_serve_and_send(handler, timeout_s))


def streaming(*parts: bytes, gap_s: float = 0.0, headers: dict | None = None) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", **(headers or {})})
        await resp.prepare(request)
        for part in parts:
            await asyncio.sleep(gap_s)
            await resp.write(part)
        return resp
    return handler


def test_ok_stream_is_timed_and_keeps_the_route_headers() -> None:
    headers = {"X-PD-Route": "remote", "X-PD-Prefill": "http://p", "X-PD-Decode": "http://d",
               "X-Request-Id": "bench-ep-2-3"}
    record, seen = send(streaming(chunk(), chunk(), chunk(finish_reason="length"), USAGE, DONE,
                                  gap_s=0.2, headers=headers))

    assert record.outcome is Outcome.OK and record.error is None
    assert (record.generated_tokens, record.prompt_tokens, record.status) == (3, 4, 200)
    # Sleeps only ever run long, so the lower bounds are tight and the upper ones allow a busy machine.
    assert 0.2 <= record.ttft < 0.6
    assert 0.15 <= record.tpot < 0.4  # two gaps of 0.2 s over 3 - 1 tokens
    assert record.e2e >= record.ttft + 2 * 0.2
    assert (record.route, record.prefill, record.decode) == ("remote", "http://p", "http://d")
    assert seen["request_id"] == "bench-ep-2-3"
    body = seen["body"]
    assert (body["max_tokens"], body["ignore_eos"], body["stream"]) == (3, True, True)
    assert body["stream_options"] == {"include_usage": True}


def test_merged_chunks_still_give_the_mean_gap_per_token() -> None:
    # Two chunks 0.4 s apart carrying three tokens: TPOT = 0.4 / (3 - 1) = 0.2, not 0.4 per chunk.
    record, _ = send(streaming(chunk("ab"), chunk("c"), USAGE, DONE, gap_s=0.4))
    assert 0.15 <= record.tpot < 0.3


@pytest.mark.parametrize("status, headers, outcome", [
    (503, {"Retry-After": "1"}, Outcome.REJECTED),
    (429, {}, Outcome.REJECTED),
    (503, {}, Outcome.FAILED),
    (500, {}, Outcome.FAILED),
    (400, {}, Outcome.FAILED),
])
def test_error_status_is_rejected_or_failed(status: int, headers: dict, outcome: Outcome) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "no pair meets the SLO"}}, status=status,
                                 headers=headers)

    record, _ = send(handler)

    assert record.outcome is outcome
    assert record.status == status and f"HTTP {status}" in record.error and "no pair" in record.error
    assert record.ttft is None and record.tpot is None


@pytest.mark.parametrize("parts, message", [
    ((chunk(), b'data: {"error": {"message": "decode died"}}\n\n'), "decode died"),
    ((chunk(), chunk(finish_reason="error"), USAGE, DONE), "finish_reason"),
    ((chunk(), chunk()), "without [DONE]"),
    ((USAGE, DONE), "no token"),
])
def test_broken_stream_is_failed_with_the_reason(parts: tuple[bytes, ...], message: str) -> None:
    record, _ = send(streaming(*parts))
    assert record.outcome is Outcome.FAILED
    assert message in record.error


def test_request_timeout_is_failed_and_names_the_flag() -> None:
    record, _ = send(streaming(chunk(), USAGE, DONE, gap_s=1.0), timeout_s=0.3)
    assert record.outcome is Outcome.FAILED and "--request-timeout" in record.error


def test_connection_refused_is_a_record_and_fetch_model_a_clear_error() -> None:
    from vllm_pd.launcher import free_port

    async def scenario() -> tuple[RequestRecord, str]:
        url = f"http://127.0.0.1:{free_port()}"
        async with aiohttp.ClientSession() as session:
            record = await send_request(session, "ep", url, "m", 1.0, JOB, timeout_s=2)
            with pytest.raises(ConnectionError) as info:
                await fetch_model(session, url)
        return record, str(info.value)

    record, message = asyncio.run(scenario())
    assert record.outcome is Outcome.FAILED and "Connect" in record.error
    assert message.startswith("cannot reach http://127.0.0.1:")
