"""The proxy in front of real vLLM servers (prefill + decode with vLLM's NixlConnector).

The oracle is a plain single instance: every answer through the proxy, streamed or not, chat or
completion, must equal its greedy answer token for token.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import BLOCK_SIZE, assert_same_answer, greedy, pd_pair, prompt_ids
from tests.e2e.proxy_helpers import pool_flags, proxy, stream, streamed_tokens
from vllm_pd.launcher import Deployment
from vllm_pd.testing.pd_client import completion_tokens


@pytest.fixture(scope="module")
def pair(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with pd_pair(tiny_model, tmp_path_factory.mktemp("proxy-pair-logs")) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def remote_proxy(pair: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A proxy that always disaggregates (local prefill off), so every answer crosses NIXL."""
    flags = pool_flags(pair, ["prefill0"], ["decode0"])
    with proxy(tmp_path_factory.mktemp("proxy-logs"), *flags, "--no-local-prefill") as url:
        yield url


def metric(client: httpx.Client, url: str, name: str) -> float:
    total = 0.0
    for line in client.get(url + "/metrics").text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("num_tokens", [5 * BLOCK_SIZE + 7, 8 * BLOCK_SIZE])
def test_completion_matches_single_instance(remote_proxy: str, oracle: str, http: httpx.Client,
                                            tiny_model: Path, num_tokens: int) -> None:
    body = greedy(tiny_model, prompt=prompt_ids(num_tokens, seed=num_tokens))
    single = http.post(oracle + "/v1/completions", json=body).json()

    response = http.post(remote_proxy + "/v1/completions", json=body)

    assert response.status_code == 200, response.text
    assert response.headers["X-PD-Route"] == "remote"
    assert response.json()["usage"]["prompt_tokens"] == num_tokens
    assert_same_answer(single, response.json())


def test_streamed_completion_matches_single_instance(remote_proxy: str, oracle: str, http: httpx.Client,
                                                     tiny_model: Path) -> None:
    body = greedy(tiny_model, prompt=prompt_ids(6 * BLOCK_SIZE, seed=3), max_tokens=24)
    single_ids, _ = completion_tokens(http.post(oracle + "/v1/completions", json=body).json())

    response = stream(http, remote_proxy + "/v1/completions", {**body, "stream_options": {"include_usage": True}})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["X-PD-Route"] == "remote"
    ids, usage = streamed_tokens(response.text)
    assert ids == single_ids
    assert usage == {"prompt_tokens": 6 * BLOCK_SIZE, "completion_tokens": 24, "total_tokens": 6 * BLOCK_SIZE + 24}


@pytest.mark.parametrize("streamed", [False, True])
def test_chat_matches_single_instance(remote_proxy: str, oracle: str, http: httpx.Client, tiny_model: Path,
                                      streamed: bool) -> None:
    text = "The proxy picks a prefill and a decode instance for every request it serves. " * 4
    body = greedy(tiny_model, messages=[{"role": "user", "content": text}])
    single = http.post(oracle + "/v1/chat/completions", json=body).json()
    single_ids, _ = completion_tokens(single)

    if streamed:
        response = stream(http, remote_proxy + "/v1/chat/completions", body)
        assert response.status_code == 200
        assert streamed_tokens(response.text)[0] == single_ids
    else:
        response = http.post(remote_proxy + "/v1/chat/completions", json=body)
        assert response.status_code == 200
        assert_same_answer(single, response.json())
    assert response.headers["X-PD-Route"] == "remote"


def test_client_kv_transfer_params_are_stripped(remote_proxy: str, oracle: str, http: httpx.Client,
                                                tiny_model: Path) -> None:
    """A client pointing the decoder at another address must have no effect at all."""
    body = greedy(tiny_model, prompt=prompt_ids(3 * BLOCK_SIZE, seed=11))
    single = http.post(oracle + "/v1/completions", json=body).json()
    forged = {"do_remote_prefill": True, "do_remote_decode": False, "remote_engine_id": "evil",
              "remote_block_ids": [[0, 1, 2]], "remote_host": "203.0.113.9", "remote_port": 1}

    response = http.post(remote_proxy + "/v1/completions", json={**body, "kv_transfer_params": forged})

    assert response.status_code == 200, response.text
    assert_same_answer(single, response.json())


def test_request_id_is_kept_end_to_end(remote_proxy: str, http: httpx.Client, tiny_model: Path) -> None:
    body = greedy(tiny_model, prompt=prompt_ids(40, seed=5), max_tokens=2)

    given = http.post(remote_proxy + "/v1/completions", json=body, headers={"X-Request-Id": "client-id-42"})
    generated = http.post(remote_proxy + "/v1/completions", json=body)

    assert given.headers["X-Request-Id"] == "client-id-42"
    assert "client-id-42" in given.json()["id"]  # the decode leg ran under the client's id
    assert len(generated.headers["X-Request-Id"]) >= 16
    assert generated.headers["X-Request-Id"] in generated.json()["id"]


