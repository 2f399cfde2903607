"""The headline experiment: DistServe's claim (disaggregation raises goodput under a tight TPOT SLO)
reproduced on our own stack, on this machine's two cores, one core per vLLM server in every setup.

  (a) colocated-rr  two plain vLLM servers behind ``vllm-pd proxy --policy round-robin``: every request
                    is prefilled and decoded on one server, so long prefills stall running decodes
  (b) pd-goodput    1 prefill + 1 decode server with PDConnector behind the goodput proxy
  (c) pd-rr         the same servers behind a round-robin proxy (always remote prefill)

The model is a random Llama big enough that a 2048-token prefill takes ~0.7 s on one core and a decode
step 10-20 ms. The workload is chatbot-like and mixed: ShareGPT-like turns plus long-context turns
(see ``write_workload``). One command:

    flock /tmp/vllm-pd-servers.lock .venv/bin/python benchmarks/headline.py --out results/headline

It writes ``OUT/{colocated-rr,pd-goodput,pd-rr}/`` (bench runs), ``OUT/combined/`` (the merged report:
attainment.png, ttft_cdf.png, tpot_cdf.png, summary.json) and ``OUT/headline.json``.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from vllm_pd.bench.summary import summarize_records
from vllm_pd.bench.writer import read_records
from vllm_pd.latency import decode_step_time, load_profile, prefill_time
from vllm_pd.launcher import Deployment, ServerSpec, free_port
from vllm_pd.launcher.command import cpu_dtype_for_float32_checkpoints
from vllm_pd.launcher.topology import CPU_DEFAULT_ARGS, Topology
from vllm_pd.slo import SLO
from vllm_pd.testing.tiny_model import TinyModelSpec, make_tiny_model
from vllm_pd.workloads import load_workload

MODEL = TinyModelSpec(layers=8, hidden=512, heads=8, kv_heads=8, head_dim=64, intermediate=1536,
                      max_position=4096)
SERVER_ARGS = CPU_DEFAULT_ARGS + ("--max-model-len", "4096")
LONG_SHARE = 0.3  # share of long-context turns in the mix
LONG_INPUT = (1024, 2048)  # their prompt lengths, uniform (tokens)
MAX_OUTPUT = 128  # outputs capped so one rate's requests drain in seconds, not minutes
TTFT_FACTOR, TPOT_FACTOR = 3.0, 2.5  # the SLO rule: multiples of the profiled idle latencies
SWEEP_TTFT, SWEEP_TPOT = (1.5, 3.0, 6.0), (2.0, 2.5, 3.5, 5.0)  # other multiples, re-judged from the same runs
VLLM_PD = [sys.executable, "-m", "vllm_pd.cli"]


def cli(*argv: str, log: Path | None = None) -> None:
    """Run a ``vllm-pd`` subcommand; its output goes to ``log`` (and a failure stops the experiment)."""
    with (log.open("w") if log else open("/dev/null", "w")) as sink:
        done = subprocess.run([*VLLM_PD, *argv], check=False, stdout=sink, stderr=subprocess.STDOUT)
    if done.returncode not in (0, 130):
        tail = log.read_text()[-3000:] if log else ""
        raise SystemExit(f"vllm-pd {argv[0]} failed ({done.returncode}):\n{tail}")


def build_model(out: Path) -> Path:
    model = out / "model"
    if not (model / "vllm_pd_tiny_model.json").is_file():
        make_tiny_model(model, MODEL)
    return model


def write_workload(out: Path, seed: int = 0, pool: int = 4000) -> Path:
    """A length pool (JSONL trace) the benchmark resamples with Poisson arrivals.

    70% ShareGPT-like chatbot turns (the built-in ``chatbot`` lengths) and 30% long-context turns
    (prompts of 1024-2048 tokens: pasted documents or long histories), outputs from the chatbot
    distribution capped at 128 tokens.
    """
    rng = np.random.default_rng(seed)
    chat = load_workload("chatbot", max_model_len=int(SERVER_ARGS[-1])).sample(rate=1.0, num_requests=pool, seed=seed)
    path = out / "mixed-chat.jsonl"
    with path.open("w") as f:
        for i, turn in enumerate(chat):
            long = rng.random() < LONG_SHARE
            prompt = int(rng.integers(LONG_INPUT[0], LONG_INPUT[1] + 1)) if long else turn.input_tokens
            output = min(turn.output_tokens, MAX_OUTPUT)
            f.write(json.dumps({"arrival_s": float(i), "input_tokens": prompt, "output_tokens": output}) + "\n")
    return path


def proxy_spec(name: str, flags: list[str]) -> ServerSpec:
    port = free_port()
    argv = (*VLLM_PD, "proxy", "--port", str(port), "--log-level", "warning", *flags)
    return ServerSpec(name=name, role="proxy", port=port, command=tuple(argv))


def bench(args: argparse.Namespace, name: str, url: str, workload: Path) -> Path:
    run = args.out / name
    if (run / "summary.json").is_file() and not args.rerun:
        print(f"{name}: kept the existing run in {run} (--rerun to measure again)", flush=True)
        return run
    if run.exists():
        for child in run.iterdir():
            child.unlink()
    print(f"{name}: measuring at {args.rates} req/s, {args.duration:g} s each", flush=True)
    cli("bench", "--compare", f"{name}={url}", "--workload", str(workload), "--rates", args.rates,
        "--duration", str(args.duration), "--ttft-slo", str(args.ttft_slo), "--tpot-slo", str(args.tpot_slo),
        "--attainment", str(args.attainment), "--stop-below", str(args.stop_below), "--seed", str(args.seed),
        "--out", str(run), log=args.out / f"{name}.bench.log")
    return run


def idle_latencies(profile_path: Path) -> tuple[float, float]:
    """The profiled idle prefill of the longest prompt and idle decode step of one request holding it (s)."""
    profile = load_profile(profile_path)
    longest = LONG_INPUT[1]
    return prefill_time(profile.prefill, [longest]), decode_step_time(profile.decode, 1, longest)


def profile_and_slos(args: argparse.Namespace, url: str, model: Path) -> None:
    """Fit the latency profile on one idle server (once), then fix any SLO not given by the rule.

    The rule ties the SLOs to this machine rather than to timings taken elsewhere: TTFT is 3x the idle
    prefill of the longest prompt in the workload, TPOT 2.5x the idle decode step of one request
    holding that prompt (TPOT-tight, as in DistServe's chatbot setting).
    """
    if not args.profile.is_file():
        print("profiling one server for the SLO rule and the goodput proxy's latency model", flush=True)
        cli("profile", "--url", url, "--out", str(args.profile), "--model-config", str(model),
            "--dtype", cpu_dtype_for_float32_checkpoints(),
            "--prompt-lengths", "64,256,1024,2048", "--batch-sizes", "1,2", "--decode-batch-sizes", "1,4,16",
            "--context-lengths", "128,1024", "--repeats", "2", log=args.out / "profile.log")
    idle_ttft, idle_tpot = idle_latencies(args.profile)
    if args.ttft_slo is None:
        args.ttft_slo = round(TTFT_FACTOR * idle_ttft, 3)
    if args.tpot_slo is None:
        args.tpot_slo = round(TPOT_FACTOR * idle_tpot, 4)
    print(f"SLOs: TTFT {args.ttft_slo} s, TPOT {args.tpot_slo} s", flush=True)


def slo_sweep(args: argparse.Namespace, runs: list[Path]) -> list[dict]:
    """Goodput of every setup under other SLOs of the rule's form, re-judged from the requests measured.

    Exact for the round-robin setups; the goodput proxy's choices were made for the run's own SLOs, so
    its numbers under other SLOs show where the measured behaviour wins, not what the proxy would do there.
    """
    idle_ttft, idle_tpot = idle_latencies(args.profile)
    records = [r for run in runs for r in read_records(run)]
    rows = []
    for ttft_x in SWEEP_TTFT:
        for tpot_x in SWEEP_TPOT:
            slo = SLO(ttft_x * idle_ttft, tpot_x * idle_tpot, args.attainment)
            summaries = summarize_records(records, slo)
            rows.append({"ttft_factor": ttft_x, "tpot_factor": tpot_x, "ttft_s": round(slo.ttft_s, 3),
                         "tpot_s": round(slo.tpot_s, 4),
                         "goodput": {e.endpoint: round(e.goodput_interp, 2) for e in summaries},
                         "above_range": {e.endpoint: e.above_range for e in summaries}})
    return rows


def print_sweep(rows: list[dict]) -> None:
    names = list(rows[0]["goodput"])
    print("| TTFT SLO s (x idle) | TPOT SLO ms (x idle) | " + " | ".join(f"{n} req/s" for n in names)
          + " | " + " | ".join(f"{n} / {names[0]}" for n in names[1:]) + " |")
    print("|---" * (2 + 2 * len(names) - 1) + "|")
    for row in rows:
        good = row["goodput"]
        cells = [f"{'>= ' if row['above_range'][n] else ''}{good[n]:.2f}" for n in names]
        ratios = [f"{good[n] / good[names[0]]:.2f}" if good[names[0]] else "-" for n in names[1:]]
        print(f"| {row['ttft_s']:.2f} ({row['ttft_factor']:g}x) | {1e3 * row['tpot_s']:.1f} ({row['tpot_factor']:g}x) | "
              + " | ".join(cells + ratios) + " |")


def colocated(args: argparse.Namespace, model: Path, workload: Path) -> Path:
    specs = [ServerSpec(name=f"single{i}", role="single", model=str(model), port=free_port(), cpus=str(i),
                        extra_args=SERVER_ARGS) for i in range(2)]
    with Deployment(specs, args.out / "logs-colocated") as servers:
        profile_and_slos(args, servers.url("single0"), model)
        flags = ["--decode", servers.url("single0"), servers.url("single1"), "--policy", "round-robin",
                 "--tokenizer", str(model)]
        with Deployment([proxy_spec("proxy-rr", flags)], args.out / "logs-colocated") as proxy:
            return bench(args, "colocated-rr", proxy.url("proxy-rr"), workload)


def disaggregated(args: argparse.Namespace, model: Path, workload: Path) -> list[Path]:
    topology = Topology(model=str(model), prefill=1, decode=1, connector=args.connector, cpus=("0", "1"),
                        server_args=SERVER_ARGS)
    runs = []
    with Deployment(topology.specs(), args.out / "logs-pd") as servers:
        profile_and_slos(args, servers.url("prefill0"), model)
        pools = ["--prefill", servers.url("prefill0"), "--decode", servers.url("decode0"),
                 "--tokenizer", str(model), "--ttft-slo", str(args.ttft_slo), "--tpot-slo", str(args.tpot_slo)]
        for name, flags in (
            ("pd-goodput", ["--policy", "goodput", "--latency-profile", str(args.profile), "--admission", args.admission]),
            ("pd-rr", ["--policy", "round-robin"]),
        ):
            if name not in args.setups:
                continue
            with Deployment([proxy_spec(f"proxy-{name}", pools + flags)], args.out / "logs-pd") as proxy:
                runs.append(bench(args, name, proxy.url(f"proxy-{name}"), workload))
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/headline"))
    parser.add_argument("--rates", default="0.5,1,2,3,4,5", help="request rates, req/s")
    parser.add_argument("--duration", type=float, default=40.0, help="seconds of arrivals per rate")
    parser.add_argument("--ttft-slo", type=float, default=None,
                        help=f"seconds; default {TTFT_FACTOR:g}x the profiled idle prefill of the longest prompt")
    parser.add_argument("--tpot-slo", type=float, default=None,
                        help=f"seconds; default {TPOT_FACTOR:g}x the profiled idle decode step")
    parser.add_argument("--profile", type=Path, default=None,
                        help="latency profile to use (default OUT/profile.yaml, fitted on first use)")
    parser.add_argument("--attainment", type=float, default=0.9)
    parser.add_argument("--stop-below", type=float, default=0.3, help="skip higher rates below this attainment")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--connector", choices=("pd", "nixl"), default="pd", help="KV connector of (b) and (c)")
    parser.add_argument("--admission", choices=("reject", "best-effort"), default="best-effort",
                        help="the goodput proxy's action when no pair is predicted to meet the SLOs")
    parser.add_argument("--setups", default="colocated-rr,pd-goodput,pd-rr", help="which setups to run")
    parser.add_argument("--rerun", action="store_true", help="measure setups that already have a run")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind, so that every server is stopped
    args.setups = args.setups.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    args.profile = args.profile or args.out / "profile.yaml"
    started = time.monotonic()
    model = build_model(args.out)
    workload = write_workload(args.out, args.seed)
    runs = []
    if "colocated-rr" in args.setups:
        runs.append(colocated(args, model, workload))
    if {"pd-goodput", "pd-rr"} & set(args.setups):
        runs += disaggregated(args, model, workload)
    combined = args.out / "combined"
    cli("bench", "report", *map(str, runs), "--out", str(combined), log=args.out / "report.txt")
    print((args.out / "report.txt").read_text())
    summary = json.loads((combined / "summary.json").read_text())
    headline = {
        "command": " ".join(sys.argv), "minutes": round((time.monotonic() - started) / 60, 1),
        "model": MODEL.__dict__, "slo": {"ttft_s": args.ttft_slo, "tpot_s": args.tpot_slo},
        "goodput": {e["endpoint"]: e["goodput_interp"] for e in summary["endpoints"]},
        "above_range": {e["endpoint"]: e["above_range"] for e in summary["endpoints"]},
        "ratios_to_first": summary["goodput_ratios"],
        "rejected_share": {e["endpoint"]: {str(r["rate"]): r["rejected_share"] for r in e["rates"]}
                           for e in summary["endpoints"]},
        "slo_sweep": slo_sweep(args, runs),
    }
    (args.out / "headline.json").write_text(json.dumps(headline, indent=2) + "\n")
    print(json.dumps({k: v for k, v in headline.items() if k != "slo_sweep"}, indent=2))
    print_sweep(headline["slo_sweep"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
