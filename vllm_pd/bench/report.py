"""``vllm-pd bench report DIR [DIR ...]``: re-summarise and re-plot saved runs, optionally merged.

Merging directories puts their endpoints side by side (the headline experiment runs each setup into
its own directory). SLO flags override the saved ones, to ask "what if the SLO were tighter".
"""

from __future__ import annotations

import argparse
from pathlib import Path

import msgspec

from vllm_pd.bench.records import RequestRecord
from vllm_pd.bench.runner import BenchError, finish_run
from vllm_pd.bench.writer import REQUESTS_FILE, RUN_FILE, RunInfo, RunSummary, read_records, read_run_info
from vllm_pd.slo import SLO


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="run directories of `vllm-pd bench`")
    parser.add_argument("--out", type=Path, help="where to write the merged report (required with several DIRs)")
    parser.add_argument("--ttft-slo", type=float, help="override the saved TTFT SLO (seconds)")
    parser.add_argument("--tpot-slo", type=float, help="override the saved TPOT SLO (seconds)")
    parser.add_argument("--attainment", type=float, help="override the saved attainment target (0-1]")


def build_report(dirs: list[Path], out: Path | None, ttft_slo: float | None = None,
                 tpot_slo: float | None = None, attainment: float | None = None) -> RunSummary:
    """Read ``dirs``, merge, re-summarise with the saved (or overridden) SLOs, write into ``out``."""
    if len(dirs) > 1 and out is None:
        raise BenchError("--out DIR is required when merging several run directories")
    infos, records = _load(dirs)
    base = infos[0]
    for other, path in zip(infos[1:], dirs[1:]):
        if (other.ttft_slo, other.tpot_slo, other.attainment) != (base.ttft_slo, base.tpot_slo, base.attainment) \
                and None in (ttft_slo, tpot_slo, attainment):
            raise BenchError(f"{path} was run with other SLOs than {dirs[0]}; give --ttft-slo, --tpot-slo "
                             "and --attainment to compare them under one SLO")
    try:
        slo = SLO(ttft_s=base.ttft_slo if ttft_slo is None else ttft_slo,
                  tpot_s=base.tpot_slo if tpot_slo is None else tpot_slo,
                  attainment=base.attainment if attainment is None else attainment)
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    merged = msgspec.structs.replace(
        base, ttft_slo=slo.ttft_s, tpot_slo=slo.tpot_s, attainment=slo.attainment,
        endpoints={k: v for info in infos for k, v in info.endpoints.items()},
        rates=sorted({r for info in infos for r in info.rates}),
        interrupted=any(i.interrupted for i in infos),
        incomplete=[key for info in infos for key in info.incomplete],
        command=" ; ".join(i.command for i in infos if i.command),
    )
    # In place, run.json keeps the SLOs the run was made with; summary.json records those used now.
    return finish_run(out or dirs[0], merged, records, write_info=out is not None)


def _load(dirs: list[Path]) -> tuple[list[RunInfo], list[RequestRecord]]:
    infos: list[RunInfo] = []
    records: list[RequestRecord] = []
    owner: dict[str, Path] = {}
    for path in dirs:
        if not (path / RUN_FILE).is_file() or not (path / REQUESTS_FILE).is_file():
            raise BenchError(f"{path} is not a bench run directory (needs {RUN_FILE} and {REQUESTS_FILE})")
        try:
            infos.append(read_run_info(path))
            rows = list(read_records(path))
        except msgspec.DecodeError as exc:
            raise BenchError(f"{path}: unreadable run files: {exc}") from None
        for name in {r.endpoint for r in rows}:
            if owner.setdefault(name, path) != path:
                raise BenchError(f"endpoint {name!r} appears in both {owner[name]} and {path}; "
                                 "rename one with --compare NAME=URL when running")
        records.extend(rows)
    return infos, records
