"""Where instances sit: first-fit packing of TP groups onto nodes, and the KV links that follow.

A TP group never straddles nodes; pipeline stages may. Instances of a segment are packed in the order
P0, D0, P1, D1, ... so that pairs share a node (NVLink) whenever they fit, as DistServe's low node
affinity placement does; a pair on different nodes transfers KV over the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vllm_pd.latency import LinkSpec
from vllm_pd.planner.hardware import HardwareSpec
from vllm_pd.planner.shapes import Shape


@dataclass(frozen=True)
class InstancePlacement:
    role: str  # "prefill", "decode" or "colocated"
    shape: Shape
    stages: tuple[tuple[int, tuple[int, ...]], ...]  # per pipeline stage: (node, GPU indices on that node)

    @property
    def nodes(self) -> frozenset[int]:
        return frozenset(node for node, _ in self.stages)

    def describe(self) -> str:
        return " + ".join(f"node{node}:gpu{_span(gpus)}" for node, gpus in self.stages)

    def cuda_visible_devices(self) -> str:
        return ",".join(str(g) for _, gpus in self.stages for g in gpus)


def _span(gpus: tuple[int, ...]) -> str:
    return str(gpus[0]) if len(gpus) == 1 else f"{gpus[0]}-{gpus[-1]}"


def interleave(prefill: int, decode: int) -> list[str]:
    """Role order P, D, P, D, ... then the remainder."""
    order = []
    for i in range(max(prefill, decode)):
        if i < prefill:
            order.append("prefill")
        if i < decode:
            order.append("decode")
    return order


def pack(instances: Sequence[tuple[str, Shape]], *, gpus: int, gpus_per_node: int) -> list[InstancePlacement] | None:
    """First-fit placement of every instance, or None when they do not fit."""
    free = [list(range(min(gpus_per_node, gpus - n * gpus_per_node))) for n in range(-(-gpus // gpus_per_node))]
    placed = []
    for role, shape in instances:
        stages = []
        for _ in range(shape.pp):
            node = next((n for n, gs in enumerate(free) if len(gs) >= shape.tp), None)
            if node is None:
                return None
            taken, free[node] = tuple(free[node][: shape.tp]), free[node][shape.tp :]
            stages.append((node, taken))
        placed.append(InstancePlacement(role, shape, tuple(stages)))
    return placed


def same_node(prefill: InstancePlacement, decode: InstancePlacement) -> bool:
    return len(prefill.nodes) == 1 and prefill.nodes == decode.nodes


def kv_link(hw: HardwareSpec, prefill: InstancePlacement, decode: InstancePlacement) -> LinkSpec:
    """NVLink when both instances sit wholly on one shared node, the network otherwise."""
    return hw.link(same_node=same_node(prefill, decode), streams=min(prefill.shape.gpus, decode.shape.gpus))


def link_matrix(hw: HardwareSpec, placements: Sequence[InstancePlacement]) -> tuple[tuple[LinkSpec, ...], ...]:
    prefill = [p for p in placements if p.role == "prefill"]
    decode = [p for p in placements if p.role == "decode"]
    return tuple(tuple(kv_link(hw, p, d) for d in decode) for p in prefill)


def cross_node_pairs(placements: Sequence[InstancePlacement]) -> int:
    prefill = [p for p in placements if p.role == "prefill"]
    decode = [p for p in placements if p.role == "decode"]
    return sum(not same_node(p, d) for p in prefill for d in decode)
