"""Prompts have exactly the requested token count, as the server will count them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vllm_pd.bench.prompts import TextPrompts, TokenIdPrompts, make_prompt_builder


@pytest.fixture(scope="module")
def builder(tiny_model: Path) -> TextPrompts:
    built = make_prompt_builder(str(tiny_model), None)
    assert isinstance(built, TextPrompts), built.description
    return built


@pytest.mark.parametrize("tokens", [1, 2, 7, 31, 32, 33, 500, 2000])
def test_text_prompt_has_the_exact_token_count(builder: TextPrompts, tiny_model: Path, tokens: int) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    for seed in range(3):
        text = builder.build(tokens, seed=f"s{seed}")
        assert len(tokenizer.encode(text, add_special_tokens=True)) == tokens


def test_prompts_are_deterministic_per_seed_and_differ_across_seeds(builder: TextPrompts) -> None:
    assert builder.build(64, seed="a/1") == builder.build(64, seed="a/1")
    assert builder.build(64, seed="a/1") != builder.build(64, seed="a/2")


def test_without_a_tokenizer_prompts_are_token_ids_of_the_exact_count(tiny_model: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(tiny_model / "config.json", bare / "config.json")  # weights' config, no tokenizer files

    built = make_prompt_builder(str(bare), None)

    assert isinstance(built, TokenIdPrompts)
    assert "no tokenizer" in built.description
    ids = built.build(100, seed=1)
    assert len(ids) == 100 and all(0 < i < 320 for i in ids)


def test_a_served_model_name_that_is_not_a_directory_falls_back_with_a_reason() -> None:
    built = make_prompt_builder("meta-llama/Llama-3-8B", None)
    assert isinstance(built, TokenIdPrompts)
    assert "--tokenizer" in built.description


def test_explicit_tokenizer_dir_without_a_tokenizer_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--tokenizer"):
        make_prompt_builder("whatever", str(tmp_path))
