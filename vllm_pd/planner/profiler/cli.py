"""``vllm-pd profile --url URL --out profile.yaml``: sweep a live vLLM server, fit, report the fit error."""

from __future__ import annotations

import argparse
import asyncio
import sys

from vllm_pd.latency import DecodeCoeffs, FitQuality, LatencyProfile, PrefillCoeffs, dump_profile


def _sizes(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--url", required=True, help="base URL of a running vLLM OpenAI server, e.g. http://127.0.0.1:8000")
    add("--out", required=True, help="where to write the fitted profile (.yaml or .json)")
    add("--model", help="served model name (default: the server's first model)")
    add("--tokenizer", help="tokenizer directory for text prompts (default: token-id prompts or the model dir)")
    add("--model-config", help="config.json or model dir, to record KV bytes per token in the profile")
    add("--dtype", help="the dtype the server runs (vLLM may downcast the checkpoint's; default: config.json's)")
    add("--prompt-lengths", type=_sizes, default=(16, 64, 256, 512, 1024), help="prefill prompt lengths")
    add("--batch-sizes", type=_sizes, default=(1, 2, 4), help="prefill batch sizes")
    add("--decode-batch-sizes", type=_sizes, default=(1, 2, 4, 8, 16), help="decode batch sizes")
    add("--context-lengths", type=_sizes, default=(32, 256, 1024), help="decode context lengths")
    add("--decode-tokens", type=_positive_int, default=24, help="tokens generated per decode measurement")
    add("--repeats", type=_positive_int, default=3, help="repetitions per point (the median is kept)")
    add("--tp", type=_positive_int, default=1, help="the server's tensor-parallel size (recorded in the profile)")
    add("--pp", type=_positive_int, default=1, help="the server's pipeline-parallel size")
    add("--timeout", type=float, default=120.0, help="seconds per request before giving up")


def run(args: argparse.Namespace) -> int:
    try:
        profile, report = asyncio.run(_profile(args))
    except TimeoutError:  # aiohttp's timeout carries no message
        print(f"vllm-pd profile: error: a request to {args.url} took longer than --timeout {args.timeout:g} s",
              file=sys.stderr)
        return 2
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"vllm-pd profile: error: {exc or type(exc).__name__}", file=sys.stderr)
        return 2
    dump_profile(profile, args.out)
    print(report)
    print(f"wrote {args.out}")
    return 0


async def _profile(args: argparse.Namespace) -> tuple[LatencyProfile, str]:
    import aiohttp
    import numpy as np

    from vllm_pd.bench.prompts import make_prompt_builder
    from vllm_pd.planner.model import load_model_spec
    from vllm_pd.planner.profiler.fit import decode_features, fit_nonnegative, prefill_features
    from vllm_pd.planner.profiler.sweep import Profiler, Sweep, run_sweep

    sweep = Sweep(args.prompt_lengths, args.batch_sizes, args.decode_batch_sizes, args.context_lengths,
                  args.decode_tokens, args.repeats)
    kv_bytes = load_model_spec(args.model_config, dtype=args.dtype).kv_bytes_per_token() if args.model_config else 0
    timeout = aiohttp.ClientTimeout(total=args.timeout, connect=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        model, max_model_len = await _served_model(session, args.url, args.model)
        profiler = Profiler(session, args.url, model, make_prompt_builder(model, args.tokenizer))
        prefill, decode = await run_sweep(profiler, sweep, max_model_len, lambda line: print(line, file=sys.stderr))
    pf = fit_nonnegative(prefill_features(prefill), np.array([s.seconds for s in prefill]))
    df = fit_nonnegative(decode_features(decode), np.array([s.seconds for s in decode]))
    profile = LatencyProfile(
        prefill=PrefillCoeffs(*pf.coeffs), decode=DecodeCoeffs(*df.coeffs), kv_bytes_per_token=kv_bytes,
        name=f"{model} at {args.url}", tp=args.tp, pp=args.pp, source="fitted",
        fit=FitQuality(prefill_mape=pf.mape, decode_mape=df.mape, prefill_samples=len(prefill),
                       decode_samples=len(decode)),
    )
    report = (f"prefill: a={pf.coeffs[0]:.4g} s  b={pf.coeffs[1]:.4g} s/token  c={pf.coeffs[2]:.4g} s/token^2  "
              f"(mean abs error {pf.mape:.1%} over {len(prefill)} points)\n"
              f"decode:  a={df.coeffs[0]:.4g} s  b={df.coeffs[1]:.4g} s/context token  c={df.coeffs[2]:.4g} s/request  "
              f"(mean abs error {df.mape:.1%} over {len(decode)} points)")
    return profile, report


async def _served_model(session, url: str, wanted: str | None) -> tuple[str, int]:
    """The model to profile and its context length, from ``/v1/models``."""
    import aiohttp

    try:
        async with session.get(url.rstrip("/") + "/v1/models") as response:
            if response.status != 200:
                raise RuntimeError(f"{url}/v1/models answered HTTP {response.status}")
            models = (await response.json())["data"]
    except aiohttp.ClientError as exc:
        raise RuntimeError(f"cannot reach {url}: {exc}") from exc
    if not models:
        raise RuntimeError(f"{url} serves no model")
    chosen = next((m for m in models if m["id"] == wanted), None) if wanted else models[0]
    if chosen is None:
        raise RuntimeError(f"{url} does not serve {wanted!r}; it serves {', '.join(m['id'] for m in models)}")
    return chosen["id"], int(chosen.get("max_model_len") or 2048)


