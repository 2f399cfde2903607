"""Per-pair latency predictions from the shared latency model, corrected online from observed timings.

TTFT (remote) = prefill queue wait + prefill on P + KV transfer + first decode step on D.
TTFT (local)  = prefill queue wait + prefill on D + first decode step on D.
TPOT          = one decode step on D with this request added; for a local prefill, the stall it puts on
                D's running requests is spread over the tokens they still have to produce.
Coefficients come from a profile file; each instance keeps multiplicative corrections (EWMA of
observed / predicted) so a wrong profile converges to the hardware actually serving.
"""

from __future__ import annotations

from dataclasses import dataclass

from vllm_pd.latency import (
    DecodeCoeffs,
    LatencyProfile,
    LinkSpec,
    PrefillCoeffs,
    decode_step_time,
    kv_transfer_time,
    load_profile,
    prefill_time,
)
from vllm_pd.proxy.instance import Instance

# A mid-size model on one modern GPU; only a starting point, corrected online from observed timings.
DEFAULT_PROFILE = LatencyProfile(
    prefill=PrefillCoeffs(a=0.01, b=1.0e-4, c=0.0),
    decode=DecodeCoeffs(a=0.01, b=1.0e-7, c=5.0e-5),
    link=LinkSpec(bandwidth=6e9, latency=1e-3),
    kv_bytes_per_token=131072,
    name="default",
)
_MIN_RATIO, _MAX_RATIO = 0.05, 20.0


class Correction:
    """EWMA of observed / predicted, clipped so one outlier cannot swing it far."""

    def __init__(self, alpha: float = 0.2) -> None:
        self.alpha = alpha
        self.factor = 1.0

    def observe(self, predicted_s: float, observed_s: float) -> None:
        if predicted_s <= 1e-9 or observed_s < 0:
            return
        ratio = min(_MAX_RATIO, max(_MIN_RATIO, observed_s / predicted_s))
        self.factor += self.alpha * (ratio - self.factor)


@dataclass(frozen=True)
class Estimate:
    """One candidate's predicted timings, in seconds (already corrected)."""

    ttft_s: float
    tpot_s: float
    prefill_s: float  # queue wait + prefill, on whichever instance prefills
    transfer_s: float
    first_step_s: float
    stall_s: float = 0.0  # how long a local prefill holds up the decoder's running requests


def _correction(table: dict[str, Correction], url: str) -> Correction:
    """The instance's correction, made on first use (on the hot path: no default built per call)."""
    found = table.get(url)
    if found is None:
        found = table[url] = Correction()
    return found


class Predictor:
    def __init__(self, profile: LatencyProfile = DEFAULT_PROFILE) -> None:
        self.profile = profile
        self._prefill: dict[str, Correction] = {}
        self._decode: dict[str, Correction] = {}

    @classmethod
    def from_file(cls, path: str | None) -> Predictor:
        return cls(load_profile(path) if path else DEFAULT_PROFILE)

    def prefill_correction(self, inst: Instance) -> Correction:
        return _correction(self._prefill, inst.url)

    def decode_correction(self, inst: Instance) -> Correction:
        return _correction(self._decode, inst.url)

    def prefill_s(self, inst: Instance, tokens: int) -> float:
        """Queue wait plus this prompt's prefill: the queued prompts and this one as one batch."""
        load = inst.load
        queued = [load.prefill_tokens // load.prefill_requests] * load.prefill_requests if load.prefill_requests else []
        raw = prefill_time(self.profile.prefill, [*queued, max(1, tokens)])
        return raw * self.prefill_correction(inst).factor

    def step_s(self, inst: Instance, extra_requests: int, extra_context: int) -> float:
        """One decode step on ``inst`` with ``extra_requests`` more requests holding ``extra_context`` tokens."""
        load = inst.load
        batch = load.decode_requests + inst.external_requests + extra_requests
        raw = decode_step_time(self.profile.decode, batch, load.context_tokens + extra_context)
        return raw * self.decode_correction(inst).factor

    def transfer_s(self, tokens: int) -> float:
        return kv_transfer_time(self.profile.link, tokens * self.profile.kv_bytes_per_token)

    def remote(self, prefill: Instance, decode: Instance, prompt: int, output: int) -> Estimate:
        pre = self.prefill_s(prefill, prompt)
        transfer = self.transfer_s(prompt)
        first = self.step_s(decode, 1, prompt)
        tpot = self.step_s(decode, 1, prompt + output // 2)
        return Estimate(pre + transfer + first, tpot, pre, transfer, first)

    def local(self, decode: Instance, prompt: int, output: int) -> Estimate:
        pre = self.prefill_s(decode, prompt)
        first = self.step_s(decode, 1, prompt)
        tpot = self.step_s(decode, 1, prompt + output // 2)
        load = decode.load
        # the decoder's running requests wait for this prompt's own prefill (not for the queue before it)
        stall = prefill_time(self.profile.prefill, [max(1, prompt)]) * self.prefill_correction(decode).factor
        if load.decode_requests:
            per_running = load.remaining_tokens / load.decode_requests
            tpot = max(tpot, self.step_s(decode, 1, prompt) + stall / max(1.0, per_running))
        return Estimate(pre + first, tpot, pre, 0.0, first, stall)