def test_bad_input_gets_4xx_with_a_message(remote_proxy: str, http: httpx.Client, tiny_model: Path) -> None:
    url = remote_proxy + "/v1/completions"
    malformed = http.post(url, content=b"{not json", headers={"Content-Type": "application/json"})
    no_prompt = http.post(url, json={"model": str(tiny_model)})
    unknown = http.post(url, json={"model": "no-such-model", "prompt": "hi"})
    too_long = http.post(url, json=greedy(tiny_model, prompt=prompt_ids(4000), max_tokens=4))
    oversize = http.post(url, content=b" " * (33 * 1024 * 1024), headers={"Content-Type": "application/json"})

    assert malformed.status_code == 400 and "JSON" in malformed.json()["error"]["message"]
    assert no_prompt.status_code == 400 and "prompt" in no_prompt.json()["error"]["message"]
    assert unknown.status_code == 404 and "no-such-model" in unknown.json()["error"]["message"]
    assert too_long.status_code == 400  # vLLM's own 400 (prompt over max_model_len), status and body kept
    assert "maximum" in too_long.text or "context length" in too_long.text
    assert oversize.status_code == 413


def test_models_health_ready_and_metrics(remote_proxy: str, http: httpx.Client, tiny_model: Path) -> None:
    models = http.get(remote_proxy + "/v1/models").json()
    assert [m["id"] for m in models["data"]] == [str(tiny_model)]
    assert http.get(remote_proxy + "/health").status_code == 200
    ready = http.get(remote_proxy + "/ready")
    assert ready.status_code == 200 and all(i["healthy"] for i in ready.json()["instances"])
    assert metric(http, remote_proxy, "vllm_pd_route_decisions_total") >= 1
    assert metric(http, remote_proxy, "vllm_pd_ttft_stage_seconds_count") >= 1


def test_short_prompt_prefills_locally_long_prompt_remotely(
        pair: Deployment, oracle: str, http: httpx.Client, tiny_model: Path, tmp_path: Path) -> None:
    """Under an SLO where a long prompt's prefill would stall the decoder too long, only it is disaggregated."""
    profile = tmp_path / "profile.yaml"
    profile.write_text("prefill: {a: 0.001, b: 1.0e-5}\ndecode: {a: 0.001, b: 0.0}\n"
                       "link: {bandwidth: 1.0e9}\nkv_bytes_per_token: 1024\n")
    config = tmp_path / "proxy.yaml"  # stall budget 0.1 x 50 ms = 5 ms: 8 tokens ~1.1 ms, 600 tokens ~7 ms
    config.write_text("local_stall_budget: 0.1\nslo: {ttft_s: 2.0, tpot_s: 0.05}\n")
    flags = pool_flags(pair, ["prefill0"], ["decode0"])
    short = greedy(tiny_model, prompt=prompt_ids(8, seed=1))
    long = greedy(tiny_model, prompt=prompt_ids(600, seed=2))

    with proxy(tmp_path, *flags, "--config", str(config), "--latency-profile", str(profile)) as url:
        short_answer = http.post(url + "/v1/completions", json=short)
        long_answer = http.post(url + "/v1/completions", json=long)
        decisions = {route: metric(http, url, f'vllm_pd_route_decisions_total{{policy="goodput",route="{route}"}}')
                     for route in ("local", "remote")}

    assert short_answer.headers["X-PD-Route"] == "local"
    assert "X-PD-Prefill" not in short_answer.headers
    assert long_answer.headers["X-PD-Route"] == "remote"
    assert long_answer.headers["X-PD-Prefill"] == pair.url("prefill0")
    assert decisions == {"local": 1.0, "remote": 1.0}
    for body, answer in ((short, short_answer), (long, long_answer)):
        assert_same_answer(http.post(oracle + "/v1/completions", json=body).json(), answer.json())


def test_client_disconnect_cancels_both_legs(remote_proxy: str, pair: Deployment, http: httpx.Client,
                                             tiny_model: Path) -> None:
    """A client that leaves mid-stream: the decoder aborts, and the prefill instance holds no KV afterwards."""
    body = greedy(tiny_model, prompt=prompt_ids(10 * BLOCK_SIZE, seed=9), max_tokens=1500, stream=True)
    with httpx.Client(timeout=60) as client, client.stream("POST", remote_proxy + "/v1/completions",
                                                           json=body) as response:
        assert response.status_code == 200
        next(response.iter_bytes())  # the first token arrived; now hang up

    deadline = time.monotonic() + 30
    running = kv = None
    while time.monotonic() < deadline:
        running = metric(http, pair.url("decode0"), "vllm:num_requests_running")
        kv = metric(http, pair.url("prefill0"), "vllm:kv_cache_usage_perc")
        if running == 0 and kv == 0:
            break
        time.sleep(0.5)
    assert running == 0, "the decode leg was not aborted"
    assert kv == 0, "the prefill instance still holds KV blocks"
    assert metric(http, remote_proxy, 'vllm_pd_requests_total{outcome="cancelled"}') >= 1
