"""Workloads: lengths match the published statistics, sampling is seeded, traces parse, bad input is named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vllm_pd.workloads import RequestSpec, WorkloadError, load_workload, workload_names


def _arrays(requests: list[RequestSpec]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.array([r.arrival_s for r in requests]),
        np.array([r.input_tokens for r in requests]),
        np.array([r.output_tokens for r in requests]),
    )


@pytest.mark.parametrize(
    ("name", "mean_in", "mean_out"),
    [("chatbot", 161.31, 337.99), ("code", 150, 64), ("summarization", 8700, 320)],
)
def test_builtin_means_match_the_stated_statistics(name: str, mean_in: float, mean_out: float) -> None:
    _, inputs, outputs = _arrays(load_workload(name).sample(rate=1.0, num_requests=20000, seed=7))
    assert inputs.mean() == pytest.approx(mean_in, rel=0.05)
    assert outputs.mean() == pytest.approx(mean_out, rel=0.05)
    assert inputs.min() >= 1 and outputs.min() >= 1


def test_every_builtin_states_its_source() -> None:
    from vllm_pd.workloads.lengths import builtin_distributions

    assert set(workload_names()) == {"chatbot", "code", "summarization"}
    for dist in builtin_distributions().values():
        assert dist.source.strip() and dist.description.strip()


def test_same_seed_same_requests_other_seed_differs() -> None:
    workload = load_workload("chatbot")
    first = workload.sample(rate=3.0, num_requests=200, seed=11)
    assert first == workload.sample(rate=3.0, num_requests=200, seed=11)
    assert first != workload.sample(rate=3.0, num_requests=200, seed=12)


def test_poisson_rate_and_exponential_gaps() -> None:
    times, _, _ = _arrays(load_workload("fixed:10:10").sample(rate=4.0, num_requests=40000, seed=0))
    gaps = np.diff(times)
    assert times[0] == 0.0
    assert 1 / gaps.mean() == pytest.approx(4.0, rel=0.02)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.03)


def test_gamma_arrivals_have_the_requested_burstiness() -> None:
    times, _, _ = _arrays(load_workload("code").sample(rate=2.0, num_requests=40000, arrival="gamma", cv=3.0, seed=0))
    gaps = np.diff(times)
    assert 1 / gaps.mean() == pytest.approx(2.0, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(3.0, rel=0.08)


def test_rate_rescales_time_but_keeps_the_lengths() -> None:
    workload = load_workload("chatbot")
    slow = workload.sample(rate=1.0, num_requests=100, seed=5)
    fast = workload.sample(rate=10.0, num_requests=100, seed=5)
    assert [(r.input_tokens, r.output_tokens) for r in slow] == [(r.input_tokens, r.output_tokens) for r in fast]
    np.testing.assert_allclose(_arrays(slow)[0], 10 * _arrays(fast)[0])


def test_duration_bounds_the_arrivals() -> None:
    times, _, _ = _arrays(load_workload("chatbot").sample(rate=50.0, duration_s=30.0, seed=2))
    assert times.max() < 30.0
    assert len(times) == pytest.approx(1500, rel=0.1)
    both = load_workload("chatbot").sample(rate=50.0, duration_s=30.0, num_requests=10, seed=2)
    assert len(both) == 10


def test_max_model_len_keeps_the_output_and_truncates_the_prompt() -> None:
    requests = load_workload("summarization", max_model_len=2048).sample(rate=1.0, num_requests=500, seed=0)
    _, inputs, outputs = _arrays(requests)
    assert (inputs + outputs <= 2048).all()
    unclipped = load_workload("summarization").sample(rate=1.0, num_requests=500, seed=0)
    assert outputs.tolist() == [r.output_tokens for r in unclipped]


def test_fixed_workload() -> None:
    requests = load_workload("fixed:512:64").sample(rate=1.0, num_requests=5)
    assert {(r.input_tokens, r.output_tokens) for r in requests} == {(512, 64)}


def test_jsonl_trace_replays_in_order_at_the_requested_rate(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    rows = [{"arrival_s": 100 + 2 * i, "input_tokens": 10 + i, "output_tokens": 5} for i in range(5)]
    path.write_text("\n".join(json.dumps(r) for r in reversed(rows)) + "\n")
    requests = load_workload(str(path)).sample(rate=1.0, num_requests=10, arrival="trace")
    assert [r.input_tokens for r in requests] == [10, 11, 12, 13, 14]
    assert [r.arrival_s for r in requests] == [0.0, 1.0, 2.0, 3.0, 4.0]
    resampled = load_workload(str(path)).sample(rate=1.0, num_requests=50, seed=1)
    assert {r.input_tokens for r in resampled} <= {10, 11, 12, 13, 14}


def test_azure_csv_trace(tmp_path: Path) -> None:
    path = tmp_path / "AzureLLMInferenceTrace_conv.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:50.9951690,396,109\n"
        "2023-11-16 18:15:51.4958460,879,47\n"
    )
    workload = load_workload(str(path))
    assert [(r.input_tokens, r.output_tokens) for r in workload.trace] == [(374, 44), (396, 109), (879, 47)]
    assert workload.trace[1].arrival_s == pytest.approx(4.314579, abs=1e-6)


def test_our_csv_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("arrival_s,input_tokens,output_tokens\n0.5,7,3\n0.0,9,2\n")
    assert load_workload(str(path)).trace == (RequestSpec(0.0, 9, 2), RequestSpec(0.5, 7, 3))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a,b,c\n1,2,3\n", "lacks a column for arrival_s"),
        ("arrival_s,input_tokens,output_tokens\n0,zero,3\n", ":2: bad row"),
        ("arrival_s,input_tokens,output_tokens\n0,0,3\n", "input_tokens >= 1"),
        ("arrival_s,input_tokens,output_tokens\n", "no requests"),
    ],
)
def test_bad_csv_names_the_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(WorkloadError, match=message):
        load_workload(str(path))


def test_bad_jsonl_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"arrival_s": 0, "input_tokens": 3, "output_tokens": 1}\n{"arrival_s": 1}\n')
    with pytest.raises(WorkloadError, match=r"bad.jsonl:2"):
        load_workload(str(path))


@pytest.mark.parametrize(
    ("name", "message"),
    [("chat", "unknown workload 'chat'"), ("fixed:1", "expected fixed:IN:OUT"), ("fixed:0:4", "positive"),
     ("missing.jsonl", "no such trace file")],
)
def test_bad_names(name: str, message: str) -> None:
    with pytest.raises(WorkloadError, match=message):
        load_workload(name)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 1.0}, "duration_s or num_requests"),
        ({"rate": 0.0, "num_requests": 3}, "rate must be"),
        ({"rate": 1.0, "num_requests": 3, "arrival": "uniform"}, "unknown arrival"),
        ({"rate": 1.0, "num_requests": 3, "cv": 2.0}, "gamma"),
        ({"rate": 1.0, "num_requests": 3, "arrival": "gamma", "cv": 0.0}, "cv must be positive"),
        ({"rate": 1.0, "num_requests": 3, "arrival": "trace"}, "needs a trace file"),
    ],
)
def test_bad_sampling_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(WorkloadError, match=message):
        load_workload("chatbot").sample(**kwargs)
