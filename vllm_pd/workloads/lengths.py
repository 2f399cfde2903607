"""Where request lengths come from: a synthetic distribution, a fixed pair, or a trace's records."""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from typing import Protocol

import msgspec
import numpy as np

from vllm_pd.workloads.spec import WorkloadError


class LengthSource(Protocol):
    """Draws ``n`` (input, output) token-length pairs; draws depend only on ``rng``."""

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]: ...


class LogNormal(msgspec.Struct, frozen=True):
    """A log-normal length with the given mean (tokens), rounded and clipped to [min, max]."""

    mean: float
    sigma: float
    min: int
    max: int

    def __post_init__(self) -> None:
        if not (self.mean > 0 and self.sigma >= 0 and 1 <= self.min <= self.max):
            raise WorkloadError(f"bad length distribution {self}")

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        mu = math.log(self.mean) - self.sigma**2 / 2
        values = np.rint(rng.lognormal(mu, self.sigma, size=n))
        return np.clip(values, self.min, self.max).astype(np.int64)


class SyntheticLengths(msgspec.Struct, frozen=True):
    """A named synthetic workload from ``vllm_pd/data/workloads.yaml``: independent input and output."""

    description: str
    source: str
    input: LogNormal
    output: LogNormal

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        return self.input.draw(rng, n), self.output.draw(rng, n)


@dataclass(frozen=True)
class FixedLengths:
    """Every request has the same prompt and output length (``fixed:IN:OUT``)."""

    input_tokens: int
    output_tokens: int

    def __post_init__(self) -> None:
        if self.input_tokens < 1 or self.output_tokens < 1:
            raise WorkloadError(f"fixed workload needs positive lengths, got {self.input_tokens}:{self.output_tokens}")

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        return np.full(n, self.input_tokens, np.int64), np.full(n, self.output_tokens, np.int64)


@dataclass(frozen=True, eq=False)
class ResampledLengths:
    """Lengths drawn with replacement from recorded (input, output) pairs, e.g. a trace's."""

    inputs: np.ndarray
    outputs: np.ndarray

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        picks = rng.integers(0, len(self.inputs), size=n)
        return self.inputs[picks], self.outputs[picks]


def builtin_distributions() -> dict[str, SyntheticLengths]:
    """The synthetic workloads shipped with the package, by name."""
    raw = resources.files("vllm_pd").joinpath("data/workloads.yaml").read_bytes()
    return msgspec.yaml.decode(raw, type=dict[str, SyntheticLengths])
