"""Summary math against hand-computed cases."""

from __future__ import annotations

import pytest

from tests.unit.bench.records_factory import FAILED, REJECTED, rec
from vllm_pd.bench.summary import (
    goodput_ratios,
    meets_slo,
    percentiles,
    summarize_endpoint,
    summarize_rate,
    summarize_records,
)
from vllm_pd.slo import SLO

SLO_1 = SLO(ttft_s=0.5, tpot_s=0.05, attainment=0.9)


def test_slo_needs_both_objectives_and_an_ok_outcome() -> None:
    assert meets_slo(rec(0.5, 0.05), SLO_1)  # at the bound counts as met
    assert not meets_slo(rec(0.51, 0.01), SLO_1)
    assert not meets_slo(rec(0.1, 0.051), SLO_1)
    assert meets_slo(rec(0.1, None), SLO_1)  # a one-token answer has no TPOT
    assert not meets_slo(rec(outcome=REJECTED), SLO_1)
    assert not meets_slo(rec(outcome=FAILED), SLO_1)


def test_rate_summary_counts_rejected_and_failed_against_attainment() -> None:
    # 10 requests: 6 meet both, 1 misses TTFT, 1 misses TPOT, 1 rejected, 1 failed.
    rows = [rec(0.1, 0.01, index=i) for i in range(6)]
    rows += [rec(0.9, 0.01), rec(0.1, 0.2), rec(outcome=REJECTED), rec(outcome=FAILED)]

    s = summarize_rate("a", 2.0, rows, SLO_1)

    assert (s.requests, s.ok, s.rejected, s.failed, s.attained) == (10, 8, 1, 1, 6)
    assert s.attainment == pytest.approx(0.6)
    assert s.goodput_rps == pytest.approx(1.2)  # 2 req/s * 0.6
    assert s.rejected_share == pytest.approx(0.1)
    assert s.failed_share == pytest.approx(0.1)
    # TTFT over the 8 ok requests: six 0.1, one 0.9, one 0.1 -> mean (7*0.1 + 0.9)/8 = 0.2
    assert s.ttft.mean == pytest.approx(0.2)
    assert s.ttft.p50 == pytest.approx(0.1)


def test_percentiles_interpolate_linearly() -> None:
    p = percentiles([1.0, 2.0, 3.0, 4.0, 5.0])
    # rank (n-1)*q: p50 -> 3, p90 -> 4 + 0.6*(5-4) = 4.6, p99 -> 4 + 0.96 = 4.96
    assert (p.mean, p.p50, p.p90, p.p99) == pytest.approx((3.0, 3.0, 4.6, 4.96))
    assert percentiles([]) is None


def test_empty_rate_has_zero_attainment_and_no_percentiles() -> None:
    s = summarize_rate("a", 1.0, [], SLO_1)
    assert (s.requests, s.attainment, s.ttft, s.tpot, s.e2e) == (0, 0.0, None, None, None)


def point(rate: float, attainment: float, *, interrupted: bool = False):
    """A rate whose attainment is exactly ``attainment`` over 20 requests."""
    good = round(attainment * 20)
    rows = [rec(0.1) for _ in range(good)] + [rec(9.0) for _ in range(20 - good)]
    return summarize_rate("a", rate, rows, SLO_1, interrupted=interrupted)


def test_goodput_is_the_last_passing_rate_and_interpolates_to_the_crossing() -> None:
    curve = [point(1, 1.0), point(2, 0.95), point(4, 0.75), point(8, 0.2)]

    s = summarize_endpoint("a", curve, SLO_1)

    assert s.goodput == 2
    # attainment 0.95 at 2 and 0.75 at 4 crosses 0.9 a quarter of the way: 2 + 0.25 * 2 = 2.5
    assert s.goodput_interp == pytest.approx(2.5)
    assert not s.above_range


def test_goodput_stops_at_the_first_miss_even_if_a_higher_rate_passes_again() -> None:
    s = summarize_endpoint("a", [point(4, 0.95), point(1, 1.0), point(2, 0.5)], SLO_1)
    assert [p.rate for p in s.rates] == [1, 2, 4]  # sorted
    assert s.goodput == 1
    assert s.goodput_interp == pytest.approx(1 + (1.0 - 0.9) / (1.0 - 0.5))


def test_goodput_is_zero_when_the_lowest_rate_misses_and_a_bound_when_all_pass() -> None:
    low = summarize_endpoint("a", [point(1, 0.5), point(2, 0.1)], SLO_1)
    assert (low.goodput, low.goodput_interp, low.above_range) == (0, 0, False)
    high = summarize_endpoint("a", [point(1, 1.0), point(2, 0.9)], SLO_1)
    assert (high.goodput, high.goodput_interp, high.above_range) == (2, 2, True)


def test_interrupted_rate_is_plotted_but_not_counted() -> None:
    s = summarize_endpoint("a", [point(1, 1.0), point(2, 0.1, interrupted=True)], SLO_1)
    assert len(s.rates) == 2
    assert (s.goodput, s.above_range) == (1, True)


def test_records_group_by_endpoint_in_first_seen_order_and_ratio_to_the_first() -> None:
    rows = []
    for endpoint, attained in (("colocated", [1.0, 0.5]), ("disagg", [1.0, 1.0])):
        for rate, share in zip((1.0, 2.0), attained):
            good = int(share * 10)
            rows += [rec(0.1, endpoint=endpoint, rate=rate) for _ in range(good)]
            rows += [rec(9.0, endpoint=endpoint, rate=rate) for _ in range(10 - good)]

    summaries = summarize_records(rows, SLO_1, incomplete=[("disagg", 2.0)])

    assert [s.endpoint for s in summaries] == ["colocated", "disagg"]
    colocated, disagg = summaries
    assert colocated.goodput_interp == pytest.approx(1 + 0.1 / 0.5)  # 1.2
    assert disagg.rates[1].interrupted and disagg.goodput_interp == 1.0
    ratios = goodput_ratios(summaries)
    assert ratios == pytest.approx({"colocated": 1.0, "disagg": 1.0 / 1.2})


def test_ratio_is_undefined_when_the_baseline_has_no_goodput() -> None:
    zero = summarize_endpoint("base", [point(1, 0.0)], SLO_1)
    other = summarize_endpoint("other", [point(1, 1.0)], SLO_1)
    assert goodput_ratios([zero, other]) == {"base": None, "other": None}


@pytest.mark.parametrize("kwargs, flag", [
    (dict(ttft_s=0, tpot_s=0.1), "--ttft-slo"),
    (dict(ttft_s=1, tpot_s=-1), "--tpot-slo"),
    (dict(ttft_s=1, tpot_s=1, attainment=1.5), "--attainment"),
    (dict(ttft_s=1, tpot_s=1, attainment=0), "--attainment"),
])
def test_bad_slo_names_the_flag(kwargs: dict, flag: str) -> None:
    with pytest.raises(ValueError, match=flag):
        SLO(**kwargs)
