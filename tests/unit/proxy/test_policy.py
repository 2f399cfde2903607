"""Pair choice against scripted instance states (no network): the goodput policy's decisions."""

from __future__ import annotations

import pytest

from vllm_pd.latency import DecodeCoeffs, LatencyProfile, LinkSpec, PrefillCoeffs
from vllm_pd.proxy.config import HealthConfig, PoolConfig, ProxyConfig
from vllm_pd.proxy.instance import Instance
from vllm_pd.proxy.policy import (
    GoodputPolicy,
    LeastLoadedPolicy,
    PrefixAffinity,
    Rejection,
    RequestInfo,
    RoundRobinPolicy,
    usable,
)
from vllm_pd.proxy.predictor import Predictor
from vllm_pd.slo import SLO

# 1 ms + 10 us/token prefill; 10 ms decode steps plus 0.1 ms per running request; 1 GB/s link, 1 KB/token
PROFILE = LatencyProfile(prefill=PrefillCoeffs(a=0.001, b=1e-5), decode=DecodeCoeffs(a=0.01, b=0.0, c=1e-4),
                         link=LinkSpec(bandwidth=1e9), kv_bytes_per_token=1000)
HEALTH = HealthConfig()


def config(**changes) -> ProxyConfig:
    settings = {"pool": PoolConfig(decode=("http://d:1",)), "slo": SLO(ttft_s=0.2, tpot_s=0.05),
                "local_stall_budget": 1.0, **changes}
    return ProxyConfig(**settings)


def instances(role: str, n: int) -> list[Instance]:
    return [Instance(f"http://{role}{i}:1", role, HEALTH) for i in range(n)]


def policy(cfg: ProxyConfig | None = None, affinity: PrefixAffinity | None = None) -> GoodputPolicy:
    return GoodputPolicy(cfg or config(), Predictor(PROFILE), affinity or PrefixAffinity())


def busy_prefill(inst: Instance, requests: int, tokens: int) -> None:
    inst.load.prefill_requests += requests
    inst.load.prefill_tokens += tokens


def running(inst: Instance, requests: int, context: int, remaining: int) -> None:
    inst.load.decode_requests += requests
    inst.load.context_tokens += context
    inst.load.remaining_tokens += remaining


def test_short_prompt_on_idle_decoder_prefills_locally():
    route = policy().choose(RequestInfo(100, 64), instances("prefill", 1), instances("decode", 1))
    assert route.kind == "local" and route.prefill is None and route.meets_slo


def test_long_prompt_goes_remote_when_local_prefill_would_stall_the_decoder():
    # 8000 tokens: 81 ms prefill > 1 x 50 ms stall budget
    p, d = instances("prefill", 1), instances("decode", 1)
    route = policy().choose(RequestInfo(8000, 64), p, d)
    assert route.kind == "remote" and route.prefill is p[0]
    est = route.estimate
    assert est.ttft_s == pytest.approx(est.prefill_s + est.transfer_s + est.first_step_s)
    assert est.transfer_s == pytest.approx(8000 * 1000 / 1e9)


def test_local_prefill_refused_when_it_pushes_running_requests_over_tpot():
    d = instances("decode", 1)
    running(d[0], requests=20, context=20_000, remaining=20)  # one token left each: a 41 ms stall is their TPOT
    route = policy().choose(RequestInfo(4000, 64), instances("prefill", 1), d)
    assert route.kind == "remote"


def test_busy_prefill_instance_is_avoided():
    p = instances("prefill", 2)
    busy_prefill(p[0], requests=10, tokens=80_000)  # ~0.8 s of queued prefill
    route = policy(config(local_prefill=False)).choose(RequestInfo(1000, 64), p, instances("decode", 1))
    assert route.prefill is p[1]


def test_decoder_with_fewer_running_requests_wins():
    d = instances("decode", 2)
    running(d[0], requests=300, context=300_000, remaining=30_000)  # 40 ms steps: TPOT headroom gone
    route = policy(config(local_prefill=False)).choose(RequestInfo(500, 64), instances("prefill", 1), d)
    assert route.decode is d[1]


