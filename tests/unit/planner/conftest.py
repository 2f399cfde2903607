"""Small, fast planner inputs: a 7B model, short fixed requests, small batches."""

from __future__ import annotations

import dataclasses

import pytest

from vllm_pd.planner.capacity import ProbeSettings
from vllm_pd.planner.hardware import load_hardware
from vllm_pd.planner.model import load_model_spec
from vllm_pd.planner.search import PlanInputs
from vllm_pd.planner.shapes import ShapeLimits
from vllm_pd.planner.sim import SLO
from vllm_pd.workloads import load_workload


@pytest.fixture
def small_inputs() -> PlanInputs:
    return PlanInputs(
        model=load_model_spec("llama-2-7b"),
        hardware=load_hardware("h100"),
        gpus=4,
        gpus_per_node=4,
        workload=load_workload("chatbot", max_model_len=2048),
        slo=SLO(0.2, 0.03, 0.9),
        limits=ShapeLimits(max_num_seqs=16, max_batched_tokens=4096),
        probe=ProbeSettings(num_requests=40, tolerance=0.1),
        max_instances=2,
        top=3,
    )


def with_(inputs: PlanInputs, **changes) -> PlanInputs:
    return dataclasses.replace(inputs, **changes)
