"""CPU per request of the proxy's own Python work: the request handler with both upstream calls answered
in-process at once, so no socket, no event-loop wakeup and no aiohttp client is in the time.

What this measures is what ``vllm-pd proxy`` adds over a bare relay (the "aiohttp floor" of
proxy_overhead.py): parsing, the pair choice, accounting, metrics, the legs' bodies and headers.

    python benchmarks/proxy_logic.py --requests 20000
"""

from __future__ import annotations

import argparse
import asyncio
import time

import msgspec
from multidict import CIMultiDict

import vllm_pd.proxy.decode as decode_leg
import vllm_pd.proxy.prefill as prefill_leg
from vllm_pd.proxy.config import PoolConfig, ProxyConfig
from vllm_pd.proxy.handler import STATE_KEY, make_handler
from vllm_pd.proxy.state import ProxyState
from vllm_pd.proxy.upstream import UpstreamReply
from vllm_pd.proxy.wire import COMPLETIONS

PREFILL = UpstreamReply(200, "application/json", msgspec.json.encode({
    "id": "cmpl-1", "choices": [{"text": "x", "finish_reason": "length"}],
    "kv_transfer_params": {"remote_engine_id": "e" * 36, "remote_block_ids": [1, 2, 3], "remote_host": "127.0.0.1",
                           "remote_port": 5600},
    "usage": {"prompt_tokens": 100, "completion_tokens": 1}}))
DECODE = UpstreamReply(200, "application/json", msgspec.json.encode({
    "id": "cmpl-1", "choices": [{"text": "hello " * 16, "finish_reason": "length"}],
    "usage": {"prompt_tokens": 100, "completion_tokens": 16}}))
BODY = msgspec.json.encode({"model": "fake", "prompt": "hello " * 50, "max_tokens": 16})


async def answer_at_once(client, path: str, body: bytes, headers: dict[str, str], timeout_s) -> UpstreamReply:
    return PREFILL if b"do_remote_decode" in body else DECODE


class ClientRequest:
    """The parts of ``aiohttp.web.Request`` the handler reads."""

    def __init__(self, app: dict) -> None:
        self.app = app
        self.headers = CIMultiDict({"Content-Type": "application/json", "Host": "proxy"})

    async def read(self) -> bytes:
        return BODY


async def measure(requests: int, warmup: int) -> float:
    """Microseconds of process CPU time per request."""
    config = ProxyConfig(pool=PoolConfig(prefill=("http://127.0.0.1:1",), decode=("http://127.0.0.1:2",)),
                         local_prefill=False)
    state = ProxyState(config)
    state.clients = dict.fromkeys(state.instances)  # never used: the calls are answered in-process
    handle, request = make_handler(COMPLETIONS), ClientRequest({STATE_KEY: state})
    for _ in range(warmup):
        await handle(request)
    start = time.process_time()
    for _ in range(requests):
        response = await handle(request)
    spent = time.process_time() - start
    if response.status != 200 or response.body != DECODE.body:
        raise SystemExit(f"the handler answered {response.status}, not the decode leg's answer")
    return 1e6 * spent / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    prefill_leg.post = decode_leg.post = answer_at_once  # both legs' only upstream call
    rounds = [asyncio.run(measure(args.requests, args.warmup)) for _ in range(args.rounds)]
    print(f"proxy logic: {min(rounds):.1f} us CPU per non-streamed request (best of "
          f"{', '.join(f'{r:.1f}' for r in rounds)})")


if __name__ == "__main__":
    main()
