"""What one benchmark run does, checked up front so that a bad flag fails before any request is sent."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from vllm_pd.slo import SLO
from vllm_pd.workloads import ARRIVALS

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


@dataclass(frozen=True)
class Endpoint:
    """A named OpenAI-compatible base URL (a proxy or a single vLLM server)."""

    name: str
    url: str

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"endpoint name {self.name!r}: use letters, digits and _ - . :")
        parsed = urlparse(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"{self.url!r} is not an http(s) URL like http://127.0.0.1:8000")


@dataclass(frozen=True)
class BenchConfig:
    """One run: every endpoint gets the same seeded requests at every rate, lowest rate first."""

    endpoints: tuple[Endpoint, ...]
    workload: str
    rates: tuple[float, ...]
    slo: SLO
    out: Path
    duration_s: float | None = 60.0
    num_requests: int | None = None
    arrival: str = "poisson"
    cv: float = 1.0
    seed: int = 0
    request_timeout_s: float = 300.0
    stop_below: float | None = None
    model: str | None = None
    tokenizer: str | None = None
    max_connections: int = 1024

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("give --url URL or --compare NAME=URL ...")
        names = [e.name for e in self.endpoints]
        if len(set(names)) != len(names):
            raise ValueError(f"--compare: endpoint names must differ, got {names}")
        if not self.rates or any(not r > 0 for r in self.rates):
            raise ValueError(f"--rates must be positive requests/s, got {list(self.rates)}")
        if self.duration_s is None and self.num_requests is None:
            raise ValueError("give --duration SECONDS or --num-requests N")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ValueError(f"--duration must be > 0 seconds, got {self.duration_s}")
        if self.num_requests is not None and self.num_requests <= 0:
            raise ValueError(f"--num-requests must be > 0, got {self.num_requests}")
        if self.arrival not in ARRIVALS:
            raise ValueError(f"--arrival must be one of {', '.join(ARRIVALS)}, got {self.arrival!r}")
        if not self.cv > 0:
            raise ValueError(f"--cv must be > 0, got {self.cv}")
        if self.arrival != "gamma" and self.cv != 1.0:
            raise ValueError(f"--cv {self.cv:g} needs --arrival gamma (poisson arrivals have cv 1)")
        if not self.request_timeout_s > 0:
            raise ValueError(f"--request-timeout must be > 0 seconds, got {self.request_timeout_s}")
        if self.stop_below is not None and not 0 <= self.stop_below < self.slo.attainment:
            raise ValueError(
                f"--stop-below must be in [0, --attainment={self.slo.attainment}), got {self.stop_below}"
            )
        if self.max_connections <= 0:
            raise ValueError(f"--max-connections must be > 0, got {self.max_connections}")


def parse_rates(text: str) -> tuple[float, ...]:
    """``"0.5,1,2"`` -> (0.5, 1.0, 2.0), sorted and deduplicated."""
    try:
        rates = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--rates takes comma-separated numbers like 0.5,1,2; got {text!r}") from None
    if not rates or any(not r > 0 for r in rates):
        raise ValueError(f"--rates must be positive requests/s, got {text!r}")
    return tuple(sorted(set(rates)))


def parse_endpoint(text: str) -> Endpoint:
    """``NAME=URL`` for --compare."""
    name, sep, url = text.partition("=")
    if not sep or not name or not url:
        raise ValueError(f"--compare takes NAME=URL items, got {text!r}")
    try:
        return Endpoint(name, url.rstrip("/"))
    except ValueError as exc:
        raise ValueError(f"--compare {text!r}: {exc}") from None
