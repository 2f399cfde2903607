"""Failover over fake upstreams: nothing lost, nothing hanging, no retry storms."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from types import SimpleNamespace

from aiohttp import ClientConnectionResetError, ClientResponse, web
from aiohttp.test_utils import TestClient

from tests.unit.proxy.conftest import harness, run, state_of
from tests.unit.proxy.fake_vllm import FakeVLLM
from vllm_pd.proxy import decode
from vllm_pd.proxy.config import TimeoutConfig

BODY = {"model": "tiny", "prompt": "hello there", "max_tokens": 4}


async def metric(client, name: str) -> float:
    text = await (await client.get("/metrics")).text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_prefill_5xx_fails_over_to_another_prefill_instance():
    async def scenario():
        async with harness(prefill=2, local_prefill=False) as (client, [p0, p1], [d]):
            p0.fail_status = 500
            routes = []
            for _ in range(4):
                resp = await client.post("/v1/completions", json=BODY)
                assert resp.status == 200
                routes.append(resp.headers["X-PD-Prefill"])
            assert routes.count(p1.url) == 4
            assert len(p0.seen) <= 3  # the breaker opened after the threshold: no retry storm
            assert await metric(client, 'vllm_pd_failovers_total{kind="prefill_to_prefill"}') >= 1
    run(scenario)


def test_every_prefill_down_falls_back_to_local_prefill_visibly():
    async def scenario():
        async with harness(prefill=1, local_prefill=False) as (client, [p], [d]):
            await p.close()  # refused connections
            resp = await client.post("/v1/completions", json=BODY)
            assert resp.status == 200
            assert resp.headers["X-PD-Route"] == "local" and resp.headers["X-PD-Failover"] == "prefill->local"
            assert "kv_transfer_params" not in d.seen[0].body
            assert await metric(client, 'vllm_pd_failovers_total{kind="prefill_to_local"}') == 1
    run(scenario)


def test_fallback_can_be_disabled_for_a_hard_failure():
    async def scenario():
        async with harness(prefill=1, local_prefill=False, fallback_local=False) as (client, [p], [d]):
            p.fail_status = 502
            resp = await client.post("/v1/completions", json=BODY)
            assert resp.status == 502 and d.seen == []
    run(scenario)


def test_a_hung_prefill_is_cut_off_at_the_bound():
    async def scenario():
        async with harness(prefill=1, local_prefill=False, timeouts=TimeoutConfig(prefill_s=0.3)) as (client, [p], [d]):
            p.hang_s = 30
            started = time.monotonic()
            resp = await client.post("/v1/completions", json=BODY)
            assert resp.status == 200 and resp.headers["X-PD-Route"] == "local"
            assert time.monotonic() - started < 3
    run(scenario)


def test_decode_failing_before_first_token_is_retried_elsewhere_with_a_fresh_prefill():
    async def scenario():
        async with harness(prefill=1, decode=2, local_prefill=False, policy="round-robin") as (client, [p], [d0, d1]):
            d0.fail_status = 500  # round-robin tries d0 first for each of the two requests
            for stream in (False, True):
                d0.seen.clear(), d1.seen.clear(), p.seen.clear()
                resp = await client.post("/v1/completions", json={**BODY, "stream": stream})
                assert resp.status == 200, await resp.text()
                assert resp.headers["X-PD-Failover"] == "decode->decode"
                assert resp.headers["X-PD-Decode"] == d1.url
                assert len(d0.seen) == len(d1.seen) == 1 and len(p.seen) == 2
    run(scenario)


def test_decode_reporting_finish_reason_error_is_not_hidden():
    async def scenario():
        async with harness(decode=1) as (client, _, [d]):
            d.error_finish = True
            unary = await client.post("/v1/completions", json=BODY)
            assert unary.status == 502  # not a 200 hiding the failure
    run(scenario)


def test_decode_dying_after_first_token_ends_the_stream_with_an_error_event():
    async def scenario():
        async with harness(decode=1) as (client, _, [d]):
            d.die_after_chunks = 2
            resp = await client.post("/v1/completions", json={**BODY, "stream": True})
            text = await resp.text()
            assert resp.status == 200
            assert text.count('"text"') == 2
            events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
            assert events[-1]["error"]["message"].startswith(f"decode instance {d.url} failed mid-stream")
            assert text.endswith("data: [DONE]\n\n")
            assert await metric(client, 'vllm_pd_requests_total{outcome="failed"}') == 1
    run(scenario)


def test_client_disconnect_cancels_the_decode_leg():
    async def scenario():
        async with harness(decode=1) as (client, _, [d]):
            d.chunk_delay_s = 0.2
            resp = await client.post("/v1/completions", json={**BODY, "max_tokens": 100, "stream": True})
            await resp.content.readany()
            resp.close()  # the client hangs up mid-stream
            for _ in range(50):
                if d.active == 0:
                    break
                await asyncio.sleep(0.05)
            assert d.active == 0, "the decode leg still runs upstream"
            state = state_of(client)
            assert all(i.load.decode_requests == 0 for i in state.instances.values())
            assert await metric(client, 'vllm_pd_requests_total{outcome="cancelled"}') == 1
    run(scenario)


class _ClientGoneStream(web.StreamResponse):
    """The client's transport is already closing when the proxy writes (aiohttp has not cancelled yet)."""

    async def write(self, data: bytes) -> None:
        raise ClientConnectionResetError("Cannot write to closing transport")


