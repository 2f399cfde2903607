"""Prometheus metrics of the proxy (prefix ``vllm_pd_``), in a registry owned by the app (no globals)."""

from __future__ import annotations

import collections
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2)
_OVERHEAD_BUCKETS = (5e-5, 1e-4, 2e-4, 3e-4, 5e-4, 7.5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 5e-2)
GOODPUT_WINDOW_S = 60.0

OUTCOMES = ("met_slo", "missed_slo", "rejected", "failed", "cancelled", "client_error")
TTFT_STAGES = ("queue_prefill", "transfer", "first_decode", "handoff_to_first_token")


class _Cached:
    """A labelled metric whose children are looked up once: ``labels()`` costs microseconds per call."""

    def __init__(self, metric) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], object] = {}

    def labels(self, *values: str):
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class ProxyMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()

        def hist(name: str, doc: str, labels: list[str], buckets=_LATENCY_BUCKETS) -> _Cached:
            return _Cached(Histogram(name, doc, labels, buckets=buckets, registry=r))

        def count(name: str, doc: str, labels: list[str]) -> _Cached:
            return _Cached(Counter(name, doc, labels, registry=r))

        self.ttft = hist("vllm_pd_ttft_seconds", "Time to first token seen by the proxy", ["route"])
        self.tpot = hist("vllm_pd_tpot_seconds", "Mean time per output token after the first", ["route"],
                         _TPOT_BUCKETS)
        self.e2e = hist("vllm_pd_e2e_latency_seconds", "End-to-end request latency at the proxy", ["route"])
        self.ttft_stage = hist("vllm_pd_ttft_stage_seconds",
                               "TTFT split: queue_prefill, transfer, first_decode (from the connector's pd_handoff "
                               "timings); handoff_to_first_token when the connector reports none", ["stage"])
        self.predicted_ttft = hist("vllm_pd_predicted_ttft_seconds", "TTFT the policy predicted", ["route"])
        self.requests = count("vllm_pd_requests", "Requests by outcome", ["outcome"])
        self.decisions = count("vllm_pd_route_decisions", "Routing decisions by route (remote|local)",
                               ["route", "policy"])
        self.failovers = count("vllm_pd_failovers", "Failovers by kind", ["kind"])
        self.upstream_errors = count("vllm_pd_upstream_errors", "Failed upstream calls", ["instance", "leg"])
        self.inflight = _Cached(Gauge("vllm_pd_inflight_requests", "Requests the proxy has in flight per instance",
                                      ["instance", "phase"], registry=r))
        self.overhead = Histogram("vllm_pd_proxy_overhead_seconds",
                                  "Time the proxy itself spends on a request (outside upstream waits)",
                                  buckets=_OVERHEAD_BUCKETS, registry=r)
        self.goodput = Gauge("vllm_pd_goodput_rps",
                             f"Requests per second meeting both SLOs over the last {GOODPUT_WINDOW_S:.0f} s",
                             registry=r)
        self._met_times: collections.deque[float] = collections.deque()
        self._started = time.monotonic()

    def outcome(self, outcome: str) -> None:
        self.requests.labels(outcome).inc()
        if outcome == "met_slo":
            self._met_times.append(time.monotonic())

    def render(self, instances) -> bytes:
        """Exposition text; gauges that are cheap to read are refreshed here instead of per event."""
        now = time.monotonic()
        while self._met_times and self._met_times[0] < now - GOODPUT_WINDOW_S:
            self._met_times.popleft()
        window = min(GOODPUT_WINDOW_S, max(1e-9, now - self._started))
        self.goodput.set(len(self._met_times) / window)
        for inst in instances:
            self.inflight.labels(inst.url, "prefill").set(inst.load.prefill_requests)
            self.inflight.labels(inst.url, "decode").set(inst.load.decode_requests)
        return generate_latest(self.registry)
