"""Arrival processes: Poisson, gamma (bursty when cv > 1) and recorded trace times.

Gaps are drawn at unit rate and divided by the rate, so for one seed the same requests arrive in the
same order at every rate, only compressed or stretched in time (common random numbers: a rate search
compares like with like).
"""

from __future__ import annotations

import numpy as np

from vllm_pd.workloads.spec import WorkloadError

_CHUNK = 4096


def unit_gaps(rng: np.random.Generator, n: int, cv: float) -> np.ndarray:
    """``n`` inter-arrival gaps of a renewal process with mean 1 and coefficient of variation ``cv``."""
    if cv == 1.0:
        return rng.exponential(1.0, size=n)
    shape = 1.0 / (cv * cv)
    return rng.gamma(shape, 1.0 / shape, size=n)


def generated_arrivals(
    rng: np.random.Generator, *, rate: float, cv: float, num_requests: int | None, duration_s: float | None
) -> np.ndarray:
    """Arrival times (s) starting at 0, until ``num_requests`` or ``duration_s``, whichever comes first."""
    if not rate > 0 or not np.isfinite(rate):
        raise WorkloadError(f"rate must be a positive number of requests/s, got {rate}")
    if not cv > 0:
        raise WorkloadError(f"cv must be positive, got {cv}")
    limit = num_requests if num_requests is not None else np.inf
    times: list[np.ndarray] = []
    start, count = 0.0, 0
    while count < limit:
        size = int(min(_CHUNK, limit - count))
        gaps = unit_gaps(rng, size, cv) / rate
        chunk = start + np.concatenate(([0.0], np.cumsum(gaps[1:]))) if count == 0 else start + np.cumsum(gaps)
        if duration_s is not None and chunk[-1] >= duration_s:
            times.append(chunk[chunk < duration_s])
            break
        times.append(chunk)
        start, count = chunk[-1], count + size
    return np.concatenate(times) if times else np.empty(0)


def replayed_arrivals(
    recorded: np.ndarray, *, rate: float, num_requests: int | None, duration_s: float | None
) -> np.ndarray:
    """A trace's arrival pattern rescaled in time so that its mean rate is ``rate``."""
    if not rate > 0 or not np.isfinite(rate):
        raise WorkloadError(f"rate must be a positive number of requests/s, got {rate}")
    times = np.asarray(recorded, dtype=float)
    span = times[-1] - times[0]
    if len(times) > 1 and span > 0:
        times = (times - times[0]) * ((len(times) - 1) / span) / rate
    else:
        times = np.arange(len(times)) / rate
    if num_requests is not None:
        times = times[:num_requests]
    if duration_s is not None:
        times = times[times < duration_s]
    return times
