"""PNG figures of a run: attainment vs rate per endpoint (DistServe's figure), TTFT and TPOT CDFs.

CDFs are over every request sent, so rejected and failed requests keep the curve below 1 instead of
vanishing from it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # the object API: no pyplot state, no display backend

from vllm_pd.bench.records import Outcome, RequestRecord
from vllm_pd.bench.writer import RunSummary

ATTAINMENT_PNG = "attainment.png"
TTFT_PNG = "ttft_cdf.png"
TPOT_PNG = "tpot_cdf.png"


def render_plots(out: Path, summary: RunSummary, records: Sequence[RequestRecord]) -> list[Path]:
    """Write the three figures into ``out``; returns their paths."""
    if not records:
        return []
    paths = [out / ATTAINMENT_PNG, out / TTFT_PNG, out / TPOT_PNG]
    _attainment(paths[0], summary)
    _cdfs(paths[1], records, "ttft", "TTFT (s)", summary.run.ttft_slo)
    _cdfs(paths[2], records, "tpot", "TPOT (s)", summary.run.tpot_slo)
    return paths


def _attainment(path: Path, summary: RunSummary) -> None:
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for endpoint in summary.endpoints:
        rates = [s.rate for s in endpoint.rates]
        ax.plot(rates, [100 * s.attainment for s in endpoint.rates], marker="o",
                label=f"{endpoint.endpoint} (goodput {'>= ' if endpoint.above_range else ''}"
                      f"{endpoint.goodput_interp:.2f} req/s)")
    ax.axhline(100 * summary.run.attainment, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("request rate (req/s)")
    ax.set_ylabel("SLO attainment (%)")
    ax.set_ylim(0, 105)
    ax.set_title(f"{Path(summary.run.workload).stem}: TTFT <= {summary.run.ttft_slo:g} s, "
                 f"TPOT <= {summary.run.tpot_slo:g} s", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _cdfs(path: Path, records: Sequence[RequestRecord], metric: str, label: str, slo: float) -> None:
    rates = sorted({r.rate for r in records})
    endpoints = list(dict.fromkeys(r.endpoint for r in records))
    cols = min(len(rates), 4)
    rows = math.ceil(len(rates) / cols)
    fig = Figure(figsize=(4 * cols, 3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    for ax, rate in zip(axes.flat, rates):
        for endpoint in endpoints:
            group = [r for r in records if r.rate == rate and r.endpoint == endpoint]
            if group:
                xs, ys = _cdf(group, metric)
                ax.step(xs, ys, where="post", label=endpoint)
        ax.axvline(slo, color="grey", linestyle="--", linewidth=1)
        ax.set_title(f"{rate:g} req/s")
        ax.set_xlabel(label)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(rates):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("share of requests")
    axes.flat[0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _cdf(group: Sequence[RequestRecord], metric: str) -> tuple[np.ndarray, np.ndarray]:
    values = np.sort([getattr(r, metric) for r in group
                      if r.outcome is Outcome.OK and getattr(r, metric) is not None])
    return np.concatenate([[0.0], values]), np.arange(len(values) + 1) / len(group)
