"""Starting ``vllm-pd proxy`` in front of real servers, and reading its streamed answers."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from vllm_pd.launcher import Deployment, ServerSpec, free_port


@contextlib.contextmanager
def proxy(log_dir: Path, *flags: str, name: str = "proxy") -> Iterator[str]:
    """A proxy subprocess (through the launcher, like ``vllm-pd up``); yields its URL."""
    port = free_port()
    argv = (sys.executable, "-m", "vllm_pd.cli", "proxy", "--port", str(port), "--log-level", "info", *flags)
    spec = ServerSpec(name=name, role="proxy", port=port, command=argv)
    with Deployment([spec], log_dir) as deployment:
        yield deployment.url(name)


def pool_flags(deployment: Deployment, prefill: Sequence[str], decode: Sequence[str]) -> list[str]:
    flags: list[str] = []
    for name in prefill:
        flags += ["--prefill", deployment.url(name)]
    for name in decode:
        flags += ["--decode", deployment.url(name)]
    return flags


def sse_events(text: str) -> list[Any]:
    """The JSON payloads of an SSE body, ``[DONE]`` excluded."""
    events = []
    for line in text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            events.append(json.loads(line[len("data: "):]))
    return events


def streamed_tokens(text: str) -> tuple[list[int], dict | None]:
    """(token ids of choice 0, final usage) from a streamed completion or chat answer."""
    ids: list[int] = []
    usage = None
    for event in sse_events(text):
        assert "error" not in event, event
        for choice in event.get("choices") or []:
            ids += choice.get("token_ids") or []
        usage = event.get("usage") or usage
    return ids, usage


def stream(client: httpx.Client, url: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    response = client.post(url, json={**body, "stream": True}, **kwargs)
    response.read()
    return response
