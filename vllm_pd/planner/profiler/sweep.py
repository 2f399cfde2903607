"""Measure a live server: prefill batches (concurrent max_tokens=1 requests) and decode steps (the gaps
between streamed tokens of a concurrent batch once every member is decoding).

Prompts have exact token counts (the benchmark's prompt builder) and are random per request, so the
prefix cache never shortens a prefill.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from vllm_pd.bench.prompts import PromptBuilder
from vllm_pd.planner.profiler.fit import DecodeSample, PrefillSample


class ServerError(RuntimeError):
    """The server is unreachable or answered a request with an error."""


@dataclass(frozen=True)
class Sweep:
    prompt_lengths: tuple[int, ...] = (16, 64, 256, 512, 1024)
    batch_sizes: tuple[int, ...] = (1, 2, 4)
    decode_batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16)
    context_lengths: tuple[int, ...] = (32, 256, 1024)
    decode_tokens: int = 24
    repeats: int = 3

    def __post_init__(self) -> None:
        values = (*self.prompt_lengths, *self.batch_sizes, *self.decode_batch_sizes, *self.context_lengths)
        if not values or min(values) < 1 or self.decode_tokens < 4 or self.repeats < 1:
            raise ValueError("sweep sizes must be positive, decode_tokens >= 4 and repeats >= 1")


class Profiler:
    def __init__(self, session: aiohttp.ClientSession, url: str, model: str, prompts: PromptBuilder) -> None:
        self._session = session
        self._url = url.rstrip("/") + "/v1/completions"
        self._model = model
        self._prompts = prompts
        self._seed = 0

    def _body(self, tokens: int, max_tokens: int, stream: bool) -> dict:
        self._seed += 1
        return {"model": self._model, "prompt": self._prompts.build(tokens, f"profile-{self._seed}"),
                "max_tokens": max_tokens, "min_tokens": max_tokens, "ignore_eos": True, "temperature": 0,
                "stream": stream}

    async def _complete(self, tokens: int) -> None:
        async with self._session.post(self._url, json=self._body(tokens, 1, False)) as response:
            if response.status != 200:
                raise ServerError(f"{self._url}: HTTP {response.status}: {(await response.text())[:300]}")
            await response.read()

    async def _stream(self, tokens: int, max_tokens: int) -> list[float]:
        """Arrival times of the streamed token chunks."""
        stamps = []
        async with self._session.post(self._url, json=self._body(tokens, max_tokens, True)) as response:
            if response.status != 200:
                raise ServerError(f"{self._url}: HTTP {response.status}: {(await response.text())[:300]}")
            async for raw in response.content:
                line = raw.decode().strip()
                if line.startswith("data: ") and line != "data: [DONE]":
                    if json.loads(line[6:]).get("choices"):
                        stamps.append(time.perf_counter())
        return stamps

    async def prefill(self, length: int, batch: int, repeats: int) -> PrefillSample:
        """Median makespan of ``batch`` concurrent one-token requests of ``length`` prompt tokens."""
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            await asyncio.gather(*(self._complete(length) for _ in range(batch)))
            times.append(time.perf_counter() - start)
        return PrefillSample((length,) * batch, statistics.median(times))

    async def decode(self, context: int, batch: int, tokens: int, repeats: int) -> DecodeSample:
        """Median gap between tokens while all ``batch`` requests decode together."""
        gaps = []
        for _ in range(repeats):
            streams = await asyncio.gather(*(self._stream(context, tokens) for _ in range(batch)))
            if any(len(s) < 3 for s in streams):
                raise ServerError(f"{self._url}: streamed fewer than 3 chunks for a {tokens}-token request")
            together_from = max(s[0] for s in streams)
            together_until = min(s[-1] for s in streams)
            window = [b - a for s in streams for a, b in zip(s, s[1:]) if a >= together_from and b <= together_until]
            gaps.extend(window or [b - a for s in streams for a, b in zip(s[1:], s[2:])])
        step = statistics.median(gaps)
        return DecodeSample(batch, int(batch * (context + tokens / 2)), step)


async def run_sweep(profiler: Profiler, sweep: Sweep, max_model_len: int,
                    progress: Callable[[str], None]) -> tuple[list[PrefillSample], list[DecodeSample]]:
    """Every (length, batch) of the sweep that fits the model, after one warm-up request."""
    await profiler.prefill(min(sweep.prompt_lengths), 1, 1)
    prefill, decode = [], []
    for length in sweep.prompt_lengths:
        if length + 1 > max_model_len:
            continue
        for batch in sweep.batch_sizes:
            prefill.append(await profiler.prefill(length, batch, sweep.repeats))
            progress(f"prefill {batch} x {length} tokens: {prefill[-1].seconds * 1e3:.1f} ms")
    for context in sweep.context_lengths:
        if context + sweep.decode_tokens > max_model_len:
            continue
        for batch in sweep.decode_batch_sizes:
            decode.append(await profiler.decode(context, batch, sweep.decode_tokens, sweep.repeats))
            progress(f"decode {batch} x {context} context: {decode[-1].seconds * 1e3:.2f} ms/step")
    return prefill, decode
