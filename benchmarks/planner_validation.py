"""Validate the planner's simulator against a real vLLM server on this machine.

1. Start one vLLM server (the headline experiment's model, one core) through the launcher. A model this
   size keeps the server's time in the model: with the tiny test model a decode step takes ~2 ms and
   the HTTP and streaming work around each token, which the simulator does not model, dominates.
2. ``vllm-pd profile`` it: fitted DistServe-form coefficients.
3. ``vllm-pd bench`` it at a few rates with a seeded workload, twice (the same requests, back to back):
   measured TTFT, TPOT, attainment, and how far two runs of the same server disagree. That spread is
   the floor under any prediction's error on this machine.
4. Replay exactly the measured requests (arrival times and lengths) through the simulator's colocated
   instance with the fitted profile and the server's limits; compare with each run.

Run under the shared server lock:

    flock /tmp/vllm-pd-servers.lock python benchmarks/planner_validation.py --out validation/
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from headline import MODEL

from vllm_pd.latency import load_profile
from vllm_pd.launcher import Deployment, ServerSpec, free_port
from vllm_pd.launcher.command import cpu_dtype_for_float32_checkpoints
from vllm_pd.launcher.topology import CPU_DEFAULT_ARGS
from vllm_pd.planner.sim import SLO, InstanceConfig, simulate_colocated
from vllm_pd.testing.tiny_model import make_tiny_model
from vllm_pd.workloads import RequestSpec

MAX_NUM_SEQS, MAX_BATCHED_TOKENS, MAX_MODEL_LEN = 64, 2048, 2048
RUNS = ("first", "second")  # the same requests sent twice to the same server
KV_SLOTS = 1_000_000  # 64 sequences x 2048 tokens never fill the CPU KV cache: no preemption to model


def cli(*argv: str) -> None:
    done = subprocess.run([sys.executable, "-m", "vllm_pd.cli", *argv], check=False, capture_output=True, text=True)
    print(done.stdout, done.stderr[-2000:] if done.returncode else "", sep="", flush=True)
    if done.returncode:
        raise SystemExit(f"vllm-pd {argv[0]} failed ({done.returncode})")


def compare(records: list[dict], profile_path: Path, slo: SLO) -> dict:
    ok = [r for r in records if r["outcome"] == "ok"]
    specs = [RequestSpec(r["arrival_s"], r["input_tokens"], r["output_tokens"]) for r in records]
    config = InstanceConfig(load_profile(profile_path), KV_SLOTS, MAX_NUM_SEQS, MAX_BATCHED_TOKENS)
    sim = simulate_colocated(specs, [config])
    real_met = [r["outcome"] == "ok" and r["ttft"] <= slo.ttft_s and (r.get("tpot") or 0) <= slo.tpot_s
                for r in records]
    real = {"attainment": float(np.mean(real_met)), "ttft_p50": float(np.median([r["ttft"] for r in ok])),
            "tpot_p50": float(np.median([r["tpot"] for r in ok if r.get("tpot") is not None]))}
    predicted = {"attainment": sim.attainment(slo), "ttft_p50": sim.percentile("ttft", 50),
                 "tpot_p50": sim.percentile("tpot", 50)}
    return {"requests": len(records), "real": real, "simulated": predicted,
            "attainment_error_pp": 100 * (predicted["attainment"] - real["attainment"]),
            "ttft_p50_error": predicted["ttft_p50"] / real["ttft_p50"] - 1,
            "tpot_p50_error": predicted["tpot_p50"] / real["tpot_p50"] - 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("validation"))
    parser.add_argument("--workload", default="code")
    parser.add_argument("--rates", default="4,8,12,16")
    parser.add_argument("--num-requests", type=int, default=100)
    parser.add_argument("--ttft-slo", type=float, default=0.25)
    parser.add_argument("--tpot-slo", type=float, default=0.015)
    parser.add_argument("--replay", action="store_true",
                        help="no server: compare the profile and requests already in --out with the simulator")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind, so that the server is stopped
    args.out.mkdir(parents=True, exist_ok=True)
    profile_path = args.out / "profile.yaml"
    if not args.replay:
        measure(args, profile_path)
    report(args, profile_path)


def measure(args: argparse.Namespace, profile_path: Path) -> None:
    """Profile one real server, then benchmark it at every rate."""
    model = make_tiny_model(args.out / "model", MODEL)
    spec = ServerSpec(name="server", role="single", model=str(model), port=free_port(), cpus="0",
                      extra_args=CPU_DEFAULT_ARGS + ("--max-model-len", str(MAX_MODEL_LEN), "--max-num-seqs",
                                                     str(MAX_NUM_SEQS), "--max-num-batched-tokens",
                                                     str(MAX_BATCHED_TOKENS)))
    with Deployment([spec], args.out / "logs") as deployment:
        url = deployment.url("server")
        cli("profile", "--url", url, "--out", str(profile_path), "--model-config", str(model),
            "--dtype", cpu_dtype_for_float32_checkpoints(), "--prompt-lengths", "16,64,256,512,1024", "--batch-sizes", "1,2,4,8",
            "--decode-batch-sizes", "1,2,4,8,16,32,48,64", "--context-lengths", "64,256,1024",
            "--repeats", "3")
        cli("bench", "--compare", *(f"{run}={url}" for run in RUNS), "--workload", args.workload, "--rates", args.rates,
            "--num-requests", str(args.num_requests), "--ttft-slo", str(args.ttft_slo),
            "--tpot-slo", str(args.tpot_slo), "--out", str(args.out / "bench"))


def report(args: argparse.Namespace, profile_path: Path) -> None:
    """Replay each run's measured requests through the simulator and print the errors and the run spread."""
    rows = [json.loads(line) for line in (args.out / "bench" / "requests.jsonl").read_text().splitlines()]
    slo = SLO(args.ttft_slo, args.tpot_slo, 0.9)
    runs = sorted({r["endpoint"] for r in rows}, key=lambda e: RUNS.index(e) if e in RUNS else len(RUNS))
    results: dict[str, dict] = {}
    for rate in sorted({r["rate"] for r in rows}):
        by_run = {run: compare(sorted((r for r in rows if r["rate"] == rate and r["endpoint"] == run),
                                      key=lambda r: r["index"]), profile_path, slo) for run in runs}
        results[f"{rate:g}"] = by_run
    (args.out / "validation.json").write_text(json.dumps(results, indent=2))
    print("| rate req/s | run | attainment real / sim (pp) | TTFT p50 ms real / sim (err) | TPOT p50 ms real / sim (err) |")
    print("|---|---|---|---|---|")
    for rate, by_run in results.items():
        for run, r in by_run.items():
            real, sim = r["real"], r["simulated"]
            print(f"| {rate} | {run} | {real['attainment']:.0%} / {sim['attainment']:.0%} "
                  f"({r['attainment_error_pp']:+.1f}) | {real['ttft_p50'] * 1e3:.1f} / {sim['ttft_p50'] * 1e3:.1f} "
                  f"({r['ttft_p50_error']:+.0%}) | {real['tpot_p50'] * 1e3:.2f} / {sim['tpot_p50'] * 1e3:.2f} "
                  f"({r['tpot_p50_error']:+.0%}) |")
    if len(runs) == 2:
        print("\nTwo runs of the same requests on the same server (second against first):\n")
        print("| rate req/s | attainment (pp) | TTFT p50 | TPOT p50 |")
        print("|---|---|---|---|")
        for rate, by_run in results.items():
            a, b = (by_run[run]["real"] for run in runs)
            print(f"| {rate} | {100 * (b['attainment'] - a['attainment']):+.1f} | "
                  f"{b['ttft_p50'] / a['ttft_p50'] - 1:+.0%} | {b['tpot_p50'] / a['tpot_p50'] - 1:+.0%} |")


if __name__ == "__main__":
    main()
