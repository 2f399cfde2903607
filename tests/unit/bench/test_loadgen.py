"""Open-loop sending and cancellation, against a scripted slow server at the transport seam."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from vllm_pd.bench.client import Job
from vllm_pd.bench.loadgen import run_schedule
from vllm_pd.bench.records import Outcome, RequestRecord

USAGE = b'data: {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}\n\ndata: [DONE]\n\n'


async def _with_server(answer_after_s: float, scenario):
    arrived: list[float] = []
    open_streams = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal open_streams
        arrived.append(asyncio.get_running_loop().time())
        open_streams += 1
        try:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await asyncio.sleep(answer_after_s)
            await resp.write(b'data: {"choices": [{"text": "x"}]}\n\n' + USAGE)
            return resp
        finally:
            open_streams -= 1

    app = web.Application()
    app.router.add_post("/v1/completions", handler)
    runner = web.AppRunner(app, handler_cancellation=True)  # a client disconnect cancels the handler
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    try:
        async with aiohttp.ClientSession() as session:
            result = await scenario(session, url)
        await asyncio.sleep(0.2)  # let the server notice closed connections
        return result, arrived, open_streams
    finally:
        await runner.cleanup()


def jobs(*arrivals: float) -> list[Job]:
    return [Job(i, t, 1, 1, [1]) for i, t in enumerate(arrivals)]


def test_requests_go_out_at_their_arrival_times_while_earlier_ones_are_still_running() -> None:
    records: list[RequestRecord] = []

    async def scenario(session, url):
        start = asyncio.get_running_loop().time()
        await run_schedule(session, "ep", url, "m", 1.0, jobs(0.0, 0.1, 0.2), records.append, timeout_s=5)
        return start

    start, arrived, _ = asyncio.run(_with_server(1.0, scenario))

    offsets = [t - start for t in arrived]
    assert len(offsets) == 3
    assert offsets[2] < 0.9  # all three sent before the first (1 s) answer: open loop, not closed
    assert [round(o, 1) for o in offsets] == [0.0, 0.1, 0.2]
    assert sorted(r.index for r in records) == [0, 1, 2]
    assert all(r.outcome is Outcome.OK for r in records)


def test_cancelling_keeps_finished_records_and_closes_requests_in_flight() -> None:
    records: list[RequestRecord] = []

    async def scenario(session, url):
        task = asyncio.create_task(
            run_schedule(session, "ep", url, "m", 1.0, jobs(0.0, 0.6, 0.7, 5.0), records.append, timeout_s=5))
        await asyncio.sleep(0.9)  # request 0 answered at 0.5; 1 and 2 in flight; 3 not yet due
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"
        return "finished"

    how, arrived, open_streams = asyncio.run(_with_server(0.5, scenario))

    assert how == "cancelled"
    assert [r.index for r in records] == [0]
    assert len(arrived) == 3  # request 3 was never sent
    assert open_streams == 0  # the server saw both in-flight connections close
