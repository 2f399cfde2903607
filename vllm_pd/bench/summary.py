"""Summary math: attainment, goodput and latency percentiles from per-request records.

Definitions (DistServe's): a request *attains* when it finished ok with TTFT <= the TTFT SLO and
TPOT <= the TPOT SLO (a one-token answer has no TPOT and passes that half). Attainment is over every
request sent, so rejected and failed requests count against it: shedding cannot hide latency. The
per-rate goodput is ``rate * attainment`` (requests/s meeting both SLOs); an endpoint's goodput is the
highest tested rate whose attainment, and that of every lower rate, reaches the target.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec
import numpy as np

from vllm_pd.bench.records import Outcome, RequestRecord
from vllm_pd.slo import SLO


def meets_slo(record: RequestRecord, slo: SLO) -> bool:
    if record.outcome is not Outcome.OK or record.ttft is None:
        return False
    return slo.met(record.ttft, record.tpot)


class Percentiles(msgspec.Struct, frozen=True):
    mean: float
    p50: float
    p90: float
    p99: float


def percentiles(values: Sequence[float]) -> Percentiles | None:
    """Linear-interpolated percentiles (numpy's default); None when there is nothing to rank."""
    if not values:
        return None
    arr = np.asarray(values, dtype=float)
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return Percentiles(mean=float(arr.mean()), p50=float(p50), p90=float(p90), p99=float(p99))


class RateSummary(msgspec.Struct, frozen=True):
    endpoint: str
    rate: float
    requests: int
    ok: int
    rejected: int
    failed: int
    attained: int
    attainment: float
    goodput_rps: float
    rejected_share: float
    failed_share: float
    ttft: Percentiles | None
    tpot: Percentiles | None
    e2e: Percentiles | None
    interrupted: bool = False


def summarize_rate(
    endpoint: str, rate: float, records: Sequence[RequestRecord], slo: SLO, *, interrupted: bool = False
) -> RateSummary:
    n = len(records)
    ok = [r for r in records if r.outcome is Outcome.OK]
    attained = sum(meets_slo(r, slo) for r in records)
    attainment = attained / n if n else 0.0
    return RateSummary(
        endpoint=endpoint,
        rate=rate,
        requests=n,
        ok=len(ok),
        rejected=sum(r.outcome is Outcome.REJECTED for r in records),
        failed=sum(r.outcome is Outcome.FAILED for r in records),
        attained=attained,
        attainment=attainment,
        goodput_rps=rate * attainment,
        rejected_share=sum(r.outcome is Outcome.REJECTED for r in records) / n if n else 0.0,
        failed_share=sum(r.outcome is Outcome.FAILED for r in records) / n if n else 0.0,
        ttft=percentiles([r.ttft for r in ok if r.ttft is not None]),
        tpot=percentiles([r.tpot for r in ok if r.tpot is not None]),
        e2e=percentiles([r.e2e for r in ok]),
        interrupted=interrupted,
    )


class EndpointSummary(msgspec.Struct, frozen=True):
    """An endpoint's curve and its goodput.

    ``goodput`` is a tested rate (0 when even the lowest misses the target); ``goodput_interp``
    interpolates attainment linearly to where it crosses the target between the last passing and the
    first failing rate. ``above_range`` says every tested rate passed, so both are lower bounds.
    Interrupted rates stay on the curve but do not count: their in-flight requests were never measured.
    """

    endpoint: str
    rates: list[RateSummary]
    goodput: float
    goodput_interp: float
    above_range: bool


def summarize_endpoint(endpoint: str, rates: Iterable[RateSummary], slo: SLO) -> EndpointSummary:
    curve = sorted(rates, key=lambda s: s.rate)
    goodput = goodput_interp = 0.0
    prev: RateSummary | None = None
    complete = [point for point in curve if not point.interrupted]
    for point in complete:
        if point.attainment < slo.attainment:
            if prev is not None:
                frac = (prev.attainment - slo.attainment) / (prev.attainment - point.attainment)
                goodput_interp = prev.rate + frac * (point.rate - prev.rate)
            return EndpointSummary(endpoint, curve, goodput, goodput_interp, above_range=False)
        goodput = goodput_interp = point.rate
        prev = point
    return EndpointSummary(endpoint, curve, goodput, goodput_interp, above_range=bool(complete))


def goodput_ratios(summaries: Sequence[EndpointSummary]) -> dict[str, float | None]:
    """Each endpoint's interpolated goodput over the first's (None when the first's is zero)."""
    if not summaries:
        return {}
    base = summaries[0].goodput_interp
    return {s.endpoint: (s.goodput_interp / base if base > 0 else None) for s in summaries}


def summarize_records(
    records: Iterable[RequestRecord], slo: SLO, *, incomplete: Iterable[tuple[str, float]] = ()
) -> list[EndpointSummary]:
    """Group rows by endpoint (first-seen order) and rate; ``incomplete`` marks interrupted rates."""
    groups: dict[str, dict[float, list[RequestRecord]]] = {}
    for record in records:
        groups.setdefault(record.endpoint, {}).setdefault(record.rate, []).append(record)
    cut = set(incomplete)
    return [
        summarize_endpoint(
            endpoint,
            [summarize_rate(endpoint, rate, rows, slo, interrupted=(endpoint, rate) in cut)
             for rate, rows in by_rate.items()],
            slo,
        )
        for endpoint, by_rate in groups.items()
    ]