def test_no_candidate_meets_the_slo_rejects_with_retry_after():
    p, d = instances("prefill", 1), instances("decode", 1)
    busy_prefill(p[0], requests=1, tokens=500_000)  # 5 s queue on the only prefill instance

    decision = policy(config(admission="reject", local_prefill=False)).choose(RequestInfo(1000, 64), p, d)

    assert isinstance(decision, Rejection)
    assert decision.retry_after_s >= 4


def test_best_effort_serves_the_least_bad_candidate():
    p, d = instances("prefill", 2), instances("decode", 1)
    busy_prefill(p[0], requests=1, tokens=500_000)
    busy_prefill(p[1], requests=1, tokens=300_000)

    route = policy(config(admission="best-effort", local_prefill=False)).choose(RequestInfo(1000, 64), p, d)

    assert route.prefill is p[1] and not route.meets_slo


def test_prefix_affinity_ranks_candidates_that_meet_the_slo():
    p, d = instances("prefill", 2), instances("decode", 1)
    busy_prefill(p[1], requests=1, tokens=2000)  # slightly busier, but holds the prefix
    affinity = PrefixAffinity()
    affinity.record(1234, p[1].url)

    route = policy(config(local_prefill=False), affinity).choose(RequestInfo(1000, 64, prefix_key=1234), p, d)

    assert route.prefill is p[1]


def test_prefix_affinity_never_overrides_a_predicted_slo_miss():
    p, d = instances("prefill", 2), instances("decode", 1)
    busy_prefill(p[1], requests=5, tokens=100_000)  # 1 s queue: the cached instance would miss the TTFT SLO
    affinity = PrefixAffinity()
    affinity.record(1234, p[1].url)

    route = policy(config(local_prefill=False), affinity).choose(RequestInfo(1000, 64, prefix_key=1234), p, d)

    assert route.prefill is p[0] and route.meets_slo


def test_without_prefill_instances_the_decoder_prefills_whatever_the_stall():
    route = policy().choose(RequestInfo(50_000, 64), [], instances("decode", 1))
    assert route.kind == "local"


def test_a_both_instance_is_never_paired_with_itself():
    both = instances("both", 1)
    route = policy(config(local_prefill=False)).choose(RequestInfo(8000, 64), both, both)
    assert route.kind == "local" and route.decode is both[0]


def test_online_correction_moves_predictions_towards_observations():
    predictor = Predictor(PROFILE)
    p = instances("prefill", 1)[0]
    before = predictor.prefill_s(p, 1000)
    for _ in range(30):
        predictor.prefill_correction(p).observe(before, 3 * before)  # the hardware is 3x slower
    assert predictor.prefill_s(p, 1000) == pytest.approx(3 * before, rel=0.02)


def test_least_loaded_and_round_robin():
    p, d = instances("prefill", 2), instances("decode", 2)
    busy_prefill(p[0], requests=1, tokens=10)
    running(d[1], requests=1, context=10, remaining=10)
    info = RequestInfo(10, 10)
    least = LeastLoadedPolicy().choose(info, p, d)
    assert (least.prefill, least.decode) == (p[1], d[0])
    rr = RoundRobinPolicy()
    picks = [(r.prefill, r.decode) for r in (rr.choose(info, p, d) for _ in range(4))]
    assert picks == [(p[0], d[0]), (p[1], d[1]), (p[0], d[0]), (p[1], d[1])]


def test_usable_never_blacks_out_every_instance():
    d = instances("decode", 2)
    for inst in d:
        for _ in range(HEALTH.failure_threshold):
            inst.record_failure()
    assert usable(d, frozenset()) == d  # all breakers open: still served, not refused
    d[1].record_success()
    assert usable(d, frozenset()) == [d[1]]
    assert usable(d, frozenset({d[1].url})) == [d[0]]


def test_with_no_healthy_instance_a_slow_one_is_used_before_one_found_gone():
    """CI, 2026-12-03: one decoder was killed, the other stalled past its health checks; requests went to
    the dead one (least loaded) and failed, instead of waiting for the live one."""
    dead, stalled = instances("decode", 2)
    for inst in (dead, stalled):
        inst.healthy = False
    dead.unreachable = True
    assert usable([dead, stalled], frozenset()) == [stalled]
    stalled.unreachable = True  # both gone: still not an empty list (no blackout)
    assert usable([dead, stalled], frozenset()) == [dead, stalled]
