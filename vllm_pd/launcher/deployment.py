"""A set of servers started together, healthy together, and stopped together on every path."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from vllm_pd.launcher.command import detect_vllm, server_argv, server_env
from vllm_pd.launcher.handoff import handoff_pairs, warm_handoff
from vllm_pd.launcher.ports import check_ports_free
from vllm_pd.launcher.process import ServerFailed, ServerProcess
from vllm_pd.launcher.spec import ServerSpec


class Deployment:
    """Start ``specs`` as subprocesses, wait until each answers its health probe (a vLLM server also a
    warm-up request, and each prefill->decode pair one KV handoff), stop all on exit.

    If any server dies or misses ``startup_timeout``, every server is stopped and ``ServerFailed`` names
    the failing one with its log tail. Servers listed in ``after`` start only once the others are
    healthy (the proxy waits for its upstreams).
    """

    def __init__(self, specs: Sequence[ServerSpec], log_dir: str | Path | None = None, *,
                 startup_timeout: float = 600.0, stop_grace: float = 15.0, progress: bool = False,
                 console: Console | None = None) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"server names must be unique: {names}")
        self.specs = list(specs)
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="vllm-pd-logs-"))
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.progress = progress
        self.console = console or Console(stderr=True)
        self.servers: dict[str, ServerProcess] = {}

    def __enter__(self) -> Deployment:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        check_ports_free((p, s.name) for s in self.specs for p in s.ports)
        needs_vllm = any(s.command is None for s in self.specs)
        flavour = detect_vllm() if needs_vllm else None
        try:
            self._start_group([s for s in self.specs if s.role != "proxy"], flavour)
            self._warm_handoffs()
            self._start_group([s for s in self.specs if s.role == "proxy"], flavour)
        except BaseException:
            self.stop()
            raise

    def _start_group(self, specs: list[ServerSpec], flavour) -> None:
        for spec in specs:
            self._spawn(spec, flavour)
        self._wait_healthy([self.servers[s.name] for s in specs])

    def _spawn(self, spec: ServerSpec, flavour) -> None:
        argv = server_argv(spec, flavour)
        env = server_env(spec, flavour)
        server = ServerProcess(spec, argv, env, self.log_dir / f"{spec.name}.log")
        self.servers[spec.name] = server
        server.start()

    def _wait_healthy(self, servers: list[ServerProcess]) -> None:
        if not servers:
            return
        deadline = time.monotonic() + self.startup_timeout
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=self.console, disable=not self.progress, transient=False) as bar:
            tasks = {s.spec.name: bar.add_task(f"{s.spec.name}: starting ({s.spec.url})", total=1)
                     for s in servers}
            pending = list(servers)
            while pending:
                for server in list(pending):
                    server.check_alive()
                    server.track_children()
                    if server.is_healthy():
                        if server.spec.command is None:  # a vLLM server
                            bar.update(tasks[server.spec.name], description=f"{server.spec.name}: warming up")
                            server.warm_up(max(deadline - time.monotonic(), 1.0))
                        pending.remove(server)
                        bar.update(tasks[server.spec.name], completed=1,
                                   description=f"{server.spec.name}: ready at {server.spec.url}")
                if pending and time.monotonic() > deadline:
                    server = pending[0]
                    raise ServerFailed(server.spec.name,
                                       f"not healthy after {self.startup_timeout:.0f} s", server.log_tail())
                if pending:
                    time.sleep(0.5)

    def _warm_handoffs(self) -> None:
        for prefill, decode in handoff_pairs(list(self.servers.values())):
            if self.progress:
                self.console.print(f"{decode.spec.name}: first KV handoff from {prefill.spec.name}")
            warm_handoff(prefill, decode, timeout=min(self.startup_timeout, 120.0))

    def url(self, name: str) -> str:
        return self.servers[name].spec.url

    def check_alive(self) -> None:
        """Raise ServerFailed if any server has exited; ``vllm-pd up`` calls it while it waits."""
        for server in self.servers.values():
            server.check_alive()
            server.track_children()

    def all_pids(self) -> set[int]:
        return set().union(*(s.all_pids() for s in self.servers.values())) if self.servers else set()

    def stop(self) -> None:
        """Stop every server in parallel: SIGTERM all, then SIGKILL whatever outlives ``stop_grace``."""
        for server in self.servers.values():
            server.terminate()
        deadline = time.monotonic() + self.stop_grace
        for server in self.servers.values():
            server.reap(deadline)
