"""``vllm-pd up``: a local P/D deployment in one command, stopped as a whole on Ctrl-C or any failure."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from vllm_pd.cli import COMMANDS
from vllm_pd.launcher.deployment import Deployment
from vllm_pd.launcher.ports import PortInUse, free_port
from vllm_pd.launcher.process import ServerFailed
from vllm_pd.launcher.spec import CONNECTORS, ServerSpec
from vllm_pd.launcher.topology import CPU_DEFAULT_ARGS, Topology

DEFAULT_MODEL_DIR = Path.home() / ".cache" / "vllm-pd" / "tiny-model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model directory; default: the tiny random Llama, built on first use")
    parser.add_argument("--prefill", type=int, default=1, help="prefill (kv_producer) servers")
    parser.add_argument("--decode", type=int, default=1, help="decode (kv_consumer) servers")
    parser.add_argument("--both", type=int, default=0, help="kv_both servers (either role per request)")
    parser.add_argument("--single", type=int, default=0, help="plain servers without a connector")
    parser.add_argument("--connector", choices=sorted(CONNECTORS), default="pd",
                        help="nixl: vLLM's built-in NixlConnector; pd: our PDConnector")
    parser.add_argument("--cpus", default="",
                        help="core sets per server, comma separated, in the order prefill, decode, both, "
                             "single (e.g. '0,1' or '0-3,4-7'); reused cyclically")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--base-port", type=int, help="first port; each server takes two (HTTP, side channel)")
    parser.add_argument("--proxy-port", type=int, help="port of the proxy in front of the servers")
    parser.add_argument("--no-proxy", action="store_true", help="start the servers only")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help=f"extra vLLM argument, repeatable (default set: {' '.join(CPU_DEFAULT_ARGS)})")
    parser.add_argument("--kv-extra", default="{}", help="kv_connector_extra_config as JSON")
    parser.add_argument("--log-dir", type=Path, help="where server logs go (default: a new temp dir)")
    parser.add_argument("--endpoints-file", type=Path, help="write the endpoints as JSON once all are ready")
    parser.add_argument("--startup-timeout", type=float, default=600.0, help="seconds to wait for health")


def _fail(message: str) -> SystemExit:
    return SystemExit(f"vllm-pd up: error: {message}")


def _topology(args: argparse.Namespace, model: str) -> Topology:
    try:
        kv_extra = json.loads(args.kv_extra)
    except json.JSONDecodeError as exc:
        raise _fail(f"--kv-extra is not valid JSON: {exc}") from None
    if not isinstance(kv_extra, dict):
        raise _fail("--kv-extra must be a JSON object")
    try:
        return Topology(
            model=model, prefill=args.prefill, decode=args.decode, both=args.both, single=args.single,
            connector=args.connector, host=args.host, base_port=args.base_port,
            cpus=tuple(c for c in args.cpus.split(",") if c),
            server_args=CPU_DEFAULT_ARGS + tuple(args.server_arg), kv_extra=kv_extra,
        )
    except ValueError as exc:
        raise _fail(str(exc)) from None


def proxy_spec(host: str, port: int, servers: list[ServerSpec], extra: tuple[str, ...] = ()) -> ServerSpec:
    """The proxy as one more process of the deployment, in front of ``servers``."""
    argv = [sys.executable, "-m", "vllm_pd.cli", "proxy", "--host", host, "--port", str(port)]
    for role in ("prefill", "decode", "both"):
        urls = [s.url for s in servers if s.role == role]
        if urls:
            argv += [f"--{role}", *urls]
    return ServerSpec(name="proxy", role="proxy", host=host, port=port, command=(*argv, *extra))


def _model_dir(args: argparse.Namespace, console: Console) -> str:
    if args.model:
        if not Path(args.model).exists():
            raise _fail(f"--model {args.model}: no such directory")
        return args.model
    if not (DEFAULT_MODEL_DIR / "config.json").exists():
        from vllm_pd.testing.tiny_model import make_tiny_model

        console.print(f"building the tiny model in {DEFAULT_MODEL_DIR}")
        make_tiny_model(DEFAULT_MODEL_DIR)
    return str(DEFAULT_MODEL_DIR)


def _print_endpoints(console: Console, deployment: Deployment) -> dict[str, dict[str, str]]:
    table = Table(title="vllm-pd deployment")
    for col in ("name", "role", "url", "pid", "log"):
        table.add_column(col)
    endpoints = {}
    for name, server in deployment.servers.items():
        spec = server.spec
        endpoints[name] = {"role": spec.role, "url": spec.url, "log": str(server.log_path)}
        table.add_row(name, spec.role, spec.url, str(server.pid), str(server.log_path))
    console.print(table)
    return endpoints


def _raise_on_sigterm() -> None:
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    _raise_on_sigterm()
    topology = _topology(args, _model_dir(args, console))
    specs = topology.specs()
    if "proxy" in COMMANDS and not args.no_proxy and topology.prefill + topology.decode + topology.both:
        specs.append(proxy_spec(args.host, args.proxy_port or free_port(args.host), specs))
    deployment = Deployment(specs, args.log_dir, startup_timeout=args.startup_timeout, progress=True,
                            console=console)
    try:
        deployment.start()
        endpoints = _print_endpoints(console, deployment)
        if args.endpoints_file:
            args.endpoints_file.write_text(json.dumps(endpoints, indent=2))
        console.print("all servers ready; Ctrl-C stops them all")
        while True:
            deployment.check_alive()
            time.sleep(1.0)
    except PortInUse as exc:
        raise _fail(str(exc)) from None
    except ServerFailed as exc:
        console.print(str(exc), style="red", highlight=False, markup=False)
        return 1
    except KeyboardInterrupt:
        console.print("stopping all servers")
        return 130
    finally:
        deployment.stop()
