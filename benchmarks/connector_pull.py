"""PDConnector vs vLLM's NixlConnector: pull time, descriptors per pull, decode-side TTFT, and the
raw NIXL ceiling, in one run with the two connectors' requests interleaved.

    flock /tmp/vllm-pd-servers.lock python benchmarks/connector_pull.py --out results/connector_pull.json

Two identical prefill/decode pairs of a random model with a large KV cache per token (8 layers x
8 KV heads x head_dim 64, bf16: 16 KiB per token) are started together, prefill servers on one
core and decode servers on the other. Each worker process (every thread) is pinned to its server's
core and every API server and engine core to the prefill core, so that a decode worker copying KV has
its core to itself. vLLM's CPU backend asks for the same split: it reserves cores outside the workers'
for the engine core and NIXL (``VLLM_CPU_NUM_OF_RESERVED_CPU``). With a whole server on one core, the
decode's own engine core spun (``sched_yield``, 1 s after each step) beside the worker while it copied
KV, and the posting thread got 47-80% of the core; unpinned, the prefill's API server and engine
core drifted onto the decode core as well. While one pair serves a request the other pair's
processes are stopped (SIGSTOP): NixlConnector's progress threads spin a core each even when idle,
and on two cores that would starve whichever pair is measured. Every request uses a fresh prompt (no
prefix-cache hit). Pull time is NIXL's own telemetry (post to completion) for both connectors.

``--connectors pd`` starts one pair only: its pulls against the raw ceiling with no other server on
the host, stopped or not.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
from connector_raw_nixl import raw_ceiling

from vllm_pd.launcher import Deployment, ServerSpec, free_ports, kv_config
from vllm_pd.testing.pd_client import prefill_body
from vllm_pd.testing.tiny_model import TinyModelSpec, make_tiny_model

MODEL = TinyModelSpec(layers=8, hidden=512, heads=8, kv_heads=8, head_dim=64, intermediate=1024,
                      max_position=16384)
PREFILL_CPUS, DECODE_CPUS = "0", "1"
# (pull time sum, pull count, descriptors sum, bytes sum[, post time sum, post CPU time sum]) per connector
METRICS = {
    "pd": ("vllm:pd_pull_time_seconds_sum", "vllm:pd_pull_time_seconds_count", "vllm:pd_pull_descriptors_sum",
           "vllm:pd_pull_bytes_sum", "vllm:pd_pull_post_seconds_sum", "vllm:pd_pull_post_cpu_seconds_sum"),
    "nixl": ("vllm:nixl_xfer_time_seconds_sum", "vllm:nixl_xfer_time_seconds_count",
             "vllm:nixl_num_descriptors_sum", "vllm:nixl_bytes_transferred_sum"),
}


def metrics(http: httpx.Client, url: str, names: tuple[str, ...]) -> list[float]:
    from prometheus_client.parser import text_string_to_metric_families

    values = dict.fromkeys(names, 0.0)
    for family in text_string_to_metric_families(http.get(url + "/metrics").text):
        for sample in family.samples:
            if sample.name in values:
                values[sample.name] += sample.value
    return [values[n] for n in names]


def one_request(http: httpx.Client, model: str, prefill: str, decode: str, names: tuple[str, ...],
                num_tokens: int, seed: int) -> dict[str, Any]:
    import random

    rng = random.Random(seed)
    body = {"model": model, "prompt": [rng.randrange(8, 320) for _ in range(num_tokens)], "max_tokens": 2,
            "temperature": 0, "ignore_eos": True}
    before = metrics(http, decode, names)
    params = http.post(prefill + "/v1/completions", json=prefill_body(body)).raise_for_status().json()
    t0 = time.perf_counter()
    ttft = None
    with http.stream("POST", decode + "/v1/completions",
                     json={**body, "stream": True, "kv_transfer_params": params["kv_transfer_params"]}) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if ttft is None and line.startswith("data: {"):
                ttft = time.perf_counter() - t0
    deadline = time.monotonic() + 10
    after = metrics(http, decode, names)
    while after[1] == before[1] and time.monotonic() < deadline:
        time.sleep(0.05)
        after = metrics(http, decode, names)
    if after[1] != before[1] + 1:
        raise RuntimeError(f"expected one pull on {decode}, metrics moved by {after[1] - before[1]}")
    pull_s, _, descriptors, nbytes, *post = (a - b for a, b in zip(after, before, strict=True))
    row = {"tokens": num_tokens, "pull_s": pull_s, "descriptors": descriptors, "bytes": nbytes, "ttft_s": ttft}
    if post:  # PDConnector: how long the post blocked the step, and the CPU its thread got meanwhile
        row.update(post_s=post[0], post_cpu_s=post[1])
    return row


def cores(spec: str) -> set[int]:
    """``"0"``, ``"0,2"`` or ``"0-3"`` (the ``VLLM_CPU_OMP_THREADS_BIND`` form) as a set of cores."""
    found: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.partition("-")
        found.update(range(int(first), int(last or first) + 1))
    return found


def _pin(pid: int, allowed: set[int]) -> None:
    """Every thread of ``pid`` (threads it starts later inherit the mask)."""
    with contextlib.suppress(FileNotFoundError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(int(tid), allowed)


def _is_worker(pid: int) -> bool:
    with contextlib.suppress(FileNotFoundError):
        return Path(f"/proc/{pid}/comm").read_text().startswith("VLLM::Worker")
    return False


def pin_servers(deployment: Deployment, frontend: set[int]) -> None:
    """Each worker to its server's cores; API servers and engine cores to ``frontend``."""
    for server in deployment.servers.values():
        if server.spec.cpus is None:
            continue
        for pid in server.all_pids():
            _pin(pid, cores(server.spec.cpus) if _is_worker(pid) else frontend)


