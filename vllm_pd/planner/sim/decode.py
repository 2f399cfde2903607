"""A decode-only instance: pulls KV when it has room, then batches continuously; preempts when full.

With ``pp`` pipeline stages vLLM keeps ``pp`` micro-batches in flight; each is modelled as an engine
with ``1/pp`` of the KV slots and sequences, stepping at the full pipeline latency. KV arrives over
one ingress link per instance, shared in FIFO order by all transfers into it.
"""

from __future__ import annotations

from collections import deque

from vllm_pd.latency import LinkSpec, decode_step_time, kv_transfer_time
from vllm_pd.planner.sim.batch import RunningBatch
from vllm_pd.planner.sim.config import InstanceConfig
from vllm_pd.planner.sim.loop import EventLoop
from vllm_pd.planner.sim.request import SimRequest, Tally


class DecodeEngine:
    """One micro-batch of a decode instance."""

    def __init__(self, instance: DecodeInstance, capacity: int, max_seqs: int) -> None:
        self.instance = instance
        self.capacity = capacity
        self.max_seqs = max_seqs
        self.pending: deque[SimRequest] = deque()  # KV still on the prefill side, or dropped by preemption
        self.batch = RunningBatch()
        self._ready: list[SimRequest] = []  # KV here, joins at the next step
        self._joined: list[SimRequest] = []  # joined for the step in progress
        self._reserved = 0  # KV slots held by requests transferring or ready
        self._pending_tokens = 0
        self._admitted = 0  # requests transferring or ready
        self._stepping = False

    def load(self) -> int:
        return self.batch.context_tokens + self._reserved + self._pending_tokens

    def offer(self, req: SimRequest) -> None:
        if req.input_tokens + req.output_tokens > self.capacity:
            raise ValueError(f"a request of {req.input_tokens + req.output_tokens} tokens can never fit {self.capacity} KV slots")
        self.pending.append(req)
        self._pending_tokens += req.context
        self._admit()

    def _admit(self) -> None:
        while self.pending and self.batch.size + self._admitted < self.max_seqs:
            req = self.pending[0]
            if self.batch.context_tokens + self._reserved + self.batch.size + req.context + 1 > self.capacity:
                return  # offer() checked it fits alone, so something running will free room
            self.pending.popleft()
            self._pending_tokens -= req.context
            self._reserved += req.context
            self._admitted += 1
            if req.recompute:
                self.kv_arrived(req)
            else:
                self.instance.transfer(req, self)

    def kv_arrived(self, req: SimRequest) -> None:
        self._ready.append(req)
        if not self._stepping:
            self._step()

    def _step(self) -> None:
        loop, profile, batch = self.instance.loop, self.instance.config.profile, self.batch
        recompute_s = 0.0
        if self._ready:
            for req in self._ready:
                self._reserved -= req.context
                self._admitted -= 1
                if req.recompute:
                    recompute_s += profile.prefill.b * req.context + profile.prefill.c * req.context**2
                    req.recompute = False
                batch.join(req)
            self._joined, self._ready = self._ready, []
        elif self._joined:
            self._joined = []
        while batch.size and batch.context_tokens + self._reserved + batch.size > self.capacity:
            victim = batch.preempt_last()
            victim.recompute = True
            self.pending.appendleft(victim)
            self._pending_tokens += victim.context
        if not batch.size:
            self._stepping = False
            return
        self._stepping = True
        step = decode_step_time(profile.decode, batch.size, batch.context_tokens) + recompute_s
        loop.at(loop.now + step, self._step_done)

    def _step_done(self) -> None:
        now, tally = self.instance.loop.now, self.instance.tally
        for req in self._joined:
            if req.first_token != req.first_token and req in self.batch.members:  # nan: its first step
                req.first_token = now
                tally.first_token(req)
        for req in self.batch.advance():
            req.finish = now
            tally.done(req)
        self._admit()
        self._step()


class DecodeInstance:
    """``pp`` engines behind one KV ingress link."""

    def __init__(self, index: int, loop: EventLoop, config: InstanceConfig, tally: Tally) -> None:
        self.index = index
        self.loop = loop
        self.config = config
        self.tally = tally
        pp = config.profile.pp
        self.engines = [
            DecodeEngine(self, max(1, config.kv_capacity_tokens // pp), max(1, config.max_num_seqs // pp))
            for _ in range(pp)
        ]
        self._link_free_at = 0.0
        self._links: dict[int, LinkSpec] = {}
        self._source: dict[int, int] = {}  # request index -> the prefill instance holding its KV

    def connect(self, prefill_index: int, link: LinkSpec) -> None:
        self._links[prefill_index] = link

    def load(self) -> int:
        if len(self.engines) == 1:
            return self.engines[0].load()
        return sum(e.load() for e in self.engines)

    def offer(self, req: SimRequest, prefill_index: int) -> None:
        """The prefill of ``req`` is done on instance ``prefill_index``; pull its KV when there is room."""
        self._source[req.index] = prefill_index
        engines = self.engines
        (engines[0] if len(engines) == 1 else min(engines, key=DecodeEngine.load)).offer(req)

    def transfer(self, req: SimRequest, engine: DecodeEngine) -> None:
        link = self._links[self._source.pop(req.index)]
        nbytes = req.input_tokens * self.config.profile.kv_bytes_per_token
        start = max(self.loop.now, self._link_free_at)
        self._link_free_at = start + nbytes / link.bandwidth
        req.transfer_start = start
        done = start + kv_transfer_time(link, nbytes)

        def arrived() -> None:
            req.kv_ready = self.loop.now
            engine.kv_arrived(req)

        self.loop.at(done, arrived)
