"""Per-instance circuit breaker.

Consecutive failures open it for a cool-down that doubles on each re-open (bounded), after which one
trial is let through (half-open). It never decides alone that an instance is unusable: the policy
still uses an open instance when every instance of that role is open (no blacking out the only one).
"""

from __future__ import annotations

import enum
import time

from vllm_pd.proxy.config import HealthConfig


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(self, config: HealthConfig, clock=time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._open_for = 0.0
        self._trial_in_flight = False
        self.state = BreakerState.CLOSED

    def allows(self) -> bool:
        """Whether a request may go here now (an open breaker past its cool-down lets one trial through)."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN and self._clock() - self._opened_at >= self._open_for:
            self.state = BreakerState.HALF_OPEN
            self._trial_in_flight = False
        return self.state is BreakerState.HALF_OPEN and not self._trial_in_flight

    def on_attempt(self) -> None:
        if self.state is BreakerState.HALF_OPEN:
            self._trial_in_flight = True

    def on_success(self) -> None:
        self._failures = 0
        self._open_for = 0.0
        self._trial_in_flight = False
        self.state = BreakerState.CLOSED

    def on_failure(self) -> None:
        self._failures += 1
        if self.state is BreakerState.HALF_OPEN or self._failures >= self._config.failure_threshold:
            self._open()

    def _open(self) -> None:
        base = self._config.open_s
        self._open_for = min(self._config.max_open_s, max(base, self._open_for * 2))
        self._opened_at = self._clock()
        self._trial_in_flight = False
        self.state = BreakerState.OPEN
