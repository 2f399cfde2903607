"""The proxy in front of PDConnector servers: answers equal a single instance's, and the TTFT split
comes from the connector's ``pd_handoff`` timings.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import BLOCK_SIZE, SERVER_ARGS, assert_same_answer, greedy, prompt_ids
from tests.e2e.proxy_helpers import pool_flags, proxy, stream, streamed_tokens
from tests.e2e.test_proxy import metric
from vllm_pd.launcher import Deployment
from vllm_pd.launcher.topology import Topology
from vllm_pd.testing.pd_client import completion_tokens


@pytest.fixture(scope="module")
def pd_proxy(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    topology = Topology(model=str(tiny_model), prefill=1, decode=1, connector="pd",
                        cpus=("0", "1"), server_args=SERVER_ARGS)
    with Deployment(topology.specs(), tmp_path_factory.mktemp("pd-logs")) as deployment:
        flags = pool_flags(deployment, ["prefill0"], ["decode0"])
        with proxy(tmp_path_factory.mktemp("pd-proxy-logs"), *flags, "--no-local-prefill") as url:
            yield url


def test_completion_through_pdconnector_matches_single_instance(pd_proxy: str, oracle: str, http: httpx.Client,
                                                                 tiny_model: Path) -> None:
    body = greedy(tiny_model, prompt=prompt_ids(7 * BLOCK_SIZE + 3, seed=21))
    single = http.post(oracle + "/v1/completions", json=body).json()

    response = http.post(pd_proxy + "/v1/completions", json=body)

    assert response.status_code == 200, response.text
    assert response.headers["X-PD-Route"] == "remote"
    assert_same_answer(single, response.json())
    # a non-streamed answer carries pd_handoff; its first-token time is not visible, so no first_decode
    for stage in ("queue_prefill", "transfer"):
        assert metric(http, pd_proxy, f'vllm_pd_ttft_stage_seconds_count{{stage="{stage}"}}') >= 1, stage
    assert metric(http, pd_proxy, 'vllm_pd_ttft_stage_seconds_count{stage="handoff_to_first_token"}') == 0


def test_streamed_chat_through_pdconnector_matches_single_instance(pd_proxy: str, oracle: str,
                                                                    http: httpx.Client, tiny_model: Path) -> None:
    text = "Blocks move from the prefill instance to the decode instance, coalesced into runs. " * 3
    body = greedy(tiny_model, messages=[{"role": "user", "content": text}])
    single_ids, _ = completion_tokens(http.post(oracle + "/v1/chat/completions", json=body).json())

    response = stream(http, pd_proxy + "/v1/chat/completions", body)

    assert response.status_code == 200
    assert streamed_tokens(response.text)[0] == single_ids
