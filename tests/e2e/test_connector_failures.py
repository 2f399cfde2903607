"""PDConnector when things go wrong: leases that expire, a consumer that rejects, a producer that dies
and comes back. Every case ends in the single instance's answer (policy "recompute") and no held block.

The tests run in file order: the last two kill and restart the producer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.connector_helpers import FAST_LEASE, assert_no_held_kv, decode_leg, metric, prefill_only, wait_until
from tests.e2e.helpers import BLOCK_SIZE, MAX_MODEL_LEN, SERVER_ARGS, assert_same_answer, greedy, prompt_ids
from vllm_pd.launcher import Deployment, ServerSpec, free_ports, kv_config
from vllm_pd.launcher.ports import port_is_free
from vllm_pd.testing.pd_client import disaggregated

PATH = "/v1/completions"


class Producer:
    """The prefill server, in its own deployment so that a test can kill it and start it again."""

    def __init__(self, spec: ServerSpec, log_dir: Path) -> None:
        self.spec, self.log_dir = spec, log_dir
        self.deployment: Deployment | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return self.spec.url

    def start(self) -> None:
        # The killed server's sockets may linger a moment (TIME_WAIT) before its ports are free again.
        wait_until(lambda: all(port_is_free(p, self.spec.host) for p in self.spec.ports), 120.0,
                   f"ports {self.spec.ports} free again")
        self.starts += 1
        self.deployment = Deployment([self.spec], self.log_dir / f"start{self.starts}")
        self.deployment.start()

    def kill(self) -> None:
        if self.deployment is not None:
            self.deployment.stop()
            self.deployment = None


@pytest.fixture(scope="module")
def servers(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Producer, str]]:
    logs = tmp_path_factory.mktemp("pd-failure-logs")
    port, side, dport, dside = free_ports(4)
    producer = Producer(ServerSpec(name="prefill0", role="prefill", model=str(tiny_model), port=port,
                                   side_channel_port=side, cpus="0", extra_args=SERVER_ARGS,
                                   kv_transfer_config=kv_config("pd", "prefill", FAST_LEASE)), logs)
    decode = ServerSpec(name="decode0", role="decode", model=str(tiny_model), port=dport, side_channel_port=dside,
                        cpus="1", extra_args=SERVER_ARGS,
                        kv_transfer_config=kv_config("pd", "decode", FAST_LEASE, load_failure_policy="recompute"))
    with Deployment([decode], logs / "decode") as deployment:
        producer.start()
        try:
            yield producer, deployment.url("decode0")
        finally:
            producer.kill()


def test_unpulled_prefill_is_freed_at_lease_expiry(servers, http: httpx.Client, tiny_model: Path) -> None:
    producer, decode = servers
    expired_before = metric(http, producer.url, "vllm:pd_expired_leases_total")

    prefill_only(http, producer.url, PATH, greedy(tiny_model, prompt=prompt_ids(6 * BLOCK_SIZE, seed=11)))

    assert metric(http, producer.url, "vllm:pd_held_blocks") == 6
    assert metric(http, producer.url, "vllm:kv_cache_usage_perc") > 0
    assert_no_held_kv(http, producer.url, timeout_s=FAST_LEASE["lease_s"] + 5)
    assert metric(http, producer.url, "vllm:pd_expired_leases_total") == expired_before + 1


def test_decode_after_expiry_is_recomputed_correctly(servers, oracle: str, http: httpx.Client,
                                                      tiny_model: Path) -> None:
    producer, decode = servers
    body = greedy(tiny_model, prompt=prompt_ids(4 * BLOCK_SIZE + 9, seed=12))
    params = prefill_only(http, producer.url, PATH, body)
    time.sleep(FAST_LEASE["lease_s"] + 1)

    answer = decode_leg(http, decode, PATH, body, params)

    assert answer.status_code == 200
    assert answer.json()["kv_transfer_params"]["pd_handoff"]["outcome"] == "recomputed"
    assert_same_answer(http.post(oracle + PATH, json=body).json(), answer.json())
    assert_no_held_kv(http, producer.url, decode)


def test_rejected_request_frees_producer_blocks_within_a_second(servers, http: httpx.Client,
                                                                tiny_model: Path) -> None:
    producer, decode = servers
    body = greedy(tiny_model, prompt=prompt_ids(5 * BLOCK_SIZE, seed=13))
    params = prefill_only(http, producer.url, PATH, body)
    assert metric(http, producer.url, "vllm:pd_held_blocks") == 5

    rejected = decode_leg(http, decode, PATH, {**body, "max_tokens": 2 * MAX_MODEL_LEN}, params)
    rejected_at = time.monotonic()

    assert rejected.status_code == 400
    wait_until(lambda: metric(http, producer.url, "vllm:pd_held_blocks") == 0, 5.0, "lease released")
    assert time.monotonic() - rejected_at < 1.0, "blocks were freed late (lease expiry, not the release)"
    assert_no_held_kv(http, producer.url, decode)


def test_producer_killed_between_prefill_and_pull(servers, oracle: str, http: httpx.Client,
                                                  tiny_model: Path) -> None:
    producer, decode = servers
    body = greedy(tiny_model, prompt=prompt_ids(7 * BLOCK_SIZE + 1, seed=14))
    params = prefill_only(http, producer.url, PATH, body)
    producer.kill()

    started = time.monotonic()
    answer = decode_leg(http, decode, PATH, body, params)

    assert answer.status_code == 200
    assert answer.json()["kv_transfer_params"]["pd_handoff"]["outcome"] == "recomputed"
    assert_same_answer(http.post(oracle + PATH, json=body).json(), answer.json())
    assert time.monotonic() - started < FAST_LEASE["handshake_timeout_s"] + FAST_LEASE["pull_timeout_s"] + 10
    assert metric(http, decode, "vllm:pd_failed_pulls_total") >= 1
    assert_no_held_kv(http, decode)


def test_restarted_producer_on_the_same_ports_serves_the_next_request(servers, oracle: str, http: httpx.Client,
                                                                      tiny_model: Path) -> None:
    producer, decode = servers
    handshakes_before = metric(http, decode, "vllm:pd_handshakes_total")
    producer.kill()  # a no-op after the previous test; makes this test stand on its own
    producer.start()
    body = greedy(tiny_model, prompt=prompt_ids(3 * BLOCK_SIZE + 2, seed=15))

    _, answer = disaggregated(http, producer.url, decode, PATH, body)

    assert answer["kv_transfer_params"]["pd_handoff"]["outcome"] == "pulled"
    assert_same_answer(http.post(oracle + PATH, json=body).json(), answer)
    assert metric(http, decode, "vllm:pd_handshakes_total") == handshakes_before + 1
    assert_no_held_kv(http, producer.url, decode)
