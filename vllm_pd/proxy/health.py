"""Background upkeep of instance state: ``/health`` checks, served models, and ``/metrics`` scrapes.

An instance that fails its health check is taken out of rotation at once; when it passes again (e.g. it
restarted) its circuit breaker is reset so it is used again without waiting out a cool-down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import msgspec

from vllm_pd.proxy.client import ConnectError, HTTPError, UpstreamClient
from vllm_pd.proxy.instance import Instance
from vllm_pd.proxy.state import ProxyState
from vllm_pd.proxy.warmup import PairWarmer

log = logging.getLogger(__name__)
_RUNNING = b"vllm:num_requests_running"
_WAITING = b"vllm:num_requests_waiting"


class _ModelList(msgspec.Struct):
    data: list[dict] = []


def parse_request_counts(text: bytes) -> tuple[float, float]:
    """Sum of ``vllm:num_requests_running`` and ``..._waiting`` samples in Prometheus text."""
    running = waiting = 0.0
    for line in text.splitlines():
        if line.startswith(_RUNNING) or line.startswith(_WAITING):
            try:
                value = float(line.rsplit(b" ", 1)[1])
            except (IndexError, ValueError):
                continue
            if line.startswith(_RUNNING):
                running += value
            else:
                waiting += value
    return running, waiting


class HealthMonitor:
    def __init__(self, state: ProxyState, warmer: PairWarmer | None = None) -> None:
        self.state = state
        self.warmer = warmer  # told after each round, so that a pair is warmed once both sides are up
        self._task: asyncio.Task | None = None
        self._last_scrape = 0.0

    async def start(self) -> None:
        await self.check_all()
        self._task = asyncio.create_task(self._loop(), name="vllm-pd-health")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.warmer is not None:
            await self.warmer.stop()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.state.config.health.interval_s)
            try:
                await self.check_all()
            except Exception:  # one bad round must not end health checking for good
                log.exception("health check round failed")

    async def check_all(self) -> None:
        scrape = time.monotonic() - self._last_scrape >= self.state.config.health.scrape_interval_s
        if scrape:
            self._last_scrape = time.monotonic()
        await asyncio.gather(*(self._check(inst, scrape) for inst in self.state.instances.values()))
        if self.warmer is not None:
            self.warmer.refresh()

    async def _check(self, inst: Instance, scrape: bool) -> None:
        client = self.state.clients[inst.url]
        timeout = self.state.config.timeouts.health_s
        inst.unreachable = False
        try:
            status, _, _ = await client.fetch("GET", "/health", timeout_s=timeout)
            ok = status == 200
            inst.missed_health_checks = 0 if ok else inst.missed_health_checks + 1
        except ConnectError:  # nothing listens: the server is gone
            ok = False
            inst.unreachable = True
        except (HTTPError, TimeoutError):
            # A server busy with a long forward pass may answer late once; only a run of misses
            # takes it out of rotation.
            inst.missed_health_checks += 1
            ok = inst.missed_health_checks < self.state.config.health.failure_threshold and inst.healthy
        was = inst.healthy
        inst.healthy = ok
        if ok and not was:  # it came back (restarted): use it again at once
            inst.breaker.on_success()
        if ok and not inst.model_cards:
            await self._fetch_models(inst, client, timeout)
        if ok and scrape:
            await self._scrape(inst, client, timeout)
        if ok != was:
            log.warning("instance %s is now %s", inst.url, "healthy" if ok else "unhealthy")
        if was and not ok and (cut := inst.fail_handoffs(self.state.config.timeouts.handoff_s)):
            log.warning("retrying %d decode legs that were pulling KV from %s", cut, inst.url)

    async def _fetch_models(self, inst: Instance, client: UpstreamClient, timeout: float) -> None:
        try:
            status, _, body = await client.fetch("GET", "/v1/models", timeout_s=timeout)
            if status != 200:
                return
            cards = msgspec.json.decode(body, type=_ModelList).data
        except (HTTPError, TimeoutError, msgspec.DecodeError, msgspec.ValidationError):
            return
        inst.model_cards = cards
        inst.models = frozenset(str(c.get("id")) for c in cards)

    async def _scrape(self, inst: Instance, client: UpstreamClient, timeout: float) -> None:
        try:
            status, _, text = await client.fetch("GET", "/metrics", timeout_s=timeout)
        except (HTTPError, TimeoutError):
            return
        if status == 200:
            inst.observe_scrape(*parse_request_counts(text))
