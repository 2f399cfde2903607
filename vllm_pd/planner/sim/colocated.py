"""A colocated instance (the baseline): one engine runs prefill and decode with chunked prefill.

Each step, as vLLM's scheduler does, the running decodes take one token each from the token budget
and the rest goes to prompt chunks in FCFS order. The step that completes a prompt samples its first
token. With ``pp`` stages the instance is ``pp`` engines, as for decode instances.
"""

from __future__ import annotations

from collections import deque

from vllm_pd.latency import mixed_step_time, prefill_time
from vllm_pd.planner.sim.batch import RunningBatch
from vllm_pd.planner.sim.config import InstanceConfig
from vllm_pd.planner.sim.loop import EventLoop
from vllm_pd.planner.sim.request import SimRequest, Tally


class ColocatedEngine:
    def __init__(self, loop: EventLoop, config: InstanceConfig, tally: Tally, capacity: int, max_seqs: int) -> None:
        self._loop = loop
        self._profile = config.profile
        self._budget = config.max_batched_tokens
        self._chunked = config.chunked_prefill
        self._tally = tally
        self.capacity = capacity
        self.max_seqs = max_seqs
        self.waiting: deque[SimRequest] = deque()
        self.batch = RunningBatch()
        self._prefilled: dict[SimRequest, int] = {}  # prompt tokens already in KV, for partly prefilled requests
        self._waiting_tokens = 0
        self._partial_tokens = 0  # sum of _prefilled
        self._stepping = False

    def load(self) -> int:
        return self.batch.context_tokens + self._waiting_tokens

    def submit(self, req: SimRequest) -> None:
        if req.input_tokens + req.output_tokens > self.capacity:
            raise ValueError(f"a request of {req.input_tokens + req.output_tokens} tokens can never fit {self.capacity} KV slots")
        self.waiting.append(req)
        self._waiting_tokens += req.context
        if not self._stepping:
            self._step()

    def _step(self) -> None:
        self._make_room()
        chunks = self._schedule_chunks()
        if not self.batch.size and not chunks and self._prefilled:
            self._prefilled.clear()  # a preempted request waits behind partial prompts: restart those
            self._partial_tokens = 0
            chunks = self._schedule_chunks()
        if not self.batch.size and not chunks:
            self._stepping = False
            return
        self._stepping = True
        if chunks and not self._chunked:  # a prefill-only step: the running decodes wait
            step = prefill_time(self._profile.prefill, [n for _, n in chunks])
            self._loop.at(self._loop.now + step, lambda: self._step_done(chunks, decoded=False))
            return
        prefill_chunks = [(n, self._prefilled[r] - n) for r, n in chunks]
        step = mixed_step_time(
            self._profile.prefill, self._profile.decode, prefill_chunks, self.batch.size, self.batch.context_tokens
        )
        self._loop.at(self._loop.now + step, lambda: self._step_done(chunks))

    def _make_room(self) -> None:
        """Preempt the newest decodes (dropping their KV) until every running request has a slot to grow."""
        while self.batch.size and self._used() + self.batch.size > self.capacity:
            victim = self.batch.preempt_last()
            victim.recompute = True
            self.waiting.appendleft(victim)
            self._waiting_tokens += victim.context

    def _schedule_chunks(self) -> list[tuple[SimRequest, int]]:
        budget = self._budget - (self.batch.size if self._chunked else 0)
        free = self.capacity - self._used() - self.batch.size
        chunks = []
        for req in self.waiting:
            if budget <= 0 or self.batch.size + len(chunks) >= self.max_seqs:
                break
            done = self._prefilled.get(req, 0)
            if self._chunked:
                size = min(req.context - done, budget, free - 1)  # keep a slot for the token the prompt samples
            else:  # whole prompts only; one longer than the budget runs alone
                fits = req.context <= free - 1 and (req.context <= budget or not chunks)
                size = req.context if fits else 0
            if size <= 0:
                break
            self._prefilled[req] = done + size
            self._partial_tokens += size
            chunks.append((req, size))
            budget -= size
            free -= size
        return chunks

    def _used(self) -> int:
        return self.batch.context_tokens + self._partial_tokens

    def _step_done(self, chunks: list[tuple[SimRequest, int]], decoded: bool = True) -> None:
        now = self._loop.now
        for req in self.batch.advance() if decoded else ():
            req.finish = now
            self._tally.done(req)
        for req, _ in chunks:
            if self._prefilled[req] < req.context:
                continue
            self._partial_tokens -= self._prefilled.pop(req)
            self._waiting_tokens -= req.context
            self.waiting.remove(req)  # completed prompts are at the head: chunks are taken in FCFS order
            req.recompute = False
            req.generated += 1
            if req.first_token != req.first_token:  # nan: the first token of this request
                req.prefill_done = req.first_token = now
                self._tally.first_token(req)
            if req.generated >= req.output_tokens:
                req.finish = now
                self._tally.done(req)
            else:
                self.batch.join(req)
        self._step()


class ColocatedInstance:
    def __init__(self, index: int, loop: EventLoop, config: InstanceConfig, tally: Tally) -> None:
        self.index = index
        self.config = config
        pp = config.profile.pp
        self.engines = [
            ColocatedEngine(loop, config, tally, max(1, config.kv_capacity_tokens // pp), max(1, config.max_num_seqs // pp))
            for _ in range(pp)
        ]

    def load(self) -> int:
        return sum(e.load() for e in self.engines)

    def submit(self, req: SimRequest) -> None:
        req.prefill_start = req.arrival
        min(self.engines, key=ColocatedEngine.load).submit(req)
