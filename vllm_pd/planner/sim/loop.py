"""A heapq event loop: callbacks scheduled at simulated times, run in time order (ties: FIFO)."""

from __future__ import annotations

import heapq
from collections.abc import Callable


class EventLoop:
    """Simulated time advances only by popping events; ``stop()`` ends the run early."""

    def __init__(self) -> None:
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self._stopped = False

    def at(self, time: float, callback: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (time, self._seq, callback))

    def stop(self) -> None:
        self._stopped = True

    def run(self) -> None:
        queue = self._queue
        while queue and not self._stopped:
            self.now, _, callback = heapq.heappop(queue)
            callback()
