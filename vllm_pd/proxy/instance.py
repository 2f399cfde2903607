"""One upstream vLLM server as the proxy sees it: its roles, health, and the load the proxy put on it.

The proxy counts its own in-flight work (updated on every request event) instead of routing on scraped
metrics, which lag and cause thundering herds; scraping only adds load that other clients put there.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

from vllm_pd.proxy.breaker import CircuitBreaker
from vllm_pd.proxy.config import HealthConfig


@dataclass
class InstanceLoad:
    """In-flight work the proxy has sent to one instance."""

    prefill_requests: int = 0
    prefill_tokens: int = 0  # prompt tokens waiting for or in prefill
    decode_requests: int = 0
    context_tokens: int = 0  # KV tokens held by running decodes (prompt + half the expected output)
    remaining_tokens: int = 0  # expected output tokens still to come, summed over running decodes


class Instance:
    def __init__(self, url: str, role: str, health: HealthConfig) -> None:
        assert role in ("prefill", "decode", "both"), role
        self.url = url
        self.role = role
        self.can_prefill = role in ("prefill", "both")
        self.can_decode = role in ("decode", "both")
        self.load = InstanceLoad()
        self.breaker = CircuitBreaker(health)
        self.healthy = True  # optimistic until the first health check says otherwise
        self.missed_health_checks = 0  # consecutive slow answers; a refused connection counts at once
        self.unreachable = False  # the last health check found nothing listening (not merely slow)
        self.models: frozenset[str] = frozenset()
        self.model_cards: list[dict] = []
        self.external_requests = 0  # running+waiting on the server that the proxy did not send
        self._handoffs: dict[asyncio.Timeout, float] = {}  # decode legs pulling KV from here: when they began

    def __repr__(self) -> str:
        return f"Instance({self.url}, {self.role})"

    @property
    def available(self) -> bool:
        return self.healthy and self.breaker.allows()

    @contextlib.contextmanager
    def prefilling(self, tokens: int) -> Iterator[None]:
        """Count a prefill (remote or local) for as long as the block runs."""
        load = self.load
        load.prefill_requests += 1
        load.prefill_tokens += tokens
        try:
            yield
        finally:
            load.prefill_requests -= 1
            load.prefill_tokens -= tokens

    @contextlib.contextmanager
    def decoding(self, prompt_tokens: int, output_tokens: int) -> Iterator[None]:
        """Count a running decode for as long as the block runs."""
        load = self.load
        context = prompt_tokens + output_tokens // 2
        load.decode_requests += 1
        load.context_tokens += context
        load.remaining_tokens += output_tokens
        try:
            yield
        finally:
            load.decode_requests -= 1
            load.context_tokens -= context
            load.remaining_tokens -= output_tokens

    @contextlib.contextmanager
    def handing_off(self, deadline: asyncio.Timeout) -> Iterator[None]:
        """A decode leg waits for KV from this instance; ``fail_handoffs`` expires its ``deadline``."""
        self._handoffs[deadline] = time.monotonic()
        try:
            yield
        finally:
            del self._handoffs[deadline]

    def fail_handoffs(self, window_s: float) -> int:
        """This instance went down: expire the decode legs that began pulling from it within ``window_s``.

        A decoder pulling KV from a dead producer may never answer (vLLM's NixlConnector defers the
        failure until the transfers to it finish); older legs have their KV already.
        """
        now, loop = time.monotonic(), asyncio.get_running_loop()
        cut = [deadline for deadline, began in self._handoffs.items() if now - began <= window_s]
        for deadline in cut:
            deadline.reschedule(loop.time())
        return len(cut)

    def observe_scrape(self, running: float, waiting: float) -> None:
        """Server-side counts from /metrics: anything beyond our own accounting came from elsewhere."""
        own = self.load.decode_requests + self.load.prefill_requests
        self.external_requests = max(0, int(running + waiting) - own)

    def record_success(self) -> None:
        self.breaker.on_success()

    def record_failure(self) -> None:
        self.breaker.on_failure()
