"""What a server is: its role, model, ports, cores and connector, as one frozen value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["prefill", "decode", "both", "single", "proxy"]

# The connector role each server role takes in vLLM's --kv-transfer-config.
KV_ROLE: dict[str, str] = {"prefill": "kv_producer", "decode": "kv_consumer", "both": "kv_both"}

CONNECTORS = {
    "nixl": "NixlConnector",  # vLLM's built-in connector, the baseline
    "pd": "PDConnector",  # ours, registered by the vllm.general_plugins entry point
}


def kv_config(connector: str, role: Role, extra: dict[str, Any] | None = None,
              load_failure_policy: str | None = None) -> dict[str, Any] | None:
    """The ``--kv-transfer-config`` of a server role; ``None`` for roles without a connector."""
    if role not in KV_ROLE:
        return None
    if connector not in CONNECTORS:
        raise ValueError(f"unknown connector {connector!r}: choose one of {', '.join(CONNECTORS)}")
    config: dict[str, Any] = {"kv_connector": CONNECTORS[connector], "kv_role": KV_ROLE[role]}
    if extra:
        config["kv_connector_extra_config"] = dict(extra)
    if load_failure_policy:
        config["kv_load_failure_policy"] = load_failure_policy
    return config


def nixl_kv_config(role: Role) -> dict[str, Any] | None:
    return kv_config("nixl", role)


@dataclass(frozen=True)
class ServerSpec:
    """One process of a deployment: a vLLM server, or (``command`` set) another HTTP service such as the proxy."""

    name: str
    role: Role
    port: int
    model: str | None = None
    host: str = "127.0.0.1"
    side_channel_port: int | None = None
    cpus: str | None = None  # cores for the server's threads (VLLM_CPU_OMP_THREADS_BIND on CPU), e.g. "0"
    devices: str | None = None  # CUDA_VISIBLE_DEVICES on GPU, e.g. "0,1"
    kv_transfer_config: dict[str, Any] | None = None
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    command: tuple[str, ...] | None = None  # overrides the vLLM command line
    health_path: str = "/health"

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/ "):
            raise ValueError(f"server name {self.name!r} must be non-empty, without '/' or spaces")
        if not 0 < self.port < 65536:
            raise ValueError(f"{self.name}: port {self.port} out of range")
        if self.command is None and not self.model:
            raise ValueError(f"{self.name}: a vLLM server needs a model")
        if self.kv_transfer_config is not None and self.side_channel_port is None:
            raise ValueError(f"{self.name}: a server with a KV connector needs a side_channel_port")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.port,) if self.side_channel_port is None else (self.port, self.side_channel_port)
