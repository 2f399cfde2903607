"""Request builders and answer comparison shared by the end-to-end tests."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from vllm_pd.launcher import Deployment
from vllm_pd.launcher.topology import CPU_DEFAULT_ARGS, Topology
from vllm_pd.testing.pd_client import completion_tokens

MAX_MODEL_LEN = 2048
BLOCK_SIZE = 32
TINY_VOCAB = 320
FIRST_ORDINARY_TOKEN = 8  # after the tiny tokenizer's special tokens
SERVER_ARGS = CPU_DEFAULT_ARGS + ("--max-model-len", str(MAX_MODEL_LEN))


def greedy(model: Path, max_tokens: int = 16, **body: Any) -> dict[str, Any]:
    """A deterministic request body: greedy, fixed length, token ids and logprobs returned."""
    return {"model": str(model), "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            "logprobs": 1 if "prompt" in body else True, "return_token_ids": True, **body}


def prompt_ids(num_tokens: int, seed: int = 0) -> list[int]:
    """A prompt of exactly ``num_tokens`` ordinary token ids (the tiny tokenizer's specials come first)."""
    rng = random.Random(seed)
    return [rng.randrange(FIRST_ORDINARY_TOKEN, TINY_VOCAB) for _ in range(num_tokens)]


def assert_same_answer(single: dict, disagg: dict) -> None:
    """Greedy answers must agree token for token, and logprob for logprob up to float noise."""
    single_ids, single_lp = completion_tokens(single)
    disagg_ids, disagg_lp = completion_tokens(disagg)
    assert disagg_ids == single_ids
    assert disagg_lp == pytest.approx(single_lp, abs=1e-4)


@contextmanager
def pd_pair(model: Path, log_dir: Path, connector: str = "nixl") -> Iterator[Deployment]:
    """One prefill (core 0) and one decode (core 1) server of ``model``, stopped on exit."""
    topology = Topology(model=str(model), prefill=1, decode=1, connector=connector,
                        cpus=("0", "1"), server_args=SERVER_ARGS)
    with Deployment(topology.specs(), log_dir) as deployment:
        yield deployment
