"""The simulator against closed forms (M/D/1, single-request paths), plus determinism and invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vllm_pd.latency import DecodeCoeffs, LatencyProfile, LinkSpec, PrefillCoeffs, decode_step_time, prefill_time
from vllm_pd.planner.sim import SLO, InstanceConfig, simulate_colocated, simulate_disaggregated
from vllm_pd.workloads import RequestSpec, load_workload

PROFILE = LatencyProfile(
    prefill=PrefillCoeffs(a=0.004, b=2e-5, c=1e-9),
    decode=DecodeCoeffs(a=0.006, b=5e-8, c=2e-5),
    kv_bytes_per_token=131072,
)
FAST = LinkSpec(bandwidth=100e9, latency=1e-5)


def _instance(profile: LatencyProfile = PROFILE, **kwargs: int) -> InstanceConfig:
    return InstanceConfig(profile=profile, kv_capacity_tokens=kwargs.pop("kv", 400_000), **kwargs)


def test_prefill_queue_matches_md1() -> None:
    # 1. Fixed 1000-token prompts, one per batch: deterministic service D, Poisson arrivals.
    service = prefill_time(PROFILE.prefill, [1000])
    rate = 0.7 / service
    specs = load_workload("fixed:1000:2").sample(rate=rate, num_requests=40000, seed=3)
    result = simulate_disaggregated(specs, [_instance(max_batched_tokens=1000)], [_instance()], [[FAST]])
    # 2. Pollaczek-Khinchine for M/D/1: Wq = rho * D / (2 (1 - rho)).
    expected = 0.7 * service / (2 * (1 - 0.7))
    assert result.queue.mean() == pytest.approx(expected, rel=0.05)


def test_pipelined_prefill_queues_like_half_the_service_time() -> None:
    pp2 = LatencyProfile(prefill=PROFILE.prefill, decode=PROFILE.decode, kv_bytes_per_token=131072, pp=2)
    latency = prefill_time(PROFILE.prefill, [1000])
    stage = latency / 2
    rate = 0.6 / stage  # would overload a single-stage instance (rho 1.2)
    specs = load_workload("fixed:1000:2").sample(rate=rate, num_requests=40000, seed=4)
    result = simulate_disaggregated(specs, [_instance(pp2, max_batched_tokens=1000)], [_instance()], [[FAST]])
    assert result.queue.mean() == pytest.approx(0.6 * stage / (2 * 0.4), rel=0.05)


def test_one_request_path_is_prefill_transfer_then_decode_steps() -> None:
    slow = LinkSpec(bandwidth=1e9, latency=2e-3)
    result = simulate_disaggregated([RequestSpec(0.0, 2000, 5)], [_instance()], [_instance()], [[slow]])
    transfer = 2e-3 + 2000 * PROFILE.kv_bytes_per_token / 1e9
    first_step = decode_step_time(PROFILE.decode, 1, 2000)
    assert result.transfer[0] == pytest.approx(transfer)
    assert result.ttft[0] == pytest.approx(prefill_time(PROFILE.prefill, [2000]) + transfer + first_step)
    later_steps = [decode_step_time(PROFILE.decode, 1, 2000 + k) for k in range(1, 5)]
    assert result.tpot[0] == pytest.approx(sum(later_steps) / 4)


def test_colocated_prompt_is_chunked_under_the_token_budget() -> None:
    result = simulate_colocated([RequestSpec(0.0, 2500, 1)], [_instance(max_batched_tokens=1000)])
    p = PROFILE.prefill
    chunks = [(1000, 0), (1000, 1000), (500, 2000)]
    expected = sum(p.a + p.b * n + p.c * n * (n + done) for n, done in chunks)
    assert result.ttft[0] == pytest.approx(expected)


def test_same_seed_same_result_and_seeds_differ() -> None:
    def run(seed: int) -> np.ndarray:
        specs = load_workload("chatbot").sample(rate=20.0, num_requests=500, seed=seed)
        result = simulate_disaggregated(specs, [_instance(), _instance()], [_instance()], [[FAST], [FAST]])
        return np.concatenate([result.ttft, result.tpot])

    np.testing.assert_array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))


def test_attainment_falls_as_rate_rises_and_with_tighter_slo() -> None:
    loose, tight = SLO(0.5, 0.05), SLO(0.1, 0.02)
    attainments = []
    for rate in (5.0, 20.0, 60.0, 120.0):
        specs = load_workload("chatbot").sample(rate=rate, num_requests=800, seed=0)
        result = simulate_disaggregated(specs, [_instance()], [_instance()], [[FAST]])
        attainments.append(result.attainment(loose))
        assert result.attainment(tight) <= result.attainment(loose)
    assert attainments == sorted(attainments, reverse=True)
    assert attainments[0] > 0.95 and attainments[-1] < 0.5


def test_full_decode_memory_preempts_yet_every_request_finishes() -> None:
    specs = load_workload("fixed:1500:200").sample(rate=40.0, num_requests=300, seed=0)
    roomy = simulate_disaggregated(specs, [_instance(), _instance()], [_instance()], [[FAST], [FAST]])
    tight = simulate_disaggregated(specs, [_instance(), _instance()], [_instance(kv=6000)], [[FAST], [FAST]])
    assert np.isfinite(tight.tpot).all() and np.isfinite(tight.ttft).all()
    assert tight.ttft.mean() > roomy.ttft.mean()


def test_colocated_memory_pressure_also_finishes_everything() -> None:
    specs = load_workload("fixed:900:100").sample(rate=30.0, num_requests=200, seed=0)
    result = simulate_colocated(specs, [_instance(kv=3000)])
    assert np.isfinite(result.tpot).all()


def test_two_decoders_beat_one_under_load() -> None:
    specs = load_workload("chatbot").sample(rate=60.0, num_requests=1000, seed=5)
    one = simulate_disaggregated(specs, [_instance(), _instance()], [_instance()], [[FAST], [FAST]])
    two = simulate_disaggregated(specs, [_instance(), _instance()], [_instance(), _instance()], [[FAST] * 2] * 2)
    assert np.median(two.tpot) < np.median(one.tpot)


def test_round_robin_spreads_evenly() -> None:
    specs = load_workload("fixed:100:10").sample(rate=10.0, num_requests=10, seed=0)
    result = simulate_disaggregated(specs, [_instance()] * 2, [_instance()] * 2, [[FAST] * 2] * 2, routing="round_robin")
    assert np.isfinite(result.ttft).all()


def test_hopeless_run_gives_up_early() -> None:
    specs = load_workload("chatbot").sample(rate=2000.0, num_requests=2000, seed=0)
    result = simulate_disaggregated(specs, [_instance()], [_instance()], [[FAST]], slo=SLO(0.2, 0.05, 0.9))
    assert result.gave_up and not result.passes(SLO(0.2, 0.05, 0.9))
    assert np.isnan(result.ttft).sum() > 0


@pytest.mark.parametrize("sim", ["disaggregated", "colocated"])
def test_a_request_larger_than_the_kv_cache_is_an_error(sim: str) -> None:
    specs = [RequestSpec(0.0, 5000, 2)]
    with pytest.raises(ValueError, match="can never fit"):
        if sim == "colocated":
            simulate_colocated(specs, [_instance(kv=4000)])
        else:
            simulate_disaggregated(specs, [_instance()], [_instance(kv=4000)], [[FAST]])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="empty"):
        simulate_colocated([], [_instance()])
    with pytest.raises(ValueError, match="routing policy"):
        simulate_colocated([RequestSpec(0.0, 5, 2)], [_instance()], routing="random")
    with pytest.raises(ValueError, match="at least one prefill"):
        simulate_disaggregated([RequestSpec(0.0, 5, 2)], [], [_instance()], [])
    with pytest.raises(ValueError, match="--ttft-slo must be > 0"):
        SLO(0.0, 0.1)


def test_prefill_first_steps_stall_running_decodes() -> None:
    # 1. One long-running decode, then a long prompt arrives while it decodes.
    specs = [RequestSpec(0.0, 100, 60), RequestSpec(0.05, 3000, 2)]
    chunked = simulate_colocated(specs, [_instance(max_batched_tokens=512)])
    stalled = simulate_colocated(specs, [InstanceConfig(PROFILE, 400_000, max_batched_tokens=512,
                                                        chunked_prefill=False)])
    alone = simulate_colocated(specs[:1], [_instance(max_batched_tokens=512)])
    # 2. Prefill-first runs the 3000-token prompt whole, in one step the decode has to wait out.
    delay = (stalled.tpot[0] - alone.tpot[0]) * 59
    assert delay >= prefill_time(PROFILE.prefill, [3000]) - decode_step_time(PROFILE.decode, 2, 3200)
    assert stalled.tpot[0] > chunked.tpot[0]
    assert stalled.ttft[1] < chunked.ttft[1]  # the prompt itself goes faster when it does not share steps
