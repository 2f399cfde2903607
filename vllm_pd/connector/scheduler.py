"""PDConnector's scheduler side (EngineCore process): bookkeeping only, no torch, no NIXL.

Producer (``do_remote_decode``): when a prefill finishes, keep its blocks under a lease and
return :class:`vllm_pd.wire.HandoffParams`; blocks are freed when the worker reports the request
in ``finished_sending`` (pull done, lease ended). Consumer (``do_remote_prefill``): report the
prompt as external tokens, hand the allocated blocks to the worker as a :class:`PullTask`, keep
the lease alive while waiting, and answer with ``pd_handoff`` timings.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from vllm_pd import wire
from vllm_pd.connector.config import PDConfig
from vllm_pd.connector.lease import LeaseState, LeaseTable
from vllm_pd.connector.lease_keeper import LeaseKeeper
from vllm_pd.connector.metadata import PDConnectorMetadata, PDWorkerMeta, PullRecord, PullTask, WorkerHandshake
from vllm_pd.connector.side_channel import SideChannelServer
from vllm_pd.connector.stats import PDStats

if TYPE_CHECKING:
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.outputs import KVConnectorOutput
    from vllm.v1.request import Request

logger = logging.getLogger(__name__)

_HANDED_OFF = ("FINISHED_LENGTH_CAPPED", "FINISHED_STOPPED")


@dataclass
class _Incoming:
    """A consumer request that carries a producer's handoff."""

    handoff: wire.HandoffParams
    outcome: str = ""  # "", "pulled", "recomputed", "cached"
    record: PullRecord | None = None


