"""PDConnector's worker side (one per GPU/CPU worker process): handshakes, READs, completions.

Consumer: for each :class:`PullTask`, make sure the producer's worker is known (handshake through
its side channel, in a background thread), then post one READ, and notify the producer once the
READ is complete. A pull that cannot finish before its lease deadline is never started; one that runs
past it is cancelled. Producer: report a request as finished sending when its consumer's notice
arrives or the scheduler says its lease ended.
"""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from vllm_pd import wire
from vllm_pd.connector.config import PDConfig
from vllm_pd.connector.metadata import PDConnectorMetadata, PDWorkerMeta, PullRecord, PullTask, WorkerHandshake
from vllm_pd.connector.runs import merge_runs
from vllm_pd.connector.side_channel import side_request
from vllm_pd.connector.stats import PDStats
from vllm_pd.connector.transfer import KVTransport, Peer, Pull, TransferError, regions_from_caches

logger = logging.getLogger(__name__)

Address = tuple[str, int]


@dataclass
class _Handshake:
    future: Future
    waiting: list[PullTask]


@dataclass(frozen=True)
class Completions:
    sending: set[str]
    recving: set[str]
    failed: set[str]


class PDWorker:
    def __init__(self, *, engine_id: str, tp_rank: int, tp_size: int, block_size: int, num_blocks: int,
                 config: PDConfig, is_producer: bool) -> None:
        self.engine_id = engine_id
        self.tp_rank = tp_rank
        self.tp_size = tp_size
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.config = config
        self.transport = KVTransport(f"pd-{engine_id}-{tp_rank}-{uuid.uuid4().hex[:8]}", config.backends,
                                     config.ucx_error_handling_mode, config.num_threads,
                                     progress_thread=is_producer)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pd-handshake")
        self._peers: dict[Address, Peer] = {}
        self._retired: list[Peer] = []
        self._handshakes: dict[Address, _Handshake] = {}
        self._pulls: dict[str, tuple[PullTask, Pull]] = {}
        self._failed: set[str] = set()
        self._records: dict[str, PullRecord] = {}
        self._held: set[str] = set()  # producer: requests whose blocks we hold under lease
        self._early: dict[str, float] = {}  # producer: done notices that came before the lease
        self._sent: set[str] = set()
        self.stats = PDStats()

    # ---- startup -----------------------------------------------------------------------------

    def register_kv_caches(self, caches: dict) -> None:
        kv = regions_from_caches([caches[name] for name in sorted(caches)], self.num_blocks, self.block_size)
        self.transport.register(kv)
        logger.info("PDConnector registered %d KV regions (%d blocks of %d bytes, %s)", len(kv.regions),
                    kv.num_blocks, kv.bytes_per_block, kv.mem_type)

    def handshake_metadata(self) -> WorkerHandshake:
        return WorkerHandshake(self.tp_rank, wire.encode(self.transport.identity(self.engine_id, self.tp_rank)))

    # ---- per step ----------------------------------------------------------------------------

    def start_load_kv(self, meta: PDConnectorMetadata) -> None:
        self._held.update(meta.leased)
        for rid in meta.lease_ended:
            self._free(rid)
        for task in meta.pulls:
            self._start(task)
        self._finish_handshakes()

    def _start(self, task: PullTask) -> None:
        handoff = task.handoff
        if handoff.tp_size != self.tp_size:
            return self._fail(task.request_id, f"producer has tensor parallel size {handoff.tp_size}, we have "
                              f"{self.tp_size}; heterogeneous TP is not supported")
        address = (handoff.remote_host, handoff.remote_port)
        peer = self._peers.get(address)
        if peer is not None and peer.reply.incarnation == handoff.remote_incarnation:
            return self._read(task, peer)
        pending = self._handshakes.get(address)
        if pending is None:
            request = wire.HandshakeRequest(pd_protocol=wire.PROTOCOL_VERSION, tp_rank=self.tp_rank)
            future = self._executor.submit(_fetch_identity, address, request, self.config.handshake_timeout_s)
            pending = self._handshakes[address] = _Handshake(future, [])
        pending.waiting.append(task)

    def _finish_handshakes(self) -> None:
        for address, pending in list(self._handshakes.items()):
            if not pending.future.done():
                continue
            del self._handshakes[address]
            try:
                reply, t0, t1 = pending.future.result()
                peer = self._replace_peer(address, self.transport.add_peer(reply, t0, t1))
                self.stats.count("handshakes")
            except Exception as e:  # noqa: BLE001 - any failure fails these pulls, never the engine
                self.stats.count("failed_handshakes")
                for task in pending.waiting:
                    self._fail(task.request_id, f"handshake with {address[0]}:{address[1]} failed: {e}")
                continue
            for task in pending.waiting:
                if task.handoff.remote_incarnation != peer.reply.incarnation:
                    self._fail(task.request_id, "producer restarted since the prefill; its blocks are gone")
                else:
                    self._read(task, peer)

    def _replace_peer(self, address: Address, peer: Peer) -> Peer:
        old = self._peers.get(address)
        if old is not None:
            self._retired.append(old)
        self._peers[address] = peer
        return peer

    def _read(self, task: PullTask, peer: Peer) -> None:
        now = time.time()
        expires = min(now + self.config.pull_timeout_s, peer.local_time(task.deadline) - self.config.lease_margin_s)
        if expires <= now:
            return self._fail(task.request_id, "lease over before the pull could start")
        try:
            pull = self.transport.read(peer, merge_runs(task.local_block_ids, task.remote_block_ids), expires)
        except Exception as e:  # noqa: BLE001 - NIXL raises its own error types
            return self._fail(task.request_id, f"READ could not be posted: {e}")
        self._pulls[task.request_id] = (task, pull)

    def _fail(self, request_id: str, why: str) -> None:
        logger.warning("PDConnector: pull of %s failed: %s", request_id, why)
        self.stats.count("failed_pulls")
        self._failed.add(request_id)
        now = time.time()
        self._records[request_id] = PullRecord(now, now, 0, 0, ok=False)

    def completions(self) -> Completions:
        self._finish_handshakes()
        recving, failed = set(), set(self._failed)
        self._failed.clear()
        for rid, (task, pull) in list(self._pulls.items()):
            try:
                state = self.transport.poll(pull)
            except TransferError as e:
                state = "ERR"
                logger.error("PDConnector: %s", e)
            if state == "PROC":
                continue
            del self._pulls[rid]
            if state == "DONE":
                self._tell(task, pull.peer, "done")  # the blocks are ours now: the producer may free them
                self.stats.record_pull(pull.xfer_s, pull.nbytes, pull.descriptors, pull.post_s, pull.post_cpu_s)
                self._records[rid] = PullRecord(pull.started, time.time(), pull.nbytes, pull.descriptors, ok=True)
                recving.add(rid)
            else:
                self._fail(rid, "READ failed or timed out")
                self._failed.discard(rid)
                failed.add(rid)
                self._tell(task, pull.peer, "release")  # the producer may still be alive and holding them
        self._drop_retired()
        return Completions(self._take_sent(), recving | failed, failed)

    def _tell(self, task: PullTask, peer: Peer, kind: wire.NoticeKind) -> None:
        """Best effort: a producer that never hears it frees the blocks at lease expiry."""
        notice = wire.PullNotice(kind, task.handoff.remote_request_id, task.handoff.remote_incarnation)
        try:
            self.transport.notify(peer, wire.encode(notice))
        except Exception as e:  # noqa: BLE001 - NIXL raises its own error types; the peer may be dead
            logger.info("PDConnector: %s notice to %s not sent: %s", kind, peer.reply.engine_id, e)

    def _drop_retired(self) -> None:
        for peer in [p for p in self._retired if p.inflight == 0]:
            self._retired.remove(peer)
            self.transport.remove_peer(peer)

    # ---- producer ----------------------------------------------------------------------------

    def _take_sent(self) -> set[str]:
        for raw in self.transport.notices():
            notice = wire.decode_notice(raw)
            if notice is not None:
                self._free(notice.request_id, early_ok=True)
        horizon = time.time() - self.config.lease_s
        for rid, seen in list(self._early.items()):
            if rid in self._held:
                del self._early[rid]
                self._free(rid)
            elif seen < horizon:
                del self._early[rid]
        sent, self._sent = self._sent, set()
        return sent

    def _free(self, request_id: str, early_ok: bool = False) -> None:
        if request_id in self._held:
            self._held.discard(request_id)
            self._sent.add(request_id)
        elif early_ok:
            self._early[request_id] = time.time()

    def take_worker_meta(self) -> PDWorkerMeta | None:
        if not self._records:
            return None
        records, self._records = self._records, {}
        return PDWorkerMeta(records)

    def take_stats(self) -> PDStats | None:
        if self.stats.is_empty():
            return None
        stats, self.stats = self.stats, PDStats()
        return stats

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        for peer in list(self._peers.values()) + self._retired:
            self.transport.remove_peer(peer)
        self._peers.clear()
        self._retired.clear()
        self.transport.close()


def _fetch_identity(address: Address, request: wire.HandshakeRequest, timeout_s: float):
    """Background thread: fetch a producer worker's identity (no NIXL calls here)."""
    t0 = time.time()
    reply = side_request(address[0], address[1], request, wire.HandshakeReply, timeout_s)
    return reply, t0, time.time()
