"""CPU per request of the proxy's HTTP work on candidate stacks, before anything else is built on one.

Each candidate is the least a P/D proxy does per non-streamed request: read the client's JSON body,
POST a prefill leg upstream, decode its ``kv_transfer_params``, POST the decode leg, return its body.
The upstream is one fake vLLM answering at once. The client sends requests one at a time, so the
proxy's CPU time per request (user + system, all its threads, from /proc) is its cost, with no
queueing in it. Stacks: aiohttp server and client; aiohttp's server with vllm-pd's upstream client
(httptools, what ``vllm-pd proxy`` runs on); aiohttp's server with pyreqwest's client (Rust, reqwest);
granian's RSGI server (Rust, hyper) with aiohttp's client; granian with pyreqwest's client. A stack
whose packages are not installed (``pip install granian pyreqwest``) is left out, and said so.

    python benchmarks/http_stacks.py --requests 3000
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import importlib.util
import subprocess
import sys
import time
from collections.abc import Callable

import msgspec
import psutil
from proxy_overhead import tree_cpu

from vllm_pd.launcher import free_port

STACKS = ("aiohttp", "aiohttp+vllm-pd", "aiohttp+pyreqwest", "granian+aiohttp", "granian+pyreqwest")
PREFILL_REPLY = msgspec.json.encode({"id": "cmpl-1", "choices": [{"text": "x", "index": 0, "finish_reason": "length"}],
                                     "kv_transfer_params": {"remote_engine_id": "e" * 36, "remote_block_ids": [1, 2, 3],
                                                            "remote_host": "127.0.0.1", "remote_port": 5600}})
DECODE_REPLY = msgspec.json.encode({"id": "cmpl-1", "choices": [{"text": "hello " * 16, "index": 0,
                                                                 "finish_reason": "length"}],
                                    "usage": {"prompt_tokens": 512, "completion_tokens": 16, "total_tokens": 528}})
CLIENT_BODY = msgspec.json.encode({"model": "m", "prompt": "word " * 400, "max_tokens": 16, "temperature": 0})


class _Params(msgspec.Struct):
    kv_transfer_params: dict | None = None


_params = msgspec.json.Decoder(_Params)


def leg_bodies(client_body: bytes) -> tuple[bytes, Callable[[bytes], bytes]]:
    """The prefill leg's body, and how the decode leg's body follows from the prefill's answer."""
    request = msgspec.json.decode(client_body)
    prefill = msgspec.json.encode({**request, "max_tokens": 1, "kv_transfer_params": {"do_remote_decode": True}})
    return prefill, lambda reply: msgspec.json.encode({**request,
                                                       "kv_transfer_params": _params.decode(reply).kv_transfer_params})


def serve_upstream(port: int) -> None:
    from aiohttp import web

    async def completions(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(body=PREFILL_REPLY if b"do_remote_decode" in body else DECODE_REPLY,
                            content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def aiohttp_client():
    import aiohttp

    session: aiohttp.ClientSession | None = None

    async def post(url: str, body: bytes) -> bytes:
        nonlocal session
        if session is None:
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100), auto_decompress=False,
                                            cookie_jar=aiohttp.DummyCookieJar())
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
            return await resp.read()
    return post


def pyreqwest_client():
    from pyreqwest.client import ClientBuilder

    client = None

    async def post(url: str, body: bytes) -> bytes:
        nonlocal client
        if client is None:
            client = ClientBuilder().max_connections(100).build()
        resp = await client.post(url).header("Content-Type", "application/json").body_bytes(body).build().send()
        return bytes(await resp.bytes())
    return post


def vllm_pd_client():
    from vllm_pd.proxy.client import UpstreamClient

    clients: dict[str, UpstreamClient] = {}

    async def post(url: str, body: bytes) -> bytes:
        base, _, path = url.partition("/v1/")
        client = clients.get(base) or clients.setdefault(base, UpstreamClient(base, 100, 4.0, 3.0))
        _, _, answer = await client.fetch("POST", "/v1/" + path, body, {"Content-Type": "application/json"})
        return answer
    return post


CLIENTS = {"aiohttp": aiohttp_client, "vllm-pd": vllm_pd_client, "pyreqwest": pyreqwest_client}


