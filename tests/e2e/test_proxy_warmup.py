"""The proxy makes a pair's first KV handoff itself, through real vLLM servers and NixlConnector.

The prefill and decode servers are started as two deployments, so the launcher (which warms the pairs
of one deployment) leaves the decoder cold: its first NIXL transfer must come from the proxy.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.connector_helpers import metric
from tests.e2e.helpers import SERVER_ARGS, assert_same_answer, greedy, prompt_ids
from tests.e2e.proxy_helpers import proxy
from vllm_pd.launcher import Deployment
from vllm_pd.launcher.topology import Topology

TRANSFERS = "vllm:nixl_xfer_time_seconds_count"


@pytest.fixture(scope="module")
def cold_pair(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    logs = tmp_path_factory.mktemp("warmup-logs")
    prefill, decode = Topology(model=str(tiny_model), prefill=1, decode=1, connector="nixl", cpus=("0", "1"),
                               server_args=SERVER_ARGS).specs()
    with Deployment([prefill], logs / "prefill") as p, Deployment([decode], logs / "decode") as d:
        yield p.url(prefill.name), d.url(decode.name)


def test_the_proxy_hands_kv_over_once_per_pair_before_any_client_request(
        cold_pair: tuple[str, str], oracle: str, http: httpx.Client, tiny_model: Path,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    prefill, decode = cold_pair
    assert metric(http, decode, TRANSFERS) == 0  # cold: no KV pulled yet

    with proxy(tmp_path_factory.mktemp("warmup-proxy-logs"), "--prefill", prefill, "--decode", decode,
               "--no-local-prefill") as url:
        deadline = time.monotonic() + 60
        while metric(http, decode, TRANSFERS) < 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert metric(http, decode, TRANSFERS) == 1, "the proxy did not make the pair's first handoff"

        body = greedy(tiny_model, prompt=prompt_ids(100, seed=41))
        response = http.post(url + "/v1/completions", json=body)

        assert response.status_code == 200, response.text
        assert response.headers["X-PD-Route"] == "remote"
        assert_same_answer(http.post(oracle + "/v1/completions", json=body).json(), response.json())
        assert metric(http, decode, TRANSFERS) == 2
        assert metric(http, url, "vllm_pd_requests_total") == 1  # the warm-up is not a client request
