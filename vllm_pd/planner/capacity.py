"""The highest request rate a deployment sustains within the SLOs: bisection on the simulator.

Every probe of one search replays a prefix of the same seeded requests (only time is stretched), so
pass/fail is monotone in the rate up to simulation noise, and results are cached by their arguments.
A deployment that can hold ``P`` requests in its running batches is measured on ``max(N, P)``
requests after ``P`` warm-up requests, with ``P`` more arriving behind them, so that what is measured
is the steady state and not an empty system filling up or draining.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vllm_pd.latency import LinkSpec
from vllm_pd.planner.ceilings import LoadStats, colocated_ceiling, decode_ceiling, prefill_ceiling
from vllm_pd.planner.sim import (
    SLO,
    InstanceConfig,
    SimResult,
    simulate_colocated,
    simulate_decode_only,
    simulate_disaggregated,
    simulate_prefill_only,
)
from vllm_pd.workloads import RequestSpec, Workload

_MAX_STEPS = 60
_LOWEST_SHARE = 1e-3


@dataclass(frozen=True)
class ProbeSettings:
    """How each candidate is simulated."""

    num_requests: int = 600
    seed: int = 0
    arrival: str = "poisson"
    cv: float = 1.0
    routing: str = "least_loaded"
    tolerance: float = 0.05  # stop bisecting when hi / lo - 1 is below this

    def __post_init__(self) -> None:
        if self.num_requests < 20:
            raise ValueError(f"num_requests must be at least 20, got {self.num_requests}")
        if not 0 < self.tolerance < 1:
            raise ValueError(f"tolerance must be in (0, 1), got {self.tolerance}")


def max_rate(passes: Callable[[float], bool], guess: float, tolerance: float, growth: float = 1.5) -> float:
    """Largest rate (req/s) for which ``passes`` holds, to within ``tolerance``; 0 if none does.

    Brackets the answer by stepping up from ``guess`` by ``growth``, or down by ``growth**3`` (low
    rates simulate many small steps, so few probes go there), then bisects geometrically. A deployment
    that fails at a thousandth of the guess fails unloaded: the answer is 0.
    """
    lo, hi = 0.0, guess
    for _ in range(_MAX_STEPS):
        if not passes(hi):
            break
        lo, hi = hi, hi * growth
    else:
        return lo
    if lo == 0.0:
        lo = hi / growth**3
        while not passes(lo):
            if lo < guess * _LOWEST_SHARE:
                return 0.0
            lo, hi = lo / growth**3, lo
    while hi / lo - 1 > tolerance:
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if passes(mid) else (lo, mid)
    return lo


class Prober:
    """Runs (and caches) the simulations a search needs, for one workload, SLO and settings."""

    def __init__(self, workload: Workload, slo: SLO, settings: ProbeSettings, max_population: int) -> None:
        self.workload = workload
        self.slo = slo
        self.settings = settings
        self.simulations = 0
        self.max_population = max_population
        total = 2 * max_population + max(settings.num_requests, max_population // 2)
        self._unit = workload.sample(
            rate=1.0, num_requests=total, arrival=settings.arrival, cv=settings.cv, seed=settings.seed
        )
        self.max_request_tokens = max(r.input_tokens + r.output_tokens for r in self._unit)
        self.stats = LoadStats.of(self._unit)
        self._cache: dict[tuple, float] = {}

    def requests(self, rate: float, count: int) -> list[RequestSpec]:
        return [RequestSpec(r.arrival_s / rate, r.input_tokens, r.output_tokens) for r in self._unit[:count]]

    def batch_limit(self, config: InstanceConfig) -> int:
        """Requests an instance can run at once: its sequence limit, or fewer if the KV cache fills first."""
        context = self.stats.mean_input + self.stats.mean_output / 2
        return max(1, min(config.max_num_seqs, int(config.kv_capacity_tokens / context)))

    def window(self, population: int) -> tuple[int, range]:
        """(requests to simulate, indices to measure) for a deployment holding ``population`` requests.

        A full population warms the system up (until then batches have room a steady state would not
        give), the measured requests follow, and another population arrives behind them to keep the load
        on until they finish.
        """
        population = min(population, self.max_population)
        measured = max(self.settings.num_requests, population // 2)
        return 2 * population + measured, range(population, population + measured)

    def _capacity(
        self, key: tuple, run: Callable[[list[RequestSpec]], SimResult], ceiling: float, count: int,
        guess: float | None = None,
    ) -> float:
        """Bisect below ``ceiling`` (the stability limit), starting at ``guess`` (default: 80% of it)."""
        if key not in self._cache:
            def passes(rate: float) -> bool:
                if rate > ceiling:
                    return False
                self.simulations += 1
                return run(self.requests(rate, count)).passes(self.slo)

            start = min(guess, ceiling) if guess else 0.8 * ceiling
            self._cache[key] = max_rate(passes, start, self.settings.tolerance)
        return self._cache[key]

    def prefill_capacity(self, config: InstanceConfig) -> float:
        """One prefill instance's rate with TTFT (to prefill completion) within the SLO."""
        run = lambda s: simulate_prefill_only(s, config, slo=self.slo)  # noqa: E731  (FCFS: no tail needed)
        return self._capacity(("prefill", config), run, prefill_ceiling(config, self.stats), self.settings.num_requests)

    def decode_capacity(self, config: InstanceConfig) -> float:
        """One decode instance's rate with TPOT within the SLO (KV ready at arrival)."""
        count, measure = self.window(self.batch_limit(config))
        run = lambda s: simulate_decode_only(s, config, slo=self.slo, measure=measure)  # noqa: E731
        return self._capacity(("decode", config), run, decode_ceiling(config, self.stats), count)

    def colocated_capacity(self, config: InstanceConfig, count: int, guess: float) -> float:
        """Rate of ``count`` colocated instances behind the router, meeting both SLOs."""
        configs = [config] * count
        total, measure = self.window(count * self.batch_limit(config))
        routing = self.settings.routing
        run = lambda s: simulate_colocated(s, configs, routing=routing, slo=self.slo, measure=measure)  # noqa: E731
        ceiling = count * colocated_ceiling(config, self.stats)
        return self._capacity(("colocated", config, count), run, ceiling, total, guess)

    def segment_capacity(
        self, prefill: Sequence[InstanceConfig], decode: Sequence[InstanceConfig],
        links: tuple[tuple[LinkSpec, ...], ...], guess: float,
    ) -> float:
        """Rate of an n:m disaggregated segment, meeting both SLOs end to end."""
        count, measure = self.window(sum(self.batch_limit(c) for c in decode))

        def run(specs: list[RequestSpec]) -> SimResult:
            return simulate_disaggregated(specs, prefill, decode, links, routing=self.settings.routing, slo=self.slo,
                                          measure=measure)

        ceiling = min(sum(prefill_ceiling(c, self.stats) for c in prefill),
                      sum(decode_ceiling(c, self.stats) for c in decode))
        return self._capacity(("segment", tuple(prefill), tuple(decode), links), run, ceiling, count, guess)

    def measure_disaggregated(self, prefill: Sequence[InstanceConfig], decode: Sequence[InstanceConfig],
                              links: tuple[tuple[LinkSpec, ...], ...], rate: float) -> SimResult:
        """A full run (no early stop) at ``rate``, for the numbers a plan reports."""
        count, measure = self.window(sum(self.batch_limit(c) for c in decode))
        return simulate_disaggregated(self.requests(rate, count), prefill, decode, links,
                                      routing=self.settings.routing, measure=measure)

    def measure_colocated(self, config: InstanceConfig, count: int, rate: float) -> SimResult:
        total, measure = self.window(count * self.batch_limit(config))
        return simulate_colocated(self.requests(rate, total), [config] * count, routing=self.settings.routing,
                                  measure=measure)
