"""The analytical latency source: DistServe-form coefficients derived from a roofline of the hardware.

Prefill is compute-bound: ``b`` is the linear-layer FLOPs per token and ``c`` the causal attention
FLOPs per token pair (``sum(L^2)/2`` pairs), both over ``tp`` GPUs at the achieved FLOP/s. Decode is
memory-bound: ``a`` reads the weights once per step, ``b`` reads each context token's KV, ``c`` is the
per-token compute. Tensor-parallel all-reduces (two per layer) and pipeline hand-offs add their bytes
over NVLink (or the network when a pipeline spans nodes). Adding the compute and memory terms, rather
than taking their maximum, overestimates by at most 2x at the ridge point and is exact far from it.
"""

from __future__ import annotations

from vllm_pd.latency import DecodeCoeffs, LatencyProfile, PrefillCoeffs
from vllm_pd.planner.hardware import HardwareSpec
from vllm_pd.planner.model import ModelSpec


def roofline_profile(model: ModelSpec, hw: HardwareSpec, *, tp: int, pp: int, gpus_per_node: int) -> LatencyProfile:
    """Coefficients for one instance of ``tp`` x ``pp`` GPUs (pipeline latency, not stage time)."""
    flops = tp * hw.peak_flops * hw.compute_efficiency
    hbm = tp * hw.memory_bandwidth * hw.memory_efficiency
    activation = model.hidden_size * model.dtype_bytes  # bytes per token crossing a layer boundary
    allreduce_s, allreduce_fixed = _allreduce_cost(model, hw, tp, activation)
    handoff_s, handoff_fixed = _pipeline_cost(hw, tp, pp, gpus_per_node, activation)
    fixed = hw.step_overhead_s + allreduce_fixed + handoff_fixed
    weights_s = model.param_bytes() / hbm
    prefill = PrefillCoeffs(
        a=fixed + weights_s + model.lm_head_flops() / flops,
        b=model.linear_flops_per_token() / flops + allreduce_s + handoff_s,
        c=model.attention_flops_per_pair() / 2 / flops,
    )
    kv_shards = min(tp, model.num_kv_heads)  # past kv_heads, TP replicates KV heads instead of splitting
    decode = DecodeCoeffs(
        a=fixed + weights_s,
        b=model.kv_bytes_per_token() / (kv_shards * hw.memory_bandwidth * hw.memory_efficiency)
        + model.attention_flops_per_pair() / flops,
        c=(model.linear_flops_per_token() + model.lm_head_flops()) / flops + allreduce_s + handoff_s,
    )
    return LatencyProfile(
        prefill=prefill,
        decode=decode,
        link=hw.link(same_node=True, streams=tp * pp),
        kv_bytes_per_token=model.kv_bytes_per_token(),
        name=f"{model.name} on {hw.name} tp{tp} pp{pp}",
        tp=tp,
        pp=pp,
        source="roofline",
    )


def _allreduce_cost(model: ModelSpec, hw: HardwareSpec, tp: int, activation: int) -> tuple[float, float]:
    """(seconds per token, fixed seconds) of the two ring all-reduces per layer."""
    if tp == 1:
        return 0.0, 0.0
    per_token = 2 * model.num_layers * 2 * (tp - 1) / tp * activation / (hw.nvlink_bandwidth * hw.link_efficiency)
    return per_token, 2 * model.num_layers * hw.nvlink_latency


def _pipeline_cost(hw: HardwareSpec, tp: int, pp: int, gpus_per_node: int, activation: int) -> tuple[float, float]:
    """(seconds per token, fixed seconds) of the ``pp - 1`` stage hand-offs."""
    if pp == 1:
        return 0.0, 0.0
    same_node = tp * pp <= gpus_per_node
    link = hw.link(same_node=same_node, streams=1)
    return (pp - 1) * activation / link.bandwidth, (pp - 1) * link.latency
