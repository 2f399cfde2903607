"""One request of a workload: when it arrives and how many tokens go in and come out."""

from __future__ import annotations

import msgspec


class RequestSpec(msgspec.Struct, frozen=True):
    """A request to replay: arrival time (s from the start), prompt and output lengths in tokens."""

    arrival_s: float
    input_tokens: int
    output_tokens: int


class WorkloadError(ValueError):
    """Bad workload input: an unknown name, a malformed trace, impossible sampling arguments."""
