"""Consumer side: keep the producers' leases of waiting requests alive, and release unwanted ones.

One daemon thread in the consumer's EngineCore process. Every side-channel call is bounded; a
producer that does not answer simply stops having its leases renewed, and the worker then sees
an expired deadline and treats the pull as a load failure.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict

from vllm_pd import wire
from vllm_pd.connector.side_channel import SideChannelError, side_request

logger = logging.getLogger(__name__)

Producer = tuple[str, int, str]  # host, port, incarnation


class LeaseKeeper:
    def __init__(self, renew_interval_s: float, timeout_s: float) -> None:
        self._interval = renew_interval_s
        self._timeout = timeout_s
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[Producer, str]] = {}  # local id -> (producer, remote id)
        self._deadlines: dict[str, float] = {}  # local id -> renewed deadline (producer clock)
        self._releases: queue.Queue[tuple[Producer, str] | None] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pd-lease-keeper", daemon=True)
        self._thread.start()

    def watch(self, request_id: str, handoff: wire.HandoffParams) -> None:
        """Renew this request's lease until ``unwatch``."""
        producer = (handoff.remote_host, handoff.remote_port, handoff.remote_incarnation)
        with self._lock:
            self._waiting[request_id] = (producer, handoff.remote_request_id)

    def unwatch(self, request_id: str) -> None:
        with self._lock:
            self._waiting.pop(request_id, None)
            self._deadlines.pop(request_id, None)

    def deadline(self, request_id: str, default: float) -> float:
        with self._lock:
            return max(default, self._deadlines.get(request_id, default))

    def release(self, handoff: wire.HandoffParams) -> None:
        """Ask the producer to free a request's blocks now (asynchronously, best effort)."""
        producer = (handoff.remote_host, handoff.remote_port, handoff.remote_incarnation)
        self._releases.put((producer, handoff.remote_request_id))

    def close(self) -> None:
        self._stop.set()
        self._releases.put(None)
        self._thread.join(timeout=2 * self._timeout + 1)

    def _run(self) -> None:
        next_renew = time.monotonic() + self._interval
        while not self._stop.is_set():
            try:
                item = self._releases.get(timeout=max(0.0, next_renew - time.monotonic()))
            except queue.Empty:
                item = None
            if item is not None:
                self._send_releases([item] + self._drain())
            if time.monotonic() >= next_renew:
                self._renew_all()
                next_renew = time.monotonic() + self._interval

    def _drain(self) -> list[tuple[Producer, str]]:
        items = []
        while True:
            try:
                item = self._releases.get_nowait()
            except queue.Empty:
                return items
            if item is not None:
                items.append(item)

    def _send_releases(self, items: list[tuple[Producer, str]]) -> None:
        by_producer: dict[Producer, list[str]] = defaultdict(list)
        for producer, remote_id in items:
            by_producer[producer].append(remote_id)
        for (host, port, incarnation), remote_ids in by_producer.items():
            request = wire.LeaseRelease(pd_protocol=wire.PROTOCOL_VERSION, incarnation=incarnation,
                                        request_ids=remote_ids)
            self._call(host, port, request)

    def _renew_all(self) -> None:
        with self._lock:
            waiting = dict(self._waiting)
        by_producer: dict[Producer, dict[str, str]] = defaultdict(dict)
        for local_id, (producer, remote_id) in waiting.items():
            by_producer[producer][remote_id] = local_id
        for (host, port, incarnation), ids in by_producer.items():
            request = wire.LeaseRenew(pd_protocol=wire.PROTOCOL_VERSION, incarnation=incarnation,
                                      request_ids=list(ids))
            reply = self._call(host, port, request)
            if reply is None:
                continue
            with self._lock:
                for remote_id, deadline in reply.deadlines.items():
                    local_id = ids.get(remote_id)
                    if local_id in self._waiting:
                        self._deadlines[local_id] = deadline

    def _call(self, host: str, port: int, request: wire.SideRequest) -> wire.LeaseReply | None:
        try:
            return side_request(host, port, request, wire.LeaseReply, self._timeout)
        except (SideChannelError, wire.ProtocolError) as e:
            logger.warning("PDConnector: %s to %s:%d failed: %s", type(request).__name__, host, port, e)
            return None
