"""The proxy makes each pair's first KV handoff itself: once per pair, again after a side was down."""

from __future__ import annotations

import asyncio

from tests.unit.proxy.conftest import harness, run, state_of
from tests.unit.proxy.fake_vllm import FakeVLLM
from vllm_pd.proxy.warmup import MAX_TRIES, WARM_PROMPT


def handoffs(decode: FakeVLLM) -> list[str]:
    """The prefill instances (by fake name) whose KV ``decode`` was asked to pull."""
    return [s.body["kv_transfer_params"]["remote_engine_id"] for s in decode.seen
            if (s.body.get("kv_transfer_params") or {}).get("do_remote_prefill")]


async def wait_for(predicate, timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


def test_every_pair_gets_one_first_handoff_at_start():
    async def scenario():
        async with harness(prefill=2, decode=2, warm_pairs=True) as (client, prefills, decodes):
            await wait_for(lambda: all(len(handoffs(d)) == 2 for d in decodes))
            await asyncio.sleep(0.3)  # several more health rounds: nothing is sent again
            for d in decodes:
                assert sorted(handoffs(d)) == ["p0", "p1"]
                (seen, _) = d.seen
                assert seen.body["prompt"] == WARM_PROMPT and seen.body["max_tokens"] == 1
                assert {k.lower(): v for k, v in seen.headers.items()}["x-request-id"] == "vllm-pd-warmup"
            for p in prefills:
                assert len(p.seen) == 2
                assert all(s.body["kv_transfer_params"] == {"do_remote_decode": True, "do_remote_prefill": False}
                           for s in p.seen)
            text = await (await client.get("/metrics")).text()
            assert "vllm_pd_requests_total{" not in text  # not a client request
    run(scenario)


def test_a_pair_is_warmed_again_after_a_side_was_down():
    async def scenario():
        async with harness(prefill=1, decode=1, warm_pairs=True) as (client, [p], [d]):
            await wait_for(lambda: len(handoffs(d)) == 1)
            p.healthy = False  # e.g. restarted: the decoder must handshake with the new process
            prefill = state_of(client).instances[p.url]
            await wait_for(lambda: not prefill.healthy)
            p.healthy = True
            await wait_for(lambda: len(handoffs(d)) == 2)
    run(scenario)


def test_a_pair_that_fails_its_handoff_is_tried_a_bounded_number_of_times():
    async def scenario():
        async with harness(prefill=1, decode=1, warm_pairs=True) as (_, [p], [d]):
            d.fail_status = 500
            await wait_for(lambda: len(handoffs(d)) == MAX_TRIES)
            await asyncio.sleep(0.5)  # ten more health rounds
            assert len(handoffs(d)) == MAX_TRIES
            assert len(p.seen) == MAX_TRIES
    run(scenario)


def test_no_warm_up_when_disabled():
    async def scenario():
        async with harness(prefill=1, decode=1, warm_pairs=False) as (_, [p], [d]):
            await asyncio.sleep(0.3)
            assert p.seen == [] and d.seen == []
    run(scenario)