def test_a_write_to_a_client_that_left_ends_the_leg_quietly(monkeypatch, caplog):
    monkeypatch.setattr(decode, "web", SimpleNamespace(StreamResponse=_ClientGoneStream, Response=web.Response))

    async def scenario():
        async with harness(decode=1) as (client, _, [d]):
            d.chunk_delay_s = 0.2
            await client.post("/v1/completions", json={**BODY, "max_tokens": 100, "stream": True})
            for _ in range(50):
                if d.active == 0:
                    break
                await asyncio.sleep(0.05)
            assert d.active == 0, "the decode leg still runs upstream"
            assert await metric(client, 'vllm_pd_requests_total{outcome="cancelled"}') == 1
            assert await metric(client, 'vllm_pd_requests_total{outcome="failed"}') == 0
    run(scenario)
    # A client hanging up is routine: no "Error handling request" traceback in the proxy's log.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_the_only_decode_instance_is_not_blacked_out_by_its_breaker():
    async def scenario():
        async with harness(decode=1) as (client, _, [d]):
            d.fail_status = 500
            for _ in range(5):
                await client.post("/v1/completions", json=BODY)
            d.fail_status = None
            resp = await client.post("/v1/completions", json=BODY)
            assert resp.status == 200  # served at once, not refused for a cool-down
    run(scenario)


def test_an_instance_coming_back_is_used_again():
    async def scenario():
        async with harness(prefill=2, local_prefill=False, policy="round-robin") as (client, [p0, p1], [d]):
            p0.healthy = False
            await asyncio.sleep(0.3)
            for _ in range(4):
                assert (await client.post("/v1/completions", json=BODY)).headers["X-PD-Prefill"] == p1.url
            p0.healthy = True
            await asyncio.sleep(0.3)
            used = {(await client.post("/v1/completions", json=BODY)).headers["X-PD-Prefill"] for _ in range(4)}
            assert used == {p0.url, p1.url}
    run(scenario)


async def lose_the_handoff(client: TestClient, producer: FakeVLLM, consumer: FakeVLLM,
                           body: dict = BODY) -> ClientResponse:
    """Send ``body``; once the decoder has it (waiting for KV), the prefill instance goes down. The answer."""
    pending = asyncio.ensure_future(client.post("/v1/completions", json=body))
    while not consumer.seen:
        await asyncio.sleep(0.01)
    producer.healthy = False  # the next health check finds the prefill instance down
    return await pending


def test_a_decode_waiting_for_kv_from_a_prefill_that_died_is_retried_with_a_local_prefill():
    async def scenario():
        async with harness(prefill=1, local_prefill=False) as (client, [p], [d]):
            d.handoff_hang_s = 30  # the pull from the dead producer never ends (vLLM's NixlConnector)
            for n, stream in enumerate((False, True)):
                p.healthy = True
                while not state_of(client).instances[p.url].healthy:
                    await asyncio.sleep(0.01)
                d.seen.clear()
                started = time.monotonic()
                resp = await lose_the_handoff(client, p, d, {**BODY, "stream": stream})
                assert resp.status == 200, await resp.text()
                assert resp.headers["X-PD-Route"] == "local" and resp.headers["X-PD-Failover"] == "handoff->retry"
                assert time.monotonic() - started < 3
                assert "kv_transfer_params" in d.seen[0].body and "kv_transfer_params" not in d.seen[1].body
                assert await metric(client, 'vllm_pd_failovers_total{kind="handoff_lost"}') == n + 1
            assert state_of(client).instances[d.url].breaker.allows()  # the decoder was not blamed
    run(scenario)


def test_a_lost_handoff_does_not_use_up_a_decode_attempt():
    """The decoder did not fail when its KV's source died; with one decode attempt allowed, the request
    is still prefilled again and answered (CI, 2026-12-03: a lost handoff took the last attempt)."""
    async def scenario():
        async with harness(prefill=1, local_prefill=False, max_decode_attempts=1) as (client, [p], [d]):
            d.handoff_hang_s = 30
            resp = await lose_the_handoff(client, p, d)
            assert resp.status == 200, await resp.text()
            assert resp.headers["X-PD-Route"] == "local" and resp.headers["X-PD-Failover"] == "handoff->retry"
    run(scenario)


def test_a_decode_older_than_the_handoff_window_is_left_to_finish():
    async def scenario():
        async with harness(prefill=1, local_prefill=False, timeouts=TimeoutConfig(handoff_s=0.1)) as (client, [p], [d]):
            d.handoff_hang_s = 0.6  # a long decode whose KV arrived long ago
            pending = asyncio.ensure_future(client.post("/v1/completions", json=BODY))
            await asyncio.sleep(0.3)
            p.healthy = False
            resp = await pending
            assert resp.status == 200 and resp.headers["X-PD-Route"] == "remote"
            assert "X-PD-Failover" not in resp.headers and len(d.seen) == 1
    run(scenario)


def test_a_lost_handoff_is_a_hard_failure_when_local_fallback_is_off():
    async def scenario():
        async with harness(prefill=1, local_prefill=False, fallback_local=False) as (client, [p], [d]):
            d.handoff_hang_s = 30
            resp = await lose_the_handoff(client, p, d)
            assert resp.status == 502 and "KV handoff" in await resp.text()
            assert len(d.seen) == 1
    run(scenario)
