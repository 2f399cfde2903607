"""Hardware specs, the roofline source and the latency-table extensions of vllm_pd.latency."""

from __future__ import annotations

from pathlib import Path

import pytest

from vllm_pd.latency import (
    DecodeCoeffs,
    LatencyProfile,
    LatencyTable,
    PrefillCoeffs,
    dump_profile,
    load_latency_table,
    load_profile,
    mixed_step_time,
    prefill_time,
)
from vllm_pd.planner.hardware import HardwareError, load_hardware
from vllm_pd.planner.model import load_model_spec
from vllm_pd.planner.roofline import roofline_profile
from vllm_pd.planner.shapes import ProfileSource, Shape, ShapeLimits, feasible_shapes, kv_capacity_tokens


def test_builtin_hardware_matches_datasheets() -> None:
    h100, h200, a100 = (load_hardware(n) for n in ("h100", "H200", "a100"))
    assert h100.peak_flops == 989e12 and h100.memory_bandwidth == 3.35e12 and h100.memory_bytes == 80e9
    assert h200.memory_bytes == 141e9 and h200.memory_bandwidth == 4.8e12
    assert a100.peak_flops == 312e12


def test_hardware_yaml_accepts_plain_exponents(tmp_path: Path) -> None:
    path = tmp_path / "l40s.yaml"
    path.write_text("memory_bytes: 48e9\npeak_flops: 362e12\nmemory_bandwidth: 864e9\n"
                    "nvlink_bandwidth: 32e9\nnetwork_bandwidth: 12.5e9\n")
    spec = load_hardware(str(path))
    assert spec.name == "l40s" and spec.memory_bytes == 48e9


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [("tpu", None, "unknown hardware 'tpu'"), ("gone.yaml", None, "no such hardware file"),
     ("bad.yaml", "memory_bytes: 1\npeak_flops: 1\n", "invalid hardware spec"),
     ("neg.yaml", "memory_bytes: 1\npeak_flops: 1\nmemory_bandwidth: -1\nnvlink_bandwidth: 1\nnetwork_bandwidth: 1\n",
      "memory_bandwidth must be positive")],
)
def test_bad_hardware(tmp_path: Path, name: str, content: str | None, message: str) -> None:
    target = tmp_path / name if content is not None or name.endswith(".yaml") else Path(name)
    if content is not None:
        target.write_text(content)
    with pytest.raises(HardwareError, match=message):
        load_hardware(str(target))


def test_roofline_prefill_is_compute_bound_and_decode_memory_bound() -> None:
    model, hw = load_model_spec("llama-3-8b"), load_hardware("h100")
    one = roofline_profile(model, hw, tp=1, pp=1, gpus_per_node=8)
    # Prefill: 2 FLOPs per parameter per token at 60% of 989 TFLOP/s.
    assert one.prefill.b == pytest.approx(model.linear_flops_per_token() / (0.6 * 989e12))
    # Decode: the step floor reads all weights once at 80% of 3.35 TB/s, plus the fixed overhead.
    assert one.decode.a == pytest.approx(hw.step_overhead_s + model.param_bytes() / (0.8 * 3.35e12))
    four = roofline_profile(model, hw, tp=4, pp=1, gpus_per_node=8)
    assert prefill_time(four.prefill, [4000]) < prefill_time(one.prefill, [4000]) / 2.5
    assert four.kv_bytes_per_token == model.kv_bytes_per_token() and four.tp == 4


def test_shapes_respect_heads_nodes_and_memory() -> None:
    model, hw = load_model_spec("llama-3-70b"), load_hardware("h100")
    shapes = feasible_shapes(model, hw, gpus=16, gpus_per_node=8, limits=ShapeLimits(min_kv_tokens=4096))
    assert Shape(1, 1) not in shapes  # 141 GB of weights
    assert all(s.tp <= 8 and s.gpus <= 16 for s in shapes)
    assert Shape(4, 1) in shapes and Shape(8, 2) in shapes
    assert kv_capacity_tokens(model, hw, Shape(4, 1)) > 4096


def test_profile_source_scales_a_fitted_shape_by_the_roofline() -> None:
    model, hw = load_model_spec("llama-3-8b"), load_hardware("h100")
    fitted = LatencyProfile(PrefillCoeffs(0.02, 3e-5, 1e-9), DecodeCoeffs(0.012, 6e-8, 3e-5), tp=1, pp=1)
    source = ProfileSource(model, hw, 8, LatencyTable(profiles=[fitted]))
    exact = source.profile(Shape(1, 1))
    assert exact.prefill == fitted.prefill and exact.kv_bytes_per_token == model.kv_bytes_per_token()
    scaled = source.profile(Shape(2, 1))
    r1, r2 = (roofline_profile(model, hw, tp=t, pp=1, gpus_per_node=8) for t in (1, 2))
    assert scaled.prefill.b == pytest.approx(3e-5 * r2.prefill.b / r1.prefill.b)
    assert scaled.decode.a == pytest.approx(0.012 * r2.decode.a / r1.decode.a)
    assert "roofline" in scaled.source


def test_mixed_step_is_prefill_plus_decode_with_the_decode_steps_fixed_cost() -> None:
    p, d = PrefillCoeffs(0.01, 1e-4, 1e-8), DecodeCoeffs(0.005, 1e-7, 1e-4)
    assert mixed_step_time(p, d, [(100, 0)], 0, 0) == pytest.approx(prefill_time(p, [100]))
    both = mixed_step_time(p, d, [(100, 300)], 8, 4000)
    # The prefill's a (request overhead included) is not paid again by a step that also decodes.
    assert both == pytest.approx(0.005 + 1e-4 * 100 + 1e-8 * 100 * 400 + 1e-7 * 4000 + 1e-4 * 8)


def test_latency_table_round_trip_and_single_profiles(tmp_path: Path) -> None:
    table = LatencyTable(
        profiles=[LatencyProfile(PrefillCoeffs(0.01, 1e-4), DecodeCoeffs(0.01, 1e-7), tp=t) for t in (1, 2)],
        model="m", hardware="h",
    )
    path = tmp_path / "table.yaml"
    dump_profile(table, path)
    assert load_latency_table(path) == table
    single = tmp_path / "one.yaml"
    single.write_text("prefill: {a: 1e-2, b: 2e-4}\ndecode: {a: 5e-3, b: 1e-7, c: 1e-5}\n")
    assert load_profile(single).prefill.a == 0.01
    assert load_latency_table(single).get(1, 1).decode.c == 1e-5
    assert load_latency_table(single).get(2, 1) is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("prefill: {a: x}\n")
    with pytest.raises(ValueError, match="invalid latency profile"):
        load_latency_table(bad)
    with pytest.raises(ValueError, match="no such latency profile"):
        load_latency_table(tmp_path / "missing.yaml")
