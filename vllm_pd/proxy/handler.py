"""``/v1/completions`` and ``/v1/chat/completions``: route, prefill (with failover), decode (with retry
before the first token), relay, then account for the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time

import msgspec
from aiohttp import web

from vllm_pd.proxy.client import header_line
from vllm_pd.proxy.decode import DecodeFailed, DecodeResult, stream_decode, unary_decode
from vllm_pd.proxy.policy import Rejection, RequestInfo, Route, usable
from vllm_pd.proxy.prefill import PrefillFailed, run_prefill
from vllm_pd.proxy.state import Exchange, Pool, ProxyState
from vllm_pd.proxy.upstream import ClientSideError, UpstreamFailure
from vllm_pd.proxy.wire import BadRequest, decode_body, parse_request

STATE_KEY: web.AppKey[ProxyState] = web.AppKey("proxy_state", ProxyState)


class HandoffLost(Exception):
    """The prefill instance went down while the decoder was still waiting for its KV."""


def error_response(status: int, message: str, request_id: str | None = None, **headers: str) -> web.Response:
    kind = "BadRequestError" if status < 500 else "ServiceUnavailableError" if status == 503 else "UpstreamError"
    body = msgspec.json.encode({"error": {"message": message, "type": kind, "code": status}})
    extra = {"X-Request-Id": request_id} if request_id else {}
    return web.Response(body=body, status=status, content_type="application/json", headers={**extra, **headers})


def _passthrough(reply, request_id: str) -> web.Response:
    resp = web.Response(body=reply.body, status=reply.status, headers={"X-Request-Id": request_id})
    resp.content_type = reply.content_type.split(";")[0]
    return resp


def _failure_response(failure: UpstreamFailure, request_id: str) -> web.Response:
    """An upstream 5xx keeps its status and body; a transport failure becomes 502 with a message."""
    if failure.status is not None and failure.body:
        resp = web.Response(body=failure.body, status=failure.status, headers={"X-Request-Id": request_id})
        resp.content_type = failure.content_type.split(";")[0]
        return resp
    return error_response(502, f"upstream failed: {failure}", request_id)


def _authorized(state: ProxyState, request: web.Request) -> bool:
    key = state.config.api_key
    if key is None:
        return True
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {key}".encode())


def _upstream_headers(request: web.Request, request_id: str) -> dict[str, str]:
    """The headers both legs carry; ``BadRequest`` for a client value that cannot be sent upstream."""
    headers = {"Content-Type": "application/json", "X-Request-Id": request_id}
    auth = request.headers.get("Authorization")
    if auth:
        headers["Authorization"] = auth
    for name, value in headers.items():
        try:
            header_line(name, value)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
    return headers


def _route_headers(ex: Exchange, route: Route) -> dict[str, str]:
    headers = {"X-Request-Id": ex.request_id, "X-PD-Route": route.kind, "X-PD-Decode": route.decode.url}
    if route.prefill is not None:
        headers["X-PD-Prefill"] = route.prefill.url
    if ex.failovers:
        headers["X-PD-Failover"] = ",".join(ex.failovers)
    return headers


def make_handler(endpoint: str):
    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE_KEY]
        request_id = Exchange.new_request_id(request.headers.get("X-Request-Id"))
        if not _authorized(state, request):
            return error_response(401, "missing or wrong API key", request_id)
        try:
            upstream_headers = _upstream_headers(request, request_id)
            req = parse_request(endpoint, await request.read())
        except BadRequest as exc:
            state.metrics.outcome("client_error")
            return error_response(400, str(exc), request_id)
        pool = state.pool_for(req.model)
        if pool is None:
            state.metrics.outcome("client_error")
            return error_response(404, f"model {req.model!r} is not served here", request_id)
        tokens = state.counter.count(req.prompt_text, req.prompt_ids, req.model)
        ex = Exchange(req, request_id, upstream_headers, tokens)
        try:
            return await serve(state, ex, pool, request)
        except (asyncio.CancelledError, ConnectionResetError):  # the client left
            state.metrics.outcome("cancelled")
            raise

    return handle


def choose(state: ProxyState, ex: Exchange, pool: Pool) -> Route | Rejection | None:
    excluded = frozenset(ex.excluded)
    decodes = usable(pool.decodes, excluded)
    if not decodes:
        return None
    prefills = usable(pool.prefills, excluded)
    info = RequestInfo(ex.prompt_tokens, ex.req.output_tokens, ex.req.prefix_key)
    return state.policy.choose(info, prefills, decodes)


async def serve(state: ProxyState, ex: Exchange, pool: Pool, request: web.Request) -> web.StreamResponse:
    metrics = state.metrics
    last: UpstreamFailure | None = None
    attempts = 0  # decode failures; a lost handoff is the prefill's and is bounded by the prefills left
    while attempts < state.config.max_decode_attempts:
        route = choose(state, ex, pool)
        if route is None:
            break
        if isinstance(route, Rejection):
            metrics.outcome("rejected")
            return error_response(503, "no instance is predicted to meet the latency SLOs; retry later",
                                  ex.request_id, **{"Retry-After": str(route.retry_after_s)})
        try:
            route, params = await run_prefill(state, ex, route, pool)
        except PrefillFailed as exc:
            metrics.outcome("failed")
            return _failure_response(exc.last, ex.request_id)
        except ClientSideError as exc:
            metrics.outcome("client_error")
            return _passthrough(exc.reply, ex.request_id)
        metrics.decisions.labels(route.kind, state.config.policy).inc()
        if route.estimate is not None:
            metrics.predicted_ttft.labels(route.kind).observe(route.estimate.ttft_s)
        try:
            result = await decode_leg(state, ex, route, params, request)
        except HandoffLost:  # the decoder is fine: prefill again (elsewhere or locally) and decode there
            assert route.prefill is not None
            last = UpstreamFailure(route.prefill.url, "prefill instance went down during the KV handoff")
            ex.excluded.add(route.prefill.url)
            ex.failovers.append("handoff->retry")
            metrics.failovers.labels("handoff_lost").inc()
            if not state.config.fallback_local and not usable(pool.prefills, frozenset(ex.excluded)):
                break  # the user wants a hard failure rather than a prefill on the decoder
            continue
        except DecodeFailed as exc:
            last = exc.failure
        except UpstreamFailure as exc:
            last = exc
        except ClientSideError as exc:
            metrics.outcome("client_error")
            return _passthrough(exc.reply, ex.request_id)
        else:
            account(state, ex, route, result)
            return result.response
        route.decode.record_failure()
        ex.excluded.add(route.decode.url)
        metrics.upstream_errors.labels(route.decode.url, "decode").inc()
        attempts += 1
        if attempts < state.config.max_decode_attempts:
            ex.failovers.append("decode->decode")
            metrics.failovers.labels("decode_retry").inc()
    metrics.outcome("failed")
    if last is None:
        return error_response(503, "no decode instance is available", ex.request_id)
    return _failure_response(last, ex.request_id)


async def decode_leg(state: ProxyState, ex: Exchange, route: Route, params, request: web.Request) -> DecodeResult:
    inst = route.decode
    inst.breaker.on_attempt()
    body = decode_body(ex.req, params)
    headers = _route_headers(ex, route)
    predicted_step = state.predictor.step_s(inst, 1, ex.prompt_tokens + ex.req.output_tokens // 2)
    handoff: asyncio.Timeout | None = None  # expired by the health monitor if the KV's source dies first
    try:
        async with contextlib.AsyncExitStack() as held:
            held.enter_context(inst.decoding(ex.prompt_tokens, ex.req.output_tokens))
            if route.prefill is not None:
                handoff = await held.enter_async_context(asyncio.timeout(None))
            until_first = held.enter_context(contextlib.ExitStack())  # what holds until the first token
            if route.kind == "local":  # the decoder prefills until its first token
                until_first.enter_context(inst.prefilling(ex.prompt_tokens))
            if handoff is not None:
                until_first.enter_context(route.prefill.handing_off(handoff))
            if ex.req.stream:
                result = await stream_decode(state, ex, inst, body, headers, request, until_first.close)
            else:
                result = await unary_decode(state, ex, inst, body, headers)
    except TimeoutError:
        if handoff is not None and handoff.expired():
            raise HandoffLost from None
        raise
    if result.failed:
        inst.record_failure()
    else:
        inst.record_success()
    if result.tpot_s is not None:
        state.predictor.decode_correction(inst).observe(predicted_step, result.tpot_s)
    return result


def account(state: ProxyState, ex: Exchange, route: Route, result: DecodeResult) -> None:
    """Metrics and SLO outcome of a finished request."""
    m = state.metrics
    if result.client_left:
        m.outcome("cancelled")
        return
    if result.response.status != 200:
        m.outcome("client_error")
        return
    e2e = time.monotonic() - ex.started
    m.e2e.labels(route.kind).observe(e2e)
    m.overhead.observe(ex.overhead_s)
    slo = state.config.slo
    if result.ttft_s is not None:
        m.ttft.labels(route.kind).observe(result.ttft_s)
        if result.tpot_s is not None:
            m.tpot.labels(route.kind).observe(result.tpot_s)
        met = result.ttft_s <= slo.ttft_s and (result.tpot_s or 0.0) <= slo.tpot_s
    else:  # not streamed: only the end-to-end time is visible, judged against both SLOs together
        met = e2e <= slo.ttft_s + slo.tpot_s * max(0, result.output_tokens - 1)
    _ttft_split(state, ex, result)
    _learn(state, ex, route, result)
    m.outcome("failed" if result.failed else "met_slo" if met else "missed_slo")


def _ttft_split(state: ProxyState, ex: Exchange, result: DecodeResult) -> None:
    handoff = result.handoff
    stage = state.metrics.ttft_stage
    if handoff is not None:
        stage.labels("queue_prefill").observe(max(0.0, handoff.prefill_done - ex.started_wall))
        stage.labels("transfer").observe(max(0.0, handoff.pull_done - handoff.pull_start))
        if result.ttft_s is not None:
            stage.labels("first_decode").observe(max(0.0, ex.started_wall + result.ttft_s - handoff.pull_done))
    elif ex.prefill_s is not None:  # proxy's view: the prefill leg, then the rest until the first token
        stage.labels("queue_prefill").observe(ex.prefill_s)
        if result.ttft_s is not None:
            stage.labels("handoff_to_first_token").observe(max(0.0, result.ttft_s - ex.prefill_s))


def _learn(state: ProxyState, ex: Exchange, route: Route, result: DecodeResult) -> None:
    """Online corrections: prompt-size estimate from usage, local prefill time from the observed TTFT."""
    if result.prompt_tokens and ex.req.prompt_text and not ex.req.prompt_ids:
        state.counter.observe(len(ex.req.prompt_text.encode()), result.prompt_tokens, ex.req.model)
    est = route.estimate
    if route.kind == "local" and est is not None and result.ttft_s is not None:
        state.predictor.prefill_correction(route.decode).observe(est.prefill_s, result.ttft_s - est.first_step_s)
