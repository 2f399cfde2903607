"""The per-request row of a benchmark run: the unit everything else (summary, plots, report) reads."""

from __future__ import annotations

import enum

import msgspec


class Outcome(str, enum.Enum):
    """How a request ended, from the client's point of view."""

    OK = "ok"
    REJECTED = "rejected"  # the server shed it (429, or 503 with Retry-After): admission control
    FAILED = "failed"  # any other error: bad status, broken stream, timeout, connection refused


class RequestRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """One request as measured by the client; one JSONL line.

    Times are seconds. ``ttft`` is from send to the first generated token; ``tpot`` is the mean gap
    between tokens after the first (None with fewer than two tokens); ``e2e`` is send to last byte.
    """

    endpoint: str
    rate: float
    index: int
    arrival_s: float
    input_tokens: int
    output_tokens: int
    outcome: Outcome
    sent_at: float  # unix time, so rows from different runs line up
    e2e: float
    ttft: float | None = None
    tpot: float | None = None
    generated_tokens: int = 0
    prompt_tokens: int | None = None  # the server's count (usage), to check the prompt builder
    status: int | None = None
    error: str | None = None
    route: str | None = None  # X-PD-Route of the proxy when present
    prefill: str | None = None
    decode: str | None = None
    request_id: str | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(RequestRecord)


def encode_record(record: RequestRecord) -> bytes:
    """One JSONL line, newline included."""
    return _encoder.encode(record) + b"\n"


def decode_record(line: bytes | str) -> RequestRecord:
    return _decoder.decode(line)
