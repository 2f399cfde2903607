"""The streaming client: one completion request, timed from the moment it was due to be sent.

TTFT runs to the first chunk carrying a choice; TPOT is the time from the first to the last such
chunk over the generated tokens after the first (the server's ``usage`` count, so it stays right
when the server merges several tokens into one chunk). Every failure becomes a record, never an
exception: a benchmark must count what went wrong, not stop on it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp
import msgspec

from vllm_pd.bench.records import Outcome, RequestRecord

_ERROR_CHARS = 300


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Choice(msgspec.Struct):
    text: str = ""
    finish_reason: str | None = None


class _Chunk(msgspec.Struct):
    choices: list[_Choice] = []
    usage: _Usage | None = None
    error: dict | None = None


_chunk_decoder = msgspec.json.Decoder(_Chunk)


class ModelInfo(msgspec.Struct):
    id: str
    max_model_len: int | None = None


class _ModelList(msgspec.Struct):
    data: list[ModelInfo]


@dataclass(frozen=True)
class Job:
    """One request of the schedule, with its prompt already built."""

    index: int
    arrival_s: float
    input_tokens: int
    output_tokens: int
    prompt: str | list[int]


async def fetch_model(session: aiohttp.ClientSession, url: str) -> ModelInfo:
    """The first model the endpoint serves; raises ConnectionError with a readable message."""
    try:
        async with session.get(f"{url}/v1/models", timeout=aiohttp.ClientTimeout(total=10)) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise ConnectionError(f"{url}/v1/models answered HTTP {resp.status}: {body[:200]!r}")
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise ConnectionError(f"cannot reach {url}: {exc or type(exc).__name__}") from None
    try:
        models = msgspec.json.decode(body, type=_ModelList).data
    except msgspec.DecodeError as exc:
        raise ConnectionError(f"{url}/v1/models is not an OpenAI model list: {exc}") from None
    if not models:
        raise ConnectionError(f"{url}/v1/models lists no model")
    return models[0]


def _payload(model: str, job: Job) -> dict:
    return {
        "model": model,
        "prompt": job.prompt,
        "max_tokens": job.output_tokens,
        "min_tokens": job.output_tokens,
        "ignore_eos": True,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


@dataclass
class _Timing:
    first: float | None = None
    last: float | None = None
    chunks: int = 0
    usage: _Usage | None = None
    error: str | None = None


async def _read_stream(resp: aiohttp.ClientResponse, timing: _Timing) -> None:
    async for raw in resp.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            return
        now = time.monotonic()
        chunk = _chunk_decoder.decode(data)
        if chunk.error is not None:
            timing.error = f"error event in stream: {chunk.error}"
            return
        if chunk.choices:
            timing.first = timing.first if timing.first is not None else now
            timing.last = now
            timing.chunks += 1
            if chunk.choices[0].finish_reason == "error":
                timing.error = "finish_reason: error"
        if chunk.usage is not None:
            timing.usage = chunk.usage
    timing.error = timing.error or "stream ended without [DONE]"


async def send_request(
    session: aiohttp.ClientSession, endpoint: str, url: str, model: str, rate: float, job: Job,
    *, timeout_s: float,
) -> RequestRecord:
    """Send one streaming completion and measure it; returns a record whatever happens."""
    sent_at, start = time.time(), time.monotonic()
    request_id = f"bench-{endpoint}-{rate:g}-{job.index}"
    base = dict(endpoint=endpoint, rate=rate, index=job.index, arrival_s=job.arrival_s,
                input_tokens=job.input_tokens, output_tokens=job.output_tokens, sent_at=sent_at)
    timing = _Timing()
    status: int | None = None
    headers: dict[str, str] = {}
    try:
        async with session.post(
            f"{url}/v1/completions", json=_payload(model, job), headers={"X-Request-Id": request_id},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as resp:
            status, headers = resp.status, dict(resp.headers)
            if status != 200:
                body = (await resp.read())[:_ERROR_CHARS].decode(errors="replace")
                rejected = status == 429 or (status == 503 and "Retry-After" in resp.headers)
                return RequestRecord(**base, outcome=Outcome.REJECTED if rejected else Outcome.FAILED,
                                     e2e=time.monotonic() - start, status=status,
                                     error=f"HTTP {status}: {body}", **_route(headers, request_id))
            await _read_stream(resp, timing)
    except asyncio.TimeoutError:
        timing.error = f"timed out after {timeout_s:g} s (--request-timeout)"
    except (aiohttp.ClientError, msgspec.DecodeError, ValueError) as exc:  # ValueError: oversize line
        timing.error = f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS]
    return _finish(base, start, timing, status, _route(headers, request_id))


def _route(headers: dict[str, str], request_id: str) -> dict:
    return dict(route=headers.get("X-PD-Route"), prefill=headers.get("X-PD-Prefill"),
                decode=headers.get("X-PD-Decode"), request_id=headers.get("X-Request-Id", request_id))


def _finish(base: dict, start: float, timing: _Timing, status: int | None, route: dict) -> RequestRecord:
    end = time.monotonic()
    generated = timing.usage.completion_tokens if timing.usage else timing.chunks
    if timing.error is None and timing.first is None:
        timing.error = "no token generated"
    ok = timing.error is None
    tpot = None
    if ok and generated > 1 and timing.last is not None:
        tpot = (timing.last - timing.first) / (generated - 1)
    return RequestRecord(
        **base, outcome=Outcome.OK if ok else Outcome.FAILED, e2e=end - start,
        ttft=timing.first - start if timing.first is not None else None, tpot=tpot,
        generated_tokens=generated, prompt_tokens=timing.usage.prompt_tokens if timing.usage else None,
        status=status, error=timing.error, **route,
    )
