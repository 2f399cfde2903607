"""GPU and interconnect specs for the roofline: built-in H100/H200/A100, or a YAML file of the same fields."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import msgspec

from vllm_pd.latency import LinkSpec


class HardwareError(ValueError):
    """Unknown hardware name or a malformed hardware file."""


class HardwareSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One GPU type and the links between GPUs (per GPU, one direction)."""

    memory_bytes: float
    peak_flops: float
    memory_bandwidth: float
    nvlink_bandwidth: float
    network_bandwidth: float
    description: str = ""
    name: str = ""
    nvlink_latency: float = 10e-6
    network_latency: float = 30e-6
    compute_efficiency: float = 0.6  # achieved / peak FLOP/s in large matmuls
    memory_efficiency: float = 0.8  # achieved / peak HBM bandwidth
    link_efficiency: float = 0.8  # achieved / peak link bandwidth for KV and collectives
    step_overhead_s: float = 2e-3  # scheduler + launch time per forward pass
    reserved_bytes: float = 2e9  # per GPU: CUDA context, activations, sampler buffers
    memory_utilization: float = 0.9  # vLLM's --gpu-memory-utilization

    def __post_init__(self) -> None:
        for field in ("memory_bytes", "peak_flops", "memory_bandwidth", "nvlink_bandwidth", "network_bandwidth"):
            if not getattr(self, field) > 0:
                raise HardwareError(f"hardware {self.name or '?'}: {field} must be positive")
        for field in ("compute_efficiency", "memory_efficiency", "link_efficiency", "memory_utilization"):
            if not 0 < getattr(self, field) <= 1:
                raise HardwareError(f"hardware {self.name or '?'}: {field} must be in (0, 1]")

    def usable_bytes(self) -> float:
        """Bytes per GPU vLLM can give to weights and KV cache."""
        return self.memory_bytes * self.memory_utilization - self.reserved_bytes

    def link(self, *, same_node: bool, streams: int = 1) -> LinkSpec:
        """The KV-transfer link between two instances: NVLink inside a node, the network across nodes.

        ``streams`` GPU pairs move their shards in parallel (each GPU has its own NVLink ports and NIC).
        """
        per_gpu = self.nvlink_bandwidth if same_node else self.network_bandwidth
        latency = self.nvlink_latency if same_node else self.network_latency
        return LinkSpec(bandwidth=per_gpu * self.link_efficiency * max(1, streams), latency=latency)


def builtin_hardware() -> dict[str, HardwareSpec]:
    raw = resources.files("vllm_pd").joinpath("data/hardware.yaml").read_bytes()
    specs = msgspec.yaml.decode(raw, type=dict[str, HardwareSpec])
    return {name: msgspec.structs.replace(spec, name=name) for name, spec in specs.items()}


def load_hardware(name_or_path: str) -> HardwareSpec:
    """A built-in spec by name (h100, h200, a100) or a YAML file with :class:`HardwareSpec` fields."""
    builtin = builtin_hardware()
    if name_or_path.lower() in builtin:
        return builtin[name_or_path.lower()]
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml", ".json"):
        raise HardwareError(f"unknown hardware {name_or_path!r}: use one of {', '.join(builtin)} or a YAML file")
    if not path.is_file():
        raise HardwareError(f"{path}: no such hardware file")
    try:
        spec = msgspec.yaml.decode(path.read_bytes(), type=HardwareSpec, strict=False)  # "80e9" is a YAML string
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise HardwareError(f"{path}: invalid hardware spec: {exc}") from exc
    return spec if spec.name else msgspec.structs.replace(spec, name=path.stem)
