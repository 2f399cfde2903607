"""The prefill leg with failover: the chosen prefill instance, then other prefill instances (bounded),
then local prefill on the decode instance (unless disabled). A hung prefill is cut at
``timeouts.prefill_s`` and handled like a failed one.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec

from vllm_pd.proxy.instance import Instance
from vllm_pd.proxy.policy import Route, usable
from vllm_pd.proxy.state import Exchange, Pool, ProxyState
from vllm_pd.proxy.upstream import ClientSideError, UpstreamFailure, post
from vllm_pd.proxy.wire import decode_prefill_reply, prefill_body

log = logging.getLogger(__name__)


class PrefillFailed(Exception):
    """Every prefill attempt failed and local fallback is disabled."""

    def __init__(self, last: UpstreamFailure) -> None:
        super().__init__(str(last))
        self.last = last


def _next_prefill(state: ProxyState, ex: Exchange, pool: Pool, decode: Instance) -> Instance | None:
    candidates = [p for p in usable(pool.prefills, frozenset(ex.excluded)) if p is not decode]
    if not candidates:
        return None
    predictor = state.predictor
    return min(candidates, key=lambda p: predictor.prefill_s(p, ex.prompt_tokens))


async def run_prefill(state: ProxyState, ex: Exchange, route: Route, pool: Pool) -> tuple[Route, dict[str, Any] | None]:
    """Returns the route actually taken and the ``kv_transfer_params`` for the decode leg."""
    if route.kind == "local":
        return route, None
    config = state.config
    body = prefill_body(ex.req)
    prefill: Instance | None = route.prefill
    last: UpstreamFailure | None = None
    for _ in range(config.max_prefill_attempts):
        if prefill is None:
            break
        try:
            params = await _prefill_once(state, ex, prefill, body)
            return Route("remote", route.decode, prefill, route.estimate, route.meets_slo), params
        except UpstreamFailure as failure:
            log.warning("request %s: prefill failed: %s", ex.request_id, failure)
            last = failure
            prefill.record_failure()
            ex.excluded.add(prefill.url)
            state.metrics.upstream_errors.labels(prefill.url, "prefill").inc()
            prefill = _next_prefill(state, ex, pool, route.decode)
            if prefill is not None:
                ex.failovers.append("prefill->prefill")
                state.metrics.failovers.labels("prefill_to_prefill").inc()
    assert last is not None
    if not config.fallback_local:
        raise PrefillFailed(last)
    ex.failovers.append("prefill->local")
    state.metrics.failovers.labels("prefill_to_local").inc()
    return Route("local", route.decode, None, route.estimate, route.meets_slo), None


async def _prefill_once(state: ProxyState, ex: Exchange, prefill: Instance, body: bytes) -> dict[str, Any] | None:
    prefill.breaker.on_attempt()
    predicted = state.predictor.prefill_s(prefill, ex.prompt_tokens)
    client = state.clients[prefill.url]
    sent = time.monotonic()
    with prefill.prefilling(ex.prompt_tokens), ex.waiting():
        reply = await post(client, ex.req.endpoint, body, ex.upstream_headers, state.config.timeouts.prefill_s)
    ex.prefill_s = time.monotonic() - sent
    if reply.status != 200:
        raise ClientSideError(reply)
    prefill.record_success()
    state.predictor.prefill_correction(prefill).observe(predicted, ex.prefill_s)
    state.affinity.record(ex.req.prefix_key, prefill.url)
    try:
        parsed = decode_prefill_reply(reply.body)
    except msgspec.DecodeError:
        raise UpstreamFailure(prefill.url, "prefill answer is not the expected JSON") from None
    text = ex.req.prompt_text
    if parsed.usage is not None and text and not ex.req.prompt_ids:
        state.counter.observe(len(text.encode()), parsed.usage.prompt_tokens, ex.req.model)
    return parsed.kv_transfer_params
