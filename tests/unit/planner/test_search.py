"""The search: monotone in GPUs and SLOs, deterministic, clear about impossible questions."""

from __future__ import annotations

import pytest

from tests.unit.planner.conftest import with_
from vllm_pd.planner.capacity import max_rate
from vllm_pd.planner.hardware import load_hardware
from vllm_pd.planner.model import load_model_spec
from vllm_pd.planner.plan import PlanError
from vllm_pd.planner.search import PlanInputs, plan
from vllm_pd.planner.sim import SLO


def test_bisection_finds_the_threshold_within_tolerance() -> None:
    calls = []

    def passes(rate: float) -> bool:
        calls.append(rate)
        return rate <= 37.0

    found = max_rate(passes, guess=5.0, tolerance=0.02)
    assert 37.0 / 1.02 <= found <= 37.0
    assert max_rate(lambda r: r <= 0.3, guess=50.0, tolerance=0.02) == pytest.approx(0.3, rel=0.02)
    assert max_rate(lambda r: False, guess=1.0, tolerance=0.05) == 0.0


def test_more_gpus_never_lower_the_best_goodput(small_inputs: PlanInputs) -> None:
    rates = [plan(with_(small_inputs, gpus=g)).best.cluster_rate for g in (1, 2, 4, 6)]
    assert rates == sorted(rates)
    assert rates[-1] > rates[0]


def test_a_tighter_slo_never_raises_the_best_goodput(small_inputs: PlanInputs) -> None:
    loose = plan(with_(small_inputs, slo=SLO(0.4, 0.05, 0.9)))
    tight = plan(with_(small_inputs, slo=SLO(0.1, 0.02, 0.9)))
    assert tight.best.cluster_rate <= loose.best.cluster_rate
    for pd_tight, pd_loose in zip(tight.ranked[:1], loose.ranked[:1]):
        assert pd_tight.cluster_rate <= pd_loose.cluster_rate


def test_same_inputs_same_plan(small_inputs: PlanInputs) -> None:
    first, second = plan(small_inputs), plan(small_inputs)
    assert [(c.label(), c.cluster_rate) for c in first.ranked] == [(c.label(), c.cluster_rate) for c in second.ranked]
    assert first.colocated.cluster_rate == second.colocated.cluster_rate


def test_plan_reports_predictions_and_a_verdict(small_inputs: PlanInputs) -> None:
    result = plan(small_inputs)
    assert result.ranked and result.colocated is not None
    best = result.ranked[0]
    assert best.gpus_used <= small_inputs.gpus
    assert best.prediction is not None and best.prediction.attainment >= 0.8
    assert best.prediction.ttft_p50 <= best.prediction.ttft_p90
    assert result.verdict.split(":")[0] in {"disaggregate", "stay colocated", "either"}
    assert sum(p.shape.gpus for p in best.placements) == best.gpus_used


def test_slow_network_between_nodes_costs_goodput(small_inputs: PlanInputs) -> None:
    slow = load_hardware("h100")
    slow = type(slow)(**{**{f: getattr(slow, f) for f in slow.__struct_fields__}, "network_bandwidth": 2e9})
    one_node = plan(with_(small_inputs, hardware=slow, gpus=2, gpus_per_node=2))
    split = plan(with_(small_inputs, hardware=slow, gpus=2, gpus_per_node=1))
    assert split.ranked[0].cross_node_pairs > 0 and one_node.ranked[0].cross_node_pairs == 0
    assert split.ranked[0].cluster_rate < one_node.ranked[0].cluster_rate
    assert split.ranked[0].prediction.transfer_share > one_node.ranked[0].prediction.transfer_share


def test_a_model_too_big_for_the_cluster_is_named(small_inputs: PlanInputs) -> None:
    with pytest.raises(PlanError, match="llama-3-70b does not fit.*2 x h100"):
        plan(with_(small_inputs, model=load_model_spec("llama-3-70b"), gpus=2, gpus_per_node=2))


def test_impossible_slos_are_named(small_inputs: PlanInputs) -> None:
    with pytest.raises(PlanError, match="no configuration meets TTFT <= 0.1 ms"):
        plan(with_(small_inputs, slo=SLO(1e-4, 1e-4, 0.9)))


def test_bad_inputs() -> None:
    with pytest.raises(PlanError, match="at least one GPU"):
        PlanInputs(model=None, hardware=None, gpus=0, gpus_per_node=8, workload=None, slo=SLO(1, 1))  # type: ignore[arg-type]
