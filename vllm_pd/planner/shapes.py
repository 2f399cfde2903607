"""Instance shapes (TP x PP) that divide the model and fit in memory, with their latency profiles.

Coefficients come from a latency table when one is given (fitted on real servers) and from the
roofline otherwise. A shape missing from the table is derived from the table's closest shape, each
coefficient scaled by the roofline's ratio between the two shapes, so measured constants carry over.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from vllm_pd.latency import DecodeCoeffs, LatencyProfile, LatencyTable, PrefillCoeffs
from vllm_pd.planner.hardware import HardwareSpec
from vllm_pd.planner.model import ModelSpec
from vllm_pd.planner.roofline import roofline_profile
from vllm_pd.planner.sim import InstanceConfig

PIPELINE_DEGREES = (1, 2, 4, 8)


@dataclass(frozen=True)
class Shape:
    tp: int
    pp: int

    @property
    def gpus(self) -> int:
        return self.tp * self.pp

    def __str__(self) -> str:
        return f"tp{self.tp}pp{self.pp}"


@dataclass(frozen=True)
class ShapeLimits:
    """vLLM scheduler limits applied to every instance."""

    max_num_seqs: int = 256
    max_batched_tokens: int = 8192
    min_kv_tokens: int = 1  # the longest request: a shape holding fewer KV slots per stage cannot serve it


def tp_divides(model: ModelSpec, tp: int) -> bool:
    """vLLM splits heads evenly and either splits or replicates KV heads."""
    return model.num_heads % tp == 0 and (model.num_kv_heads % tp == 0 or tp % model.num_kv_heads == 0)


def kv_capacity_tokens(model: ModelSpec, hw: HardwareSpec, shape: Shape) -> int:
    """KV slots left on the instance after the weights (0 if the weights do not fit)."""
    free = hw.usable_bytes() * shape.gpus - model.param_bytes()
    replication = max(1, shape.tp // model.num_kv_heads)  # TP beyond kv_heads stores KV heads twice
    return max(0, int(free / (model.kv_bytes_per_token() * replication)))


def feasible_shapes(
    model: ModelSpec, hw: HardwareSpec, *, gpus: int, gpus_per_node: int, limits: ShapeLimits
) -> list[Shape]:
    """Shapes with TP inside a node, PP no deeper than the layers, weights and one request in memory."""
    shapes = []
    tp = 1
    while tp <= min(gpus, gpus_per_node):
        if tp_divides(model, tp):
            for pp in PIPELINE_DEGREES:
                shape = Shape(tp, pp)
                if pp <= model.num_layers and shape.gpus <= gpus and model.param_bytes() / shape.gpus <= hw.usable_bytes():
                    if kv_capacity_tokens(model, hw, shape) // pp >= limits.min_kv_tokens:
                        shapes.append(shape)
        tp *= 2
    return shapes


class ProfileSource:
    """Latency profiles per shape: the table's where it has them, roofline-scaled from it otherwise."""

    def __init__(self, model: ModelSpec, hw: HardwareSpec, gpus_per_node: int, table: LatencyTable | None = None):
        self.model = model
        self.hw = hw
        self.gpus_per_node = gpus_per_node
        self.table = table
        self._cache: dict[Shape, LatencyProfile] = {}

    def profile(self, shape: Shape) -> LatencyProfile:
        if shape not in self._cache:
            self._cache[shape] = self._build(shape)
        return self._cache[shape]

    def instance(self, shape: Shape, limits: ShapeLimits, node: int = 0) -> InstanceConfig:
        return InstanceConfig(
            profile=self.profile(shape),
            kv_capacity_tokens=kv_capacity_tokens(self.model, self.hw, shape),
            max_num_seqs=limits.max_num_seqs,
            max_batched_tokens=limits.max_batched_tokens,
            node=node,
        )

    def _roofline(self, shape: Shape) -> LatencyProfile:
        return roofline_profile(self.model, self.hw, tp=shape.tp, pp=shape.pp, gpus_per_node=self.gpus_per_node)

    def _build(self, shape: Shape) -> LatencyProfile:
        kv_bytes = self.model.kv_bytes_per_token()
        if self.table is None or not self.table.profiles:
            return self._roofline(shape)
        exact = self.table.get(shape.tp, shape.pp)
        if exact is not None:
            return msgspec.structs.replace(exact, kv_bytes_per_token=kv_bytes)
        base = min(self.table.profiles, key=lambda p: (abs(p.tp - shape.tp) + abs(p.pp - shape.pp), p.tp, p.pp))
        ratio_from, ratio_to = self._roofline(Shape(base.tp, base.pp)), self._roofline(shape)
        return LatencyProfile(
            prefill=PrefillCoeffs(*_scaled(base.prefill, ratio_from.prefill, ratio_to.prefill)),
            decode=DecodeCoeffs(*_scaled(base.decode, ratio_from.decode, ratio_to.decode)),
            link=base.link,
            kv_bytes_per_token=kv_bytes,
            name=f"{base.name or 'profile'} scaled to {shape}",
            tp=shape.tp,
            pp=shape.pp,
            source=f"fitted tp{base.tp}pp{base.pp} x roofline ratio",
        )


def _scaled(base: msgspec.Struct, old: msgspec.Struct, new: msgspec.Struct) -> tuple[float, float, float]:
    values = []
    for field in ("a", "b", "c"):
        before, after = getattr(old, field), getattr(new, field)
        values.append(getattr(base, field) * (after / before if before > 0 else 1.0))
    return tuple(values)
