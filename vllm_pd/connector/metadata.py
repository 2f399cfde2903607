"""What passes between PDConnector's scheduler side and its workers, inside one vLLM instance.

Scheduler -> workers, once per step: :class:`PDConnectorMetadata` (the only channel that way).
Workers -> scheduler, once per step: :class:`PDWorkerMeta` (pull outcomes, for ``pd_handoff``),
and :class:`WorkerHandshake` once at startup (served by the side channel).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorHandshakeMetadata,
    KVConnectorMetadata,
    KVConnectorWorkerMetadata,
)

from vllm_pd.wire import HandoffParams


@dataclass(frozen=True)
class PullTask:
    """Pull ``remote_block_ids`` of ``handoff`` into ``local_block_ids`` (same length, same order)."""

    request_id: str
    handoff: HandoffParams
    local_block_ids: list[int]
    remote_block_ids: list[int]
    deadline: float  # producer clock; the freshest renewed deadline the scheduler knows


@dataclass(frozen=True)
class RemoteRelease:
    """Tell a producer it may free a request's blocks now (nothing will be pulled)."""

    handoff: HandoffParams


@dataclass
class PDConnectorMetadata(KVConnectorMetadata):
    pulls: list[PullTask] = field(default_factory=list)
    releases: list[RemoteRelease] = field(default_factory=list)
    # Producer side: requests whose blocks are now held under a lease, and leases that ended
    # (expired, or released by the consumer over the side channel): the worker reports them
    # as finished_sending so vLLM frees the blocks.
    leased: list[str] = field(default_factory=list)
    lease_ended: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PullRecord:
    """One finished pull as a worker saw it (wall clock seconds)."""

    pull_start: float
    pull_done: float
    bytes: int
    descriptors: int
    ok: bool


@dataclass
class PDWorkerMeta(KVConnectorWorkerMetadata):
    pulls: dict[str, PullRecord] = field(default_factory=dict)

    def aggregate(self, other: KVConnectorWorkerMetadata) -> PDWorkerMeta:
        """Merge across TP workers: a pull is ok only if every rank's part was ok."""
        assert isinstance(other, PDWorkerMeta)
        merged = dict(self.pulls)
        for request_id, rec in other.pulls.items():
            mine = merged.get(request_id)
            if mine is None:
                merged[request_id] = rec
                continue
            merged[request_id] = PullRecord(
                pull_start=min(mine.pull_start, rec.pull_start),
                pull_done=max(mine.pull_done, rec.pull_done),
                bytes=mine.bytes + rec.bytes,
                descriptors=mine.descriptors + rec.descriptors,
                ok=mine.ok and rec.ok,
            )
        return PDWorkerMeta(merged)


@dataclass
class WorkerHandshake(KVConnectorHandshakeMetadata):
    """A worker's encoded :class:`vllm_pd.wire.HandshakeReply` (without the clock)."""

    tp_rank: int
    encoded_reply: bytes
