"""What the simulator needs to know about one instance: its latency profile and its limits."""

from __future__ import annotations

from dataclasses import dataclass

from vllm_pd.latency import LatencyProfile


@dataclass(frozen=True)
class InstanceConfig:
    """One vLLM instance of ``profile.tp`` x ``profile.pp`` GPUs."""

    profile: LatencyProfile
    kv_capacity_tokens: int  # KV slots across the instance (all pipeline stages together)
    max_num_seqs: int = 256  # vLLM --max-num-seqs
    max_batched_tokens: int = 8192  # vLLM --max-num-batched-tokens: the prefill token budget per step
    node: int = 0  # which node it sits on (decides the KV link)
    chunked_prefill: bool = True  # colocated only: mix prompt chunks into decode steps (vLLM v1); False:
    # whole prompts run in steps of their own and stall every decode (vLLM before chunked prefill, the
    # baseline DistServe measured against)

    def __post_init__(self) -> None:
        if self.kv_capacity_tokens < 1 or self.max_num_seqs < 1 or self.max_batched_tokens < 1:
            raise ValueError(f"instance limits must be positive: {self}")

    @property
    def gpus(self) -> int:
        return self.profile.tp * self.profile.pp
