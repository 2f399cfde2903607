"""The transfer layer: one NIXL agent, KV regions registered once, prepared descriptor lists, READs.

Independent of vLLM (tensors in, handles out), so it can be exercised between two plain processes
(see benchmarks/connector_pull.py and the VRAM check). ``nixl`` is imported here only.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vllm_pd import wire
from vllm_pd.connector.runs import Run, run_block_indices


class TransferError(RuntimeError):
    pass


@dataclass(frozen=True)
class KVRegions:
    """The KV cache as NIXL sees it: same-shaped regions of ``num_blocks`` pages each."""

    regions: list[wire.Region]
    ranges: list[tuple[int, int]]  # (start, length) of each distinct allocation to register
    mem_type: str  # "DRAM" or "VRAM"
    device_id: int
    fingerprint: str

    @property
    def num_blocks(self) -> int:
        return self.regions[0].num_blocks

    @property
    def bytes_per_block(self) -> int:
        """Bytes of one block summed over all regions (every layer, K and V)."""
        return sum(r.block_len for r in self.regions)


def regions_from_caches(caches: Sequence[Any], num_blocks: int, block_size: int) -> KVRegions:
    """Regions of per-layer cache tensors whose dim 0 (or dim 1 after a K/V dim of 2) is the block.

    Each block page must be one dense span of memory (layouts LBHNC/LBNHC); otherwise raise.
    """
    regions: list[wire.Region] = []
    ranges: dict[int, tuple[int, int]] = {}
    for cache in caches:
        parts = [cache] if cache.shape[0] == num_blocks else list(cache.unbind(0))
        for part in parts:
            if part.shape[0] != num_blocks:
                raise TransferError(f"KV cache tensor of shape {tuple(cache.shape)} has no block dimension "
                                    f"of size {num_blocks}")
            page = part[0]
            if _dense_span(page) != page.numel():
                raise TransferError(f"KV cache block pages of shape {tuple(page.shape)} are not contiguous; "
                                    "PDConnector needs a block-contiguous layout (LBHNC)")
            stride = part.stride(0) * part.element_size()
            block_len = page.numel() * page.element_size()
            if stride != block_len:
                raise TransferError(f"KV cache blocks are {stride} bytes apart but {block_len} bytes long")
            regions.append(wire.Region(part.data_ptr(), block_len, num_blocks))
        storage = cache.untyped_storage()
        ranges[storage.data_ptr()] = (storage.data_ptr(), storage.nbytes())
    first = caches[0]
    mem_type = "DRAM" if first.device.type == "cpu" else "VRAM"
    device_id = 0 if first.device.type == "cpu" else first.device.index or 0
    shape_key = [(r.block_len,) for r in regions] + [str(first.dtype), block_size, len(caches)]
    fingerprint = hashlib.sha256(repr(shape_key).encode()).hexdigest()[:16]
    return KVRegions(regions, sorted(ranges.values()), mem_type, device_id, fingerprint)


def _dense_span(t: Any) -> int:
    """Number of elements between the first and last element of a view (== numel when dense)."""
    return 1 + sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride()) if n > 1)


@dataclass
class Peer:
    """A remote producer worker: its NIXL agent and prepared remote descriptor list."""

    agent_name: str
    reply: wire.HandshakeReply
    dlist: Any
    clock_offset: float  # producer clock minus ours
    clock_error: float  # bound on the offset's error (half the handshake round trip)
    inflight: int = 0

    def local_time(self, producer_time: float) -> float:
        """The latest local time that is surely not after ``producer_time`` on the producer."""
        return producer_time - self.clock_offset - self.clock_error


@dataclass
class Pull:
    handle: Any
    peer: Peer
    started: float  # time.time()
    expires: float  # time.time() after which the pull counts as failed
    nbytes: int
    descriptors: int
    t0: float = field(default_factory=time.perf_counter)
    xfer_s: float = 0.0  # NIXL telemetry: post to completion (what vLLM's NixlConnector reports)
    post_s: float = 0.0  # how long posting blocked the engine step (UCX copies shared memory in the call)
    post_cpu_s: float = 0.0  # CPU time the posting thread got meanwhile: well below post_s means a starved core


PROGRESS_WAIT_US = 20_000
"""Longest sleep of NIXL's progress thread between polls of UCX's event descriptors (it wakes on traffic)."""


def _nixl_agent(name: str, progress_thread: bool) -> Any:
    """A NIXL agent whose progress thread, if it has one, waits for UCX events instead of spinning.

    A producer needs the thread: without it, it never receives the consumers' notices between its steps
    (measured with NIXL 1.5.1 on UCX). A consumer does not: it drives UCX itself when it polls its pulls
    every step. Over shared memory UCX copies inside the post, on the worker's thread, and a progress
    thread woken meanwhile took turns with the copy on the worker's core: with it, a 64 MiB post spent
    up to 12 of its 21 ms in the run queue; without it, 0.2 of 9.5 ms (2026-12-04).

    ``nixl_agent`` hard-codes the thread's delay to 0, a ``poll()`` with no timeout in a loop: one busy
    core per worker, which is how vLLM's NixlConnector runs. The bindings take a delay, the Python
    wrapper does not, so the wrapper is given a config class that keeps ours.
    """
    from nixl import _api

    bindings = _api.nixlBind
    base = bindings.nixlAgentConfig
    delay = base.pthrDelay

    class _WaitingConfig(base):  # type: ignore[misc, valid-type]
        pthrDelay = property(delay.fget, lambda self, _ignored: delay.fset(self, PROGRESS_WAIT_US))

    bindings.nixlAgentConfig = _WaitingConfig
    try:
        config = _api.nixl_agent_config(enable_prog_thread=progress_thread, backends=[], capture_telemetry=True)
        return _api.nixl_agent(name, config)
    finally:
        bindings.nixlAgentConfig = base


class KVTransport:
    """A NIXL agent holding this process's KV regions."""

    def __init__(self, name: str, backends: Sequence[str], ucx_error_handling_mode: str = "",
                 num_threads: int = 0, progress_thread: bool = True) -> None:
        self.agent = _nixl_agent(name, progress_thread)
        for backend in backends:
            params: dict[str, str] = {}
            if backend == "UCX" and ucx_error_handling_mode:
                params["ucx_error_handling_mode"] = ucx_error_handling_mode
            if backend == "UCX" and num_threads:
                params["num_threads"] = str(num_threads)
            self.agent.create_backend(backend, params)
        self.kv: KVRegions | None = None
        self._reg = None
        self._local_dlist = None

    def register(self, kv: KVRegions) -> None:
        """Register the KV memory once and prepare the local per-block descriptor list."""
        self._reg = self.agent.register_memory([(start, n, kv.device_id, "") for start, n in kv.ranges], kv.mem_type)
        self._local_dlist = self.agent.prep_xfer_dlist("NIXL_INIT_AGENT", _strided(kv.regions, kv.device_id),
                                                       kv.mem_type)
        self.kv = kv

    def identity(self, engine_id: str, tp_rank: int) -> wire.HandshakeReply:
        assert self.kv is not None, "register() first"
        return wire.HandshakeReply(
            pd_protocol=wire.PROTOCOL_VERSION, engine_id=engine_id, incarnation="", tp_rank=tp_rank,
            agent_metadata=self.agent.get_agent_metadata(), regions=self.kv.regions,
            layout_fingerprint=self.kv.fingerprint, device_id=self.kv.device_id, mem_type=self.kv.mem_type,
        )

    def add_peer(self, reply: wire.HandshakeReply, rtt_start: float, rtt_end: float) -> Peer:
        assert self.kv is not None, "register() first"
        if reply.layout_fingerprint != self.kv.fingerprint or len(reply.regions) != len(self.kv.regions):
            raise TransferError(
                f"KV layout of producer {reply.engine_id} ({reply.layout_fingerprint}, {len(reply.regions)} "
                f"regions) differs from ours ({self.kv.fingerprint}, {len(self.kv.regions)} regions): "
                "run the same model, dtype and block size on both sides")
        name = self.agent.add_remote_agent(reply.agent_metadata)
        dlist = self.agent.prep_xfer_dlist(name, _strided(reply.regions, reply.device_id), reply.mem_type)
        offset = reply.clock - (rtt_start + rtt_end) / 2
        return Peer(name, reply, dlist, offset, (rtt_end - rtt_start) / 2)

    def remove_peer(self, peer: Peer) -> None:
        self.agent.release_dlist_handle(peer.dlist)
        self.agent.remove_remote_agent(peer.agent_name)

    def read(self, peer: Peer, runs: Sequence[Run], expires: float) -> Pull:
        """Post one READ of ``runs`` from ``peer`` (one descriptor per run per region after NIXL's merge).

        No notice rides on the READ: with one, NIXL holds the completion for a flush with the peer, one
        engine step or more after the copy (4 and 16 MiB pulls seen done 2-9 ms after a 0.6 or 2 ms
        post). The caller sends its notice with ``notify`` once ``poll`` says the data is here.
        """
        assert self.kv is not None and self._local_dlist is not None
        regions = len(self.kv.regions)
        local = run_block_indices(runs, regions, self.kv.num_blocks, "local")
        remote = run_block_indices(runs, regions, peer.reply.regions[0].num_blocks, "remote")
        handle = self.agent.make_prepped_xfer("READ", self._local_dlist, local, peer.dlist, remote)
        pull = Pull(handle, peer, time.time(), expires, sum(r.length for r in runs) * self.kv.bytes_per_block,
                    len(runs) * regions)
        wall, cpu = time.perf_counter(), time.thread_time()
        posted = self.agent.transfer(handle)
        pull.post_s, pull.post_cpu_s = time.perf_counter() - wall, time.thread_time() - cpu
        if posted == "ERR":
            self.agent.release_xfer_handle(handle)
            raise TransferError("NIXL refused to post the READ")
        peer.inflight += 1
        return pull

    def poll(self, pull: Pull) -> str:
        """"DONE", "PROC" or "ERR"; a pull past its expiry is cancelled and reported "ERR"."""
        state = self.agent.check_xfer_state(pull.handle)
        if state == "PROC" and time.time() < pull.expires:
            return state
        if state == "DONE":
            telemetry = self.agent.get_xfer_telemetry(pull.handle)
            pull.descriptors = int(telemetry.descCount) or pull.descriptors
            pull.xfer_s = telemetry.xferDuration / 1e6 or time.perf_counter() - pull.t0
        try:
            self.agent.release_xfer_handle(pull.handle)  # cancels a transfer still in flight
        except Exception as e:  # noqa: BLE001 - NIXL raises its own error types
            raise TransferError(f"cannot cancel a timed-out READ: {e}") from e
        finally:
            pull.peer.inflight -= 1
        return "DONE" if state == "DONE" else "ERR"

    def notify(self, peer: Peer, message: bytes) -> None:
        self.agent.send_notif(peer.agent_name, message)

    def notices(self) -> list[bytes]:
        return [msg for msgs in self.agent.get_new_notifs().values() for msg in msgs]

    def close(self) -> None:
        if self._local_dlist is not None:
            self.agent.release_dlist_handle(self._local_dlist)
            self._local_dlist = None
        if self._reg is not None:
            self.agent.deregister_memory(self._reg)
            self._reg = None


def _strided(regions: Sequence[wire.Region], device_id: int) -> np.ndarray:
    """One strided descriptor per region, covering every block (index = region*num_blocks + block)."""
    return np.array([[r.base_addr, r.block_len, device_id, r.block_len, r.num_blocks] for r in regions],
                    dtype=np.uint64)
