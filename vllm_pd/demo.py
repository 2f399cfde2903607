"""``vllm-pd demo``: the main job on the embedded default, checked against the oracle.

Builds the tiny model, starts one prefill and one decode server (with the proxy in front when it is
installed) plus a plain single instance, sends a few greedy requests through the disaggregated path and
prints each answer beside the single instance's. Exits non-zero if any answer differs by a token.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from vllm_pd.cli import COMMANDS
from vllm_pd.launcher import CONNECTORS, Deployment, ServerSpec, free_port
from vllm_pd.launcher.topology import CPU_DEFAULT_ARGS, Topology
from vllm_pd.testing.pd_client import completion_tokens, disaggregated

PROMPTS = [
    "Disaggregated serving splits prefill and decode across instances.",
    "The prefill instance computes the KV cache of the prompt, block by block. " * 8,
    "Goodput counts the requests per second that meet both the TTFT and the TPOT objective. " * 20,
]
CHAT = "A proxy chooses a prefill and a decode instance for every request. " * 6


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--connector", choices=sorted(CONNECTORS), default="pd",
                        help="KV connector of the prefill/decode pair")
    parser.add_argument("--model", type=Path, help="model directory (default: build the tiny model)")
    parser.add_argument("--max-tokens", type=int, default=16, help="tokens generated per request")
    parser.add_argument("--no-proxy", action="store_true", help="do the two legs from the client")


def _requests(model: str, max_tokens: int) -> list[tuple[str, str, dict[str, Any]]]:
    common = {"model": model, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
              "return_token_ids": True}
    items = [(p[:28], "/v1/completions", {**common, "prompt": p, "logprobs": 1}) for p in PROMPTS]
    items.append((f"chat: {CHAT[:22]}", "/v1/chat/completions",
                  {**common, "messages": [{"role": "user", "content": CHAT}], "logprobs": True}))
    return items


def _specs(args: argparse.Namespace, model: str) -> tuple[list[ServerSpec], bool]:
    specs = Topology(model=model, prefill=1, decode=1, connector=args.connector, cpus=("0", "1")).specs()
    specs.append(ServerSpec(name="single", role="single", model=model, port=free_port(), cpus="0",
                            extra_args=CPU_DEFAULT_ARGS))
    use_proxy = "proxy" in COMMANDS and not args.no_proxy
    if use_proxy:
        from vllm_pd.launcher.up import proxy_spec

        # Every request takes the P->D path here: the point is to show the KV handoff.
        specs.append(proxy_spec("127.0.0.1", free_port(), specs, extra=("--no-local-prefill",)))
    return specs, use_proxy


def run(args: argparse.Namespace) -> int:
    console = Console()
    workdir = Path(tempfile.mkdtemp(prefix="vllm-pd-demo-"))
    if args.model is None:
        from vllm_pd.testing.tiny_model import make_tiny_model

        args.model = make_tiny_model(workdir / "tiny-model")
    model = str(args.model)
    specs, use_proxy = _specs(args, model)
    table = Table(title=f"disaggregated ({args.connector}{' + proxy' if use_proxy else ''}) vs single instance")
    for col in ("request", "route", "prompt tokens", "first token ids", "same as single"):
        table.add_column(col, no_wrap=col != "request")
    mismatches = 0
    with Deployment(specs, workdir / "logs", progress=True, console=console) as deployment, \
            httpx.Client(timeout=httpx.Timeout(120.0, connect=5.0)) as client:
        for label, path, body in _requests(model, args.max_tokens):
            single = client.post(deployment.url("single") + path, json=body)
            single.raise_for_status()
            if use_proxy:
                response = client.post(deployment.url("proxy") + path, json=body)
                response.raise_for_status()
                answer, route = response.json(), response.headers.get("X-PD-Route", "?")
            else:
                _, answer = disaggregated(client, deployment.url("prefill0"), deployment.url("decode0"),
                                          path, body)
                route = "remote (client-driven)"
            ids, _ = completion_tokens(answer)
            same = completion_tokens(single.json())[0] == ids
            mismatches += not same
            table.add_row(label, route, str(answer["usage"]["prompt_tokens"]), str(ids[:6]),
                          "yes" if same else "[red]NO[/red]")
    console.print(table)
    console.print(f"logs: {workdir / 'logs'}")
    if mismatches:
        console.print(f"[red]{mismatches} answer(s) differ from the single instance[/red]")
        return 1
    console.print("[green]every disaggregated answer equals the single instance's, token for token[/green]")
    return 0
