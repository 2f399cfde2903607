"""Run one simulation: a disaggregated n:m deployment or a colocated one, over a list of requests."""

from __future__ import annotations

from collections.abc import Sequence

from vllm_pd.latency import LinkSpec
from vllm_pd.planner.sim.colocated import ColocatedInstance
from vllm_pd.planner.sim.config import InstanceConfig
from vllm_pd.planner.sim.decode import DecodeInstance
from vllm_pd.planner.sim.loop import EventLoop
from vllm_pd.planner.sim.prefill import PrefillInstance
from vllm_pd.planner.sim.request import SLO, SimRequest, Tally
from vllm_pd.planner.sim.result import SimResult
from vllm_pd.planner.sim.router import Picker
from vllm_pd.workloads import RequestSpec


def _requests(specs: Sequence[RequestSpec]) -> list[SimRequest]:
    if not specs:
        raise ValueError("nothing to simulate: the request list is empty")
    return [SimRequest(i, s.arrival_s, s.input_tokens, s.output_tokens) for i, s in enumerate(specs)]


def simulate_disaggregated(
    specs: Sequence[RequestSpec],
    prefill: Sequence[InstanceConfig],
    decode: Sequence[InstanceConfig],
    links: Sequence[Sequence[LinkSpec]],
    *,
    routing: str = "least_loaded",
    slo: SLO | None = None,
) -> SimResult:
    """Prefill on ``prefill`` instances, KV over ``links[p][d]``, decode on ``decode`` instances.

    The pair is chosen at arrival, as the proxy does: the prefill instance with the least queued work,
    the decode instance with the fewest KV tokens held or promised. With ``slo`` the run stops as soon
    as the attainment target is out of reach (the result then says ``gave_up``).
    """
    if not prefill or not decode:
        raise ValueError("a disaggregated deployment needs at least one prefill and one decode instance")
    loop = EventLoop()
    requests = _requests(specs)
    tally = Tally(slo, len(requests), loop.stop)
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
    return SimResult.from_requests(requests, tally.gave_up)


def simulate_colocated(
    specs: Sequence[RequestSpec],
    instances: Sequence[InstanceConfig],
    *,
    routing: str = "least_loaded",
    slo: SLO | None = None,
) -> SimResult:
    """Every instance prefills and decodes (chunked prefill); requests go to the least-loaded one."""
    if not instances:
        raise ValueError("a colocated deployment needs at least one instance")
    loop = EventLoop()
    requests = _requests(specs)
    tally = Tally(slo, len(requests), loop.stop)
    colocated = [ColocatedInstance(i, loop, c, tally) for i, c in enumerate(instances)]
    pick = Picker(colocated, routing, lambda c: c.load() / c.config.kv_capacity_tokens)
    for req in requests:
        loop.at(req.arrival, lambda r=req: pick.pick().submit(r))
    loop.run()
    return SimResult.from_requests(requests, tally.gave_up)
