"""What a person watching the run sees: live progress per rate, then tables of the summaries."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from vllm_pd.bench.records import RequestRecord
from vllm_pd.bench.summary import EndpointSummary, Percentiles, RateSummary, meets_slo
from vllm_pd.slo import SLO


class LiveProgress:
    """A progress bar per (endpoint, rate) with running counts of outcomes and attainment so far."""

    def __init__(self, console: Console, slo: SLO) -> None:
        self._console = console
        self._slo = slo
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("sent {task.fields[sent]}  ok {task.fields[ok]}  rejected {task.fields[rejected]}"
                       "  failed {task.fields[failed]}  attained {task.fields[attained]}"),
            TimeElapsedColumn(), console=console, transient=False,
        )
        self._task: TaskID | None = None
        self._counts: dict[str, int] = {}

    def __enter__(self) -> LiveProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start_rate(self, endpoint: str, rate: float, total: int) -> None:
        self._counts = dict(sent=0, ok=0, rejected=0, failed=0, attained=0)
        self._task = self._progress.add_task(f"{endpoint} @ {rate:g} req/s", total=total, **self._counts)

    def sent(self) -> None:
        self._bump("sent", advance=0)

    def record(self, record: RequestRecord) -> None:
        self._counts[record.outcome.value] += 1
        if meets_slo(record, self._slo):
            self._counts["attained"] += 1
        self._bump(None, advance=1)

    def _bump(self, key: str | None, *, advance: int) -> None:
        if key:
            self._counts[key] += 1
        if self._task is not None:
            self._progress.update(self._task, advance=advance, **self._counts)

    def note(self, text: str) -> None:
        self._console.print(text)


def _ms(p: Percentiles | None, attr: str) -> str:
    return "-" if p is None else f"{getattr(p, attr) * 1000:.0f}"


def rate_table(summaries: Sequence[EndpointSummary], slo: SLO) -> Table:
    table = Table(title=f"per rate (TTFT SLO {slo.ttft_s:g} s, TPOT SLO {slo.tpot_s:g} s; latencies in ms)")
    for col in ("endpoint", "rate", "n", "attain", "goodput/s", "rejected", "failed",
                "TTFT p50", "TTFT p90", "TPOT p50", "TPOT p90", "e2e p50"):
        table.add_column(col, justify="left" if col == "endpoint" else "right")
    for endpoint in summaries:
        for s in endpoint.rates:
            table.add_row(*_rate_cells(s))
    return table


def _rate_cells(s: RateSummary) -> list[str]:
    return [
        s.endpoint + (" (interrupted)" if s.interrupted else ""), f"{s.rate:g}", str(s.requests),
        f"{s.attainment:.1%}", f"{s.goodput_rps:.2f}", f"{s.rejected_share:.1%}", f"{s.failed_share:.1%}",
        _ms(s.ttft, "p50"), _ms(s.ttft, "p90"), _ms(s.tpot, "p50"), _ms(s.tpot, "p90"), _ms(s.e2e, "p50"),
    ]


def goodput_table(summaries: Sequence[EndpointSummary], ratios: dict[str, float | None], slo: SLO) -> Table:
    table = Table(title=f"goodput: highest rate with >= {slo.attainment:.0%} attainment")
    for col in ("endpoint", "goodput (tested rate)", "goodput (interpolated)", "ratio to first"):
        table.add_column(col, justify="left" if col == "endpoint" else "right")
    for s in summaries:
        bound = ">= " if s.above_range else ""
        ratio = ratios.get(s.endpoint)
        table.add_row(s.endpoint, f"{bound}{s.goodput:g}", f"{bound}{s.goodput_interp:.2f}",
                      "-" if ratio is None else f"{ratio:.2f}x")
    return table

