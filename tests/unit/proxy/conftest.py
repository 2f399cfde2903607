"""A proxy app in front of scriptable fake upstreams, driven by an HTTP client, all in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from tests.unit.proxy.fake_vllm import FakeVLLM
from vllm_pd.proxy.app import build_app
from vllm_pd.proxy.config import HealthConfig, PoolConfig, ProxyConfig
from vllm_pd.proxy.handler import STATE_KEY
from vllm_pd.proxy.state import ProxyState


@contextlib.asynccontextmanager
async def harness(prefill: int = 1, decode: int = 1, **settings: Any) -> AsyncIterator[tuple[TestClient, list[FakeVLLM], list[FakeVLLM]]]:
    """Start fakes and a proxy over them; yields (client of the proxy, prefill fakes, decode fakes)."""
    prefills = [FakeVLLM(f"p{i}") for i in range(prefill)]
    decodes = [FakeVLLM(f"d{i}") for i in range(decode)]
    for fake in prefills + decodes:
        await fake.start()
    settings.setdefault("warm_pairs", False)  # tests that count upstream requests see only their own
    settings.setdefault("health", HealthConfig(interval_s=0.05, open_s=0.2, max_open_s=0.4, scrape_interval_s=0.05))
    config = ProxyConfig(pool=PoolConfig(prefill=tuple(f.url for f in prefills), decode=tuple(f.url for f in decodes)),
                         **settings)
    client = TestClient(TestServer(build_app(config), handler_cancellation=True))
    await client.start_server()
    try:
        yield client, prefills, decodes
    finally:
        await client.close()
        for fake in prefills + decodes:
            await fake.close()


def state_of(client: TestClient) -> ProxyState:
    return client.app[STATE_KEY]


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())
