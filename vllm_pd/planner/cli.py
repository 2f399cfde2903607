"""``vllm-pd plan``: how many prefill and decode instances, of which shape, placed where, for your SLOs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vllm_pd.planner.capacity import ProbeSettings
from vllm_pd.planner.hardware import HardwareError, builtin_hardware, load_hardware
from vllm_pd.planner.model import ModelSpecError, builtin_models, load_model_spec
from vllm_pd.planner.plan import PlanError
from vllm_pd.planner.shapes import ShapeLimits
from vllm_pd.planner.sim import ROUTING, SLO
from vllm_pd.workloads import WorkloadError, load_workload


def _positive(kind: type):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def _fraction(text: str) -> float:
    value = _positive(float)(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--model", required=True, metavar="CONFIG",
        help=f"config.json, its directory, or a built-in name ({', '.join(builtin_models())})")
    add("--gpus", required=True, type=_positive(int), help="GPUs in the cluster")
    add("--gpus-per-node", type=_positive(int), default=8, help="GPUs per node (default 8)")
    add("--hardware", default="h100", metavar="NAME|FILE.yaml",
        help=f"GPU type: {', '.join(builtin_hardware())} or a YAML spec (default h100)")
    add("--workload", default="chatbot", help="chatbot, code, summarization, fixed:IN:OUT or a JSONL/CSV trace")
    add("--ttft-slo", type=_positive(float), default=0.25, metavar="S", help="time-to-first-token SLO (default 0.25)")
    add("--tpot-slo", type=_positive(float), default=0.1, metavar="S", help="time-per-output-token SLO (default 0.1)")
    add("--attainment", type=_fraction, default=0.9, help="share of requests that must meet both SLOs (default 0.9)")
    add("--latency-profile", metavar="FILE", help="fitted coefficients (vllm-pd profile output or a per-TP/PP table)")
    add("--dtype", help="override the config's dtype (float16, bfloat16, float32, fp8)")
    add("--max-model-len", type=_positive(int), help="clip requests to this context (default: the model's)")
    add("--max-num-seqs", type=_positive(int), default=256, help="vLLM --max-num-seqs per instance (default 256)")
    add("--max-num-batched-tokens", type=_positive(int), default=8192, help="vLLM token budget per step (8192)")
    add("--arrival", choices=("poisson", "gamma"), default="poisson", help="arrival process (default poisson)")
    add("--cv", type=_positive(float), default=1.0, help="gamma arrivals' coefficient of variation (burstiness)")
    add("--routing", choices=ROUTING, default="least_loaded", help="how the proxy spreads requests")
    add("--num-requests", type=_positive(int), default=600, help="measured requests per simulation (default 600)")
    add("--seed", type=int, default=0, help="workload seed (default 0)")
    add("--max-instances", type=_positive(int), default=8, help="most instances of one phase in a segment")
    add("--top", type=_positive(int), default=5, help="placements to show (default 5)")
    add("--colocated-scheduler", choices=("chunked", "prefill-first"), default="chunked",
        help="the colocated baseline: chunked prefill (vLLM today) or prefill-first steps (DistServe's baseline)")
    add("--connector", choices=("pd", "nixl"), default="pd", help="KV connector for the launch commands")
    add("--json", action="store_true", help="print the plan as JSON")
    add("--no-progress", action="store_true", help="no progress display")


def run(args: argparse.Namespace) -> int:
    from vllm_pd.latency import load_latency_table
    from vllm_pd.planner.search import PlanInputs, plan

    try:
        if args.arrival == "poisson" and args.cv != 1.0:
            raise WorkloadError("--cv applies to --arrival gamma; poisson arrivals have cv 1")
        model = load_model_spec(args.model, dtype=args.dtype, max_model_len=args.max_model_len)
        inputs = PlanInputs(
            model=model,
            hardware=load_hardware(args.hardware),
            gpus=args.gpus,
            gpus_per_node=args.gpus_per_node,
            workload=load_workload(args.workload, max_model_len=model.max_model_len),
            slo=SLO(args.ttft_slo, args.tpot_slo, args.attainment),
            table=load_latency_table(args.latency_profile) if args.latency_profile else None,
            limits=ShapeLimits(args.max_num_seqs, args.max_num_batched_tokens),
            probe=ProbeSettings(num_requests=max(20, args.num_requests), seed=args.seed, arrival=args.arrival,
                                cv=args.cv, routing=args.routing),
            max_instances=args.max_instances,
            top=args.top,
            colocated_chunked=args.colocated_scheduler == "chunked",
        )
        result = _run_with_progress(plan, inputs, show=not (args.no_progress or args.json))
    except (ModelSpecError, HardwareError, WorkloadError, PlanError, ValueError) as exc:
        print(f"vllm-pd plan: error: {exc}", file=sys.stderr)
        return 2
    return _show(args, inputs, result)


def _run_with_progress(plan, inputs, *, show: bool):
    if not show:
        return plan(inputs)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), transient=True) as progress:
        tasks: dict[str, int] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done, total=total)

        return plan(inputs, report)


def _proxy_profile(path: str | None) -> str | None:
    """The profile for the proxy's predictor: only a single-shape file (the proxy reads one profile)."""
    from vllm_pd.latency import load_profile

    if path is None:
        return None
    try:
        load_profile(path)
    except (ValueError, OSError):
        return None
    return path


def _show(args: argparse.Namespace, inputs, result) -> int:
    from rich.console import Console

    from vllm_pd.planner.commands import launch_commands
    from vllm_pd.planner.report import plan_json, print_plan

    commands = launch_commands(
        result.best, model=inputs.model.serve_as or args.model, slo=inputs.slo, connector=args.connector, presets=Path("connectors"),
        max_num_seqs=args.max_num_seqs, max_batched_tokens=args.max_num_batched_tokens,
        latency_profile=_proxy_profile(args.latency_profile),
    )
    if args.json:
        json.dump(plan_json(result, commands), sys.stdout, indent=2)
        print()
        return 0
    title = (f"{inputs.model.name} on {inputs.gpus} x {inputs.hardware.name} ({inputs.gpus_per_node}/node), "
             f"{args.workload}, TTFT <= {inputs.slo.ttft_s:g} s, TPOT <= {inputs.slo.tpot_s:g} s "
             f"for {inputs.slo.attainment:.0%}")
    print_plan(result, Console(), title, commands)
    return 0
