"""The proxy's long-lived state (built once per app) and one client request in flight (``Exchange``)."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from vllm_pd.proxy.client import UpstreamClient
from vllm_pd.proxy.config import PoolConfig, ProxyConfig
from vllm_pd.proxy.instance import Instance
from vllm_pd.proxy.metrics import ProxyMetrics
from vllm_pd.proxy.policy import PrefixAffinity, make_policy
from vllm_pd.proxy.predictor import Predictor
from vllm_pd.proxy.tokens import PromptCounter, load_fast_tokenizer
from vllm_pd.proxy.wire import ClientRequest


@dataclass(frozen=True)
class Pool:
    """The instances of one pool, as shared ``Instance`` objects (an instance may serve several pools)."""

    prefills: tuple[Instance, ...]  # prefill-capable: prefill and both
    decodes: tuple[Instance, ...]  # decode-capable: decode and both


class ProxyState:
    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self.instances: dict[str, Instance] = {}
        for pool in (config.pool, *config.models.values()):
            for role in ("prefill", "decode", "both"):
                for url in getattr(pool, role):
                    self.instances.setdefault(url, Instance(url, role, config.health))
        self.default_pool = self._pool(config.pool) if not config.pool.empty else None
        self.model_pools = {name: self._pool(p) for name, p in config.models.items()}
        self.predictor = Predictor.from_file(config.latency_profile)
        self.affinity = PrefixAffinity()
        self.policy = make_policy(config, self.predictor, self.affinity)
        self.counter = PromptCounter(load_fast_tokenizer(config.tokenizer))
        self.metrics = ProxyMetrics()
        self.clients: dict[str, UpstreamClient] = {}

    def _pool(self, pool: PoolConfig) -> Pool:
        get = self.instances.__getitem__
        return Pool(tuple(get(u) for u in (*pool.prefill, *pool.both)),
                    tuple(get(u) for u in (*pool.decode, *pool.both)))

    def pool_for(self, model: str | None) -> Pool | None:
        """The pool for ``model``; None when the model is known to be served nowhere."""
        if model is not None and model in self.model_pools:
            return self.model_pools[model]
        pool = self.default_pool
        if pool is None:
            return None
        if model is None:
            return pool
        known = [i.models for i in pool.decodes if i.models]
        if known and not any(model in m for m in known):
            return None
        return pool

    def served_models(self) -> list[dict]:
        cards: dict[str, dict] = {}
        for inst in self.instances.values():
            if inst.healthy:
                for card in inst.model_cards:
                    cards.setdefault(card.get("id"), card)
        for name in self.model_pools:
            cards.setdefault(name, {"id": name, "object": "model", "owned_by": "vllm-pd"})
        return list(cards.values())


@dataclass
class Exchange:
    """One client request while the proxy serves it: ids, headers for both legs, timings."""

    req: ClientRequest
    request_id: str
    upstream_headers: dict[str, str]
    prompt_tokens: int
    started: float = field(default_factory=time.monotonic)
    started_wall: float = field(default_factory=time.time)
    excluded: set[str] = field(default_factory=set)
    failovers: list[str] = field(default_factory=list)
    overhead_s: float = 0.0  # proxy's own time, upstream waits excluded
    prefill_s: float | None = None  # duration of the successful prefill leg
    _busy_since: float = field(default_factory=time.monotonic)

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Time spent inside is upstream time, not proxy overhead."""
        stopped = self._busy_since == float("inf")
        self.overhead_s += 0.0 if stopped else time.monotonic() - self._busy_since
        try:
            yield
        finally:
            if not stopped:
                self._busy_since = time.monotonic()

    def stop_clock(self) -> float:
        """Close the overhead count (at the first byte sent to the client) and return it."""
        self.overhead_s += max(0.0, time.monotonic() - self._busy_since)
        self._busy_since = float("inf")  # later waits add nothing
        return self.overhead_s

    @staticmethod
    def new_request_id(given: str | None) -> str:
        return given if given else uuid.uuid4().hex
