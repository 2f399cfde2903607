"""The baseline the project builds on: vLLM's built-in NixlConnector, prefill on one server, decode on another.

A multi-block prompt goes through the P->D protocol and the decode answer must equal the single
instance's, token for token and logprob for logprob (greedy).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import BLOCK_SIZE, assert_same_answer, greedy, pd_pair, prompt_ids
from vllm_pd.launcher import Deployment
from vllm_pd.testing.pd_client import disaggregated


@pytest.fixture(scope="module")
def nixl_pair(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with pd_pair(tiny_model, tmp_path_factory.mktemp("nixl-logs")) as deployment:
        yield deployment


@pytest.mark.parametrize("num_tokens", [5 * BLOCK_SIZE + 7, 8 * BLOCK_SIZE])
def test_multi_block_completion_matches_single_instance(
        nixl_pair: Deployment, oracle: str, http: httpx.Client, tiny_model: Path, num_tokens: int) -> None:
    body = greedy(tiny_model, prompt=prompt_ids(num_tokens, seed=num_tokens))
    single = http.post(oracle + "/v1/completions", json=body).json()

    prefill, decode = disaggregated(http, nixl_pair.url("prefill0"), nixl_pair.url("decode0"),
                                    "/v1/completions", body)

    params = prefill["kv_transfer_params"]
    assert params["remote_num_tokens"] == num_tokens
    assert len(params["remote_block_ids"][0]) == -(-num_tokens // BLOCK_SIZE)
    assert decode["usage"]["prompt_tokens"] == num_tokens
    assert_same_answer(single, decode)


def test_chat_matches_single_instance(nixl_pair: Deployment, oracle: str, http: httpx.Client,
                                      tiny_model: Path) -> None:
    text = "The decode instance pulls the KV blocks of the prompt over NIXL, block by block. " * 4
    body = greedy(tiny_model, messages=[{"role": "user", "content": text}])
    single = http.post(oracle + "/v1/chat/completions", json=body).json()

    _, decode = disaggregated(http, nixl_pair.url("prefill0"), nixl_pair.url("decode0"),
                              "/v1/chat/completions", body)

    assert decode["usage"]["prompt_tokens"] > 2 * BLOCK_SIZE
    assert_same_answer(single, decode)
