"""A prefill-only instance: FCFS batches under a token budget, pipelined over ``pp`` stages."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from vllm_pd.latency import prefill_time
from vllm_pd.planner.sim.config import InstanceConfig
from vllm_pd.planner.sim.loop import EventLoop
from vllm_pd.planner.sim.request import SimRequest


class PrefillInstance:
    """Starts a batch whenever its first stage is free; a batch leaves the last stage ``pp`` stage-times later."""

    def __init__(self, index: int, loop: EventLoop, config: InstanceConfig, done: Callable[[SimRequest], None]) -> None:
        self.index = index
        self.config = config
        self._loop = loop
        self._done = done
        self._queue: deque[SimRequest] = deque()
        self._busy_until = 0.0
        self._busy = False
        self._queued_tokens = 0
        self._queued_squares = 0

    def backlog_s(self) -> float:
        """Rough time until a new arrival would start: the stage in use plus the queue's work."""
        coeffs, pp = self.config.profile.prefill, self.config.profile.pp
        batches = -(-self._queued_tokens // self.config.max_batched_tokens)
        queued = coeffs.a * batches + coeffs.b * self._queued_tokens + coeffs.c * self._queued_squares
        return max(0.0, self._busy_until - self._loop.now) + queued / pp

    def submit(self, req: SimRequest) -> None:
        self._queue.append(req)
        self._queued_tokens += req.input_tokens
        self._queued_squares += req.input_tokens**2
        if not self._busy:
            self._start()

    def _start(self) -> None:
        batch = [self._queue.popleft()]
        budget = self.config.max_batched_tokens - batch[0].input_tokens
        while self._queue and self._queue[0].input_tokens <= budget:
            budget -= self._queue[0].input_tokens
            batch.append(self._queue.popleft())
        lengths = [r.input_tokens for r in batch]
        self._queued_tokens -= sum(lengths)
        self._queued_squares -= sum(n * n for n in lengths)
        now = self._loop.now
        for req in batch:
            req.prefill_start = now
        latency = prefill_time(self.config.profile.prefill, lengths)
        self._busy = True
        self._busy_until = now + latency / self.config.profile.pp
        self._loop.at(self._busy_until, self._stage_free)
        self._loop.at(now + latency, lambda: self._finish(batch))

    def _stage_free(self) -> None:
        self._busy = False
        if self._queue:
            self._start()

    def _finish(self, batch: list[SimRequest]) -> None:
        for req in batch:
            req.prefill_done = self._loop.now
            self._done(req)
