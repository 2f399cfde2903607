"""How long ``vllm-pd plan`` searches, in CPU seconds of one core, for clusters up to 32 GPUs / 4 nodes.

The planner is single-threaded; CPU time (``time.process_time``) is what one core spends, independent
of other load on a shared machine. Wall time is shown too.

    python benchmarks/planner_speed.py            # the table for docs/benchmarks.md
    python benchmarks/planner_speed.py --json     # machine-readable
"""

from __future__ import annotations

import argparse
import json
import time

from vllm_pd.planner.hardware import load_hardware
from vllm_pd.planner.model import load_model_spec
from vllm_pd.planner.search import PlanInputs, plan
from vllm_pd.planner.sim import SLO
from vllm_pd.workloads import load_workload

# (model, hardware, gpus, gpus per node, workload, TTFT SLO, TPOT SLO)
SCENARIOS = [
    ("llama-3-8b", "h100", 32, 8, "chatbot", 0.25, 0.1),
    ("llama-3-8b", "h100", 32, 8, "code", 0.125, 0.05),
    ("llama-3-70b", "h100", 32, 8, "chatbot", 0.5, 0.1),
    ("llama-3-70b", "h100", 32, 8, "summarization", 4.0, 0.1),
    ("mixtral-8x7b", "h200", 32, 8, "chatbot", 0.25, 0.1),
    ("opt-13b", "a100", 8, 8, "chatbot", 0.25, 0.1),
]


def run_one(model: str, hardware: str, gpus: int, per_node: int, workload: str, ttft: float, tpot: float) -> dict:
    spec = load_model_spec(model)
    inputs = PlanInputs(model=spec, hardware=load_hardware(hardware), gpus=gpus, gpus_per_node=per_node,
                        workload=load_workload(workload, max_model_len=spec.max_model_len), slo=SLO(ttft, tpot, 0.9))
    cpu, wall = time.process_time(), time.perf_counter()
    result = plan(inputs)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"model": model, "hardware": hardware, "gpus": gpus, "nodes": gpus // per_node, "workload": workload,
            "slo": f"{ttft:g}/{tpot:g}", "cpu_s": cpu, "wall_s": wall, "simulations": result.simulations,
            "best": result.best.label(), "goodput_rps": result.best.cluster_rate, "verdict": result.verdict}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [run_one(*scenario) for scenario in SCENARIOS]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| model | GPU | GPUs (nodes) | workload | SLO TTFT/TPOT s | CPU s | wall s | sims | best | goodput req/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['hardware']} | {r['gpus']} ({r['nodes']}) | {r['workload']} | {r['slo']} | "
              f"{r['cpu_s']:.1f} | {r['wall_s']:.1f} | {r['simulations']} | {r['best']} | {r['goodput_rps']:.1f} |")


if __name__ == "__main__":
    main()
