"""The ``vllm-pd bench`` subcommand: flags -> BenchConfig -> run -> tables and files."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from rich.console import Console

from vllm_pd.bench.config import BenchConfig, Endpoint, parse_endpoint, parse_rates
from vllm_pd.bench.display import goodput_table, rate_table
from vllm_pd.bench.plots import ATTAINMENT_PNG, TPOT_PNG, TTFT_PNG
from vllm_pd.bench.report import add_report_arguments, build_report
from vllm_pd.bench.runner import BenchError, info_slo, run_bench
from vllm_pd.bench.writer import REQUESTS_FILE, SUMMARY_FILE, RunSummary
from vllm_pd.slo import SLO
from vllm_pd.workloads import ARRIVALS


def _rates(text: str) -> tuple[float, ...]:
    try:
        return parse_rates(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--rates ")) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="base URL of the endpoint (a vllm-pd proxy or a vLLM server)")
    parser.add_argument("--compare", nargs="+", metavar="NAME=URL",
                        help="several endpoints, run back to back with the same seeded workload")
    parser.add_argument("--workload", default="chatbot",
                        help="chatbot, code, summarization, fixed:IN:OUT, or a .jsonl/.csv trace")
    parser.add_argument("--rates", type=_rates, help="request rates to test, req/s, e.g. 0.5,1,2,4")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of arrivals per rate")
    parser.add_argument("--num-requests", type=int, help="requests per rate (caps --duration)")
    parser.add_argument("--arrival", choices=ARRIVALS, default="poisson", help="arrival process")
    parser.add_argument("--cv", type=float, default=1.0, help="coefficient of variation of gamma arrivals")
    parser.add_argument("--seed", type=int, default=0, help="seed of lengths, arrivals and prompts")
    parser.add_argument("--ttft-slo", type=float, default=0.5, help="time-to-first-token SLO, seconds")
    parser.add_argument("--tpot-slo", type=float, default=0.05, help="time-per-output-token SLO, seconds")
    parser.add_argument("--attainment", type=float, default=0.9, help="share of requests that must meet both")
    parser.add_argument("--out", type=Path, help="run directory (default bench-results/<time>)")
    parser.add_argument("--request-timeout", type=float, default=300.0, help="seconds before a request fails")
    parser.add_argument("--stop-below", type=float,
                        help="stop raising the rate once attainment falls below this share")
    parser.add_argument("--model", help="model name to request (default: the endpoint's first model)")
    parser.add_argument("--tokenizer", help="tokenizer directory (default: the served model's directory)")
    parser.add_argument("--max-connections", type=int, default=1024, help="client connection pool bound")
    sub = parser.add_subparsers(dest="bench_command", metavar="report")
    report = sub.add_parser("report", help="re-summarise and re-plot saved runs (merging several)",
                            description="re-summarise and re-plot saved runs (merging several)")
    add_report_arguments(report)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    if args.url and args.compare:
        raise ValueError("give --url or --compare, not both")
    if not args.url and not args.compare:
        raise ValueError("give --url URL (or --compare NAME=URL ...)")
    if args.rates is None:
        raise ValueError("give --rates, e.g. --rates 0.5,1,2,4")
    if args.url:
        url = args.url.rstrip("/")
        try:
            endpoints = (Endpoint(urlparse(url).netloc or "endpoint", url),)
        except ValueError as exc:
            raise ValueError(f"--url: {exc}") from None
    else:
        endpoints = tuple(parse_endpoint(item) for item in args.compare)
    return BenchConfig(
        endpoints=endpoints, workload=args.workload, rates=args.rates,
        slo=SLO(ttft_s=args.ttft_slo, tpot_s=args.tpot_slo, attainment=args.attainment),
        out=args.out or Path("bench-results") / time.strftime("%Y%m%d-%H%M%S"),
        duration_s=args.duration, num_requests=args.num_requests, arrival=args.arrival, cv=args.cv,
        seed=args.seed, request_timeout_s=args.request_timeout, stop_below=args.stop_below,
        model=args.model, tokenizer=args.tokenizer, max_connections=args.max_connections,
    )


def print_summary(summary: RunSummary, out: Path, console: Console) -> None:
    slo = info_slo(summary.run)
    console.print(rate_table(summary.endpoints, slo))
    console.print(goodput_table(summary.endpoints, summary.goodput_ratios, slo))
    files = ", ".join((REQUESTS_FILE, SUMMARY_FILE, ATTAINMENT_PNG, TTFT_PNG, TPOT_PNG))
    console.print(f"wrote {out}/{{{files}}}")


def run(args: argparse.Namespace) -> int:
    console = Console() if sys.stdout.isatty() else Console(width=160)  # logs get the whole table
    try:
        if args.bench_command == "report":
            out = args.out or args.dirs[0]
            summary = build_report(args.dirs, args.out, args.ttft_slo, args.tpot_slo, args.attainment)
        else:
            config = config_from_args(args)
            out = config.out
            summary = run_bench(config, command=shlex.join(["vllm-pd", *sys.argv[1:]]))
    except (ValueError, BenchError) as exc:
        print(f"vllm-pd bench: error: {exc}", file=sys.stderr)
        return 2
    print_summary(summary, out, console)
    return 130 if summary.run.interrupted and args.bench_command != "report" else 0
