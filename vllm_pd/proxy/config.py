"""Proxy settings: frozen dataclasses checked on construction, loaded from YAML and overridden by flags.

Every bad value fails at startup with a ``ConfigError`` naming the setting, never later at request time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from vllm_pd.slo import SLO

DEFAULT_SLO = SLO(ttft_s=0.5, tpot_s=0.05)

POLICIES = ("goodput", "least-loaded", "round-robin")
ADMISSIONS = ("reject", "best-effort")


class ConfigError(ValueError):
    """A setting is invalid; the message names it."""


def _check(ok: bool, setting: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{setting}: {message}")


def _positive(value: float, setting: str) -> None:
    _check(isinstance(value, (int, float)) and value > 0, setting, f"must be a positive number, got {value!r}")


def normalize_url(url: str, setting: str) -> str:
    """``http://host:port`` without a trailing slash; anything else is rejected."""
    _check(isinstance(url, str), setting, f"must be a URL string, got {url!r}")
    parts = urlsplit(url.rstrip("/"))
    _check(parts.scheme in ("http", "https") and bool(parts.hostname), setting, f"not an http(s) URL: {url!r}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ConfigError(f"{setting}: bad port in {url!r}") from None
    _check(parts.path in ("", "/v1"), setting, f"give the server root (http://host:port), not {url!r}")
    return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True)
class PoolConfig:
    """The instances serving one model: prefill-only, decode-only and ``kv_both`` (either role)."""

    prefill: tuple[str, ...] = ()
    decode: tuple[str, ...] = ()
    both: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for role in ("prefill", "decode", "both"):
            urls = tuple(normalize_url(u, f"{role}[{i}]") for i, u in enumerate(getattr(self, role)))
            object.__setattr__(self, role, urls)
        everything = self.prefill + self.decode + self.both
        dupes = sorted({u for u in everything if everything.count(u) > 1})
        _check(not dupes, "prefill/decode/both", f"an instance is listed twice: {', '.join(dupes)}")

    @property
    def empty(self) -> bool:
        return not (self.prefill or self.decode or self.both)

    def check_servable(self, setting: str) -> None:
        _check(bool(self.decode or self.both), setting, "needs at least one --decode or --both instance")


@dataclass(frozen=True)
class TimeoutConfig:
    """Bounds on every upstream call (peers wait 30 minutes or forever; we do not)."""

    connect_s: float = 3.0
    prefill_s: float = 30.0  # whole prefill leg: a hung prefill is cut here and failed over
    first_token_s: float = 60.0  # decode leg until its first bytes
    read_s: float = 60.0  # longest silence between two decode chunks
    request_s: float = 600.0  # whole non-streamed decode leg
    handoff_s: float = 10.0  # decode legs this young are retried when their prefill instance goes down
    health_s: float = 2.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _positive(getattr(self, f.name), f"timeouts.{f.name}")


@dataclass(frozen=True)
class HealthConfig:
    """Health checks and the per-instance circuit breaker."""

    interval_s: float = 2.0
    failure_threshold: int = 3  # consecutive failures that open the breaker
    open_s: float = 5.0  # first cool-down; doubles per re-open up to max_open_s
    max_open_s: float = 30.0
    scrape_interval_s: float = 5.0  # upstream /metrics, to correct in-flight drift

    def __post_init__(self) -> None:
        for name in ("interval_s", "open_s", "max_open_s", "scrape_interval_s"):
            _positive(getattr(self, name), f"health.{name}")
        _check(isinstance(self.failure_threshold, int) and self.failure_threshold >= 1,
               "health.failure_threshold", "must be an integer >= 1")
        _check(self.max_open_s >= self.open_s, "health.max_open_s", "must be >= health.open_s")


