"""The latency model shared by the proxy (to score pairs) and the planner (to advance simulated time).

DistServe's form (``time_estimator.py``): prefill of a batch of prompts with lengths ``L_i`` takes
``a + b*sum(L) + c*sum(L^2)`` seconds; one decode step over a batch of ``B`` requests holding
``sum(ctx)`` context tokens takes ``a + b*sum(ctx) + c*B``. KV transfer takes a fixed latency plus
bytes over the link bandwidth. Coefficients are frozen values loaded from an explicit file; nothing
is read at import time.
"""

from __future__ import annotations

from collections.abc import Sequence
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


class FitQuality(msgspec.Struct, frozen=True):
    """How well fitted coefficients reproduce the measurements they came from."""

    prefill_mape: float  # mean absolute percentage error over the prefill samples
    decode_mape: float
    prefill_samples: int
    decode_samples: int


class LatencyProfile(msgspec.Struct, frozen=True):
    """Coefficients for one instance shape (``tp`` x ``pp`` GPUs); the file format of ``--latency-profile``.

    Times are for a batch to pass the whole pipeline; with ``pp`` stages a new batch can start every
    ``time / pp`` seconds.
    """

    prefill: PrefillCoeffs
    decode: DecodeCoeffs
    link: LinkSpec = LinkSpec(bandwidth=6e9)
    kv_bytes_per_token: int = 0
    name: str = ""
    tp: int = 1
    pp: int = 1
    source: str = ""  # "roofline", "fitted" or free text saying where the numbers come from
    fit: FitQuality | None = None


class LatencyTable(msgspec.Struct, frozen=True):
    """Profiles for several (TP, PP) shapes of one model on one GPU type."""

    profiles: list[LatencyProfile]
    model: str = ""
    hardware: str = ""

    def get(self, tp: int, pp: int) -> LatencyProfile | None:
        return next((p for p in self.profiles if p.tp == tp and p.pp == pp), None)


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


def mixed_step_time(
    prefill: PrefillCoeffs,
    decode: DecodeCoeffs,
    chunks: Sequence[tuple[int, int]],
    batch_size: int,
    context_tokens: int,
) -> float:
    """Seconds for one chunked-prefill step of a colocated instance.

    ``chunks`` holds (new tokens, tokens already cached) per prefilling request; the ``c`` term of a
    chunk is its new tokens times the context it attends to, which is ``L^2`` for a whole prompt. The
    decode part covers ``batch_size`` running requests over ``context_tokens``. One fixed cost is paid:
    the decode step's while requests decode, since that is the cost of one forward pass, measured on the
    server; a fitted prefill ``a`` also holds per-request serving overhead (HTTP, tokenizing), which a
    step does not pay again. Charging it per mixed step made the simulator's TPOT under load 38-90% high.
    """
    if not chunks:
        return decode_step_time(decode, batch_size, context_tokens)
    new = sum(n for n, _ in chunks)
    attention = sum(n * (n + cached) for n, cached in chunks)
    step = (decode.a if batch_size > 0 else prefill.a) + prefill.b * new + prefill.c * attention
    if batch_size > 0:
        step += decode.b * context_tokens + decode.c * batch_size
    return step


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
            return msgspec.yaml.decode(raw, type=LatencyProfile, strict=False)  # YAML 1.1 reads "1e-4" as text
        return msgspec.json.decode(raw, type=LatencyProfile)
    except msgspec.ValidationError as exc:
        raise ValueError(f"{path}: invalid latency profile: {exc}") from exc


def load_latency_table(path: str | Path) -> LatencyTable:
    """Read a table of per-(TP, PP) profiles, or a single profile as a table of one."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such latency profile file")
    raw = path.read_bytes()
    decode = msgspec.yaml.decode if path.suffix in (".yaml", ".yml") else msgspec.json.decode
    try:
        data = decode(raw)
    except msgspec.DecodeError as exc:
        raise ValueError(f"{path}: cannot parse: {exc}") from exc
    try:
        if isinstance(data, dict) and "profiles" in data:
            return msgspec.convert(data, LatencyTable, strict=False)
        return LatencyTable(profiles=[msgspec.convert(data, LatencyProfile, strict=False)])
    except msgspec.ValidationError as exc:
        raise ValueError(f"{path}: invalid latency profile: {exc}") from exc


def dump_profile(profile: LatencyProfile | LatencyTable, path: str | Path) -> None:
    """Write a profile (or a table of them) as YAML or JSON, by the file's suffix."""
    path = Path(path)
    data = msgspec.yaml.encode(profile) if path.suffix in (".yaml", ".yml") else msgspec.json.encode(profile)
    path.write_bytes(data)
