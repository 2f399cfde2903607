"""The ``vllm-pd`` command: one subcommand per module, imported only when used.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``.
Subcommand modules must stay import-light (no torch, no vLLM at import time).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("vllm_pd.launcher.up", "start a local prefill/decode deployment of vLLM servers"),
    "demo": ("vllm_pd.demo", "run a local 1 prefill + 1 decode deployment and check it against one instance"),
    "make-tiny-model": ("vllm_pd.testing.tiny_model", "build a small random Llama that needs no download"),
    "bench": ("vllm_pd.bench.cli", "goodput benchmark: SLO attainment vs request rate, per endpoint"),
    "proxy": ("vllm_pd.proxy.cli", "goodput-aware OpenAI-compatible router in front of prefill/decode servers"),
    "plan": ("vllm_pd.planner.cli", "placement planner: P/D instance counts, TP/PP and placement for your SLOs"),
    "profile": ("vllm_pd.planner.profiler.cli", "measure a live vLLM server and fit latency coefficients"),
}


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """Only the selected subcommand's module is imported, so one command never pays for another."""
    parser = argparse.ArgumentParser(prog="vllm-pd", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            module = importlib.import_module(module_name)
            module.add_arguments(cmd)
            cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(selected).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
