"""`vllm-pd profile` against a real vLLM server (the tiny model): the profile loads, fits and predicts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from vllm_pd.latency import decode_step_time, load_latency_table, load_profile, prefill_time
from vllm_pd.planner.model import load_model_spec


def test_profile_a_live_server(oracle: str, tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "profile.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "vllm_pd.cli", "profile", "--url", oracle, "--out", str(out),
         "--model-config", str(tiny_model), "--dtype", "bfloat16", "--prompt-lengths", "16,256,1024", "--batch-sizes", "1,4",
         "--decode-batch-sizes", "1,4,16", "--context-lengths", "32,512", "--decode-tokens", "24", "--repeats", "2"],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "mean abs error" in done.stdout and "prefill 4 x 1024 tokens" in done.stderr

    profile = load_profile(out)
    assert profile.source == "fitted" and profile.fit is not None
    assert profile.fit.prefill_samples == 6 and profile.fit.decode_samples == 6
    # KV bytes follow the dtype served (--dtype), not the float32 checkpoint's.
    assert profile.kv_bytes_per_token == load_model_spec(tiny_model, dtype="bfloat16").kv_bytes_per_token()
    assert profile.kv_bytes_per_token * 2 == load_model_spec(tiny_model).kv_bytes_per_token()
    assert min(profile.prefill.a, profile.prefill.b, profile.prefill.c, profile.decode.a) >= 0
    # A real server takes longer to prefill 4 x 1024 tokens than one 16-token prompt.
    assert prefill_time(profile.prefill, [1024] * 4) > prefill_time(profile.prefill, [16])
    assert decode_step_time(profile.decode, 16, 16 * 512) >= decode_step_time(profile.decode, 1, 32)
    assert load_latency_table(out).get(1, 1) == profile  # the planner reads the same file
