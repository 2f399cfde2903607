"""Session-wide fixtures: the tiny model, and the guarantee that no process a test started outlives the run."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import psutil
import pytest

# Every process started during this run inherits this marker, so the end-of-run check finds strays
# wherever they were started from (fixtures, `vllm-pd up` subprocesses, vLLM's own children).
RUN_MARKER = "VLLM_PD_TEST_RUN"
os.environ[RUN_MARKER] = uuid.uuid4().hex


def marked_processes() -> list[psutil.Process]:
    """Live processes of this test run, other than pytest itself."""
    me = os.getpid()
    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            if proc.environ().get(RUN_MARKER) == os.environ[RUN_MARKER] and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.fixture(scope="session", autouse=True)
def no_stray_processes():
    yield
    strays = marked_processes()
    described = []
    for proc in strays:
        try:
            described.append(" ".join(proc.cmdline()[:5]))
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    assert not described, f"processes left behind by the tests: {described}"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vllm_pd.testing.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))
