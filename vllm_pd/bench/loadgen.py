"""Open-loop load: each request is sent when its arrival time comes, whatever is still in flight.

Closed-loop clients (send the next when one returns) slow down with the server and hide queueing;
DistServe's attainment curves need open-loop arrivals. A cancelled run (Ctrl-C) cancels the requests
in flight (their connections close, so vLLM aborts them) and keeps every record already reported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import aiohttp

from vllm_pd.bench.client import Job, send_request
from vllm_pd.bench.records import RequestRecord


async def run_schedule(
    session: aiohttp.ClientSession, endpoint: str, url: str, model: str, rate: float,
    jobs: Sequence[Job], on_record: Callable[[RequestRecord], None], *, timeout_s: float,
    on_sent: Callable[[], None] = lambda: None,
) -> None:
    """Send ``jobs`` at their arrival offsets from now; returns when every request has a record."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    in_flight: set[asyncio.Task[RequestRecord]] = set()

    def done(task: asyncio.Task[RequestRecord]) -> None:
        in_flight.discard(task)
        if not task.cancelled():
            on_record(task.result())

    try:
        for job in jobs:
            delay = start + job.arrival_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = loop.create_task(send_request(session, endpoint, url, model, rate, job, timeout_s=timeout_s))
            task.add_done_callback(done)
            in_flight.add(task)
            on_sent()
        while in_flight:
            await asyncio.wait(set(in_flight))
    finally:
        pending = set(in_flight)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
