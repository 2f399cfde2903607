"""What a simulation reports: per-request TTFT and TPOT, and the SLO attainment they give."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vllm_pd.planner.sim.request import SimRequest
from vllm_pd.slo import SLO


@dataclass(frozen=True, eq=False)
class SimResult:
    """Per-request arrays (s); ``nan`` for requests the run never finished (it gave up early)."""

    ttft: np.ndarray
    tpot: np.ndarray
    transfer: np.ndarray  # KV transfer time of each request (0 when colocated)
    queue: np.ndarray  # arrival to prefill start
    duration_s: float  # first arrival to last finish
    gave_up: bool = False  # stopped once the attainment target could no longer be met

    @classmethod
    def from_requests(cls, requests: list[SimRequest], gave_up: bool) -> SimResult:
        ttft = np.array([r.first_token - r.arrival for r in requests])
        tpot = np.array([(r.finish - r.first_token) / max(1, r.output_tokens - 1) for r in requests])
        transfer = np.array([r.kv_ready - r.transfer_start if r.kv_ready == r.kv_ready else 0.0 for r in requests])
        queue = np.array([r.prefill_start - r.arrival for r in requests])
        finishes = [r.finish for r in requests if r.finish == r.finish]
        duration = (max(finishes) - requests[0].arrival) if finishes else 0.0
        return cls(ttft, tpot, transfer, queue, duration, gave_up)

    def met(self, slo: SLO) -> np.ndarray:
        """Which requests met both SLOs (unfinished ones did not)."""
        with np.errstate(invalid="ignore"):
            return (self.ttft <= slo.ttft_s) & (self.tpot <= slo.tpot_s)

    def attainment(self, slo: SLO) -> float:
        return float(self.met(slo).mean()) if len(self.ttft) else 1.0

    def passes(self, slo: SLO) -> bool:
        return not self.gave_up and self.attainment(slo) >= slo.attainment - 1e-12

    def percentile(self, metric: str, q: float) -> float:
        values = getattr(self, metric)
        return float(np.nanpercentile(values, q)) if np.isfinite(values).any() else float("nan")

    def transfer_share(self) -> float:
        """Mean share of TTFT spent moving KV."""
        with np.errstate(invalid="ignore", divide="ignore"):
            share = self.transfer / self.ttft
        return float(np.nanmean(share)) if np.isfinite(share).any() else 0.0
