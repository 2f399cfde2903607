"""A request's life in the simulator, and the SLO tally that can end a hopeless run early."""

from __future__ import annotations

import math
from collections.abc import Callable

from vllm_pd.slo import SLO


class SimRequest:
    """Timestamps (s) of one request; ``nan`` until reached. ``epoch`` invalidates stale events."""

    __slots__ = ("index", "arrival", "input_tokens", "output_tokens", "prefill_start", "prefill_done",
                 "transfer_start", "kv_ready", "first_token", "finish", "generated", "epoch", "recompute", "missed", "measured")

    def __init__(self, index: int, arrival: float, input_tokens: int, output_tokens: int) -> None:
        self.index = index
        self.arrival = arrival
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.prefill_start = self.prefill_done = self.transfer_start = math.nan
        self.kv_ready = self.first_token = self.finish = math.nan
        self.generated = 0
        self.epoch = 0
        self.recompute = False  # preempted: its KV was dropped and must be prefilled again
        self.missed = False  # already counted as an SLO miss
        self.measured = True  # inside the measurement window (warm-up and tail requests only add load)

    @property
    def context(self) -> int:
        return self.input_tokens + self.generated


class Tally:
    """Counts measured requests that miss an SLO or finish.

    Asks the loop to stop once the attainment target is out of reach, or once every measured
    request has finished (what comes after cannot change the result).
    """

    def __init__(self, slo: SLO | None, measured: int, stop: Callable[[], None]) -> None:
        self.slo = slo
        self.allowed = math.inf if slo is None else math.floor((1 - slo.attainment) * measured + 1e-9)
        self.measured = measured
        self.misses = 0
        self.finished = 0
        self.gave_up = False
        self._stop = stop

    def first_token(self, req: SimRequest) -> None:
        if not req.measured:
            return
        if self.slo is not None and not req.missed and req.first_token - req.arrival > self.slo.ttft_s:
            req.missed = True
            self._miss()

    def done(self, req: SimRequest) -> None:
        if not req.measured:
            return
        self.finished += 1
        if self.finished == self.measured:
            self._stop()
        if self.slo is None or req.missed:
            return
        if req.output_tokens > 1 and (req.finish - req.first_token) / (req.output_tokens - 1) > self.slo.tpot_s:
            req.missed = True
            self._miss()

    def _miss(self) -> None:
        self.misses += 1
        if self.misses > self.allowed:
            self.gave_up = True
            self._stop()
