"""Least-squares fits of the DistServe forms, non-negative, weighted so relative errors count equally."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np


@dataclass(frozen=True)
class PrefillSample:
    lengths: tuple[int, ...]  # prompt lengths in the batch
    seconds: float


@dataclass(frozen=True)
class DecodeSample:
    batch: int
    context_tokens: int  # summed over the batch
    seconds: float  # one step


@dataclass(frozen=True)
class Fit:
    coeffs: tuple[float, float, float]
    mape: float  # mean absolute percentage error over the samples

    def predict(self, features: np.ndarray) -> np.ndarray:
        return features @ np.array(self.coeffs)


def prefill_features(samples: list[PrefillSample]) -> np.ndarray:
    return np.array([[1.0, sum(s.lengths), sum(n * n for n in s.lengths)] for s in samples], dtype=float)


def decode_features(samples: list[DecodeSample]) -> np.ndarray:
    return np.array([[1.0, s.context_tokens, s.batch] for s in samples], dtype=float)


def fit_nonnegative(features: np.ndarray, seconds: np.ndarray) -> Fit:
    """Minimise relative squared error with every coefficient >= 0 (exhaustive over active sets of 3)."""
    if len(seconds) < features.shape[1]:
        raise ValueError(f"need at least {features.shape[1]} samples to fit, got {len(seconds)}")
    if (seconds <= 0).any():
        raise ValueError("measured times must be positive")
    weighted = features / seconds[:, None]
    target = np.ones(len(seconds))
    best: tuple[float, np.ndarray] | None = None
    columns = range(features.shape[1])
    for size in range(features.shape[1], 0, -1):
        for active in combinations(columns, size):
            solution, *_ = np.linalg.lstsq(weighted[:, active], target, rcond=None)
            if (solution < 0).any():
                continue
            coeffs = np.zeros(features.shape[1])
            coeffs[list(active)] = solution
            residual = float(np.sum((weighted @ coeffs - target) ** 2))
            if best is None or residual < best[0] - 1e-15:
                best = (residual, coeffs)
    assert best is not None  # a single non-negative column always fits: lstsq of positive data is positive
    coeffs = best[1]
    mape = float(np.mean(np.abs(features @ coeffs - seconds) / seconds))
    return Fit((float(coeffs[0]), float(coeffs[1]), float(coeffs[2])), mape)
