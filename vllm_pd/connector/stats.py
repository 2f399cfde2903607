"""PDConnector's metrics through vLLM's connector-stats mechanism (``vllm:pd_*`` on /metrics).

Workers and the scheduler side each fill a :class:`PDStats` per step; vLLM aggregates them and
hands the dict to :class:`PDPromMetrics` in the API-server process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vllm.distributed.kv_transfer.kv_connector.v1.metrics import KVConnectorPromMetrics, KVConnectorStats

SERIES = ("pull_time_s", "pull_bytes", "pull_descriptors", "pull_post_s", "pull_post_cpu_s")
COUNTERS = ("failed_pulls", "expired_leases", "released_leases", "handshakes", "failed_handshakes")
GAUGES = ("held_blocks",)


def _empty() -> dict[str, Any]:
    data: dict[str, Any] = {name: [] for name in SERIES}
    data.update(dict.fromkeys(COUNTERS, 0))
    return data


@dataclass
class PDStats(KVConnectorStats):
    data: dict[str, Any] = field(default_factory=_empty)

    def record_pull(self, seconds: float, nbytes: int, descriptors: int, post_s: float, post_cpu_s: float) -> None:
        for name, value in zip(SERIES, (seconds, nbytes, descriptors, post_s, post_cpu_s), strict=True):
            self.data[name].append(value)

    def count(self, name: str, n: int = 1) -> None:
        self.data[name] = self.data.get(name, 0) + n

    def set_gauge(self, name: str, value: int) -> None:
        self.data[name] = value

    def reset(self) -> None:
        self.data = _empty()

    def aggregate(self, other: KVConnectorStats) -> PDStats:
        for name in SERIES:
            self.data.setdefault(name, []).extend(other.data.get(name, []))
        for name in COUNTERS:
            self.data[name] = self.data.get(name, 0) + other.data.get(name, 0)
        for name in GAUGES:
            if name in other.data:
                self.data[name] = other.data[name]
        return self

    def reduce(self) -> dict[str, int | float]:
        times = self.data.get("pull_time_s", [])
        total_bytes = sum(self.data.get("pull_bytes", []))
        out: dict[str, int | float] = {"pulls": len(times)}
        if times:
            out["avg_pull_ms"] = round(1e3 * sum(times) / len(times), 3)
            out["pull_MBps"] = round(total_bytes / max(sum(times), 1e-9) / 1e6, 1)
            out["avg_descriptors"] = round(sum(self.data["pull_descriptors"]) / len(times), 1)
        for name in COUNTERS + GAUGES:
            if name in self.data:
                out[name] = self.data[name]
        return out

    def is_empty(self) -> bool:
        return not any(self.data.get(n) for n in SERIES + COUNTERS) and not any(n in self.data for n in GAUGES)


_TIME_BUCKETS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]
_BYTE_BUCKETS = [2.0**k for k in range(16, 34, 2)]
_DESC_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384]


class PDPromMetrics(KVConnectorPromMetrics):
    def __init__(self, vllm_config, metric_types, labelnames, per_engine_labelvalues) -> None:
        super().__init__(vllm_config, metric_types, labelnames, per_engine_labelvalues)
        from vllm.v1.metrics.utils import create_metric_per_engine

        def per_engine(metric):
            return create_metric_per_engine(metric, per_engine_labelvalues)

        hist, counter, gauge = self._histogram_cls, self._counter_cls, self._gauge_cls
        self.series = {
            "pull_time_s": per_engine(hist(name="vllm:pd_pull_time_seconds", buckets=_TIME_BUCKETS,
                                           documentation="Time of one KV pull (consumer side).",
                                           labelnames=labelnames)),
            "pull_bytes": per_engine(hist(name="vllm:pd_pull_bytes", buckets=_BYTE_BUCKETS,
                                          documentation="Bytes moved by one KV pull.", labelnames=labelnames)),
            "pull_descriptors": per_engine(hist(name="vllm:pd_pull_descriptors", buckets=_DESC_BUCKETS,
                                                documentation="NIXL descriptors of one KV pull.",
                                                labelnames=labelnames)),
            "pull_post_s": per_engine(hist(name="vllm:pd_pull_post_seconds", buckets=_TIME_BUCKETS,
                                           documentation="Time posting a pull blocked the engine step (UCX copies "
                                                         "shared memory inside the call).", labelnames=labelnames)),
            "pull_post_cpu_s": per_engine(hist(name="vllm:pd_pull_post_cpu_seconds", buckets=_TIME_BUCKETS,
                                               documentation="CPU time the posting thread got while posting a "
                                                             "pull (below pd_pull_post_seconds: a starved core).",
                                               labelnames=labelnames)),
        }
        help_text = {
            "failed_pulls": "KV pulls that failed (peer gone, timeout, lease over, NIXL error).",
            "expired_leases": "Producer leases that expired before the consumer pulled (blocks freed).",
            "released_leases": "Producer leases ended by the consumer (pull done, rejected, cached).",
            "handshakes": "Successful handshakes with producers (consumer side).",
            "failed_handshakes": "Failed handshakes with producers (consumer side).",
        }
        self.counters = {name: per_engine(counter(name=f"vllm:pd_{name}", documentation=doc, labelnames=labelnames))
                         for name, doc in help_text.items()}
        self.held_blocks = per_engine(gauge(name="vllm:pd_held_blocks", labelnames=labelnames,
                                            documentation="KV blocks a producer holds under lease.",
                                            multiprocess_mode="mostrecent"))

    def observe(self, transfer_stats_data: dict[str, Any], engine_idx: int = 0) -> None:
        for name, metric in self.series.items():
            for value in transfer_stats_data.get(name, []):
                metric[engine_idx].observe(value)
        for name, metric in self.counters.items():
            if transfer_stats_data.get(name):
                metric[engine_idx].inc(transfer_stats_data[name])
        if "held_blocks" in transfer_stats_data:
            self.held_blocks[engine_idx].set(transfer_stats_data["held_blocks"])
