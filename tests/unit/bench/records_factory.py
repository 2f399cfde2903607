"""Hand-made records for the summary tests: each field that matters is visible at the call site."""

from __future__ import annotations

from vllm_pd.bench.records import Outcome, RequestRecord


def rec(ttft: float | None = 0.1, tpot: float | None = 0.01, *, outcome: Outcome = Outcome.OK,
        endpoint: str = "a", rate: float = 1.0, index: int = 0) -> RequestRecord:
    return RequestRecord(endpoint=endpoint, rate=rate, index=index, arrival_s=0.0, input_tokens=10,
                         output_tokens=5, outcome=outcome, sent_at=0.0, e2e=(ttft or 0) + 4 * (tpot or 0),
                         ttft=ttft if outcome is Outcome.OK else None,
                         tpot=tpot if outcome is Outcome.OK else None)


REJECTED = Outcome.REJECTED
FAILED = Outcome.FAILED
