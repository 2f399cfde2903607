"""Producer-side leases: how long a finished prefill's blocks wait for a consumer's pull.

A lease is GRANTED when the producer hands off a request, may be renewed while the consumer
waits, and ends exactly once: RELEASED (pull done, or the consumer said it will never pull)
or EXPIRED (deadline passed). Only an ended lease lets the producer free its blocks.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass


class LeaseState(enum.Enum):
    GRANTED = "granted"
    RELEASED = "released"
    EXPIRED = "expired"


_TRANSITIONS: dict[LeaseState, frozenset[LeaseState]] = {
    LeaseState.GRANTED: frozenset({LeaseState.GRANTED, LeaseState.RELEASED, LeaseState.EXPIRED}),
    LeaseState.RELEASED: frozenset(),
    LeaseState.EXPIRED: frozenset(),
}


class LeaseError(RuntimeError):
    pass


@dataclass
class Lease:
    request_id: str
    deadline: float
    num_blocks: int
    state: LeaseState = LeaseState.GRANTED

    def transition(self, new: LeaseState) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise LeaseError(f"lease {self.request_id}: {self.state.name} -> {new.name} is not allowed")
        self.state = new


class LeaseTable:
    """All live leases of one producer; thread-safe (the side channel thread renews and releases).

    Ended leases leave the table and are queued in ``take_ended()`` for the worker to free.
    """

    def __init__(self, lease_s: float) -> None:
        self._lease_s = lease_s
        self._live: dict[str, Lease] = {}
        self._ended: list[Lease] = []
        self._lock = threading.Lock()

    def grant(self, request_id: str, num_blocks: int, now: float) -> float:
        """Start a lease; returns its deadline."""
        with self._lock:
            if request_id in self._live:
                raise LeaseError(f"lease {request_id} granted twice")
            lease = Lease(request_id, now + self._lease_s, num_blocks)
            self._live[request_id] = lease
            return lease.deadline

    def renew(self, request_ids: list[str], now: float) -> dict[str, float]:
        """Push deadlines of live leases to ``now + lease_s``; returns the new deadlines (live ones only)."""
        with self._lock:
            renewed = {}
            for request_id in request_ids:
                lease = self._live.get(request_id)
                if lease is None or lease.deadline <= now:
                    continue
                lease.transition(LeaseState.GRANTED)
                lease.deadline = max(lease.deadline, now + self._lease_s)
                renewed[request_id] = lease.deadline
            return renewed

    def release(self, request_ids: list[str] | set[str]) -> list[str]:
        """End leases early (pull done or never coming); returns those that were live."""
        return self._end(request_ids, LeaseState.RELEASED)

    def expire_due(self, now: float) -> list[str]:
        """End every lease whose deadline has passed; returns their request ids."""
        with self._lock:
            due = [rid for rid, lease in self._live.items() if lease.deadline <= now]
        return self._end(due, LeaseState.EXPIRED)

    def take_ended(self) -> list[Lease]:
        """Leases ended since the last call (their blocks may now be freed)."""
        with self._lock:
            ended, self._ended = self._ended, []
            return ended

    def _end(self, request_ids: list[str] | set[str], state: LeaseState) -> list[str]:
        with self._lock:
            ended = []
            for request_id in request_ids:
                lease = self._live.pop(request_id, None)
                if lease is None:
                    continue
                lease.transition(state)
                self._ended.append(lease)
                ended.append(request_id)
            return ended

    def deadline(self, request_id: str) -> float | None:
        with self._lock:
            lease = self._live.get(request_id)
            return None if lease is None else lease.deadline

    @property
    def held_blocks(self) -> int:
        with self._lock:
            return sum(lease.num_blocks for lease in self._live.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._live)
