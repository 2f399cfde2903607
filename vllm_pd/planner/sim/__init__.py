"""The discrete-event simulator of prefill, KV transfer and decode; all timings from vllm_pd.latency."""

from vllm_pd.planner.sim.config import InstanceConfig
from vllm_pd.planner.sim.result import SimResult
from vllm_pd.planner.sim.router import ROUTING
from vllm_pd.planner.sim.run import (
    simulate_colocated,
    simulate_decode_only,
    simulate_disaggregated,
    simulate_prefill_only,
)
from vllm_pd.slo import SLO

__all__ = ["ROUTING", "SLO", "InstanceConfig", "SimResult", "simulate_colocated", "simulate_decode_only",
           "simulate_disaggregated", "simulate_prefill_only"]
