"""What a plan says: candidates ranked by cluster goodput, the colocated baseline and a verdict."""

from __future__ import annotations

from dataclasses import dataclass, field

from vllm_pd.planner.placement import InstancePlacement
from vllm_pd.planner.shapes import Shape
from vllm_pd.planner.sim import SimResult


class PlanError(ValueError):
    """The question has no answer: the model does not fit, or no configuration meets the SLOs."""


@dataclass(frozen=True)
class Prediction:
    """Simulated latencies of one segment copy at its sustainable rate."""

    rate: float
    attainment: float
    ttft_p50: float
    ttft_p90: float
    ttft_p99: float
    tpot_p50: float
    tpot_p90: float
    tpot_p99: float
    transfer_share: float

    @classmethod
    def from_result(cls, rate: float, result: SimResult, attainment: float) -> Prediction:
        p = result.percentile
        return cls(rate, attainment, p("ttft", 50), p("ttft", 90), p("ttft", 99),
                   p("tpot", 50), p("tpot", 90), p("tpot", 99), result.transfer_share())


@dataclass(frozen=True)
class Candidate:
    """One deployment: ``copies`` identical segments of ``num_prefill`` x P and ``num_decode`` x D
    instances (or ``num_colocated`` colocated instances)."""

    kind: str  # "disaggregated" or "colocated"
    cluster_rate: float  # req/s the whole deployment sustains within the SLOs
    gpus_used: int
    copies: int
    placements: tuple[InstancePlacement, ...]
    prefill: Shape | None = None
    num_prefill: int = 0
    decode: Shape | None = None
    num_decode: int = 0
    colocated: Shape | None = None
    num_colocated: int = 0
    prediction: Prediction | None = None
    cross_node_pairs: int = 0  # P-D pairs whose KV moves over the network

    @property
    def per_gpu_rate(self) -> float:
        return self.cluster_rate / self.gpus_used if self.gpus_used else 0.0

    def label(self) -> str:
        if self.kind == "colocated":
            return f"{self.num_colocated} x colocated {self.colocated}"
        return f"{self.copies} x ({self.num_prefill}P {self.prefill} : {self.num_decode}D {self.decode})"


@dataclass(frozen=True)
class Plan:
    ranked: list[Candidate]  # disaggregated, best first
    colocated: Candidate | None
    verdict: str
    gain: float  # best disaggregated / best colocated cluster goodput (inf if colocated meets nothing)
    simulations: int
    elapsed_s: float
    notes: list[str] = field(default_factory=list)

    @property
    def best(self) -> Candidate:
        options = [c for c in (*self.ranked[:1], self.colocated) if c is not None]
        return max(options, key=lambda c: (c.cluster_rate, -c.gpus_used))
