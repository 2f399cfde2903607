"""PDConnector end to end: real prefill and decode vLLM servers, real NIXL, vs a single instance.

Greedy answers must match the single instance token for token and logprob for logprob, for every
prompt shape; after each test neither server holds a KV block.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.connector_helpers import assert_no_held_kv, decode_leg, metric, prefill_only, stream_tokens
from tests.e2e.helpers import BLOCK_SIZE, MAX_MODEL_LEN, SERVER_ARGS, assert_same_answer, greedy, prompt_ids
from vllm_pd.launcher import Deployment
from vllm_pd.launcher.topology import Topology
from vllm_pd.testing.pd_client import completion_tokens, disaggregated

MAX_TOKENS = 16


@pytest.fixture(scope="module")
def pd_pair(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    topology = Topology(model=str(tiny_model), prefill=1, decode=1, connector="pd", cpus=("0", "1"),
                        server_args=SERVER_ARGS)
    with Deployment(topology.specs(), tmp_path_factory.mktemp("pd-logs")) as deployment:
        yield deployment


@pytest.fixture
def urls(pd_pair: Deployment, http: httpx.Client) -> Iterator[tuple[str, str]]:
    prefill, decode = pd_pair.url("prefill0"), pd_pair.url("decode0")
    yield prefill, decode
    assert_no_held_kv(http, prefill, decode)


@pytest.mark.parametrize("num_tokens", [
    1,  # a single token
    BLOCK_SIZE - 7,  # less than a block
    3 * BLOCK_SIZE,  # exactly k blocks
    17 * BLOCK_SIZE + 5,  # 16+ blocks
    MAX_MODEL_LEN - MAX_TOKENS,  # the longest prompt that still fits the answer
])
def test_completion_matches_single_instance(urls, oracle: str, http: httpx.Client, tiny_model: Path,
                                            num_tokens: int) -> None:
    prefill, decode = urls
    body = greedy(tiny_model, max_tokens=MAX_TOKENS, prompt=prompt_ids(num_tokens, seed=num_tokens))
    single = http.post(oracle + "/v1/completions", json=body).json()

    p, d = disaggregated(http, prefill, decode, "/v1/completions", body)

    assert p["kv_transfer_params"]["remote_num_tokens"] == num_tokens
    assert len(p["kv_transfer_params"]["remote_block_ids"]) == -(-num_tokens // BLOCK_SIZE)
    handoff = d["kv_transfer_params"]["pd_handoff"]
    assert handoff["outcome"] == "pulled"
    assert handoff["prefill_done"] <= handoff["pull_start"] <= handoff["pull_done"]
    assert handoff["bytes"] > 0 and handoff["descriptors"] >= 1
    assert_same_answer(single, d)


def test_chat_matches_single_instance(urls, oracle: str, http: httpx.Client, tiny_model: Path) -> None:
    prefill, decode = urls
    text = "The decode instance pulls the KV blocks of the prompt over NIXL, run by run. " * 5
    body = greedy(tiny_model, messages=[{"role": "user", "content": text}])
    single = http.post(oracle + "/v1/chat/completions", json=body).json()

    _, d = disaggregated(http, prefill, decode, "/v1/chat/completions", body)

    assert d["usage"]["prompt_tokens"] > 3 * BLOCK_SIZE
    assert d["kv_transfer_params"]["pd_handoff"]["outcome"] == "pulled"
    assert_same_answer(single, d)


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_streamed_decode_matches_single_instance(urls, oracle: str, http: httpx.Client, tiny_model: Path,
                                                 path: str) -> None:
    prefill, decode = urls
    if path == "/v1/completions":
        body = greedy(tiny_model, prompt=prompt_ids(5 * BLOCK_SIZE + 3, seed=7))
    else:
        body = greedy(tiny_model, messages=[{"role": "user", "content": "stream me the tokens " * 12}])
    single_ids, single_lp = completion_tokens(http.post(oracle + path, json=body).json())

    params = prefill_only(http, prefill, path, body)
    ids, logprobs = stream_tokens(http, decode, path, {**body, "kv_transfer_params": params})

    assert ids == single_ids
    assert logprobs == pytest.approx(single_lp, abs=1e-4)


def test_32_concurrent_requests(urls, oracle: str, http: httpx.Client, tiny_model: Path) -> None:
    prefill, decode = urls
    bodies = [greedy(tiny_model, max_tokens=8, prompt=prompt_ids(20 + 37 * i, seed=100 + i)) for i in range(32)]
    singles = [http.post(oracle + "/v1/completions", json=b).json() for b in bodies]
    pulls_before = metric(http, decode, "vllm:pd_pull_time_seconds_count")

    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(lambda b: disaggregated(http, prefill, decode, "/v1/completions", b)[1], bodies))

    for single, answer in zip(singles, answers):
        assert answer["kv_transfer_params"]["pd_handoff"]["outcome"] == "pulled"
        assert_same_answer(single, answer)
    assert metric(http, decode, "vllm:pd_pull_time_seconds_count") - pulls_before == 32


def test_prefix_cached_on_the_consumer_is_not_pulled_again(urls, oracle: str, http: httpx.Client,
                                                           tiny_model: Path) -> None:
    prefill, decode = urls
    shared = prompt_ids(8 * BLOCK_SIZE, seed=4242)
    first = greedy(tiny_model, prompt=shared + prompt_ids(2 * BLOCK_SIZE + 3, seed=1))
    second = greedy(tiny_model, prompt=shared + prompt_ids(2 * BLOCK_SIZE + 3, seed=2))

    _, d1 = disaggregated(http, prefill, decode, "/v1/completions", first)
    _, d2 = disaggregated(http, prefill, decode, "/v1/completions", second)

    full, partial = d1["kv_transfer_params"]["pd_handoff"], d2["kv_transfer_params"]["pd_handoff"]
    assert full["outcome"] == partial["outcome"] == "pulled"
    # 8 shared blocks are already in the consumer's prefix cache: only the 3 new blocks move.
    assert partial["bytes"] * 11 == full["bytes"] * 3
    assert_same_answer(http.post(oracle + "/v1/completions", json=second).json(), d2)


def test_metrics_are_exported(urls, http: httpx.Client, tiny_model: Path) -> None:
    prefill, decode = urls
    disaggregated(http, prefill, decode, "/v1/completions", greedy(tiny_model, prompt=prompt_ids(70, seed=3)))
    assert metric(http, decode, "vllm:pd_pull_bytes_sum") > 0
    assert metric(http, decode, "vllm:pd_pull_descriptors_count") > 0
    posted = metric(http, decode, "vllm:pd_pull_post_seconds_count")
    assert posted == metric(http, decode, "vllm:pd_pull_time_seconds_count") > 0
    assert 0 < metric(http, decode, "vllm:pd_pull_post_cpu_seconds_sum") <= metric(http, decode, "vllm:pd_pull_post_seconds_sum")
    assert metric(http, decode, "vllm:pd_handshakes_total") == 1  # once per producer, not per request
    assert metric(http, prefill, "vllm:pd_released_leases_total") > 0
