"""`vllm-pd bench` as a user runs it, against real vLLM servers and the proxy: short runs, tiny model."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import SERVER_ARGS
from tests.e2e.proxy_helpers import pool_flags, proxy
from vllm_pd.launcher import Deployment
from vllm_pd.launcher.topology import Topology

BENCH = [sys.executable, "-m", "vllm_pd.cli", "bench"]


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]


def bench(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BENCH, *argv], capture_output=True, text=True, timeout=timeout)


def assert_exact_lengths(measured: list[dict]) -> None:
    """The server prefilled exactly the workload's prompt and generated exactly its output."""
    for row in measured:
        assert row["outcome"] == "ok", row
        assert row["prompt_tokens"] == row["input_tokens"], row
        assert row["generated_tokens"] == row["output_tokens"], row
        assert 0 < row["ttft"] <= row["e2e"]


def test_two_rates_against_a_vllm_server(oracle: str, tmp_path: Path) -> None:
    out = tmp_path / "run"

    done = bench("--url", oracle, "--workload", "fixed:100:8", "--rates", "2,4", "--num-requests", "8",
                 "--ttft-slo", "5", "--tpot-slo", "1", "--out", str(out))

    assert done.returncode == 0, done.stderr
    measured = rows(out)
    assert sorted((r["rate"], r["index"]) for r in measured) == [(rate, i) for rate in (2.0, 4.0) for i in range(8)]
    assert_exact_lengths(measured)
    assert all(r["tpot"] > 0 for r in measured)
    summary = json.loads((out / "summary.json").read_text())
    (endpoint,) = summary["endpoints"]
    assert [s["requests"] for s in endpoint["rates"]] == [8, 8]
    assert all(s["attainment"] == 1.0 for s in endpoint["rates"])  # loose SLOs on an idle tiny model
    assert endpoint["goodput"] == 4.0 and endpoint["above_range"]
    assert "goodput" in done.stdout
    for png in ("attainment.png", "ttft_cdf.png", "tpot_cdf.png"):
        assert (out / png).stat().st_size > 1000


def test_compare_replays_the_same_seeded_workload_on_each_endpoint(oracle: str, tmp_path: Path) -> None:
    out = tmp_path / "run"

    done = bench("--compare", f"first={oracle}", f"second={oracle}", "--workload", "chatbot", "--rates", "3",
                 "--num-requests", "5", "--ttft-slo", "5", "--tpot-slo", "1", "--out", str(out))

    assert done.returncode == 0, done.stderr
    measured = rows(out)
    assert_exact_lengths(measured)
    by_endpoint = {name: sorted((r["index"], r["arrival_s"], r["input_tokens"], r["output_tokens"])
                                for r in measured if r["endpoint"] == name) for name in ("first", "second")}
    assert len(by_endpoint["first"]) == 5
    assert by_endpoint["first"] == by_endpoint["second"]  # same lengths and arrival times
    assert len({r["input_tokens"] for r in measured}) > 1  # chatbot lengths vary
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["goodput_ratios"]) == {"first", "second"}
    assert "ratio to first" in done.stdout


def test_ctrl_c_keeps_what_was_measured_and_aborts_what_was_in_flight(oracle: str, tmp_path: Path,
                                                                      http: httpx.Client) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen([*BENCH, "--url", oracle, "--workload", "fixed:200:64", "--rates", "8",
                             "--duration", "120", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "requests.jsonl").exists() or len(rows(out)) < 3:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no request measured in 120 s"
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()

    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    measured = rows(out)
    assert len(measured) >= 3
    run = json.loads((out / "run.json").read_text())
    assert run["interrupted"] and run["incomplete"] == [[run_key(measured), 8.0]]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["endpoints"][0]["rates"][0]["requests"] == len(measured)
    assert summary["endpoints"][0]["rates"][0]["interrupted"]
    # The server aborted the requests whose connections the interrupt closed.
    assert wait_until_idle(http, oracle), "vLLM still runs requests after the benchmark was interrupted"
    # And the saved run re-renders.
    report = bench("report", str(out))
    assert report.returncode == 0, report.stderr


def run_key(measured: list[dict]) -> str:
    (endpoint,) = {r["endpoint"] for r in measured}
    return endpoint


def wait_until_idle(http: httpx.Client, url: str, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metrics = http.get(url + "/metrics").text.splitlines()
        busy = [line for line in metrics if line.startswith(("vllm:num_requests_running", "vllm:num_requests_waiting"))]
        if busy and all(float(line.rsplit(" ", 1)[1]) == 0 for line in busy):
            return True
        time.sleep(0.5)
    return False


@pytest.fixture(scope="module")
def proxied(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    topology = Topology(model=str(tiny_model), prefill=1, decode=1, connector="nixl", cpus=("0", "1"),
                        server_args=SERVER_ARGS)
    with Deployment(topology.specs(), tmp_path_factory.mktemp("bench-pair-logs")) as pair:
        flags = pool_flags(pair, ["prefill0"], ["decode0"])
        with proxy(tmp_path_factory.mktemp("bench-proxy-logs"), *flags, "--no-local-prefill") as url:
            yield url


def test_through_the_proxy_rows_carry_the_route(proxied: str, tmp_path: Path) -> None:
    out = tmp_path / "run"

    done = bench("--url", proxied, "--workload", "fixed:150:8", "--rates", "2", "--num-requests", "6",
                 "--ttft-slo", "5", "--tpot-slo", "1", "--out", str(out))

    assert done.returncode == 0, done.stderr
    measured = rows(out)
    assert len(measured) == 6
    assert_exact_lengths(measured)
    for row in measured:
        assert row["route"] == "remote"
        assert row["prefill"].startswith("http://") and row["decode"].startswith("http://")
        assert row["prefill"] != row["decode"]
        assert row["request_id"].startswith("bench-")
