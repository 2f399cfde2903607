"""A workload: a source of request lengths, optionally with recorded arrival times, sampled per seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vllm_pd.workloads.arrivals import generated_arrivals, replayed_arrivals
from vllm_pd.workloads.lengths import LengthSource
from vllm_pd.workloads.spec import RequestSpec, WorkloadError

ARRIVALS = ("poisson", "gamma", "trace")


@dataclass(frozen=True, eq=False)
class Workload:
    """Request lengths plus, for traces, recorded arrivals and lengths in recorded order.

    ``max_model_len`` clips every request to fit the model: the output is kept (up to
    ``max_model_len - 1``) and the prompt truncated, as LongBench truncates long documents.
    """

    name: str
    lengths: LengthSource
    trace: tuple[RequestSpec, ...] = ()
    max_model_len: int | None = None

    def __post_init__(self) -> None:
        if self.max_model_len is not None and self.max_model_len < 2:
            raise WorkloadError(f"max_model_len must be at least 2, got {self.max_model_len}")

    def sample(
        self,
        *,
        rate: float,
        duration_s: float | None = None,
        num_requests: int | None = None,
        arrival: str = "poisson",
        cv: float = 1.0,
        seed: int = 0,
    ) -> list[RequestSpec]:
        """Requests arriving at ``rate`` per second; the same arguments always give the same list."""
        if duration_s is None and num_requests is None:
            raise WorkloadError("give duration_s or num_requests (or both)")
        if num_requests is not None and num_requests < 0:
            raise WorkloadError(f"num_requests must be >= 0, got {num_requests}")
        if duration_s is not None and not duration_s > 0:
            raise WorkloadError(f"duration_s must be positive, got {duration_s}")
        if arrival not in ARRIVALS:
            raise WorkloadError(f"unknown arrival process {arrival!r}; choose one of {', '.join(ARRIVALS)}")
        if arrival == "poisson" and cv != 1.0:
            raise WorkloadError(f"poisson arrivals have cv 1; use arrival='gamma' for cv={cv}")
        arrival_rng, length_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
        if arrival == "trace":
            if not self.trace:
                raise WorkloadError(f"workload {self.name!r} has no recorded arrivals; arrival='trace' needs a trace file")
            times = replayed_arrivals(
                np.array([r.arrival_s for r in self.trace]), rate=rate, num_requests=num_requests, duration_s=duration_s
            )
            inputs = np.array([r.input_tokens for r in self.trace[: len(times)]], dtype=np.int64)
            outputs = np.array([r.output_tokens for r in self.trace[: len(times)]], dtype=np.int64)
        else:
            times = generated_arrivals(arrival_rng, rate=rate, cv=cv, num_requests=num_requests, duration_s=duration_s)
            inputs, outputs = self.lengths.draw(length_rng, len(times))
        inputs, outputs = self._fitted(inputs, outputs)
        return [RequestSpec(float(t), int(i), int(o)) for t, i, o in zip(times, inputs, outputs)]

    def _fitted(self, inputs: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.max_model_len is None:
            return inputs, outputs
        outputs = np.minimum(outputs, self.max_model_len - 1)
        return np.minimum(inputs, self.max_model_len - outputs), outputs
