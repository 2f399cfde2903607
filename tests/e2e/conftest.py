"""Real vLLM servers for end-to-end tests, started through the project's launcher.

The oracle, a plain single instance, is shared by the whole session; each test module starts the
prefill/decode servers it needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import SERVER_ARGS
from vllm_pd.launcher import Deployment, ServerSpec, free_port


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def oracle(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a plain vLLM server (no connector): the single-instance answer every test compares with."""
    spec = ServerSpec(name="oracle", role="single", model=str(tiny_model), port=free_port(), cpus="0",
                      extra_args=SERVER_ARGS)
    with Deployment([spec], tmp_path_factory.mktemp("oracle-logs")) as deployment:
        yield deployment.url("oracle")


@pytest.fixture(scope="session")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=httpx.Timeout(120.0, connect=5.0)) as client:
        yield client
