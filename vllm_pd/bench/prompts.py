"""Prompts of an exact token count, so the server prefills exactly what the workload asked for.

With the model's fast tokenizer, a prompt is a string of random whole words that each encode to one
token and do not merge with their neighbours (a space starts each word), checked by encoding it the way
the server does (special tokens included). Without a tokenizer, the prompt is a list of token ids,
which vLLM's completions API takes as is. Random words per request keep the prefix cache out of it.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Protocol

_WORD = re.compile(r"^ [A-Za-z]{2,}$")
_SCAN_LIMIT = 20000  # vocab ids examined for single-token words
_MIN_WORDS = 8


class PromptBuilder(Protocol):
    description: str

    def build(self, tokens: int, seed: int | str) -> str | list[int]: ...


class TextPrompts:
    """Random words from the tokenizer's own vocabulary; exact by construction, verified by encoding."""

    def __init__(self, tokenizer, source: str) -> None:
        self._tok = tokenizer
        self._special = len(tokenizer.encode("", add_special_tokens=True))
        self._words = _single_token_words(tokenizer)
        if len(self._words) < _MIN_WORDS:
            raise ValueError(f"tokenizer at {source} has only {len(self._words)} single-token words")
        self.description = f"text prompts, exact token counts with the tokenizer at {source}"

    def build(self, tokens: int, seed: int | str) -> str:
        rng = random.Random(seed)
        words = [rng.choice(self._words) for _ in range(max(tokens - self._special, 1))]
        text = "".join(words)
        count = len(self._tok.encode(text, add_special_tokens=True))
        if count != max(tokens, self._special + 1):
            raise RuntimeError(f"prompt builder made {count} tokens for a {tokens}-token request")
        return text


class TokenIdPrompts:
    """Token ids drawn from the low vocabulary; exact for any server that accepts id prompts."""

    def __init__(self, vocab_size: int, reason: str) -> None:
        self._high = max(2, min(vocab_size, 1000))
        self.description = f"token-id prompts (no tokenizer: {reason})"

    def build(self, tokens: int, seed: int | str) -> list[int]:
        rng = random.Random(seed)
        return [rng.randrange(1, self._high) for _ in range(max(tokens, 1))]


def _single_token_words(tokenizer) -> list[str]:
    words = []
    for token_id in range(min(len(tokenizer), _SCAN_LIMIT)):
        text = tokenizer.decode([token_id])
        if _WORD.match(text) and tokenizer.encode(text, add_special_tokens=False) == [token_id]:
            words.append(text)
    return words


def make_prompt_builder(model: str, tokenizer_dir: str | None) -> PromptBuilder:
    """Text prompts from ``tokenizer_dir`` or the served model's directory; token ids otherwise."""
    source = Path(tokenizer_dir or model)
    if not (source / "tokenizer.json").is_file() and not (source / "tokenizer_config.json").is_file():
        if tokenizer_dir:
            raise ValueError(f"--tokenizer {tokenizer_dir}: no tokenizer.json or tokenizer_config.json there")
        return TokenIdPrompts(_vocab_size(source), f"model {model!r} is not a local directory; use --tokenizer")
    try:
        from transformers import AutoTokenizer
    except ImportError:
        return TokenIdPrompts(_vocab_size(source), "transformers is not installed (pip install 'vllm-pd[cpu]')")
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    try:
        return TextPrompts(tokenizer, str(source))
    except ValueError as exc:
        return TokenIdPrompts(len(tokenizer), str(exc))


def _vocab_size(model_dir: Path) -> int:
    try:
        return int(json.loads((model_dir / "config.json").read_text())["vocab_size"])
    except (OSError, ValueError, KeyError):
        return 256
