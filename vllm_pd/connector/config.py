"""PDConnector's options: ``kv_connector_extra_config``, checked once at startup with a clear error."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

KNOWN_BACKENDS = ("UCX", "POSIX", "LIBFABRIC", "GDS", "GDS_MT", "UCCL", "MOONCAKE")


class ConfigError(ValueError):
    """An unknown or bad ``kv_connector_extra_config`` value."""


@dataclass(frozen=True)
class PDConfig:
    """Typed ``kv_connector_extra_config`` of PDConnector (every field has a default)."""

    lease_s: float = 30.0
    """How long a producer holds a request's blocks for a consumer that has not pulled yet."""
    renew_interval_s: float = 5.0
    """How often a waiting consumer renews its leases (must be well under ``lease_s``)."""
    pull_timeout_s: float = 10.0
    """Upper bound of one pull; a pull still running then is a load failure."""
    lease_margin_s: float = 1.0
    """A pull must be able to finish this long before the lease deadline, or it is not started."""
    handshake_timeout_s: float = 5.0
    """Bound of one side-channel round trip (handshake, renew, release)."""
    side_channel_host: str = ""
    """Host the producer's side channel binds and advertises; default $VLLM_NIXL_SIDE_CHANNEL_HOST or localhost."""
    side_channel_port: int = 0
    """Side-channel port; default $VLLM_NIXL_SIDE_CHANNEL_PORT or 5600 (plus the data-parallel index)."""
    backends: tuple[str, ...] = ("UCX",)
    """NIXL backends to create."""
    ucx_error_handling_mode: str = ""
    """Passed to the UCX backend ("none" is needed for shared-memory-only UCX_TLS)."""
    num_threads: int = 0
    """UCX progress threads (0: NIXL's default)."""

    def __post_init__(self) -> None:
        positive = ("lease_s", "renew_interval_s", "pull_timeout_s", "handshake_timeout_s")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"kv_connector_extra_config.{name} must be > 0, got {getattr(self, name)}")
        if self.lease_margin_s < 0:
            raise ConfigError(f"kv_connector_extra_config.lease_margin_s must be >= 0, got {self.lease_margin_s}")
        if self.renew_interval_s * 2 > self.lease_s:
            raise ConfigError(
                f"kv_connector_extra_config.renew_interval_s ({self.renew_interval_s}) must be at most half "
                f"of lease_s ({self.lease_s}), or waiting requests lose their lease between renewals"
            )
        if self.pull_timeout_s + self.lease_margin_s >= self.lease_s:
            raise ConfigError(
                f"kv_connector_extra_config.pull_timeout_s + lease_margin_s ({self.pull_timeout_s} + "
                f"{self.lease_margin_s}) must be below lease_s ({self.lease_s})"
            )
        if not 0 <= self.side_channel_port < 65536:
            raise ConfigError(f"kv_connector_extra_config.side_channel_port {self.side_channel_port} out of range")
        if not self.backends or any(b not in KNOWN_BACKENDS for b in self.backends):
            raise ConfigError(
                f"kv_connector_extra_config.backends {list(self.backends)} must be a non-empty list of "
                f"{', '.join(KNOWN_BACKENDS)}"
            )
        if self.num_threads < 0:
            raise ConfigError(f"kv_connector_extra_config.num_threads must be >= 0, got {self.num_threads}")

    @classmethod
    def from_extra(cls, extra: dict[str, Any] | None) -> PDConfig:
        """Build from ``kv_connector_extra_config``; unknown keys and wrong types raise ConfigError."""
        extra = dict(extra or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(extra) - set(known))
        if unknown:
            raise ConfigError(
                f"unknown kv_connector_extra_config key(s) {unknown} for PDConnector; "
                f"known: {', '.join(sorted(known))}"
            )
        values: dict[str, Any] = {}
        for name, value in extra.items():
            values[name] = _coerce(name, known[name].type, value)
        return cls(**values)

    def side_channel_address(self, dp_index: int = 0) -> tuple[str, int]:
        """(host, port) of this instance's side channel; env defaults match vLLM's NixlConnector."""
        host = self.side_channel_host or os.environ.get("VLLM_NIXL_SIDE_CHANNEL_HOST", "localhost")
        port = self.side_channel_port or int(os.environ.get("VLLM_NIXL_SIDE_CHANNEL_PORT", "5600"))
        return host, port + dp_index


def _coerce(name: str, type_name: Any, value: Any) -> Any:
    """Check one value against its field's declared type (annotations are strings here)."""
    key = f"kv_connector_extra_config.{name}"
    if type_name == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if type_name == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if type_name == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    if type_name == "tuple[str, ...]":
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key} must be a list of strings, got {value!r}")
        return tuple(value)
    raise AssertionError(f"no coercion for {type_name}")
