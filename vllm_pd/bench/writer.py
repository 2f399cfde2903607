"""The run directory: ``run.json`` (what was run), ``requests.jsonl`` (one row per request, flushed as
each request ends, so an interrupted run keeps everything it measured) and ``summary.json``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import IO

import msgspec

from vllm_pd.bench.records import RequestRecord, decode_record, encode_record
from vllm_pd.bench.summary import EndpointSummary

RUN_FILE = "run.json"
REQUESTS_FILE = "requests.jsonl"
SUMMARY_FILE = "summary.json"


class RunInfo(msgspec.Struct):
    """What ``bench report`` needs to recompute a run's summary: SLOs, target, and how it was made."""

    ttft_slo: float
    tpot_slo: float
    attainment: float
    workload: str
    endpoints: dict[str, str]
    rates: list[float]
    arrival: str
    seed: int
    prompts: str = ""
    model: str = ""
    command: str = ""
    interrupted: bool = False
    incomplete: list[tuple[str, float]] = []  # (endpoint, rate) cut short by the interrupt


class RunSummary(msgspec.Struct):
    run: RunInfo
    endpoints: list[EndpointSummary]
    goodput_ratios: dict[str, float | None]


class RecordWriter:
    """Appends records to ``requests.jsonl``, one flushed line each."""

    def __init__(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / REQUESTS_FILE
        self._file: IO[bytes] = self.path.open("ab")

    def write(self, record: RequestRecord) -> None:
        self._file.write(encode_record(record))
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_json(path: Path, value: object) -> None:
    path.write_bytes(msgspec.json.format(msgspec.json.encode(value), indent=2) + b"\n")


def read_run_info(out_dir: Path) -> RunInfo:
    return msgspec.json.decode((out_dir / RUN_FILE).read_bytes(), type=RunInfo)


def read_records(out_dir: Path) -> Iterator[RequestRecord]:
    """Every complete row; a torn last line (killed mid-write) is skipped."""
    with (out_dir / REQUESTS_FILE).open("rb") as f:
        for line in f:
            if line.endswith(b"\n") and line.strip():
                yield decode_record(line)
