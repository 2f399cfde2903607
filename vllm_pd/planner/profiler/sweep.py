"""Measure a live server: prefill batches (concurrent max_tokens=1 requests) and decode steps (the extra
time a concurrent batch takes to generate N tokens instead of 1, over N - 1).

Prompts have exact token counts (the benchmark's prompt builder) and are random per request, so the
prefix cache never shortens a prefill.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from vllm_pd.bench.prompts import PromptBuilder
from vllm_pd.planner.profiler.fit import DecodeSample, PrefillSample

DECODE_ROUNDS = 3  # rounds of (long, short) makespans pooled before an inverted decode point is an error


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

    def _body(self, tokens: int, max_tokens: int) -> dict:
        self._seed += 1
        return {"model": self._model, "prompt": self._prompts.build(tokens, f"profile-{self._seed}"),
                "max_tokens": max_tokens, "min_tokens": max_tokens, "ignore_eos": True, "temperature": 0}

    async def _complete(self, tokens: int, max_tokens: int) -> None:
        await self._retrying(lambda: self._complete_once(self._body(tokens, max_tokens)))

    async def _complete_once(self, body: dict) -> None:
        async with self._session.post(self._url, json=body) as response:
            if response.status != 200:
                raise ServerError(f"{self._url}: HTTP {response.status}: {(await response.text())[:300]}")
            await response.read()

    async def _makespan(self, context: int, batch: int, max_tokens: int) -> float:
        start = time.perf_counter()
        await asyncio.gather(*(self._complete(context, max_tokens) for _ in range(batch)))
        return time.perf_counter() - start

    async def _retrying(self, attempt):
        """One retry when a pooled keep-alive connection was closed by the server while idle."""
        try:
            return await attempt()
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            try:
                return await attempt()
            except aiohttp.ClientError as exc:
                raise ServerError(f"{self._url}: {exc}") from exc
        except aiohttp.ClientError as exc:
            raise ServerError(f"{self._url}: {exc}") from exc

    async def prefill(self, length: int, batch: int, repeats: int) -> PrefillSample:
        """Median makespan of ``batch`` concurrent one-token requests of ``length`` prompt tokens."""
        times = [await self._makespan(length, batch, 1) for _ in range(repeats)]
        return PrefillSample((length,) * batch, statistics.median(times))

    async def decode(self, context: int, batch: int, tokens: int, repeats: int) -> DecodeSample:
        """Time of one step while ``batch`` requests decode together.

        The batch is sent twice, generating ``tokens`` and then 1 token; the difference of the median
        makespans is ``tokens - 1`` decode steps. Server-side time only: unlike the gaps between streamed
        chunks, it does not depend on how the client's reads bunch tokens together. On a noisy host one
        round can come out inverted; up to ``DECODE_ROUNDS`` rounds are pooled before giving up.
        """
        longs: list[float] = []
        shorts: list[float] = []
        for _ in range(DECODE_ROUNDS):
            longs += [await self._makespan(context, batch, tokens) for _ in range(repeats)]
            shorts += [await self._makespan(context, batch, 1) for _ in range(repeats)]
            long, short = statistics.median(longs), statistics.median(shorts)
            if long > short:
                return DecodeSample(batch, int(batch * (context + tokens / 2)), (long - short) / (tokens - 1))
        raise ServerError(f"{self._url}: {batch} x {tokens} tokens took no longer than {batch} x 1 "
                          f"({long:.4f} s vs {short:.4f} s, medians of {len(longs)}); "
                          "raise --decode-tokens or --repeats")


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
