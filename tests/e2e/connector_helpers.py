"""Shared by the PDConnector end-to-end tests: metrics probes, streaming, leak checks."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from vllm_pd.testing.pd_client import prefill_body

# Short leases so that expiry tests take seconds; renewals and pull bounds scaled along.
FAST_LEASE = {"lease_s": 8.0, "renew_interval_s": 2.0, "pull_timeout_s": 4.0, "lease_margin_s": 0.5,
              "handshake_timeout_s": 2.0}


def metric(http: httpx.Client, url: str, name: str) -> float:
    """Sum of a metric's samples over all label sets (0 when absent)."""
    text = http.get(url + "/metrics").text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
    return total


def wait_until(probe: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout_s
    value = probe()
    while not value:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s}s (last value {value!r})")
        time.sleep(interval_s)
        value = probe()
    return value


def assert_no_held_kv(http: httpx.Client, *urls: str, timeout_s: float = 10.0) -> None:
    """Every server's KV cache usage back to zero and no block held under lease."""
    for url in urls:
        wait_until(lambda u=url: metric(http, u, "vllm:kv_cache_usage_perc") == 0.0, timeout_s,
                   f"KV cache usage of {url} back to 0")
        wait_until(lambda u=url: metric(http, u, "vllm:pd_held_blocks") == 0.0, timeout_s,
                   f"no blocks held under lease on {url}")


def prefill_only(http: httpx.Client, prefill_url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = http.post(prefill_url + path, json=prefill_body(body))
    response.raise_for_status()
    return response.json()["kv_transfer_params"]


def decode_leg(http: httpx.Client, decode_url: str, path: str, body: dict[str, Any],
               params: dict[str, Any]) -> httpx.Response:
    return http.post(decode_url + path, json={**body, "kv_transfer_params": params})


def stream_tokens(http: httpx.Client, url: str, path: str, body: dict[str, Any]) -> tuple[list[int], list[float]]:
    """(token ids, logprobs) of a streamed completion or chat answer, joined over its SSE chunks."""
    ids: list[int] = []
    logprobs: list[float] = []
    with http.stream("POST", url + path, json={**body, "stream": True}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[len("data: "):]).get("choices", []):
                ids += choice.get("token_ids") or []
                lp = choice.get("logprobs") or {}
                if "token_logprobs" in lp:
                    logprobs += lp["token_logprobs"]
                else:
                    logprobs += [c["logprob"] for c in lp.get("content") or []]
    return ids, logprobs