class PDScheduler:
    def __init__(self, *, engine_id: str, block_size: int, tp_size: int, is_producer: bool,
                 config: PDConfig, dp_index: int = 0, layout_fingerprint: str = "") -> None:
        self.engine_id = engine_id
        self.incarnation = uuid.uuid4().hex
        self.block_size = block_size
        self.tp_size = tp_size
        self.config = config
        self.is_producer = is_producer
        self.host, self.port = config.side_channel_address(dp_index)
        self.layout_fingerprint = layout_fingerprint
        self.leases = LeaseTable(config.lease_s)
        self.stats = PDStats()
        self._keeper = LeaseKeeper(config.renew_interval_s, config.handshake_timeout_s)
        self._server: SideChannelServer | None = None
        self._incoming: dict[str, _Incoming] = {}
        self._started: set[str] = set()  # consumer requests whose pull decision is made
        self._pulls: list[PullTask] = []
        self._leased: list[str] = []
        self._sent: set[str] = set()  # producer requests the worker already reported as sent

    # ---- startup -------------------------------------------------------------------------

    def set_handshakes(self, handshakes: dict[int, WorkerHandshake]) -> None:
        """Serve the workers' NIXL identities on the side channel (producers only)."""
        if not self.is_producer or self._server is not None:
            return
        decoder = msgspec.msgpack.Decoder(wire.HandshakeReply)
        replies = {}
        for tp_rank, hs in handshakes.items():
            reply = decoder.decode(hs.encoded_reply)
            replies[tp_rank] = msgspec.structs.replace(reply, incarnation=self.incarnation)
            self.layout_fingerprint = reply.layout_fingerprint
        self._server = SideChannelServer(self.host, self.port, self.incarnation, replies,
                                         renew=self._renew, release=self._release)
        logger.info("PDConnector side channel on %s:%d (incarnation %s)", self.host, self.port, self.incarnation)

    def shutdown(self) -> None:
        self._keeper.close()
        if self._server is not None:
            self._server.close()
            self._server = None

    # ---- consumer --------------------------------------------------------------------------

    def on_new_request(self, request: Request) -> None:
        params = request.kv_transfer_params
        if not params or not params.get("do_remote_prefill"):
            return
        try:
            handoff = wire.parse_handoff(params)
        except wire.ProtocolError as e:
            logger.warning("PDConnector: request %s prefills locally: %s", request.request_id, e)
            return
        self._incoming[request.request_id] = _Incoming(handoff)
        self._keeper.watch(request.request_id, handoff)

    def get_num_new_matched_tokens(self, request: Request, num_computed_tokens: int) -> tuple[int, bool]:
        """Side-effect free: how many prompt tokens the producer can supply beyond the local hit."""
        incoming = self._incoming.get(request.request_id)
        if incoming is None or request.request_id in self._started:
            return 0, False
        if not self._pullable(request, incoming.handoff):
            return 0, False
        count = min(incoming.handoff.remote_num_tokens, request.num_prompt_tokens) - num_computed_tokens
        return (count, True) if count > 0 else (0, False)

    def _pullable(self, request: Request, handoff: wire.HandoffParams) -> bool:
        """A pull can succeed: enough remote blocks, and a lease that is not already over."""
        tokens = min(handoff.remote_num_tokens, request.num_prompt_tokens)
        if len(handoff.remote_block_ids) * self.block_size < tokens:
            return False
        deadline = self._keeper.deadline(request.request_id, handoff.lease_deadline)
        return time.time() + self.config.lease_margin_s < deadline

    def update_state_after_alloc(self, request: Request, blocks: KVCacheBlocks, num_external_tokens: int) -> None:
        rid = request.request_id
        incoming = self._incoming.get(rid)
        if incoming is None or rid in self._started:
            return
        self._started.add(rid)
        if num_external_tokens == 0:
            # Nothing to pull: a full local prefix hit, or a lease we cannot use any more.
            incoming.outcome = "cached" if self._pullable(request, incoming.handoff) else "recomputed"
            self._stop_waiting(rid, incoming.handoff, release=True)
            return
        all_blocks = blocks.blocks[0]
        local_ids = [b.block_id for b in all_blocks if b.block_hash is None]
        first = len(all_blocks) - len(local_ids)  # blocks already in the local prefix cache
        needed = -(-num_external_tokens // self.block_size)  # the local hit is whole blocks
        local_ids = local_ids[: max(needed, 0)]
        remote_ids = list(incoming.handoff.remote_block_ids[first : first + len(local_ids)])
        deadline = self._keeper.deadline(rid, incoming.handoff.lease_deadline)
        self._pulls.append(PullTask(rid, incoming.handoff, local_ids, remote_ids, deadline))

    def _stop_waiting(self, request_id: str, handoff: wire.HandoffParams, release: bool) -> None:
        self._keeper.unwatch(request_id)
        if release:
            self._keeper.release(handoff)

    # ---- both ------------------------------------------------------------------------------

    def build_connector_meta(self) -> PDConnectorMetadata:
        if self.is_producer:
            self.leases.expire_due(time.time())
        ended = self.leases.take_ended()
        for lease in ended:
            self.stats.count("expired_leases" if lease.state is LeaseState.EXPIRED else "released_leases")
        ended_ids = [lease.request_id for lease in ended]
        meta = PDConnectorMetadata(pulls=self._pulls, leased=self._leased,
                                   lease_ended=[rid for rid in ended_ids if rid not in self._sent])
        self._sent.difference_update(ended_ids)
        self._pulls, self._leased = [], []
        return meta

    def update_connector_output(self, output: KVConnectorOutput) -> None:
        for rid in output.finished_sending or ():
            # Released by the consumer's pull-done notice (or already ended here).
            if self.leases.release([rid]):
                self._sent.add(rid)
        failed = output.failed_recving or set()
        for rid in output.finished_recving or ():
            self._keeper.unwatch(rid)
            incoming = self._incoming.get(rid)
            if incoming is not None:
                incoming.outcome = "recomputed" if rid in failed else "pulled"
        worker_meta = output.kv_connector_worker_meta
        if isinstance(worker_meta, PDWorkerMeta):
            for rid, record in worker_meta.pulls.items():
                if (incoming := self._incoming.get(rid)) is not None:
                    incoming.record = record

    def request_finished(self, request: Request, block_ids: list[int]) -> tuple[bool, dict[str, Any] | None]:
        params = request.kv_transfer_params or {}
        rid = request.request_id
        if rid in self._incoming:
            return False, self._finish_incoming(rid)
        if not params.get("do_remote_decode") or not self.is_producer:
            return False, None
        if request.status.name not in _HANDED_OFF or not block_ids:
            return False, None  # aborted: free now, nothing to hand off
        now = time.time()
        deadline = self.leases.grant(rid, len(block_ids), now)
        self._leased.append(rid)
        handoff = wire.HandoffParams(
            pd_protocol=wire.PROTOCOL_VERSION, remote_engine_id=self.engine_id,
            remote_incarnation=self.incarnation, remote_host=self.host, remote_port=self.port,
            remote_request_id=rid, remote_block_ids=list(block_ids),
            remote_num_tokens=request.num_computed_tokens, lease_deadline=deadline,
            layout_fingerprint=self.layout_fingerprint, tp_size=self.tp_size, prefill_done=now,
        )
        return True, msgspec.to_builtins(handoff)

    def _finish_incoming(self, rid: str) -> dict[str, Any] | None:
        incoming = self._incoming.pop(rid)
        started = rid in self._started
        self._started.discard(rid)
        # Never admitted (rejected, aborted while queued): the producer may free at once.
        self._stop_waiting(rid, incoming.handoff, release=not started)
        if not started:
            return None
        record = incoming.record
        now = time.time()
        timings = wire.HandoffTimings(
            prefill_done=incoming.handoff.prefill_done,
            pull_start=record.pull_start if record else now,
            pull_done=record.pull_done if record else now,
            bytes=record.bytes if record and record.ok else 0,
            descriptors=record.descriptors if record and record.ok else 0,
            outcome=incoming.outcome or "recomputed",  # type: ignore[arg-type]
        )
        return {"pd_handoff": msgspec.to_builtins(timings)}

    # ---- side channel callbacks (server thread) ----------------------------------------------

    def _renew(self, request_ids: list[str]) -> dict[str, float]:
        return self.leases.renew(request_ids, time.time())

    def _release(self, request_ids: list[str]) -> None:
        self.leases.release(request_ids)

    def take_stats(self) -> PDStats | None:
        self.stats.set_gauge("held_blocks", self.leases.held_blocks)
        stats, self.stats = self.stats, PDStats()
        return stats
