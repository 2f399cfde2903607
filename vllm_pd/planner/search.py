"""The placement search: DistServe's Algorithm 1 extended with n:m ratios, KV transfer and placement.

1. Enumerate instance shapes (TP x PP) that divide the model and fit memory.
2. Per phase, bisect each shape's rate alone (prefill: TTFT; decode: TPOT) and drop shapes another
   shape beats with no more GPUs.
3. For each pair of surviving shapes and each n:m ratio, bound the segment's rate by
   ``min(n * R_prefill, m * R_decode)`` (plus slack for pooling), visit segments from the best bound
   down, place every copy on the cluster, and bisect the segment's rate end to end (KV transfer over
   the links its placement gives). Stop when no bound can beat the best found (branch and bound).
4. Do the same for colocated instances; compare; predict latencies of the winners at their rates.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vllm_pd.latency import LatencyTable
from vllm_pd.planner.capacity import ProbeSettings, Prober
from vllm_pd.planner.hardware import HardwareSpec
from vllm_pd.planner.model import ModelSpec
from vllm_pd.planner.placement import cross_node_pairs, interleave, link_matrix, pack
from vllm_pd.planner.plan import Candidate, Plan, PlanError, Prediction
from vllm_pd.planner.shapes import ProfileSource, Shape, ShapeLimits, feasible_shapes
from vllm_pd.planner.sim import SLO
from vllm_pd.workloads import Workload

Progress = Callable[[str, int, int], None]
_COLOCATED_GROUP = 4  # colocated instances simulated together behind the router
_VERDICT_MARGIN = 1.05


@dataclass(frozen=True)
class PlanInputs:
    model: ModelSpec
    hardware: HardwareSpec
    gpus: int
    gpus_per_node: int
    workload: Workload
    slo: SLO
    table: LatencyTable | None = None
    limits: ShapeLimits = field(default_factory=ShapeLimits)
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    max_instances: int = 8  # per phase in one segment
    pooling_slack: float = 0.25  # how far n instances may beat n x one instance (shared queues)
    top: int = 5
    colocated_chunked: bool = True  # the baseline's scheduler: chunked prefill (vLLM v1) or prefill-first

    def __post_init__(self) -> None:
        if self.gpus < 1 or self.gpus_per_node < 1:
            raise PlanError(f"need at least one GPU (got gpus={self.gpus}, gpus_per_node={self.gpus_per_node})")
        if self.max_instances < 1 or self.top < 1 or self.pooling_slack < 0:
            raise PlanError("max_instances and top must be positive, pooling_slack non-negative")


def plan(inputs: PlanInputs, progress: Progress | None = None) -> Plan:
    started = time.perf_counter()
    report = progress or (lambda stage, done, total: None)
    population = max(inputs.max_instances, _COLOCATED_GROUP) * inputs.limits.max_num_seqs
    prober = Prober(inputs.workload, inputs.slo, inputs.probe, population)
    limits = ShapeLimits(inputs.limits.max_num_seqs, inputs.limits.max_batched_tokens, prober.max_request_tokens)
    source = ProfileSource(inputs.model, inputs.hardware, inputs.gpus_per_node, inputs.table)
    shapes = feasible_shapes(inputs.model, inputs.hardware, gpus=inputs.gpus, gpus_per_node=inputs.gpus_per_node,
                             limits=limits)
    if not shapes:
        raise PlanError(_no_fit_message(inputs, prober.max_request_tokens))
    configs = {s: source.instance(s, limits) for s in shapes}
    prefill_rates, decode_rates = {}, {}
    for i, shape in enumerate(shapes):
        report("screening shapes", i, len(shapes))
        prefill_rates[shape] = prober.prefill_capacity(configs[shape])
        decode_rates[shape] = prober.decode_capacity(configs[shape])
    report("screening shapes", len(shapes), len(shapes))
    ranked = _search_segments(inputs, prober, configs, _frontier(prefill_rates), _frontier(decode_rates), report)
    baseline = {s: dataclasses.replace(c, chunked_prefill=inputs.colocated_chunked) for s, c in configs.items()}
    colocated = _search_colocated(inputs, prober, baseline, prefill_rates, decode_rates, report)
    ranked = [_predicted(inputs, prober, configs, c) for c in ranked]
    colocated = _predicted(inputs, prober, baseline, colocated) if colocated else None
    best_pd = ranked[0].cluster_rate if ranked else 0.0
    best_colo = colocated.cluster_rate if colocated else 0.0
    if best_pd <= 0 and best_colo <= 0:
        raise PlanError(
            f"no configuration meets TTFT <= {inputs.slo.ttft_s * 1e3:g} ms and TPOT <= {inputs.slo.tpot_s * 1e3:g} ms "
            f"for {inputs.slo.attainment:.0%} of requests, even at the lowest load: loosen the SLOs or use faster GPUs"
        )
    gain = best_pd / best_colo if best_colo > 0 else float("inf")
    return Plan(ranked, colocated, _verdict(gain, best_pd), gain, prober.simulations,
                time.perf_counter() - started, _notes(inputs, shapes, prefill_rates, decode_rates))


def _frontier(rates: dict[Shape, float]) -> list[Shape]:
    """Shapes with a positive rate that no smaller shape beats per GPU.

    A shape whose GPU count a smaller shape divides is dominated when copies of the smaller one on the
    same GPUs sustain at least its rate: any segment using it has a better-bounded twin.
    """
    keep = []
    for shape, rate in rates.items():
        dominated = any(
            other != shape and shape.gpus % other.gpus == 0 and r * shape.gpus / other.gpus >= rate
            and (other.gpus < shape.gpus or r > rate or (r == rate and (other.tp, other.pp) < (shape.tp, shape.pp)))
            for other, r in rates.items()
        )
        if rate > 0 and not dominated:
            keep.append(shape)
    return keep


@dataclass(frozen=True)
class _Segment:
    prefill: Shape
    num_prefill: int
    decode: Shape
    num_decode: int
    bound: float  # optimistic cluster rate

    @property
    def gpus(self) -> int:
        return self.num_prefill * self.prefill.gpus + self.num_decode * self.decode.gpus


def _search_segments(inputs, prober, configs, prefill_shapes, decode_shapes, report) -> list[Candidate]:
    segments = []
    for sp in prefill_shapes:
        rp = prober.prefill_capacity(configs[sp])
        for sd in decode_shapes:
            rd = prober.decode_capacity(configs[sd])
            for n in range(1, inputs.max_instances + 1):
                for m in range(1, inputs.max_instances + 1):
                    gpus = n * sp.gpus + m * sd.gpus
                    if gpus <= inputs.gpus:
                        bound = (inputs.gpus // gpus) * min(n * rp, m * rd) * (1 + inputs.pooling_slack)
                        segments.append(_Segment(sp, n, sd, m, bound))
    segments.sort(key=lambda s: (-s.bound, s.gpus, s.num_prefill, s.num_decode, str(s.prefill), str(s.decode)))
    best: list[Candidate] = []
    for i, segment in enumerate(segments):
        floor = best[inputs.top - 1].cluster_rate if len(best) >= inputs.top else 0.0
        if segment.bound <= floor:
            break
        report("searching P/D segments", i, len(segments))
        candidate = _evaluate_segment(inputs, prober, configs, segment)
        if candidate is not None and candidate.cluster_rate > 0:
            best.append(candidate)
            best.sort(key=lambda c: (-c.cluster_rate, c.gpus_used, c.label()))
            del best[inputs.top :]
    report("searching P/D segments", len(segments), len(segments))
    return best


def _evaluate_segment(inputs, prober, configs, segment: _Segment) -> Candidate | None:
    roles = interleave(segment.num_prefill, segment.num_decode)
    shapes = [segment.prefill if r == "prefill" else segment.decode for r in roles]
    copies = inputs.gpus // segment.gpus
    placements = pack([(r, s) for r, s in zip(roles, shapes)] * copies, gpus=inputs.gpus,
                      gpus_per_node=inputs.gpus_per_node)
    while placements is None and copies > 1:
        copies -= 1
        placements = pack([(r, s) for r, s in zip(roles, shapes)] * copies, gpus=inputs.gpus,
                          gpus_per_node=inputs.gpus_per_node)
    if placements is None:
        return None
    prefill = [configs[segment.prefill]] * segment.num_prefill
    decode = [configs[segment.decode]] * segment.num_decode
    guess = min(segment.num_prefill * prober.prefill_capacity(prefill[0]),
                segment.num_decode * prober.decode_capacity(decode[0]))
    total, cross = 0.0, 0
    for k in range(copies):
        copy = placements[k * len(roles) : (k + 1) * len(roles)]
        links = link_matrix(inputs.hardware, copy)
        cross += cross_node_pairs(copy)
        rate = prober.segment_capacity(prefill, decode, links, guess)
        guess = rate or guess  # the next copy differs only in its links: start from this answer
        total += rate
    return Candidate(
        kind="disaggregated", cluster_rate=total, gpus_used=copies * segment.gpus, copies=copies,
        placements=tuple(placements), prefill=segment.prefill, num_prefill=segment.num_prefill,
        decode=segment.decode, num_decode=segment.num_decode, cross_node_pairs=cross,
    )


def _search_colocated(inputs, prober, configs, prefill_rates, decode_rates, report) -> Candidate | None:
    """Branch and bound again: a colocated instance cannot beat either phase alone on the same GPUs."""
    best = None
    bounds = {
        s: (inputs.gpus // s.gpus) * min(prefill_rates[s], decode_rates[s]) * (1 + inputs.pooling_slack)
        for s in configs
    }
    shapes = sorted(configs, key=lambda s: (-bounds[s], s.gpus, s.tp))
    for i, shape in enumerate(shapes):
        if bounds[shape] <= 0 or (best is not None and bounds[shape] <= best.cluster_rate):
            break
        report("searching colocated", i, len(shapes))
        count = inputs.gpus // shape.gpus
        group = min(count, _COLOCATED_GROUP)
        guess = group * min(prefill_rates[shape], decode_rates[shape])
        rate = prober.colocated_capacity(configs[shape], group, guess) * count / group
        placements = pack([("colocated", shape)] * count, gpus=inputs.gpus, gpus_per_node=inputs.gpus_per_node)
        if placements is None or rate <= 0:
            continue
        candidate = Candidate(kind="colocated", cluster_rate=rate, gpus_used=count * shape.gpus, copies=count,
                              placements=tuple(placements), colocated=shape, num_colocated=count)
        if best is None or (rate, -candidate.gpus_used) > (best.cluster_rate, -best.gpus_used):
            best = candidate
    report("searching colocated", len(shapes), len(shapes))
    return best


def _predicted(inputs, prober, configs, candidate: Candidate) -> Candidate:
    """Attach simulated percentiles for one segment copy (or colocated group) at its share of the rate."""
    slo = inputs.slo
    if candidate.kind == "colocated":
        group = min(candidate.num_colocated, _COLOCATED_GROUP)
        rate = candidate.cluster_rate * group / candidate.num_colocated
        result = prober.measure_colocated(configs[candidate.colocated], group, rate)
    else:
        rate = candidate.cluster_rate / candidate.copies
        size = candidate.num_prefill + candidate.num_decode
        links = link_matrix(inputs.hardware, candidate.placements[:size])
        result = prober.measure_disaggregated([configs[candidate.prefill]] * candidate.num_prefill,
                                              [configs[candidate.decode]] * candidate.num_decode, links, rate)
    prediction = Prediction.from_result(rate, result, result.attainment(slo))
    return Candidate(**{**candidate.__dict__, "prediction": prediction})


def _verdict(gain: float, best_pd: float) -> str:
    if best_pd <= 0:
        return "stay colocated: no disaggregated configuration meets the SLOs"
    if gain == float("inf"):
        return "disaggregate: no colocated configuration meets the SLOs"
    if gain >= _VERDICT_MARGIN:
        return f"disaggregate: {gain:.2f}x the goodput of the best colocated configuration"
    if gain > 1 / _VERDICT_MARGIN:
        return f"either: disaggregation gives {gain:.2f}x the colocated goodput (within 5%); stay colocated for simplicity"
    return f"stay colocated: disaggregation reaches only {gain:.2f}x the colocated goodput"


def _no_fit_message(inputs: PlanInputs, longest: int) -> str:
    model, hw = inputs.model, inputs.hardware
    need = model.param_bytes() / hw.usable_bytes()
    return (
        f"{model.name} does not fit: {model.param_bytes() / 1e9:.1f} GB of weights plus KV for a {longest}-token "
        f"request need more than {inputs.gpus} x {hw.name} ({hw.memory_bytes / 1e9:.0f} GB, {hw.memory_utilization:.0%} "
        f"usable) with TP <= {inputs.gpus_per_node}; weights alone need {need:.1f} GPUs"
    )


def _notes(inputs, shapes, prefill_rates, decode_rates) -> list[str]:
    notes = [f"shapes considered: {', '.join(map(str, shapes))}"]
    source = "fitted profile" if inputs.table is not None else "roofline of " + inputs.hardware.name
    notes.append(f"latency source: {source}")
    if not any(prefill_rates.values()):
        notes.append("no prefill shape meets the TTFT SLO alone")
    if not any(decode_rates.values()):
        notes.append("no decode shape meets the TPOT SLO alone")
    return notes
