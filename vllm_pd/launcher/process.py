"""One server subprocess: started in its own process group, probed for health, stopped with all its children."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from vllm_pd.launcher.spec import ServerSpec


class ServerFailed(RuntimeError):
    """A server exited or never became healthy; carries the tail of its log."""

    def __init__(self, name: str, reason: str, log_tail: str) -> None:
        super().__init__(f"server {name} {reason}\n--- last lines of its log ---\n{log_tail}")
        self.name = name
        self.reason = reason
        self.log_tail = log_tail


class ServerProcess:
    def __init__(self, spec: ServerSpec, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.spec = spec
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self._popen: subprocess.Popen[bytes] | None = None
        self._known: dict[int, psutil.Process] = {}

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            # A new session makes the server the leader of its own process group, so stopping it
            # reaches the engine-core and worker processes vLLM spawns.
            self._popen = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def returncode(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def is_healthy(self, timeout: float = 2.0) -> bool:
        try:
            with urllib.request.urlopen(self.spec.url + self.spec.health_path, timeout=timeout) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def warm_up(self, timeout: float) -> None:
        """One short greedy request with logprobs, before the server counts as ready.

        vLLM compiles its logprobs kernel (``torch.compile``; inductor on a CPU) on the first request that
        asks for logprobs: 2 s on an idle CPU box, 20 s on a loaded one, enough for a first request to miss
        a proxy's prefill timeout or NixlConnector's 30 s lease. Paid here, it stays off client requests.
        """
        body = json.dumps({"model": self.served_model(timeout), "prompt": list(range(1, 9)), "max_tokens": 2,
                           "temperature": 0, "logprobs": 1}).encode()
        request = urllib.request.Request(self.spec.url + "/v1/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            raise ServerFailed(self.spec.name, f"answered its warm-up request with HTTP {exc.code}: "
                               f"{exc.read()[:300].decode(errors='replace')}", self.log_tail()) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ServerFailed(self.spec.name, f"did not answer its warm-up request: {exc}", self.log_tail()) from None

    def served_model(self, timeout: float) -> str:
        try:
            with urllib.request.urlopen(self.spec.url + "/v1/models", timeout=timeout) as resp:
                return json.load(resp)["data"][0]["id"]
        except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError) as exc:
            raise ServerFailed(self.spec.name, f"did not list its model on /v1/models: {exc}", self.log_tail()) from None

    def check_alive(self) -> None:
        code = self.returncode()
        if code is not None:
            raise ServerFailed(self.spec.name, f"exited with code {code}", self.log_tail())

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def track_children(self) -> None:
        """Remember descendants while they exist, so stop() can reap ones that left the process group."""
        if self._popen is None or self.returncode() is not None:
            return
        try:
            root = psutil.Process(self._popen.pid)
            for proc in [root, *root.children(recursive=True)]:
                self._known.setdefault(proc.pid, proc)
        except psutil.NoSuchProcess:
            pass

    def terminate(self) -> None:
        """Ask the whole process group to stop (SIGTERM); ``reap`` finishes the job."""
        if self._popen is None:
            return
        self.track_children()
        _signal_group(self._popen.pid, signal.SIGTERM)

    def reap(self, deadline: float) -> None:
        """Wait until ``deadline`` (monotonic) for the group to exit, then SIGKILL what is left; idempotent."""
        if self._popen is None:
            return
        while time.monotonic() < deadline and self._survivors():
            time.sleep(0.1)
        _signal_group(self._popen.pid, signal.SIGKILL)
        for proc in self._survivors():
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(list(self._known.values()), timeout=5)
        self._popen.wait(timeout=5)

    def _survivors(self) -> list[psutil.Process]:
        self._popen.poll()
        return [p for p in self._known.values() if _alive(p)]

    def all_pids(self) -> set[int]:
        self.track_children()
        return set(self._known)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
