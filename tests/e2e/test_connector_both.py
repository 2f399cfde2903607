"""Two ``kv_both`` servers: each prefills for the other, per request; and the "fail" load policy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.connector_helpers import FAST_LEASE, assert_no_held_kv, decode_leg, metric, prefill_only
from tests.e2e.helpers import BLOCK_SIZE, SERVER_ARGS, assert_same_answer, greedy, prompt_ids
from vllm_pd.launcher import Deployment, free_port
from vllm_pd.launcher.topology import Topology
from vllm_pd.testing.pd_client import disaggregated

PATH = "/v1/completions"


@pytest.fixture(scope="module")
def pair(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    topology = Topology(model=str(tiny_model), prefill=0, decode=0, both=2, connector="pd", cpus=("0", "1"),
                        server_args=SERVER_ARGS, kv_extra=FAST_LEASE, load_failure_policy="fail")
    with Deployment(topology.specs(), tmp_path_factory.mktemp("pd-both-logs")) as deployment:
        yield deployment.url("both0"), deployment.url("both1")


@pytest.mark.parametrize("direction", ["0->1", "1->0"])
def test_either_server_prefills_for_the_other(pair, oracle: str, http: httpx.Client, tiny_model: Path,
                                              direction: str) -> None:
    first, second = pair if direction == "0->1" else pair[::-1]
    body = greedy(tiny_model, prompt=prompt_ids(9 * BLOCK_SIZE + 4, seed=len(direction) + ord(direction[0])))

    _, answer = disaggregated(http, first, second, PATH, body)

    assert answer["kv_transfer_params"]["pd_handoff"]["outcome"] == "pulled"
    assert_same_answer(http.post(oracle + PATH, json=body).json(), answer)
    assert_no_held_kv(http, first, second)


def test_fail_policy_turns_an_unreachable_producer_into_an_error(pair, http: httpx.Client,
                                                                 tiny_model: Path) -> None:
    producer, consumer = pair
    body = greedy(tiny_model, prompt=prompt_ids(4 * BLOCK_SIZE, seed=21))
    params = prefill_only(http, producer, PATH, body)
    failed_before = metric(http, consumer, "vllm:pd_failed_pulls_total")

    # The params point at a side channel nobody serves (a producer that died after the prefill).
    answer = decode_leg(http, consumer, PATH, body, {**params, "remote_port": free_port()})

    assert answer.status_code == 500
    assert "error" in answer.json()
    assert metric(http, consumer, "vllm:pd_failed_pulls_total") == failed_before + 1
    # The producer's real lease was never released: it expires, and the blocks come back.
    assert_no_held_kv(http, producer, consumer, timeout_s=FAST_LEASE["lease_s"] + 5)
