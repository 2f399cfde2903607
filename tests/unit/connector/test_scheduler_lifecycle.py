"""PDConnector inside vLLM's real Scheduler, producer and consumer, step by step (no model, no NIXL).

The producer's side channel is real (loopback ZMQ), so renew/release travel for real between the
two schedulers; the workers are replaced by the runner outputs they would produce.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from vllm.v1.request import RequestStatus

from tests.unit.connector.vllm_harness import (
    BLOCK_SIZE,
    assert_scheduler_empty,
    make_request,
    make_scheduler,
    step,
    step_stats,
)
from vllm_pd import wire
from vllm_pd.connector.metadata import PDWorkerMeta, PullRecord, WorkerHandshake
from vllm_pd.launcher import free_port

FAST = {"lease_s": 2.0, "renew_interval_s": 0.5, "pull_timeout_s": 1.0, "lease_margin_s": 0.2}


def serve_side_channel(scheduler) -> None:
    identity = wire.HandshakeReply(pd_protocol=wire.PROTOCOL_VERSION, engine_id="p", incarnation="", tp_rank=0,
                                   agent_metadata=b"m", regions=[], layout_fingerprint="fp", device_id=0,
                                   mem_type="DRAM")
    scheduler.connector.set_xfer_handshake_metadata({0: WorkerHandshake(0, wire.encode(identity))})


@pytest.fixture
def producer(tiny_model: Path) -> Iterator:
    scheduler = make_scheduler(tiny_model, "kv_producer", {**FAST, "side_channel_port": free_port(),
                                                           "side_channel_host": "127.0.0.1"})
    serve_side_channel(scheduler)
    yield scheduler
    scheduler.connector.shutdown()


@pytest.fixture
def consumer(tiny_model: Path) -> Iterator:
    scheduler = make_scheduler(tiny_model, "kv_consumer", dict(FAST))
    yield scheduler
    scheduler.connector.shutdown()


def prefill(producer, num_tokens: int) -> tuple[str, dict]:
    """Run a do_remote_decode request to its end on the producer; returns (id, kv_transfer_params)."""
    request = make_request(num_tokens, max_tokens=1, kv_transfer_params={"do_remote_decode": True,
                                                                         "do_remote_prefill": False})
    producer.add_request(request)
    _, outputs = step(producer)
    params = outputs[request.request_id].kv_transfer_params
    assert params is not None, "prefill finished without handoff params"
    return request.request_id, params


def test_producer_holds_blocks_until_the_worker_reports_the_pull(producer) -> None:
    # 1. Prefill of 3 full blocks + 5 tokens finishes and hands off.
    rid, params = prefill(producer, 3 * BLOCK_SIZE + 5)
    handoff = wire.parse_handoff(params)
    assert handoff.remote_num_tokens == 3 * BLOCK_SIZE + 5
    assert len(handoff.remote_block_ids) == 4
    assert handoff.lease_deadline > time.time()
    # 2. The blocks stay: the request is finished for the client but held by the connector.
    assert rid in producer.requests
    out, _ = step(producer)
    assert out.kv_connector_metadata.leased == [rid]
    # 3. The worker saw the consumer's pull-done notice.
    step(producer, sending={rid})
    step(producer)
    assert_scheduler_empty(producer)
    assert len(producer.connector.scheduler.leases) == 0


def test_producer_frees_at_lease_expiry(producer) -> None:
    rid, _ = prefill(producer, 2 * BLOCK_SIZE)
    assert step_stats(producer)["held_blocks"] == 2
    time.sleep(FAST["lease_s"] + 0.1)
    stats = step_stats(producer)  # the lease expires while building this step's metadata
    assert stats["expired_leases"] == 1
    # The worker was told (lease_ended) and reports the request as sent; vLLM frees the blocks.
    stats = step_stats(producer, sending={rid})
    assert stats["held_blocks"] == 0
    assert_scheduler_empty(producer)


def test_aborted_prefill_frees_at_once(producer) -> None:
    request = make_request(2 * BLOCK_SIZE, max_tokens=1, kv_transfer_params={"do_remote_decode": True})
    producer.add_request(request)
    producer.finish_requests(request.request_id, RequestStatus.FINISHED_ABORTED)
    step(producer)
    assert_scheduler_empty(producer)
    assert len(producer.connector.scheduler.leases) == 0


@pytest.mark.parametrize("num_tokens", [1, 20, 3 * BLOCK_SIZE, 17 * BLOCK_SIZE + 3])
def test_consumer_pulls_every_prompt_block_then_decodes(producer, consumer, num_tokens: int) -> None:
    _, params = prefill(producer, num_tokens)
    handoff = wire.parse_handoff(params)
    request = make_request(num_tokens, max_tokens=3, kv_transfer_params=params,
                           prompt=list(producer_prompt(producer, handoff)))
    consumer.add_request(request)
    # 1. Scheduled as an async load: parked, blocks allocated, one PullTask to the worker.
    out, _ = step(consumer)
    assert request.status == RequestStatus.WAITING_FOR_REMOTE_KVS
    [task] = out.kv_connector_metadata.pulls
    assert task.remote_block_ids == handoff.remote_block_ids
    assert len(task.local_block_ids) == -(-num_tokens // BLOCK_SIZE)
    # 2. The worker finishes the pull; the request decodes to its end.
    record = PullRecord(pull_start=time.time(), pull_done=time.time(), bytes=123, descriptors=2, ok=True)
    step(consumer, recving={request.request_id}, worker_meta=PDWorkerMeta({request.request_id: record}))
    outputs = run_to_end(consumer)
    timings = outputs[request.request_id].kv_transfer_params["pd_handoff"]
    assert timings["outcome"] == "pulled" and timings["bytes"] == 123 and timings["descriptors"] == 2
    assert timings["prefill_done"] == handoff.prefill_done
    assert_scheduler_empty(consumer)


def test_consumer_recomputes_after_a_failed_pull(producer, consumer) -> None:
    _, params = prefill(producer, 4 * BLOCK_SIZE)
    request = make_request(4 * BLOCK_SIZE, max_tokens=2, kv_transfer_params=params)
    consumer.add_request(request)
    step(consumer)
    rid = request.request_id
    step(consumer, recving={rid}, failed={rid})
    assert request.num_computed_tokens == 0  # the prompt is prefilled locally
    outputs = run_to_end(consumer)
    assert outputs[rid].kv_transfer_params["pd_handoff"]["outcome"] == "recomputed"
    assert_scheduler_empty(consumer)


def test_consumer_with_fail_policy_errors_the_request(producer, tiny_model: Path) -> None:
    consumer = make_scheduler(tiny_model, "kv_consumer", dict(FAST), policy="fail")
    try:
        _, params = prefill(producer, 2 * BLOCK_SIZE)
        request = make_request(2 * BLOCK_SIZE, kv_transfer_params=params)
        consumer.add_request(request)
        step(consumer)
        _, outputs = step(consumer, recving={request.request_id}, failed={request.request_id})
        assert outputs[request.request_id].finish_reason is not None
        assert str(outputs[request.request_id].finish_reason) == "error"
        step(consumer)
        assert_scheduler_empty(consumer)
    finally:
        consumer.connector.shutdown()


def test_expired_lease_prefills_locally_without_a_pull(producer, consumer) -> None:
    _, params = prefill(producer, 2 * BLOCK_SIZE)
    params = {**params, "lease_deadline": time.time() - 1}
    request = make_request(2 * BLOCK_SIZE, max_tokens=2, kv_transfer_params=params)
    consumer.add_request(request)
    out, _ = step(consumer)
    assert out.kv_connector_metadata.pulls == []
    assert request.status == RequestStatus.RUNNING
    outputs = run_to_end(consumer)
    assert outputs[request.request_id].kv_transfer_params["pd_handoff"]["outcome"] == "recomputed"
    assert_scheduler_empty(consumer)


def test_abort_while_loading_waits_for_the_pull_then_frees(producer, consumer) -> None:
    _, params = prefill(producer, 3 * BLOCK_SIZE)
    request = make_request(3 * BLOCK_SIZE, kv_transfer_params=params)
    consumer.add_request(request)
    step(consumer)
    assert request.status == RequestStatus.WAITING_FOR_REMOTE_KVS
    # 1. The client goes away while the READ is in flight: the blocks must stay until it ends.
    consumer.finish_requests(request.request_id, RequestStatus.FINISHED_ABORTED)
    step(consumer)
    pool = consumer.kv_cache_manager.block_pool
    assert pool.free_block_queue.num_free_blocks < pool.num_gpu_blocks - 1
    # 2. The worker reports the pull finished: now they are freed.
    step(consumer, recving={request.request_id})
    step(consumer)
    assert_scheduler_empty(consumer)


def test_bad_params_prefill_locally(consumer) -> None:
    params = {"do_remote_prefill": True, "pd_protocol": wire.PROTOCOL_VERSION + 1, "remote_host": "x"}
    request = make_request(2 * BLOCK_SIZE, max_tokens=2, kv_transfer_params=params)
    consumer.add_request(request)
    out, _ = step(consumer)
    assert out.kv_connector_metadata.pulls == [] and request.status == RequestStatus.RUNNING
    run_to_end(consumer)
    assert_scheduler_empty(consumer)


def test_rejected_request_releases_the_producer_lease_at_once(producer, consumer) -> None:
    rid, params = prefill(producer, 3 * BLOCK_SIZE)
    step(producer)
    request = make_request(3 * BLOCK_SIZE, kv_transfer_params=params)
    # vLLM's serving layer submits a rejected request pre-aborted: it never gets scheduled.
    consumer.add_request(request)
    consumer.finish_requests(request.request_id, RequestStatus.FINISHED_ABORTED)
    ended = wait_for(lambda: step(producer)[0].kv_connector_metadata.lease_ended, timeout_s=1.0)
    assert ended == [rid]
    step(producer, sending={rid})
    assert_scheduler_empty(producer)
    step(consumer)
    assert_scheduler_empty(consumer)


def test_waiting_consumer_renews_the_lease(producer, consumer) -> None:
    rid, params = prefill(producer, 2 * BLOCK_SIZE)
    first = wire.parse_handoff(params).lease_deadline
    request = make_request(2 * BLOCK_SIZE, kv_transfer_params=params)
    consumer.add_request(request)
    step(consumer)  # parked, waiting for a worker that is slow to pull
    time.sleep(FAST["lease_s"] + 0.5)
    step(producer)
    assert rid in producer.requests, "lease expired although the consumer kept renewing it"
    assert producer.connector.scheduler.leases.deadline(rid) > first
    step(consumer, recving={request.request_id})
    run_to_end(consumer)
    step(producer, sending={rid})
    assert_scheduler_empty(producer)
    assert_scheduler_empty(consumer)


def test_full_local_prefix_hit_pulls_nothing_and_releases(producer, consumer) -> None:
    prompt = [7 + i % 250 for i in range(3 * BLOCK_SIZE + 1)]
    warm = make_request(len(prompt), max_tokens=1, prompt=prompt)
    consumer.add_request(warm)
    run_to_end(consumer)
    rid, params = prefill_prompt(producer, prompt)
    step(producer)
    request = make_request(len(prompt), max_tokens=2, kv_transfer_params=params, prompt=prompt)
    consumer.add_request(request)
    out, _ = step(consumer)
    [task] = out.kv_connector_metadata.pulls  # only the last, partial block is missing locally
    assert len(task.local_block_ids) == 1 and task.remote_block_ids == wire.parse_handoff(params).remote_block_ids[3:]


def prefill_prompt(producer, prompt: list[int]) -> tuple[str, dict]:
    request = make_request(len(prompt), max_tokens=1, prompt=prompt, kv_transfer_params={"do_remote_decode": True})
    producer.add_request(request)
    _, outputs = step(producer)
    return request.request_id, outputs[request.request_id].kv_transfer_params


def producer_prompt(producer, handoff: wire.HandoffParams) -> list[int]:
    return producer.requests[handoff.remote_request_id].prompt_token_ids


def run_to_end(scheduler, max_steps: int = 50) -> dict:
    finished = {}
    for _ in range(max_steps):
        _, outputs = step(scheduler)
        finished.update({rid: o for rid, o in outputs.items() if o.finish_reason is not None})
        if not scheduler.requests:
            return finished
    raise AssertionError("requests did not finish")


def wait_for(probe, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := probe():
            return value
        time.sleep(0.02)
    raise AssertionError(f"nothing after {timeout_s}s")
