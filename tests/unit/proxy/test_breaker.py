"""The per-instance circuit breaker: opens on consecutive failures, lets one trial through, backs off."""

from __future__ import annotations

from vllm_pd.proxy.breaker import BreakerState, CircuitBreaker
from vllm_pd.proxy.config import HealthConfig


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(HealthConfig(failure_threshold=3, open_s=5.0, max_open_s=12.0), clock)


def test_opens_after_consecutive_failures_only():
    b = breaker(Clock())
    b.on_failure(), b.on_failure(), b.on_success(), b.on_failure(), b.on_failure()
    assert b.allows()
    b.on_failure()
    assert b.state is BreakerState.OPEN and not b.allows()


def test_half_open_lets_exactly_one_trial_through():
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.on_failure()
    clock.now = 5.0
    assert b.allows()
    b.on_attempt()
    assert not b.allows()  # a second request waits for the trial's outcome
    b.on_success()
    assert b.state is BreakerState.CLOSED and b.allows()


def test_failed_trial_reopens_for_longer_but_bounded():
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.on_failure()
    cooldowns = []
    for _ in range(3):
        opened_at = clock.now
        while not b.allows():
            clock.now += 0.5
        cooldowns.append(clock.now - opened_at)
        b.on_attempt()
        b.on_failure()  # the trial fails: open again
    assert cooldowns == [5.0, 10.0, 12.0]