@contextlib.contextmanager
def running_alone(deployment: Deployment, names: Iterable[str]) -> Iterator[None]:
    """Every server of ``deployment`` but ``names`` is stopped (SIGSTOP) inside the block, resumed after."""
    others = [pid for name, server in deployment.servers.items() if name not in names for pid in server.all_pids()]
    for pid in others:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in others:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def servers(model: Path, kv_space_gib: int, connectors: Iterable[str] = tuple(METRICS)) -> list[ServerSpec]:
    args = ("--block-size", "32", "--enforce-eager", "--max-model-len", "9000", "--max-num-batched-tokens", "9000")
    env = {"VLLM_CPU_KVCACHE_SPACE": str(kv_space_gib), "UCX_NET_DEVICES": "lo"}
    roles = (("prefill", PREFILL_CPUS), ("decode", DECODE_CPUS))
    chosen = [(c, role, cpus) for c in connectors for role, cpus in roles]
    ports = free_ports(2 * len(chosen))
    specs = []
    for i, (connector, role, cpus) in enumerate(chosen):
        specs.append(ServerSpec(name=f"{connector}-{role}", role=role, model=str(model), port=ports[2 * i],
                                side_channel_port=ports[2 * i + 1], cpus=cpus, extra_args=args, env=env,
                                kv_transfer_config=kv_config(connector, role)))
    return specs


def summarize(rows: list[dict[str, Any]], ceiling: list[dict[str, Any]]) -> list[dict[str, Any]]:
    best_gbps = max(c["gbps"] for c in ceiling)
    table = []
    for tokens in sorted({r["tokens"] for r in rows}):
        line: dict[str, Any] = {"tokens": tokens}
        for connector in sorted({r["connector"] for r in rows}, key=list(METRICS).index):
            mine = [r for r in rows if r["tokens"] == tokens and r["connector"] == connector]
            pull = statistics.median(r["pull_s"] for r in mine)
            line[connector] = {"pull_ms": 1e3 * pull, "descriptors": statistics.median(r["descriptors"] for r in mine),
                               "mib": statistics.median(r["bytes"] for r in mine) / 2**20,
                               "gbps": statistics.median(r["bytes"] for r in mine) / pull / 1e9,
                               "ttft_ms": 1e3 * statistics.median(r["ttft_s"] for r in mine)}
            if connector == "pd":  # only PDConnector reports its post time and the CPU its thread got
                line[connector]["post_ms"] = 1e3 * statistics.median(r["post_s"] for r in mine)
                line[connector]["post_cpu_share"] = statistics.median(r["post_cpu_s"] / max(r["post_s"], 1e-9)
                                                                      for r in mine)
        if "pd" in line and "nixl" in line:
            line["pull_ratio_pd_over_nixl"] = line["pd"]["pull_ms"] / line["nixl"]["pull_ms"]
        for connector in METRICS:
            if connector in line:
                line[f"{connector}_share_of_ceiling"] = line[connector]["gbps"] / best_gbps
        table.append(line)
    return table