@dataclass(frozen=True)
class ProxyConfig:
    """Everything ``vllm-pd proxy`` needs; flags override the YAML file, which overrides these defaults."""

    pool: PoolConfig = field(default_factory=PoolConfig)
    models: dict[str, PoolConfig] = field(default_factory=dict)  # per-model pools
    host: str = "127.0.0.1"
    port: int = 8000
    policy: str = "goodput"
    slo: SLO = DEFAULT_SLO
    admission: str = "best-effort"  # when no pair is predicted to meet the SLOs
    local_prefill: bool = True  # allow the decode instance to prefill when predicted better
    local_stall_budget: float = 4.0  # a local prefill may stall the decoder <= this many TPOT SLOs
    fallback_local: bool = True  # prefill failed everywhere -> prefill on the decode instance
    warm_pairs: bool = True  # make each pair's first KV handoff (the connector's handshake) before clients do
    max_prefill_attempts: int = 2  # remote prefill instances tried per request
    max_decode_attempts: int = 2  # decode instances tried per request before the first token
    latency_profile: str | None = None
    tokenizer: str | None = None  # a tokenizer.json or model dir, for exact prompt counts
    api_key: str | None = None  # when set, clients must send ``Authorization: Bearer <key>``
    max_body_bytes: int = 32 * 1024 * 1024
    max_connections: int = 256  # per upstream instance
    timeouts: TimeoutConfig = field(default_factory=TimeoutConfig)
    health: HealthConfig = field(default_factory=HealthConfig)

    def __post_init__(self) -> None:
        _check(self.policy in POLICIES, "policy", f"must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        _check(self.admission in ADMISSIONS, "admission", f"must be one of {', '.join(ADMISSIONS)}")
        _check(isinstance(self.port, int) and 0 <= self.port < 65536, "port", f"bad port {self.port!r}")
        _positive(self.local_stall_budget, "local_stall_budget")
        for name in ("max_prefill_attempts", "max_decode_attempts", "max_body_bytes", "max_connections"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= 1, name, f"must be an integer >= 1, got {value!r}")
        if self.latency_profile is not None:
            _check(Path(self.latency_profile).is_file(), "latency_profile", f"no such file {self.latency_profile}")
        if self.tokenizer is not None:
            _check(Path(self.tokenizer).exists(), "tokenizer", f"no such file or directory {self.tokenizer}")
        if not self.pool.empty:
            self.pool.check_servable("--prefill/--decode/--both")
        for name, pool in self.models.items():
            pool.check_servable(f"models.{name}")
        _check(not self.pool.empty or bool(self.models), "--decode", "no upstream instances given")

    def pool_for(self, model: str | None) -> PoolConfig | None:
        """The pool serving ``model``: its own if configured, else the default one (None if neither)."""
        if model is not None and model in self.models:
            return self.models[model]
        return None if self.pool.empty else self.pool

    def all_urls(self) -> list[str]:
        pools = [self.pool, *self.models.values()]
        return list(dict.fromkeys(u for p in pools for u in (*p.prefill, *p.decode, *p.both)))


# Each section starts from its defaults, so a YAML or flag may set one field of it.
_SECTIONS = {"slo": DEFAULT_SLO, "timeouts": TimeoutConfig(), "health": HealthConfig()}
_POOL_KEYS = ("prefill", "decode", "both")


def _build(cls: type, raw: Any, setting: str) -> Any:
    _check(isinstance(raw, dict), setting, "must be a mapping")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    _check(not unknown, setting, f"unknown setting(s) {', '.join(map(str, unknown))}")
    try:
        return cls(**raw)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{setting}: {exc}") from None


def _pool(raw: dict[str, Any], setting: str) -> PoolConfig:
    for key in _POOL_KEYS:
        value = raw.get(key, ())
        _check(isinstance(value, (list, tuple)), f"{setting}.{key}", "must be a list of URLs")
    return _build(PoolConfig, {k: tuple(v) for k, v in raw.items()}, setting)


def config_from_mapping(raw: dict[str, Any]) -> ProxyConfig:
    """Build a config from the YAML shape (top-level pool keys, sections, ``models: {name: pool}``)."""
    raw = dict(raw)
    pool = _pool({k: raw.pop(k) for k in _POOL_KEYS if k in raw}, "pool")
    models_raw = raw.pop("models", {}) or {}
    _check(isinstance(models_raw, dict), "models", "must map model names to pools")
    models = {str(name): _pool(p or {}, f"models.{name}") for name, p in models_raw.items()}
    sections = {}
    for key, default in _SECTIONS.items():
        if key in raw:
            given = raw.pop(key) or {}
            _check(isinstance(given, dict), key, "must be a mapping")
            sections[key] = _build(type(default), {**dataclasses.asdict(default), **given}, key)
    return _build(ProxyConfig, {**raw, **sections, "pool": pool, "models": models}, "config")


def load_config(path: str | Path | None, overrides: dict[str, Any]) -> ProxyConfig:
    """YAML file (optional) merged with flag overrides (``None`` values mean "not given")."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"--config: cannot read {path}: {exc}") from None
        _check(isinstance(loaded, dict), "--config", f"{path} must hold a mapping")
        raw = loaded
    for key, value in overrides.items():
        if value is None:
            continue
        if "." in key:
            section, name = key.split(".", 1)
            raw[section] = {**(raw.get(section) or {}), name: value}
        else:
            raw[key] = value
    return config_from_mapping(raw)
