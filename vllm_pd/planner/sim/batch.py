"""The running batch of a continuously-batching engine, advanced in O(1) per step.

Every member gains one token per step, so a member's generated count is kept lazily as
(step it joined, tokens it had then) and only materialised when it finishes or is preempted.
"""

from __future__ import annotations

import heapq

from vllm_pd.planner.sim.request import SimRequest


class RunningBatch:
    """Members in join order (the last to join is the first preempted, as in vLLM)."""

    def __init__(self) -> None:
        self.members: dict[SimRequest, tuple[int, int]] = {}
        self.size = 0
        self.steps = 0
        self.context_tokens = 0
        self._finishing: list[tuple[int, int, int, SimRequest]] = []

    def join(self, req: SimRequest) -> None:
        self.members[req] = (self.steps, req.generated)
        self.size += 1
        self.context_tokens += req.context
        finish_step = self.steps + req.output_tokens - req.generated
        heapq.heappush(self._finishing, (finish_step, req.index, req.epoch, req))

    def advance(self) -> list[SimRequest]:
        """One step done: every member produced a token. Returns the members that are now complete."""
        self.steps += 1
        self.context_tokens += self.size
        done = []
        heap = self._finishing
        while heap and heap[0][0] <= self.steps:
            _, _, epoch, req = heapq.heappop(heap)
            if req.epoch == epoch and req in self.members:
                self._leave(req)
                done.append(req)
        return done

    def preempt_last(self) -> SimRequest:
        req = next(reversed(self.members))
        self._leave(req)
        req.epoch += 1  # its pending finish entry is now stale
        return req

    def _leave(self, req: SimRequest) -> None:
        joined_step, joined_generated = self.members.pop(req)
        self.size -= 1
        req.generated = joined_generated + self.steps - joined_step
        self.context_tokens -= req.context
