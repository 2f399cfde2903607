"""The aiohttp application: routes, and the lifecycle of upstream clients and the health monitor."""

from __future__ import annotations

import msgspec
from aiohttp import web

from vllm_pd.proxy.config import ProxyConfig
from vllm_pd.proxy.handler import STATE_KEY, error_response, make_handler
from vllm_pd.proxy.health import HealthMonitor
from vllm_pd.proxy.state import ProxyState
from vllm_pd.proxy.upstream import open_client
from vllm_pd.proxy.warmup import PairWarmer
from vllm_pd.proxy.wire import CHAT, COMPLETIONS

_MONITOR_KEY: web.AppKey[HealthMonitor] = web.AppKey("health_monitor", HealthMonitor)


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(data), status=status, content_type="application/json")


async def models(request: web.Request) -> web.Response:
    return _json({"object": "list", "data": request.app[STATE_KEY].served_models()})


async def health(request: web.Request) -> web.Response:
    """Liveness: the proxy process answers."""
    return _json({"status": "ok"})


def _instance_status(state: ProxyState) -> list[dict]:
    return [{"url": i.url, "role": i.role, "healthy": i.healthy, "breaker": i.breaker.state.value,
             "prefill_inflight": i.load.prefill_requests, "decode_inflight": i.load.decode_requests}
            for i in state.instances.values()]


async def ready(request: web.Request) -> web.Response:
    """Readiness: every pool has a healthy decode-capable instance (prefill can always fall back to it)."""
    state = request.app[STATE_KEY]
    pools = [p for p in (state.default_pool, *state.model_pools.values()) if p is not None]
    ok = all(any(d.healthy for d in pool.decodes) for pool in pools)
    return _json({"ready": ok, "instances": _instance_status(state)}, 200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    body = state.metrics.render(state.instances.values())
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def _not_found(request: web.Request) -> web.Response:
    return error_response(404, f"no route {request.method} {request.path}")


async def _open(app: web.Application) -> None:
    state = app[STATE_KEY]
    for url in state.instances:
        state.clients[url] = open_client(url, state.config)
    monitor = HealthMonitor(state, PairWarmer(state) if state.config.warm_pairs else None)
    app[_MONITOR_KEY] = monitor
    await monitor.start()


async def _close(app: web.Application) -> None:
    await app[_MONITOR_KEY].stop()
    state = app[STATE_KEY]
    for client in state.clients.values():
        await client.close()
    state.clients.clear()


def build_app(config: ProxyConfig) -> web.Application:
    app = web.Application(client_max_size=config.max_body_bytes)
    app[STATE_KEY] = ProxyState(config)
    app.router.add_post(COMPLETIONS, make_handler(COMPLETIONS))
    app.router.add_post(CHAT, make_handler(CHAT))
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    app.router.add_route("*", "/{tail:.*}", _not_found)
    app.on_startup.append(_open)
    app.on_cleanup.append(_close)
    return app
