"""Run one simulation: a disaggregated n:m deployment or a colocated one, over a list of requests."""

from __future__ import annotations

import math
from collections.abc import Sequence

from vllm_pd.latency import LinkSpec
from vllm_pd.planner.sim.colocated import ColocatedInstance
from vllm_pd.planner.sim.config import InstanceConfig
from vllm_pd.planner.sim.decode import DecodeInstance
from vllm_pd.planner.sim.loop import EventLoop
from vllm_pd.planner.sim.prefill import PrefillInstance
from vllm_pd.planner.sim.request import SimRequest, Tally
from vllm_pd.planner.sim.result import SimResult
from vllm_pd.planner.sim.router import Picker
from vllm_pd.slo import SLO
from vllm_pd.workloads import RequestSpec


def _requests(specs: Sequence[RequestSpec], measure: range | None) -> tuple[list[SimRequest], list[SimRequest]]:
    """All simulated requests, and those inside the measurement window (default: all)."""
    if not specs:
        raise ValueError("nothing to simulate: the request list is empty")
    requests = [SimRequest(i, s.arrival_s, s.input_tokens, s.output_tokens) for i, s in enumerate(specs)]
    if measure is None:
        return requests, requests
    if not measure or measure.start < 0 or measure.stop > len(requests):
        raise ValueError(f"measurement window {measure} is empty or outside the {len(requests)} requests")
    for req in requests:
        req.measured = req.index in measure
    return requests, requests[measure.start : measure.stop]


def simulate_disaggregated(
    specs: Sequence[RequestSpec],
    prefill: Sequence[InstanceConfig],
    decode: Sequence[InstanceConfig],
    links: Sequence[Sequence[LinkSpec]],
    *,
    routing: str = "least_loaded",
    slo: SLO | None = None,
    measure: range | None = None,
) -> SimResult:
    """Prefill on ``prefill`` instances, KV over ``links[p][d]``, decode on ``decode`` instances.

    The pair is chosen at arrival, as the proxy does: the prefill instance with the least queued work,
    the decode instance with the fewest KV tokens held or promised. With ``slo`` the run stops as soon
    as the attainment target is out of reach (the result then says ``gave_up``). Only requests in
    ``measure`` (indices; default all) are reported: the others warm the system up or keep it loaded.
    """
    if not prefill or not decode:
        raise ValueError("a disaggregated deployment needs at least one prefill and one decode instance")
    loop = EventLoop()
    requests, measured = _requests(specs, measure)
    tally = Tally(slo, len(measured), loop.stop)
    decoders = [DecodeInstance(i, loop, c, tally) for i, c in enumerate(decode)]
    pair: dict[int, DecodeInstance] = {}

    def prefilled(req: SimRequest) -> None:
        pair.pop(req.index).offer(req, prefill_of.pop(req.index))

    prefillers = [PrefillInstance(i, loop, c, prefilled) for i, c in enumerate(prefill)]
    for p in prefillers:
        for d in decoders:
            d.connect(p.index, links[p.index][d.index])
    pick_prefill = Picker(prefillers, routing, PrefillInstance.backlog_s)
    pick_decode = Picker(decoders, routing, lambda d: d.load() / d.config.kv_capacity_tokens)
    prefill_of: dict[int, int] = {}

    def arrive(req: SimRequest) -> None:
        p, d = pick_prefill.pick(), pick_decode.pick()
        prefill_of[req.index] = p.index
        pair[req.index] = d
        p.submit(req)

    for req in requests:
        loop.at(req.arrival, lambda r=req: arrive(r))
    loop.run()
    return SimResult.from_requests(measured, tally.gave_up)


def simulate_colocated(
    specs: Sequence[RequestSpec],
    instances: Sequence[InstanceConfig],
    *,
    routing: str = "least_loaded",
    slo: SLO | None = None,
    measure: range | None = None,
) -> SimResult:
    """Every instance prefills and decodes (chunked prefill); requests go to the least-loaded one."""
    if not instances:
        raise ValueError("a colocated deployment needs at least one instance")
    loop = EventLoop()
    requests, measured = _requests(specs, measure)
    tally = Tally(slo, len(measured), loop.stop)
    colocated = [ColocatedInstance(i, loop, c, tally) for i, c in enumerate(instances)]
    pick = Picker(colocated, routing, lambda c: c.load() / c.config.kv_capacity_tokens)
    for req in requests:
        loop.at(req.arrival, lambda r=req: pick.pick().submit(r))
    loop.run()
    return SimResult.from_requests(measured, tally.gave_up)


def simulate_prefill_only(specs: Sequence[RequestSpec], config: InstanceConfig, *, slo: SLO | None = None) -> SimResult:
    """One prefill instance alone; TTFT is prefill completion (an upper bound on its P/D capacity)."""
    loop = EventLoop()
    requests, measured = _requests(specs, None)
    tally = Tally(None if slo is None else SLO(slo.ttft_s, math.inf, slo.attainment), len(measured), loop.stop)

    def done(req: SimRequest) -> None:
        req.first_token = req.finish = loop.now
        tally.first_token(req)
        tally.done(req)

    instance = PrefillInstance(0, loop, config, done)
    for req in requests:
        loop.at(req.arrival, lambda r=req: instance.submit(r))
    loop.run()
    return SimResult.from_requests(measured, tally.gave_up)


def simulate_decode_only(
    specs: Sequence[RequestSpec], config: InstanceConfig, *, slo: SLO | None = None, measure: range | None = None
) -> SimResult:
    """One decode instance alone, each request's KV ready at its arrival; only TPOT is meaningful."""
    loop = EventLoop()
    requests, measured = _requests(specs, measure)
    tally = Tally(None if slo is None else SLO(math.inf, slo.tpot_s, slo.attainment), len(measured), loop.stop)
    instance = DecodeInstance(0, loop, config, tally)
    instance.connect(0, LinkSpec(bandwidth=math.inf))
    for req in requests:
        req.prefill_start = req.prefill_done = req.arrival
        loop.at(req.arrival, lambda r=req: instance.offer(r, 0))
    loop.run()
    return SimResult.from_requests(measured, tally.gave_up)
