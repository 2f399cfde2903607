"""From "N prefill, M decode, this connector" to the list of ServerSpecs, ports and cores assigned."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vllm_pd.launcher.ports import free_ports
from vllm_pd.launcher.spec import Role, ServerSpec, kv_config

# Small enough for a CPU box; the block size is a multiple of 32 as vLLM's CPU attention requires.
CPU_DEFAULT_ARGS = ("--block-size", "32", "--enforce-eager")


@dataclass(frozen=True)
class Topology:
    """How many servers of each role, on which cores, with which connector."""

    model: str
    prefill: int = 1
    decode: int = 1
    both: int = 0
    single: int = 0
    connector: str = "nixl"
    host: str = "127.0.0.1"
    base_port: int | None = None  # None: free ports chosen at random
    cpus: tuple[str, ...] = ()  # one core set per server, in order prefill.., decode.., both.., single..
    server_args: tuple[str, ...] = CPU_DEFAULT_ARGS
    kv_extra: dict[str, Any] = field(default_factory=dict)
    load_failure_policy: str | None = None

    def __post_init__(self) -> None:
        for name in ("prefill", "decode", "both", "single"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0")
        if self.prefill + self.decode + self.both + self.single == 0:
            raise ValueError("the topology has no server: give --prefill, --decode, --both or --single")
        if (self.prefill > 0) != (self.decode > 0) and self.both == 0:
            raise ValueError("prefill servers need decode servers (and back), or use --both")

    def roles(self) -> list[tuple[str, Role]]:
        names: list[tuple[str, Role]] = []
        for role in ("prefill", "decode", "both", "single"):
            names += [(f"{role}{i}", role) for i in range(getattr(self, role))]
        return names

    def specs(self) -> list[ServerSpec]:
        roles = self.roles()
        ports = self._ports(2 * len(roles))
        specs = []
        for i, (name, role) in enumerate(roles):
            config = kv_config(self.connector, role, self.kv_extra, self.load_failure_policy)
            specs.append(ServerSpec(
                name=name, role=role, model=self.model, host=self.host, port=ports[2 * i],
                side_channel_port=ports[2 * i + 1] if config else None,
                cpus=self.cpus[i % len(self.cpus)] if self.cpus else None,
                kv_transfer_config=config, extra_args=self.server_args,
            ))
        return specs

    def _ports(self, count: int) -> list[int]:
        if self.base_port is None:
            return free_ports(count, self.host)
        if self.base_port + count > 65536:
            raise ValueError(f"--base-port {self.base_port} leaves no room for {count} ports")
        return list(range(self.base_port, self.base_port + count))