def print_table(table: list[dict[str, Any]], ceiling: list[dict[str, Any]]) -> None:
    if "pd" in table[0] and "nixl" in table[0]:
        print("| prompt tokens | KV MiB | PD pull ms | NIXL pull ms | PD/NIXL | PD GB/s (% ceiling) | "
              "descriptors PD / NIXL | decode TTFT ms PD / NIXL | PD post ms (CPU share) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for line in table:
            pd, nx = line["pd"], line["nixl"]
            print(f"| {line['tokens']} | {pd['mib']:.0f} | {pd['pull_ms']:.1f} | {nx['pull_ms']:.1f} | "
                  f"{line['pull_ratio_pd_over_nixl']:.2f} | {pd['gbps']:.2f} ({100 * line['pd_share_of_ceiling']:.0f}%) | "
                  f"{pd['descriptors']:.0f} / {nx['descriptors']:.0f} | {pd['ttft_ms']:.0f} / {nx['ttft_ms']:.0f} | "
                  f"{pd['post_ms']:.1f} ({100 * pd['post_cpu_share']:.0f}%) |")
    else:  # one connector alone
        connector = next(c for c in METRICS if c in table[0])
        print(f"| prompt tokens | KV MiB | {connector} pull ms | GB/s (% ceiling) | descriptors | decode TTFT ms |")
        print("|---|---|---|---|---|---|")
        for line in table:
            row = line[connector]
            print(f"| {line['tokens']} | {row['mib']:.0f} | {row['pull_ms']:.1f} | {row['gbps']:.2f} "
                  f"({100 * line[f'{connector}_share_of_ceiling']:.0f}%) | {row['descriptors']:.0f} | "
                  f"{row['ttft_ms']:.0f} |")
    print("\nraw NIXL READ ceiling (one descriptor, two processes): " +
          ", ".join(f"{c['mib']} MiB {c['gbps']:.2f} GB/s" for c in ceiling))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 2048, 4096, 8192])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kv-space-gib", type=int, default=2)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/vllm-pd-connector-bench"))
    parser.add_argument("--out", type=Path, default=None, help="write all measurements as JSON here")
    parser.add_argument("--connectors", nargs="+", choices=list(METRICS), default=list(METRICS),
                        help="pairs to start: both for the side-by-side run, one to measure it alone")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind, so that every server is stopped
    model = make_tiny_model(args.work_dir / "model", MODEL)
    rows: list[dict[str, Any]] = []
    measured = {c: METRICS[c] for c in args.connectors}
    with Deployment(servers(model, args.kv_space_gib, measured), args.work_dir / "logs") as deployment, \
            httpx.Client(timeout=httpx.Timeout(300.0, connect=5.0)) as http:
        pin_servers(deployment, frontend=cores(PREFILL_CPUS))
        url = deployment.url
        pairs = {c: (url(f"{c}-prefill"), url(f"{c}-decode")) for c in measured}
        for connector, (p, d) in pairs.items():  # warm-up: handshakes, first-use costs
            with running_alone(deployment, (f"{connector}-prefill", f"{connector}-decode")):
                one_request(http, str(model), p, d, METRICS[connector], 64, seed=-1)
        with running_alone(deployment, ()):
            ceiling = raw_ceiling([16, 64, 256])
        seed = 0
        for tokens in args.lengths:
            for rep in range(args.repeats):
                order = list(measured) if rep % 2 == 0 else list(measured)[::-1]
                for connector in order:
                    seed += 1
                    p, d = pairs[connector]
                    with running_alone(deployment, (f"{connector}-prefill", f"{connector}-decode")):
                        row = one_request(http, str(model), p, d, METRICS[connector], tokens, seed)
                    rows.append({"connector": connector, **row})
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        with running_alone(deployment, ()):
            ceiling += raw_ceiling([16, 64, 256])
    table = summarize(rows, ceiling)
    print_table(table, ceiling)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"rows": rows, "ceiling": ceiling, "table": table}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
