"""Read request traces: JSONL of RequestSpec fields, or CSV with our columns or the Azure LLM trace's.

JSONL: one object per line with ``arrival_s``, ``input_tokens``, ``output_tokens``.
CSV: a header row naming ``arrival_s,input_tokens,output_tokens`` or, as in the Azure LLM inference
traces (AzurePublicDataset), ``TIMESTAMP,ContextTokens,GeneratedTokens``; timestamps may be seconds or
ISO date-times. Arrivals are made relative to the earliest request and sorted.
"""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path

import msgspec
import numpy as np

from vllm_pd.workloads.spec import RequestSpec, WorkloadError

_COLUMNS = {
    "arrival_s": ("arrival_s", "timestamp"),
    "input_tokens": ("input_tokens", "contexttokens"),
    "output_tokens": ("output_tokens", "generatedtokens"),
}


def read_trace(path: Path) -> list[RequestSpec]:
    """All requests of a trace file, sorted by arrival, arrivals relative to the first."""
    if not path.is_file():
        raise WorkloadError(f"{path}: no such trace file")
    rows = _read_jsonl(path) if path.suffix == ".jsonl" else _read_csv(path)
    if not rows:
        raise WorkloadError(f"{path}: trace holds no requests")
    rows.sort(key=lambda r: r.arrival_s)
    start = rows[0].arrival_s
    return [RequestSpec(r.arrival_s - start, r.input_tokens, r.output_tokens) for r in rows]


def _read_jsonl(path: Path) -> list[RequestSpec]:
    decoder = msgspec.json.Decoder(RequestSpec)
    rows = []
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(_checked(decoder.decode(line), path, number))
        except msgspec.DecodeError as exc:
            raise WorkloadError(f"{path}:{number}: {exc}") from exc
    return rows


def _read_csv(path: Path) -> list[RequestSpec]:
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise WorkloadError(f"{path}: empty CSV")
        index = _column_index(header, path)
        rows = []
        for number, record in enumerate(reader, start=2):
            if not record:
                continue
            try:
                spec = RequestSpec(
                    arrival_s=_seconds(record[index["arrival_s"]]),
                    input_tokens=int(record[index["input_tokens"]]),
                    output_tokens=int(record[index["output_tokens"]]),
                )
            except (ValueError, IndexError) as exc:
                raise WorkloadError(f"{path}:{number}: bad row {record}: {exc}") from exc
            rows.append(_checked(spec, path, number))
    return rows


def _column_index(header: list[str], path: Path) -> dict[str, int]:
    names = [h.strip().lower() for h in header]
    index = {}
    for field, accepted in _COLUMNS.items():
        found = [names.index(a) for a in accepted if a in names]
        if not found:
            raise WorkloadError(f"{path}: CSV header {header} lacks a column for {field} (one of {accepted})")
        index[field] = found[0]
    return index


def _seconds(text: str) -> float:
    """A timestamp as seconds: a number, or an ISO date-time (Azure writes 7 fractional digits)."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    head, dot, fraction = text.partition(".")
    if dot:
        text = f"{head}.{fraction[:6]}"
    return datetime.fromisoformat(text).timestamp()


def _checked(spec: RequestSpec, path: Path, number: int) -> RequestSpec:
    if spec.input_tokens < 1 or spec.output_tokens < 1 or not np.isfinite(spec.arrival_s):
        raise WorkloadError(f"{path}:{number}: need input_tokens >= 1, output_tokens >= 1 and a finite arrival")
    return spec
