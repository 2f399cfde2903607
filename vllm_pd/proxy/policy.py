"""Choosing where a request runs: a (prefill, decode) pair, or the decode instance alone (local prefill).

``GoodputPolicy`` (the default) predicts TTFT and TPOT for every candidate and keeps those meeting both
SLOs; a local prefill wins when it meets them without stalling the decoder past its budget; among the
rest the most SLO headroom wins, with prefix affinity as a small bonus that only ranks candidates
already meeting the SLOs (it can never pull a request onto an instance predicted to miss).
``least-loaded`` and ``round-robin`` exist for comparison.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from vllm_pd.proxy.config import ProxyConfig
from vllm_pd.proxy.instance import Instance
from vllm_pd.proxy.predictor import Estimate, Predictor

AFFINITY_BONUS = 0.05  # headroom units (fractions of the SLO)


@dataclass(frozen=True)
class RequestInfo:
    prompt_tokens: int
    output_tokens: int
    prefix_key: int | None = None  # hash of a long prompt prefix, for cache affinity


@dataclass(frozen=True)
class Route:
    kind: str  # "remote" | "local"
    decode: Instance
    prefill: Instance | None = None
    estimate: Estimate | None = None
    meets_slo: bool = True


@dataclass(frozen=True)
class Rejection:
    """No candidate is predicted to meet the SLOs and admission is "reject"."""

    retry_after_s: int
    best: Route | None


def usable(instances: Sequence[Instance], exclude: frozenset[str]) -> list[Instance]:
    """Instances whose breaker allows a request; if none does, the healthy ones, then those that are only
    slow to answer health checks, then all non-excluded ones (no blackout). A server found gone comes
    last: when the only live decoder stalls, a request must wait for it, not fail on the dead one."""
    candidates = [i for i in instances if i.url not in exclude]
    return ([i for i in candidates if i.available] or [i for i in candidates if i.healthy]
            or [i for i in candidates if not i.unreachable] or candidates)


class PrefixAffinity:
    """Which instance last prefilled a given long prefix (bounded LRU)."""

    def __init__(self, capacity: int = 4096) -> None:
        self._where: OrderedDict[int, str] = OrderedDict()
        self._capacity = capacity

    def lookup(self, key: int | None) -> str | None:
        return None if key is None else self._where.get(key)

    def record(self, key: int | None, url: str) -> None:
        if key is None:
            return
        self._where[key] = url
        self._where.move_to_end(key)
        if len(self._where) > self._capacity:
            self._where.popitem(last=False)


class GoodputPolicy:
    def __init__(self, config: ProxyConfig, predictor: Predictor, affinity: PrefixAffinity) -> None:
        self.slo = config.slo
        self.allow_local = config.local_prefill
        self.admission = config.admission
        self.stall_budget_s = config.local_stall_budget * config.slo.tpot_s
        self.predictor = predictor
        self.affinity = affinity

    def headroom(self, est: Estimate) -> float:
        return min(1.0 - est.ttft_s / self.slo.ttft_s, 1.0 - est.tpot_s / self.slo.tpot_s)

    def choose(self, req: RequestInfo, prefills: Sequence[Instance], decodes: Sequence[Instance]) -> Route | Rejection:
        cached_at = self.affinity.lookup(req.prefix_key)
        local = [self._local(d, req) for d in decodes] if self.allow_local or not prefills else []
        remote = [self._remote(p, d, req) for p in prefills for d in decodes if p is not d]
        if not remote:  # nowhere else to prefill: the decoder must, whatever it costs
            local = local or [self._local(d, req) for d in decodes]
        ok_local = [r for r in local if r.meets_slo and r.estimate.stall_s <= self.stall_budget_s]
        ok = ok_local or [r for r in remote if r.meets_slo] or [r for r in local if r.meets_slo]
        if ok:
            return max(ok, key=lambda r: self._score(r, cached_at))
        fallback = remote + [r for r in local if r.estimate.stall_s <= self.stall_budget_s]
        best = max(fallback or local, key=lambda r: self.headroom(r.estimate))
        if self.admission == "reject":
            excess = best.estimate.ttft_s - self.slo.ttft_s
            return Rejection(max(1, math.ceil(excess)), best)
        return best

    def _score(self, route: Route, cached_at: str | None) -> float:
        where = route.prefill.url if route.prefill is not None else route.decode.url
        return self.headroom(route.estimate) + (AFFINITY_BONUS if where == cached_at else 0.0)

    def _local(self, decode: Instance, req: RequestInfo) -> Route:
        est = self.predictor.local(decode, req.prompt_tokens, req.output_tokens)
        return Route("local", decode, None, est, self.headroom(est) >= 0)

    def _remote(self, prefill: Instance, decode: Instance, req: RequestInfo) -> Route:
        est = self.predictor.remote(prefill, decode, req.prompt_tokens, req.output_tokens)
        return Route("remote", decode, prefill, est, self.headroom(est) >= 0)


class LeastLoadedPolicy:
    """Fewest queued prefill tokens for P, fewest running decodes for D; always remote when possible."""

    def choose(self, req: RequestInfo, prefills: Sequence[Instance], decodes: Sequence[Instance]) -> Route:
        decode = min(decodes, key=lambda i: (i.load.decode_requests + i.external_requests, i.load.context_tokens))
        others = [p for p in prefills if p is not decode]
        if not others:
            return Route("local", decode)
        prefill = min(others, key=lambda i: (i.load.prefill_tokens, i.load.prefill_requests))
        return Route("remote", decode, prefill)


class RoundRobinPolicy:
    """P and D cycled independently (the toy proxy's policy), over whichever instances are usable."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def choose(self, req: RequestInfo, prefills: Sequence[Instance], decodes: Sequence[Instance]) -> Route:
        n = next(self._counter)
        decode = decodes[n % len(decodes)]
        others = [p for p in prefills if p is not decode]
        if not others:
            return Route("local", decode)
        return Route("remote", decode, others[n % len(others)])


def make_policy(config: ProxyConfig, predictor: Predictor, affinity: PrefixAffinity):
    if config.policy == "goodput":
        return GoodputPolicy(config, predictor, affinity)
    if config.policy == "least-loaded":
        return LeastLoadedPolicy()
    return RoundRobinPolicy()
