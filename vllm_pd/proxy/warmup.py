"""The first KV handoff of every (prefill, decode) pair, made by the proxy before a client needs it.

A decoder meets each prefill instance lazily: the first request it pulls from one pays the side-channel
handshake and the NIXL agent exchange. That is seconds on a cold host, and vLLM's NixlConnector gives
up after 5 s; under the default ``kv_load_failure_policy: fail`` that client then gets an HTTP 500.
The proxy knows every pair, so it makes that first handoff itself with a one-token request whenever a
pair becomes usable: at start, and again after either side was down (a restarted server handshakes
anew). Warm-ups are not client requests: they are neither routed, counted in load, nor in metrics.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging

import msgspec

from vllm_pd.proxy.instance import Instance
from vllm_pd.proxy.state import ProxyState
from vllm_pd.proxy.upstream import UpstreamFailure, post
from vllm_pd.proxy.wire import COMPLETIONS, PREFILL_PARAMS, decode_prefill_reply, encode

log = logging.getLogger(__name__)
WARM_PROMPT = list(range(1, 41))  # token ids, so no tokenizer is needed; 40 fill a KV block of 16 or 32
MAX_TRIES = 3  # per pair, until one side goes down and comes back
_HEADERS = {"Content-Type": "application/json", "X-Request-Id": "vllm-pd-warmup"}

Pair = tuple[str, str]  # (prefill url, decode url)


def _model(prefill: Instance, decode: Instance, pool_model: str | None) -> str | None:
    if pool_model is not None:
        return pool_model
    common = sorted(prefill.models & decode.models)
    return common[0] if common else None


class PairWarmer:
    def __init__(self, state: ProxyState) -> None:
        self.state = state
        self._warm: set[Pair] = set()
        self._tries: collections.Counter[Pair] = collections.Counter()
        self._running: dict[Pair, asyncio.Task] = {}

    def refresh(self) -> None:
        """Warm each pair whose sides are both up and not warm yet; forget pairs with a side down."""
        state = self.state
        pools = [(None, state.default_pool), *state.model_pools.items()]
        for pool_model, pool in pools:
            if pool is None:
                continue
            for prefill in pool.prefills:
                for decode in pool.decodes:
                    if prefill is not decode:
                        self._consider(prefill, decode, pool_model)

    def _consider(self, prefill: Instance, decode: Instance, pool_model: str | None) -> None:
        pair = (prefill.url, decode.url)
        if not (prefill.healthy and decode.healthy):
            self._warm.discard(pair)
            self._tries.pop(pair, None)
            return
        if pair in self._warm or pair in self._running or self._tries[pair] >= MAX_TRIES:
            return
        model = _model(prefill, decode, pool_model)
        if model is None:  # models not listed yet: the next health round sees them
            return
        self._running[pair] = asyncio.create_task(self._handoff(prefill, decode, model, pair),
                                                  name=f"vllm-pd-warmup {pair[0]} -> {pair[1]}")

    async def _handoff(self, prefill: Instance, decode: Instance, model: str, pair: Pair) -> None:
        state = self.state
        body = {"model": model, "prompt": WARM_PROMPT, "max_tokens": 1, "temperature": 0}
        try:
            reply = await post(state.clients[prefill.url], COMPLETIONS,
                               encode({**body, "kv_transfer_params": PREFILL_PARAMS}), _HEADERS,
                               state.config.timeouts.prefill_s)
            params = decode_prefill_reply(reply.body).kv_transfer_params if reply.status == 200 else None
            if params is None:
                raise UpstreamFailure(prefill.url, f"prefill answered HTTP {reply.status} without kv_transfer_params")
            reply = await post(state.clients[decode.url], COMPLETIONS,
                               encode({**body, "kv_transfer_params": params}), _HEADERS,
                               state.config.timeouts.request_s)
            if reply.status != 200:
                raise UpstreamFailure(decode.url, f"decode answered HTTP {reply.status}")
        except (UpstreamFailure, msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._tries[pair] += 1
            log.warning("first KV handoff %s -> %s failed (try %d of %d): %s", *pair, self._tries[pair],
                        MAX_TRIES, exc)
        else:
            self._warm.add(pair)
            log.info("first KV handoff %s -> %s done", *pair)
        finally:
            del self._running[pair]

    async def stop(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
