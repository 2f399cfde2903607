"""Prompt length in tokens, for predictions: the model's fast tokenizer when the proxy has it, else an
estimate from the prompt's byte length whose bytes-per-token ratio is corrected from ``usage``.
"""

from __future__ import annotations

from pathlib import Path

_INITIAL_BYTES_PER_TOKEN = 4.0


def load_fast_tokenizer(path: str | None):
    """A ``tokenizers.Tokenizer`` from a tokenizer.json or a model directory, or None when unavailable."""
    if path is None:
        return None
    file = Path(path)
    if file.is_dir():
        file = file / "tokenizer.json"
    if not file.is_file():
        return None
    try:
        from tokenizers import Tokenizer  # optional: Rust library, no torch
    except ImportError:
        return None
    return Tokenizer.from_file(str(file))


class PromptCounter:
    """Counts with the configured tokenizer, else with the tokenizer of a model served from a local
    directory (the usual case for ``vllm-pd up``), else estimates."""

    def __init__(self, tokenizer=None, alpha: float = 0.1) -> None:
        self._tokenizer = tokenizer
        self._by_model: dict[str, object] = {}
        self._alpha = alpha
        self.bytes_per_token = _INITIAL_BYTES_PER_TOKEN

    def tokenizer_for(self, model: str | None):
        if self._tokenizer is not None or model is None:
            return self._tokenizer
        if model not in self._by_model:
            self._by_model[model] = load_fast_tokenizer(model) if len(self._by_model) < 64 else None
        return self._by_model[model]

    def count(self, text: str, token_ids: int = 0, model: str | None = None) -> int:
        """Tokens in ``text`` plus ``token_ids`` already given as ids."""
        if not text:
            return token_ids
        tokenizer = self.tokenizer_for(model)
        if tokenizer is not None:
            return token_ids + len(tokenizer.encode(text, add_special_tokens=False).ids)
        return token_ids + max(1, round(len(text.encode()) / self.bytes_per_token))

    def observe(self, text_bytes: int, prompt_tokens: int, model: str | None = None) -> None:
        """Correct the estimate from the server's ``usage.prompt_tokens`` for a text prompt."""
        if self.tokenizer_for(model) is not None or text_bytes <= 0 or prompt_tokens <= 0:
            return
        ratio = min(16.0, max(0.5, text_bytes / prompt_tokens))
        self.bytes_per_token += self._alpha * (ratio - self.bytes_per_token)
