"""A whole run: discover the model, build the seeded schedule once, replay it against every endpoint
at every rate (lowest first), and leave a run directory that ``bench report`` can re-read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from rich.console import Console

from vllm_pd.bench.client import Job, ModelInfo, fetch_model
from vllm_pd.bench.config import BenchConfig, Endpoint
from vllm_pd.bench.display import LiveProgress
from vllm_pd.bench.loadgen import run_schedule
from vllm_pd.bench.plots import render_plots
from vllm_pd.bench.prompts import PromptBuilder, make_prompt_builder
from vllm_pd.bench.records import RequestRecord
from vllm_pd.bench.summary import goodput_ratios, summarize_rate, summarize_records
from vllm_pd.bench.writer import REQUESTS_FILE, RUN_FILE, SUMMARY_FILE, RecordWriter, RunInfo, RunSummary, write_json
from vllm_pd.slo import SLO
from vllm_pd.workloads import RequestSpec, WorkloadError, load_workload

_KEEPALIVE_S = 2.0


class BenchError(Exception):
    """A problem the user can fix (bad flag, unreachable endpoint); the message says which."""


@dataclass
class Measured:
    """Everything measured so far; it outlives an interrupted event loop."""

    records: list[RequestRecord] = field(default_factory=list)
    current: tuple[str, float] | None = None


def run_bench(config: BenchConfig, *, console: Console | None = None, command: str = "") -> RunSummary:
    """Run ``config`` and write its directory; on Ctrl-C, stop sending and summarise what was measured."""
    console = console or Console(stderr=True)
    if (config.out / REQUESTS_FILE).exists():
        raise BenchError(f"--out {config.out} already holds a run ({REQUESTS_FILE}); choose another directory")
    info = RunInfo(
        ttft_slo=config.slo.ttft_s, tpot_slo=config.slo.tpot_s, attainment=config.slo.attainment,
        workload=config.workload, endpoints={e.name: e.url for e in config.endpoints},
        rates=list(config.rates), arrival=config.arrival, seed=config.seed, command=command,
    )
    _sample(config, config.rates[0], {})  # a bad --workload fails before any server is contacted
    measured = Measured()
    with LiveProgress(console, config.slo) as progress:
        try:
            asyncio.run(_measure(config, info, measured, progress))
        except KeyboardInterrupt:
            info.interrupted = True
            info.incomplete = [measured.current] if measured.current else []
            progress.note(f"[yellow]interrupted: keeping the {len(measured.records)} requests measured[/]")
    return finish_run(config.out, info, measured.records)


def finish_run(out: Path, info: RunInfo, records: Sequence[RequestRecord], *, write_info: bool = True) -> RunSummary:
    """Summaries, ``summary.json`` and the plots (and ``run.json`` unless told not to) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    endpoints = summarize_records(records, info_slo(info), incomplete=info.incomplete)
    summary = RunSummary(run=info, endpoints=endpoints, goodput_ratios=goodput_ratios(endpoints))
    if write_info:
        write_json(out / RUN_FILE, info)
    write_json(out / SUMMARY_FILE, summary)
    render_plots(out, summary, records)
    return summary


def info_slo(info: RunInfo) -> SLO:
    return SLO(ttft_s=info.ttft_slo, tpot_s=info.tpot_slo, attainment=info.attainment)


async def _measure(config: BenchConfig, info: RunInfo, measured: Measured, progress: LiveProgress) -> None:
    async with aiohttp.ClientSession() as session:  # closed before measuring: its idle socket may go stale
        models = {e.name: await _discover(session, e) for e in config.endpoints}
    info.model = config.model or models[config.endpoints[0].name].id
    builder = make_prompt_builder(info.model, config.tokenizer)
    info.prompts = builder.description
    progress.note(f"model {info.model}; {builder.description}")
    schedules = {rate: _sample(config, rate, models) for rate in config.rates}
    # Idle client sockets close before the server's keep-alive (uvicorn: 5 s) can close them under a send.
    connector = aiohttp.TCPConnector(limit=config.max_connections, keepalive_timeout=_KEEPALIVE_S)
    async with aiohttp.ClientSession(connector=connector) as session:
        with RecordWriter(config.out) as writer:
            write_json(config.out / RUN_FILE, info)

            def on_record(record: RequestRecord) -> None:
                writer.write(record)
                measured.records.append(record)
                progress.record(record)

            for endpoint in config.endpoints:
                model = config.model or models[endpoint.name].id
                for rate in config.rates:
                    jobs = _jobs(config, endpoint, rate, schedules[rate], builder)
                    measured.current = (endpoint.name, rate)
                    progress.start_rate(endpoint.name, rate, len(jobs))
                    await run_schedule(session, endpoint.name, endpoint.url, model, rate, jobs, on_record,
                                       timeout_s=config.request_timeout_s, on_sent=progress.sent)
                    measured.current = None
                    if _should_stop(config, endpoint, rate, measured, progress):
                        break


async def _discover(session: aiohttp.ClientSession, endpoint: Endpoint) -> ModelInfo:
    try:
        return await fetch_model(session, endpoint.url)
    except ConnectionError as exc:
        raise BenchError(f"endpoint {endpoint.name} (--url/--compare): {exc}") from None


def _sample(config: BenchConfig, rate: float, models: dict[str, ModelInfo]) -> list[RequestSpec]:
    lengths = [m.max_model_len for m in models.values() if m.max_model_len]
    try:
        workload = load_workload(config.workload, max_model_len=min(lengths) if lengths else None)
        specs = workload.sample(rate=rate, duration_s=config.duration_s, num_requests=config.num_requests,
                                arrival=config.arrival, cv=config.cv, seed=config.seed)
    except WorkloadError as exc:
        raise BenchError(f"--workload {config.workload}: {exc}") from None
    if not specs:
        raise BenchError(f"--rates {rate:g} with --duration {config.duration_s:g} gives no request; run longer")
    return specs


def _jobs(config: BenchConfig, endpoint: Endpoint, rate: float, specs: Sequence[RequestSpec],
          builder: PromptBuilder) -> list[Job]:
    """Same lengths and arrivals everywhere, but fresh prompt text per endpoint and rate: a repeated
    prompt would be served from the prefix cache and make the later run look faster."""
    return [Job(i, s.arrival_s, s.input_tokens, s.output_tokens,
                builder.build(s.input_tokens, seed=f"{config.seed}/{endpoint.name}/{rate:g}/{i}"))
            for i, s in enumerate(specs)]


def _should_stop(config: BenchConfig, endpoint: Endpoint, rate: float, measured: Measured,
                 progress: LiveProgress) -> bool:
    """--stop-below: past the knee, higher rates only cost time."""
    if config.stop_below is None:
        return False
    rows = [r for r in measured.records if r.endpoint == endpoint.name and r.rate == rate]
    attainment = summarize_rate(endpoint.name, rate, rows, config.slo).attainment
    if attainment >= config.stop_below:
        return False
    progress.note(f"{endpoint.name}: attainment {attainment:.1%} at {rate:g} req/s is below --stop-below "
                  f"{config.stop_below:g}; skipping higher rates")
    return True
