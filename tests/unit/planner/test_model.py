"""Model-spec arithmetic against published parameter counts and KV-cache sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vllm_pd.planner.model import ModelSpecError, builtin_models, load_model_spec, model_spec_from_config

# Parameter counts as Hugging Face's num_parameters() reports them for the released checkpoints.
PUBLISHED_PARAMS = {
    "llama-2-7b": 6_738_415_616,
    "llama-2-13b": 13_015_864_320,
    "llama-2-70b": 68_976_648_192,
    "llama-3-8b": 8_030_261_248,
    "llama-3-70b": 70_553_706_496,
    "mixtral-8x7b": 46_702_792_704,
    "qwen2-7b": 7_615_616_512,
}


@pytest.mark.parametrize(("name", "params"), sorted(PUBLISHED_PARAMS.items()))
def test_parameter_count_matches_the_release(name: str, params: int) -> None:
    assert load_model_spec(name).param_count() == params


def test_opt_125m_exactly_and_opt_13b_66b_by_name() -> None:
    opt_125m = {
        "model_type": "opt", "hidden_size": 768, "ffn_dim": 3072, "num_hidden_layers": 12,
        "num_attention_heads": 12, "vocab_size": 50272, "max_position_embeddings": 2048, "torch_dtype": "float16",
    }
    assert model_spec_from_config(opt_125m).param_count() == 125_239_296
    assert load_model_spec("opt-13b").param_count() / 1e9 == pytest.approx(13, rel=0.02)
    assert load_model_spec("opt-66b").param_count() / 1e9 == pytest.approx(66, rel=0.02)


def test_mixtral_activates_two_of_eight_experts() -> None:
    # Mistral AI: "12.9B active parameters per token" of 46.7B.
    spec = load_model_spec("mixtral-8x7b")
    assert spec.active_param_count() / 1e9 == pytest.approx(12.9, abs=0.05)
    assert spec.linear_flops_per_token() < 2 * spec.active_param_count()


@pytest.mark.parametrize(
    ("name", "kv_bytes"),
    [
        ("llama-2-7b", 512 * 1024),  # 0.5 MiB/token: 32 layers x 32 heads x 128 x 2 (K,V) x fp16
        ("llama-3-8b", 128 * 1024),  # GQA with 8 KV heads
        ("llama-3-70b", 320 * 1024),
        ("opt-13b", 800 * 1024),  # vLLM paper (SOSP'23): "800 KB" of KV per token for OPT-13B
    ],
)
def test_kv_bytes_per_token(name: str, kv_bytes: int) -> None:
    assert load_model_spec(name).kv_bytes_per_token() == kv_bytes


def test_dtype_override_halves_or_doubles_bytes() -> None:
    fp16 = load_model_spec("llama-3-8b")
    fp32 = load_model_spec("llama-3-8b", dtype="float32")
    assert fp32.param_bytes() == 2 * fp16.param_bytes()
    assert fp32.kv_bytes_per_token() == 2 * fp16.kv_bytes_per_token()


def test_reads_a_config_directory_like_the_tiny_test_model(tmp_path: Path) -> None:
    config = {
        "model_type": "llama", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 330,
        "torch_dtype": "float32", "tie_word_embeddings": False, "max_position_embeddings": 512,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    spec = load_model_spec(tmp_path)
    assert spec.name == tmp_path.name
    assert spec.kv_bytes_per_token() == 2 * 2 * 2 * 32 * 4
    attention = 128 * (128 + 2 * 64) + 128 * 128
    assert spec.param_count() == 2 * (attention + 3 * 128 * 256 + 2 * 128) + 2 * 330 * 128 + 128


def test_builtin_names_are_listed() -> None:
    assert {"llama-3-8b", "opt-13b", "mixtral-8x7b"} <= set(builtin_models())


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"model_type": "llama", "hidden_size": 64}, "lacks num_attention_heads"),
        ({"hidden_size": 64, "num_attention_heads": 6, "num_key_value_heads": 4, "intermediate_size": 8,
          "num_hidden_layers": 1, "vocab_size": 8}, "do not divide"),
        ({"hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 8, "num_hidden_layers": 1,
          "vocab_size": 8, "torch_dtype": "int3"}, "unknown dtype"),
    ],
)
def test_bad_configs_name_the_problem(config: dict, message: str) -> None:
    with pytest.raises(ModelSpecError, match=message):
        model_spec_from_config(config)


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ModelSpecError, match="no such model config"):
        load_model_spec(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelSpecError, match="not valid JSON"):
        load_model_spec(tmp_path)
