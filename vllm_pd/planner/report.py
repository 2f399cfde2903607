"""Show a plan: a rich table for people, a JSON document for machines."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table

from vllm_pd.planner.plan import Candidate, Plan


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1e3:.0f}"


def plan_table(plan: Plan, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column, justify in (("#", "right"), ("deployment", "left"), ("GPUs", "right"), ("req/s", "right"),
                            ("/GPU", "right"), ("TTFT ms p50/90", "right"), ("TPOT ms p50/90", "right"),
                            ("SLO met", "right"), ("KV xfer", "right"), ("x-node", "right")):
        table.add_column(column, justify=justify, no_wrap=column == "deployment")
    rows = [(str(i + 1), c) for i, c in enumerate(plan.ranked)]
    if plan.colocated is not None:
        rows.append(("base", plan.colocated))
    for rank, c in rows:
        p = c.prediction
        table.add_row(
            rank, c.label(), str(c.gpus_used), f"{c.cluster_rate:.2f}", f"{c.per_gpu_rate:.3f}",
            f"{_ms(p.ttft_p50)}/{_ms(p.ttft_p90)}" if p else "-", f"{_ms(p.tpot_p50)}/{_ms(p.tpot_p90)}" if p else "-",
            f"{p.attainment:.0%}" if p else "-", f"{p.transfer_share:.1%}" if p else "-", str(c.cross_node_pairs),
            style="bold" if rank == "1" else None,
        )
    return table


def print_plan(plan: Plan, console: Console, title: str, commands: list[str]) -> None:
    console.print(plan_table(plan, title))
    console.print("[dim]req/s: goodput of the whole deployment within the SLOs; KV xfer: share of TTFT moving KV; "
                  "x-node: P-D pairs whose KV crosses nodes[/dim]")
    console.print(f"[bold]verdict:[/bold] {plan.verdict}")
    best = plan.best
    console.print(f"[bold]placement of {best.label()}:[/bold]")
    for index, p in enumerate(best.placements):
        console.print(f"  {index:>3} {p.role:<9} tp{p.shape.tp} pp{p.shape.pp}  {p.describe()}")
    for note in plan.notes:
        console.print(f"[dim]{note}[/dim]")
    console.print(f"[dim]{plan.simulations} simulations in {plan.elapsed_s:.1f} s[/dim]")
    console.print("\n[bold]launch the winner:[/bold]")
    for line in commands:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def candidate_json(c: Candidate) -> dict[str, Any]:
    return {
        "kind": c.kind,
        "label": c.label(),
        "goodput_rps": c.cluster_rate,
        "per_gpu_rps": c.per_gpu_rate,
        "gpus_used": c.gpus_used,
        "copies": c.copies,
        "prefill": None if c.prefill is None else {"tp": c.prefill.tp, "pp": c.prefill.pp, "count": c.num_prefill},
        "decode": None if c.decode is None else {"tp": c.decode.tp, "pp": c.decode.pp, "count": c.num_decode},
        "colocated": None if c.colocated is None else {"tp": c.colocated.tp, "pp": c.colocated.pp,
                                                       "count": c.num_colocated},
        "cross_node_pairs": c.cross_node_pairs,
        "prediction": None if c.prediction is None else {k: _finite(v) for k, v in c.prediction.__dict__.items()},
        "placements": [
            {"role": p.role, "tp": p.shape.tp, "pp": p.shape.pp,
             "stages": [{"node": node, "gpus": list(gpus)} for node, gpus in p.stages]}
            for p in c.placements
        ],
    }


def _finite(value: float) -> float | None:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def plan_json(plan: Plan, commands: list[str]) -> dict[str, Any]:
    return {
        "verdict": plan.verdict,
        "gain_over_colocated": _finite(plan.gain),
        "ranked": [candidate_json(c) for c in plan.ranked],
        "colocated": None if plan.colocated is None else candidate_json(plan.colocated),
        "best": candidate_json(plan.best),
        "commands": commands,
        "simulations": plan.simulations,
        "elapsed_s": plan.elapsed_s,
        "notes": plan.notes,
    }
