"""``vllm-pd proxy``: the goodput-aware OpenAI-compatible router in front of prefill/decode servers."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from vllm_pd.proxy.config import ADMISSIONS, POLICIES, ConfigError, ProxyConfig, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--prefill", nargs="+", action="extend", metavar="URL", help="prefill (kv_producer) instances")
    add("--decode", nargs="+", action="extend", metavar="URL", help="decode (kv_consumer) instances")
    add("--both", nargs="+", action="extend", metavar="URL", help="kv_both instances (either role)")
    add("--config", metavar="YAML", help="settings file (same names as the flags, plus per-model pools)")
    add("--host", help="address to listen on (default 127.0.0.1)")
    add("--port", type=int, help="port to listen on (default 8000)")
    add("--policy", choices=POLICIES, help="pair choice (default goodput)")
    add("--ttft-slo", type=float, metavar="S", help="time-to-first-token SLO in seconds (default 0.5)")
    add("--tpot-slo", type=float, metavar="S", help="time-per-output-token SLO in seconds (default 0.05)")
    add("--admission", choices=ADMISSIONS, help="when no pair is predicted to meet the SLOs (default best-effort)")
    add("--no-local-prefill", dest="local_prefill", action="store_const", const=False,
        help="never choose prefill on the decode instance up front")
    add("--no-fallback-local", dest="fallback_local", action="store_const", const=False,
        help="fail the request instead of prefilling on the decode instance when every prefill fails")
    add("--no-warm-pairs", dest="warm_pairs", action="store_const", const=False,
        help="do not send each prefill/decode pair a one-token request when both are up (their first KV "
             "handoff, which pays the connector's handshake, is then paid by a client)")
    add("--latency-profile", metavar="FILE", help="latency coefficients (YAML/JSON, vllm_pd.latency format)")
    add("--tokenizer", metavar="PATH", help="tokenizer.json or model directory for exact prompt counts")
    add("--api-key", help="require 'Authorization: Bearer KEY' from clients")
    add("--prefill-timeout", dest="timeouts.prefill_s", type=float, metavar="S",
        help="cut a prefill leg after this long and fail over (default 30)")
    add("--log-level", default="warning", choices=("debug", "info", "warning", "error"))


def config_from_args(args: argparse.Namespace) -> ProxyConfig:
    overrides = {
        "prefill": args.prefill, "decode": args.decode, "both": args.both,
        "host": args.host, "port": args.port, "policy": args.policy, "admission": args.admission,
        "slo.ttft_s": args.ttft_slo, "slo.tpot_s": args.tpot_slo,
        "local_prefill": args.local_prefill, "fallback_local": args.fallback_local, "warm_pairs": args.warm_pairs,
        "latency_profile": args.latency_profile, "tokenizer": args.tokenizer, "api_key": args.api_key,
        "timeouts.prefill_s": getattr(args, "timeouts.prefill_s"),
    }
    return load_config(args.config, overrides)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"vllm-pd proxy: error: {exc}", file=sys.stderr)
        return 2
    from aiohttp import web

    from vllm_pd.proxy.app import build_app

    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    print(f"vllm-pd proxy on http://{config.host}:{config.port} ({config.policy}); upstream: "
          f"{', '.join(config.all_urls())}", flush=True)
    web.run_app(build_app(config), host=config.host, port=config.port, access_log=None,
                handler_cancellation=True, print=None)
    return 0
