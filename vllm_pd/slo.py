"""Service-level objectives: the one definition of a request that counts towards goodput.

The proxy, the benchmark and the planner's simulator all judge requests by this, so a plan, a
benchmark run and the proxy's admission decisions agree on what "met the SLO" means.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SLO:
    """Latency targets in seconds (``math.inf``: no target) and the share of requests that must meet both."""

    ttft_s: float
    tpot_s: float
    attainment: float = 0.9

    def __post_init__(self) -> None:
        for flag, value in (("--ttft-slo", self.ttft_s), ("--tpot-slo", self.tpot_s)):
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{flag} must be > 0 seconds, got {value!r}")
        if not (isinstance(self.attainment, (int, float)) and 0 < self.attainment <= 1):
            raise ValueError(f"--attainment must be in (0, 1], got {self.attainment!r}")

    def met(self, ttft: float, tpot: float | None) -> bool:
        """Both targets met; a one-token answer has no TPOT and passes that half."""
        return ttft <= self.ttft_s and (tpot is None or tpot <= self.tpot_s)
