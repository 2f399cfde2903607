"""The profiler's fit: recovers known coefficients, never negative, and says how well it fits."""

from __future__ import annotations

import numpy as np
import pytest

from vllm_pd.planner.profiler.fit import (
    DecodeSample,
    PrefillSample,
    decode_features,
    fit_nonnegative,
    prefill_features,
)


def test_recovers_prefill_coefficients_from_noisy_samples() -> None:
    rng = np.random.default_rng(0)
    samples = []
    for length in (16, 64, 256, 512, 1024, 2048):
        for batch in (1, 2, 4):
            exact = 0.012 + 8e-5 * length * batch + 2e-8 * length * length * batch
            samples.append(PrefillSample((length,) * batch, exact * rng.uniform(0.98, 1.02)))
    fit = fit_nonnegative(prefill_features(samples), np.array([s.seconds for s in samples]))
    assert fit.coeffs == pytest.approx((0.012, 8e-5, 2e-8), rel=0.15)
    assert fit.mape < 0.02


def test_clamps_a_coefficient_the_data_would_make_negative() -> None:
    # Decode time falls slightly with batch size in this data: the fit drops c instead of going negative.
    samples = [DecodeSample(b, b * 300, 0.01 + 2e-7 * b * 300 - 1e-5 * b) for b in (1, 2, 4, 8, 16)]
    fit = fit_nonnegative(decode_features(samples), np.array([s.seconds for s in samples]))
    assert min(fit.coeffs) >= 0
    assert fit.mape < 0.05


def test_needs_enough_positive_samples() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        fit_nonnegative(np.ones((2, 3)), np.ones(2))
    with pytest.raises(ValueError, match="positive"):
        fit_nonnegative(np.ones((3, 3)), np.array([1.0, 0.0, 1.0]))