def installed(stack: str) -> bool:
    return all(importlib.util.find_spec(part) is not None for part in stack.split("+")
               if part in ("granian", "pyreqwest"))


def make_proxy(post, upstream: str):
    url = upstream + "/v1/completions"

    async def handle(body: bytes) -> bytes:
        prefill, decode_body = leg_bodies(body)
        return await post(url, decode_body(await post(url, prefill)))
    return handle


def serve_proxy(stack: str, port: int, upstream: str) -> None:
    server, _, client = stack.partition("+")
    handle = make_proxy(CLIENTS[client or "aiohttp"](), upstream)
    if server == "aiohttp":
        import uvloop
        from aiohttp import web

        async def completions(request: web.Request) -> web.Response:
            return web.Response(body=await handle(await request.read()), content_type="application/json")

        app = web.Application()
        app.router.add_post("/v1/completions", completions)
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)
        return
    import uvloop
    from granian.constants import Interfaces
    from granian.server.embed import Server

    async def rsgi_app(scope, protocol) -> None:
        body = await handle(await protocol())
        protocol.response_bytes(200, [("content-type", "application/json")], body)

    uvloop.run(Server(rsgi_app, address="127.0.0.1", port=port, interface=Interfaces.RSGI, runtime_threads=1,
                      log_enabled=False).serve())


def wait_listening(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("POST", "/v1/completions", body=CLIENT_BODY, headers={"Content-Type": "application/json"})
            if conn.getresponse().read():
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing answered on port {port} within {timeout_s:.0f} s")


def measure(stack: str, upstream: str, requests: int, warmup: int) -> tuple[float, float]:
    """(proxy CPU ms per request, wall ms per request) at concurrency 1."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", stack, "--port", str(port), "--upstream", upstream])
    try:
        wait_listening(port)
        conn = http.client.HTTPConnection("127.0.0.1", port)
        headers = {"Content-Type": "application/json"}
        for _ in range(warmup):
            conn.request("POST", "/v1/completions", body=CLIENT_BODY, headers=headers)
            conn.getresponse().read()
        ps = psutil.Process(proc.pid)
        cpu0, wall0 = tree_cpu(ps), time.perf_counter()
        for _ in range(requests):
            conn.request("POST", "/v1/completions", body=CLIENT_BODY, headers=headers)
            reply = conn.getresponse().read()
        cpu, wall = tree_cpu(ps) - cpu0, time.perf_counter() - wall0
        if reply != DECODE_REPLY:
            raise SystemExit(f"{stack}: the proxy answered {reply[:200]!r}, not the decode leg's answer")
        return 1e3 * cpu / requests, 1e3 * wall / requests
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3, help="stacks measured in turn, this many times")
    parser.add_argument("--serve", choices=(*STACKS, "upstream"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "upstream":
        serve_upstream(args.port)
        return
    if args.serve:
        serve_proxy(args.serve, args.port, args.upstream)
        return
    port = free_port()
    upstream = subprocess.Popen([sys.executable, __file__, "--serve", "upstream", "--port", str(port)])
    try:
        wait_listening(port)
        stacks = [s for s in STACKS if installed(s)]
        for stack in sorted(set(STACKS) - set(stacks)):
            print(f"left out {stack}: its packages are not installed")
        results: dict[str, list[tuple[float, float]]] = {s: [] for s in stacks}
        for _ in range(args.rounds):  # interleaved, so that a drift of the host's speed hits every stack alike
            for stack in stacks:
                results[stack].append(measure(stack, f"http://127.0.0.1:{port}", args.requests, args.warmup))
    finally:
        upstream.terminate()
        upstream.wait(10)
    base = min(cpu for cpu, _ in results["aiohttp"])
    print("| stack | proxy CPU ms/request (best of rounds) | all rounds | ratio to aiohttp | wall ms/request |")
    print("|---|---|---|---|---|")
    for stack, rows in results.items():
        best = min(cpu for cpu, _ in rows)
        print(f"| {stack} | {best:.3f} | {', '.join(f'{c:.3f}' for c, _ in rows)} | {best / base:.2f} | "
              f"{min(w for _, w in rows):.3f} |")


if __name__ == "__main__":
    main()
