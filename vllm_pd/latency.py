"""The latency model shared by the proxy (to score pairs) and the planner (to advance simulated time).

DistServe's form (``time_estimator.py``): prefill of a batch of prompts with lengths ``L_i`` takes
``a + b*sum(L) + c*sum(L^2)`` seconds; one decode step over a batch of ``B`` requests holding
``sum(ctx)`` context tokens takes ``a + b*sum(ctx) + c*B``. KV transfer takes a fixed latency plus
bytes over the link bandwidth. Coefficients are frozen values loaded from an explicit file; nothing
is read at import time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec


class PrefillCoeffs(msgspec.Struct, frozen=True):
    """Prefill time = a + b*sum(L) + c*sum(L^2), in seconds."""

    a: float
    b: float
    c: float = 0.0


class DecodeCoeffs(msgspec.Struct, frozen=True):
    """Decode step time = a + b*sum(ctx) + c*batch, in seconds."""

    a: float
    b: float
    c: float = 0.0


class LinkSpec(msgspec.Struct, frozen=True):
    """A KV-transfer link: fixed latency (s) plus bytes / bandwidth (bytes/s)."""

    bandwidth: float
    latency: float = 0.0


class LatencyProfile(msgspec.Struct, frozen=True):
    """Coefficients for one instance shape; the file format of ``--latency-profile``."""

    prefill: PrefillCoeffs
    decode: DecodeCoeffs
    link: LinkSpec = LinkSpec(bandwidth=6e9)
    kv_bytes_per_token: int = 0
    name: str = ""


def prefill_time(coeffs: PrefillCoeffs, lengths: Sequence[int]) -> float:
    """Seconds to prefill one batch holding prompts of the given (uncached) lengths."""
    if not lengths:
        return 0.0
    total = sum(lengths)
    squares = sum(n * n for n in lengths)
    return coeffs.a + coeffs.b * total + coeffs.c * squares


def decode_step_time(coeffs: DecodeCoeffs, batch_size: int, context_tokens: int) -> float:
    """Seconds for one decode step of ``batch_size`` requests holding ``context_tokens`` in all."""
    if batch_size <= 0:
        return 0.0
    return coeffs.a + coeffs.b * context_tokens + coeffs.c * batch_size


def kv_transfer_time(link: LinkSpec, nbytes: int) -> float:
    """Seconds to move ``nbytes`` of KV cache over ``link``."""
    if nbytes <= 0:
        return 0.0
    return link.latency + nbytes / link.bandwidth


def load_profile(path: str | Path) -> LatencyProfile:
    """Read a profile from YAML or JSON; errors name the file and the bad field."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        if path.suffix in (".yaml", ".yml"):
            return msgspec.yaml.decode(raw, type=LatencyProfile)
        return msgspec.json.decode(raw, type=LatencyProfile)
    except msgspec.ValidationError as exc:
        raise ValueError(f"{path}: invalid latency profile: {exc}") from exc


def dump_profile(profile: LatencyProfile, path: str | Path) -> None:
    path = Path(path)
    data = msgspec.yaml.encode(profile) if path.suffix in (".yaml", ".yml") else msgspec.json.encode(profile)
    path.write_bytes(data)
