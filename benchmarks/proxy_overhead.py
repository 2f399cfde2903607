"""Proxy overhead: vllm-pd proxy vs vLLM's toy proxy vs the Rust vllm-router, against a fast fake upstream.

Overhead is a property of the proxy, so the upstream is a fake that speaks the prefill/decode protocol
(prefill answers ``kv_transfer_params``; decode answers JSON or an SSE stream of ``--tokens`` chunks)
and costs almost nothing. For each proxy, concurrency and streaming mode the same client sends the
same requests; the baseline is the client doing prefill then decode itself. All targets run side by
side and the rounds interleave them, so that noise from other work on the machine hits each alike.
"aiohttp floor" is a bare prefill-then-decode relay on aiohttp's server and client (no policy, no
accounting, no checks): the least a proxy on aiohttp alone can cost. vllm-pd serves with aiohttp too
but calls upstream with its own client (vllm_pd/proxy/client.py), so it can go below. Reported: latency added
over the baseline (mean and p50 differences; p99s are shown, not subtracted), req/s, and the proxy's
CPU seconds per 1000 requests (its whole process tree, from psutil).

    python benchmarks/proxy_overhead.py --toy-proxy /tmp/vllm-0.32.0/tests/v1/kv_connector/nixl_integration/toy_proxy_server.py

The toy proxy script comes from the vllm 0.32.0 sdist (not vendored here); vllm-router from PyPI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import msgspec
import psutil

PREFILL_REPLY = msgspec.json.encode({
    "id": "cmpl-x", "object": "text_completion", "choices": [{"index": 0, "text": "a", "finish_reason": "length"}],
    "usage": {"prompt_tokens": 64, "completion_tokens": 1, "total_tokens": 65},
    "kv_transfer_params": {"do_remote_prefill": True, "do_remote_decode": False, "remote_engine_id": "fake",
                           "remote_block_ids": [[1, 2]], "remote_host": "127.0.0.1", "remote_port": 1,
                           "remote_request_id": "x", "tp_size": 1}})


def _fake_main(port_p: int, port_d: int, tokens: int) -> None:
    """The fake upstream: one uvloop process serving the prefill port and the decode port."""
    import uvloop
    from aiohttp import web

    chunk = [b'data: {"id":"cmpl-x","object":"text_completion","choices":[{"index":0,"text":"t%d",'
             b'"logprobs":null,"finish_reason":null}]}\n\n' % i for i in range(tokens)]
    unary = msgspec.json.encode({"id": "cmpl-x", "object": "text_completion",
                                 "choices": [{"index": 0, "text": "t" * tokens, "finish_reason": "length"}],
                                 "usage": {"prompt_tokens": 64, "completion_tokens": tokens,
                                           "total_tokens": 64 + tokens}})

    async def generate(request: web.Request) -> web.StreamResponse:
        body = msgspec.json.decode(await request.read())
        params = body.get("kv_transfer_params") or {}
        if params.get("do_remote_decode") or body.get("max_tokens") == 1:
            return web.Response(body=PREFILL_REPLY, content_type="application/json")
        if not body.get("stream"):
            return web.Response(body=unary, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for c in chunk:
            await resp.write(c)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    async def serve() -> None:
        app = web.Application()
        app.router.add_post("/v1/completions", generate)
        app.router.add_post("/v1/chat/completions", generate)
        for path in ("/health", "/v1/models", "/get_model_info", "/get_server_info", "/metrics"):
            app.router.add_get(path, ok)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        for port in (port_p, port_d):
            await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    uvloop.run(serve())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout: float = 60.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout:.0f} s")


@dataclass(frozen=True)
class Target:
    name: str
    argv: list[str] | None  # None: the client talks to the fake itself (baseline)
    health: str = "/health"
    port: int = 0


def targets(args: argparse.Namespace, p: str, d: str) -> list[Target]:
    py = sys.executable
    ports = iter(free_port() for _ in range(5))
    found = [Target("direct (client does P then D)", None)]
    port = next(ports)
    found.append(Target("vllm-pd proxy", [py, "-m", "vllm_pd.cli", "proxy", "--prefill", p, "--decode", d,
                                          "--port", str(port), "--policy", "goodput", "--no-local-prefill",
                                          "--ttft-slo", "1", "--tpot-slo", "0.1"], port=port))
    port = next(ports)
    found.append(Target("aiohttp floor (bare P->D relay)", [py, __file__, "--floor", p, d, str(port)], port=port))
    if args.toy_proxy:
        port = next(ports)
        pp, dp = p.rsplit(":", 1)[1], d.rsplit(":", 1)[1]
        found.append(Target("vLLM toy proxy", [py, args.toy_proxy, "--port", str(port), "--prefiller-hosts",
                                               "127.0.0.1", "--prefiller-ports", pp, "--decoder-hosts",
                                               "127.0.0.1", "--decoder-ports", dp], "/healthcheck", port))
    router = shutil.which("vllm-router") or str(Path(sys.executable).with_name("vllm-router"))
    if Path(router).exists():
        port = next(ports)
        found.append(Target("vllm-router (Rust)", [router, "--vllm-pd-disaggregation", "--prefill", p,
                                                   "--decode", d, "--host", "127.0.0.1", "--port", str(port),
                                                   "--policy", "round_robin"], port=port))
    return found


def _floor_main(p: str, d: str, port: int) -> None:
    """The least any aiohttp proxy can cost: prefill then decode, bytes relayed, no policy, no checks."""
    import uvloop
    from aiohttp import web

    json_type = {"Content-Type": "application/json"}

    async def handle(request: web.Request) -> web.StreamResponse:
        session = request.app[SESSION]
        body = msgspec.json.decode(await request.read())
        leg = {**body, "max_tokens": 1, "stream": False, "kv_transfer_params": {"do_remote_decode": True}}
        async with session.post(p + "/v1/completions", data=msgspec.json.encode(leg), headers=json_type) as r:
            params = msgspec.json.decode(await r.read())["kv_transfer_params"]
        decode = msgspec.json.encode({**body, "kv_transfer_params": params})
        async with session.post(d + "/v1/completions", data=decode, headers=json_type) as r:
            if not body.get("stream"):
                return web.Response(body=await r.read(), content_type="application/json")
            out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await out.prepare(request)
            async for chunk in r.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
            return out

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def session_ctx(app: web.Application):
        app[SESSION] = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False)
        yield
        await app[SESSION].close()

    SESSION = web.AppKey("session", aiohttp.ClientSession)
    app = web.Application()
    app.router.add_post("/v1/completions", handle)
    app.router.add_get("/health", health)
    app.cleanup_ctx.append(session_ctx)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=uvloop.new_event_loop())


async def one_request(session: aiohttp.ClientSession, url: str, body: bytes, stream: bool) -> None:
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {(await resp.read())[:200]!r}")
        if stream:
            async for _ in resp.content.iter_any():
                pass
        else:
            await resp.read()


async def direct_request(session: aiohttp.ClientSession, p: str, d: str, body: dict, stream: bool) -> None:
    """What a client without a proxy does: prefill with max_tokens 1, then decode with the returned params."""
    prefill = msgspec.json.encode({**body, "max_tokens": 1, "stream": False,
                                   "kv_transfer_params": {"do_remote_decode": True, "do_remote_prefill": False}})
    async with session.post(p + "/v1/completions", data=prefill, headers={"Content-Type": "application/json"}) as r:
        params = msgspec.json.decode(await r.read())["kv_transfer_params"]
    await one_request(session, d + "/v1/completions", msgspec.json.encode({**body, "kv_transfer_params": params}),
                      stream)


async def load(send, requests: int, concurrency: int) -> tuple[list[float], float]:
    """Run ``requests`` calls of ``send`` with ``concurrency`` workers; returns (latencies, wall seconds)."""
    latencies: list[float] = []
    remaining = iter(range(requests))

    async def worker() -> None:
        for _ in remaining:
            start = time.perf_counter()
            await send()
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - start


def tree_cpu(proc: psutil.Process) -> float:
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total


@dataclass
class Result:
    target: str
    concurrency: int
    stream: bool
    requests: int
    mean_ms: float
    p50_ms: float
    p99_ms: float
    rps: float
    cpu_s_per_1k: float | None
    added_mean_ms: float | None = None
    added_p50_ms: float | None = None


@dataclass
class Samples:
    latencies: list[float]
    wall_s: float = 0.0
    cpu_s: float = 0.0


async def measure(target: Target, p: str, d: str, proc: psutil.Process | None, concurrency: int,
                  stream: bool, requests: int, warmup: int, into: Samples) -> None:
    body = {"model": "fake", "prompt": "x" * 256, "max_tokens": 16, "temperature": 0, "stream": stream}
    url = f"http://127.0.0.1:{target.port}/v1/completions"
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        if target.argv is None:
            async def send() -> None:
                await direct_request(session, p, d, body, stream)
        else:
            raw = msgspec.json.encode(body)

            async def send() -> None:
                await one_request(session, url, raw, stream)
        await load(send, warmup, concurrency)
        cpu0 = tree_cpu(proc) if proc else 0.0
        latencies, wall = await load(send, requests, concurrency)
        into.cpu_s += (tree_cpu(proc) - cpu0) if proc else 0.0
    into.latencies += latencies
    into.wall_s += wall


def summarize(target: Target, concurrency: int, stream: bool, samples: Samples) -> Result:
    ms = sorted(x * 1000 for x in samples.latencies)
    n = len(ms)
    return Result(target.name, concurrency, stream, n, statistics.fmean(ms), ms[n // 2],
                  ms[min(n - 1, int(n * 0.99))], n / samples.wall_s,
                  None if target.argv is None else samples.cpu_s / n * 1000)


def start(target: Target, log_dir: Path) -> subprocess.Popen | None:
    if target.argv is None:
        return None
    log = open(log_dir / f"{target.name.split()[0]}.log", "wb")
    env = {**os.environ, "RUST_LOG": "error", "OPENAI_API_KEY": "x"}
    proc = subprocess.Popen(target.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        wait_ready(f"http://127.0.0.1:{target.port}{target.health}")
    except RuntimeError:
        stop(proc)
        raise RuntimeError(f"{target.name} did not start; see {log.name}") from None
    return proc


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def fill_added(results: list[Result]) -> None:
    base = {(r.concurrency, r.stream): r for r in results if r.target.startswith("direct")}
    for r in results:
        b = base.get((r.concurrency, r.stream))
        if b is not None and r is not b:
            r.added_mean_ms = r.mean_ms - b.mean_ms
            r.added_p50_ms = r.p50_ms - b.p50_ms


def table(results: list[Result]) -> str:
    rows = ["| proxy | conc | stream | mean ms | p50 ms | p99 ms | added mean ms | added p50 ms | req/s | "
            "proxy CPU s / 1000 req |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        cpu = "-" if r.cpu_s_per_1k is None else f"{r.cpu_s_per_1k:.3f}"
        added = "-" if r.added_mean_ms is None else f"{r.added_mean_ms:+.3f}"
        added50 = "-" if r.added_p50_ms is None else f"{r.added_p50_ms:+.3f}"
        rows.append(f"| {r.target} | {r.concurrency} | {'yes' if r.stream else 'no'} | {r.mean_ms:.3f} | "
                    f"{r.p50_ms:.3f} | {r.p99_ms:.3f} | {added} | {added50} | {r.rps:.0f} | {cpu} |")
    return "\n".join(rows)


def ratios(results: list[Result]) -> str:
    """CPU per request of ours against each other proxy, per (concurrency, stream)."""
    ours = {(r.concurrency, r.stream): r for r in results if r.target == "vllm-pd proxy"}
    lines = []
    for r in results:
        mine = ours.get((r.concurrency, r.stream))
        if mine is None or r is mine or r.cpu_s_per_1k is None or not r.cpu_s_per_1k:
            continue
        lines.append(f"- c={r.concurrency} stream={'yes' if r.stream else 'no'}: vllm-pd / {r.target} CPU = "
                     f"{mine.cpu_s_per_1k / r.cpu_s_per_1k:.2f}")
    return "\n".join(lines)


async def run_all(args: argparse.Namespace) -> list[Result]:
    """All targets run side by side; rounds interleave them so that machine noise hits each alike."""
    port_p, port_d = free_port(), free_port()
    p, d = f"http://127.0.0.1:{port_p}", f"http://127.0.0.1:{port_d}"
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    fake = subprocess.Popen([sys.executable, __file__, "--fake", str(port_p), str(port_d), str(args.tokens)],
                            start_new_session=True)
    procs: list[subprocess.Popen | None] = []
    try:
        wait_ready(p + "/health")
        wait_ready(d + "/health")
        found = targets(args, p, d)
        for target in found:
            procs.append(start(target, log_dir))
        watched = [psutil.Process(proc.pid) if proc else None for proc in procs]
        configs = [(stream, c) for stream in (False, True) for c in args.concurrency]
        samples = {(t.name, cfg): Samples([]) for t in found for cfg in configs}
        for round_no in range(args.rounds):
            for stream, concurrency in configs:
                n = args.requests * (4 if concurrency > 1 else 1) // args.rounds
                for target, ps in zip(found, watched, strict=True):
                    await measure(target, p, d, ps, concurrency, stream, n, args.warmup // args.rounds + 1,
                                  samples[(target.name, (stream, concurrency))])
            print(f"round {round_no + 1}/{args.rounds} done", flush=True)
        return [summarize(t, c, s, samples[(t.name, (s, c))]) for s, c in configs for t in found]
    finally:
        for proc in procs:
            stop(proc)
        stop(fake)


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--fake":
        _fake_main(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
        return 0
    if len(sys.argv) == 5 and sys.argv[1] == "--floor":
        _floor_main(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy-proxy", help="path to vLLM's toy_proxy_server.py (from the vllm sdist)")
    parser.add_argument("--requests", type=int, default=500, help="requests per run at concurrency 1 (x4 above)")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds over the targets")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--tokens", type=int, default=16, help="streamed chunks per decode answer")
    parser.add_argument("--out", default="proxy_overhead.json", help="results as JSON")
    parser.add_argument("--log-dir", default="/tmp/proxy-overhead-logs")
    args = parser.parse_args()
    import uvloop

    results = uvloop.run(run_all(args))
    fill_added(results)
    Path(args.out).write_text(json.dumps([asdict(r) for r in results], indent=1))
    print(table(results))
    print(ratios(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
