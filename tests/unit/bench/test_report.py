"""``bench report``: re-summarise saved runs, merge directories, survive a torn last line."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from tests.unit.bench.records_factory import REJECTED, rec
from vllm_pd.bench.records import RequestRecord
from vllm_pd.bench.report import build_report
from vllm_pd.bench.runner import BenchError
from vllm_pd.bench.writer import RUN_FILE, SUMMARY_FILE, RecordWriter, RunInfo, read_run_info, write_json


def save_run(out: Path, rows: list[RequestRecord], *, ttft_slo: float = 0.5) -> None:
    info = RunInfo(ttft_slo=ttft_slo, tpot_slo=0.05, attainment=0.9, workload="fixed:10:5",
                   endpoints={r.endpoint: "http://x" for r in rows}, rates=sorted({r.rate for r in rows}),
                   arrival="poisson", seed=0)
    with RecordWriter(out) as writer:
        for row in rows:
            writer.write(row)
    write_json(out / RUN_FILE, info)


def rows_for(endpoint: str, ttft: float) -> list[RequestRecord]:
    return [rec(ttft, endpoint=endpoint, rate=rate, index=i) for rate in (1.0, 2.0) for i in range(10)]


def test_report_recomputes_the_summary_and_draws_the_plots(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_run(run, rows_for("a", 0.1) + [rec(outcome=REJECTED, endpoint="a", rate=2.0, index=10)])

    summary = build_report([run], None)

    (endpoint,) = summary.endpoints
    assert [s.requests for s in endpoint.rates] == [10, 11]
    assert endpoint.rates[1].rejected_share == pytest.approx(1 / 11)
    assert endpoint.goodput == 2.0 and endpoint.above_range
    saved = msgspec.json.decode((run / SUMMARY_FILE).read_bytes())
    assert saved["endpoints"][0]["goodput"] == 2.0
    for png in ("attainment.png", "ttft_cdf.png", "tpot_cdf.png"):
        assert (run / png).read_bytes()[:4] == b"\x89PNG"


def test_slo_override_in_place_keeps_the_saved_run_info(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_run(run, rows_for("a", 0.3))

    tight = build_report([run], None, ttft_slo=0.2)

    assert tight.endpoints[0].goodput == 0.0 and tight.run.ttft_slo == 0.2
    assert read_run_info(run).ttft_slo == 0.5
    assert build_report([run], None).endpoints[0].goodput == 2.0


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_run(run, rows_for("a", 0.1))
    with (run / "requests.jsonl").open("ab") as f:
        f.write(b'{"endpoint": "a", "rate": 1.0, "ind')  # killed mid-write

    summary = build_report([run], None)

    assert sum(s.requests for s in summary.endpoints[0].rates) == 20


def test_merging_directories_puts_endpoints_side_by_side(tmp_path: Path) -> None:
    save_run(tmp_path / "a", rows_for("colocated", 0.1))
    save_run(tmp_path / "b", rows_for("disagg", 0.1))

    summary = build_report([tmp_path / "a", tmp_path / "b"], tmp_path / "merged")

    assert [e.endpoint for e in summary.endpoints] == ["colocated", "disagg"]
    assert summary.goodput_ratios == {"colocated": 1.0, "disagg": 1.0}
    assert set(read_run_info(tmp_path / "merged").endpoints) == {"colocated", "disagg"}


def test_merging_refuses_clashing_endpoints_and_mixed_slos(tmp_path: Path) -> None:
    save_run(tmp_path / "a", rows_for("same", 0.1))
    save_run(tmp_path / "b", rows_for("same", 0.1))
    save_run(tmp_path / "c", rows_for("other", 0.1), ttft_slo=1.0)

    with pytest.raises(BenchError, match="appears in both"):
        build_report([tmp_path / "a", tmp_path / "b"], tmp_path / "m1")
    with pytest.raises(BenchError, match="other SLOs"):
        build_report([tmp_path / "a", tmp_path / "c"], tmp_path / "m2")
    both = build_report([tmp_path / "a", tmp_path / "c"], tmp_path / "m3", 0.5, 0.05, 0.9)
    assert len(both.endpoints) == 2
