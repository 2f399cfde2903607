"""Throughput ceilings (req/s) of one instance: the rates past which its queue grows without bound.

A finite simulation cannot see instability that only shows after its horizon: a batch that has
room for a while absorbs an overload for that while. So no rate above the ceiling passes, whatever
the simulated window says. Ceilings use the workload's mean lengths and the busiest steady batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from vllm_pd.latency import decode_step_time
from vllm_pd.planner.sim import InstanceConfig
from vllm_pd.workloads import RequestSpec


@dataclass(frozen=True)
class LoadStats:
    mean_input: float
    mean_input_sq: float
    mean_output: float

    @classmethod
    def of(cls, requests: list[RequestSpec]) -> LoadStats:
        n = len(requests)
        return cls(
            mean_input=sum(r.input_tokens for r in requests) / n,
            mean_input_sq=sum(r.input_tokens**2 for r in requests) / n,
            mean_output=sum(r.output_tokens for r in requests) / n,
        )


def prefill_ceiling(config: InstanceConfig, stats: LoadStats) -> float:
    """Requests/s when every batch is full to the token budget."""
    p = config.profile.prefill
    per_batch = max(1.0, config.max_batched_tokens / stats.mean_input)
    batch_s = p.a + per_batch * (p.b * stats.mean_input + p.c * stats.mean_input_sq)
    return config.profile.pp * per_batch / batch_s


def _full_batch(config: InstanceConfig, stats: LoadStats) -> tuple[int, float]:
    """(requests, seconds per step) of an engine whose batch is as large as sequences and KV allow."""
    pp = config.profile.pp
    context = stats.mean_input + stats.mean_output / 2
    batch = max(1, min(config.max_num_seqs // pp, int(config.kv_capacity_tokens // pp / context)))
    return batch, decode_step_time(config.profile.decode, batch, int(batch * context))


def decode_ceiling(config: InstanceConfig, stats: LoadStats) -> float:
    """Requests/s when every engine steps a full batch."""
    batch, step = _full_batch(config, stats)
    return config.profile.pp * batch / step / stats.mean_output


def colocated_ceiling(config: InstanceConfig, stats: LoadStats) -> float:
    """Requests/s when full decode batches share every step with prompt chunks."""
    p = config.profile.prefill
    batch, step = _full_batch(config, stats)
    per_request_s = p.b * stats.mean_input + p.c * stats.mean_input_sq + stats.mean_output * step / batch
    return config.profile.pp / per_request_s
