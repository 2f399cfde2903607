"""`vllm-pd up` and `vllm-pd demo` as a user runs them: real servers, real Ctrl-C, nothing left behind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.helpers import greedy, prompt_ids
from vllm_pd.testing.pd_client import completion_tokens, disaggregated

VLLM_PD = [sys.executable, "-m", "vllm_pd.cli"]


def wait_for(path: Path, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"vllm-pd up exited early with {proc.returncode}"
        assert time.monotonic() < deadline, f"{path} not written after {timeout} s"
        time.sleep(1)


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def still_running(procs: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_up_serves_until_ctrl_c_then_stops_every_process(tiny_model: Path, tmp_path: Path, oracle: str,
                                                         http: httpx.Client) -> None:
    endpoints_file = tmp_path / "endpoints.json"
    # 1. One command starts a prefill and a decode server (and the proxy in front when installed).
    up = subprocess.Popen([*VLLM_PD, "up", "--model", str(tiny_model), "--cpus", "0,1",
                           "--server-arg=--max-model-len", "--server-arg=2048",
                           "--endpoints-file", str(endpoints_file), "--log-dir", str(tmp_path / "logs")],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(endpoints_file, up, timeout=600)
        endpoints = json.loads(endpoints_file.read_text())
        # 2. The servers it printed answer, and the P->D path gives the single instance's answer.
        body = greedy(tiny_model, prompt=prompt_ids(100, seed=7))
        _, decode = disaggregated(http, endpoints["prefill0"]["url"], endpoints["decode0"]["url"],
                                  "/v1/completions", body)
        single = http.post(oracle + "/v1/completions", json=body).json()
        assert completion_tokens(decode)[0] == completion_tokens(single)[0]
        children = descendants(up.pid)
        assert len(children) >= 4  # two API servers and their engine cores at least
    finally:
        # 3. Ctrl-C stops everything and exits non-zero.
        up.send_signal(signal.SIGINT)
        output, _ = up.communicate(timeout=120)
    assert up.returncode == 130, output.decode(errors="replace")[-2000:]
    assert not still_running(children)


def test_up_exits_nonzero_with_the_log_tail_when_a_server_dies_at_start(tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    up = subprocess.run([*VLLM_PD, "up", "--model", str(broken), "--no-proxy", "--startup-timeout", "300"],
                        capture_output=True, text=True, timeout=600)
    assert up.returncode == 1
    assert "exited with code" in up.stderr
    assert "last lines of its log" in up.stderr
    assert "no-such-architecture" in up.stderr


@pytest.mark.timeout(1200)
def test_demo_prints_answers_equal_to_the_single_instance() -> None:
    demo = subprocess.run([*VLLM_PD, "demo"], capture_output=True, text=True, timeout=1100)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "every disaggregated answer equals the single instance's" in demo.stdout
