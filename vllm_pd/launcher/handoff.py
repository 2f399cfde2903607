"""One KV handoff per prefill->decode pair before a deployment counts as ready.

A decoder meets a prefill instance lazily: the first request it pulls from that producer pays the
side-channel handshake and the NIXL agent exchange. vLLM's NixlConnector gives the handshake a 5 s
receive timeout; on a loaded host it can miss it, and with the default ``kv_load_failure_policy: fail``
that first client gets an HTTP 500. Done here, with retries, the handshake stays off client requests,
and a pair that cannot hand KV over at all fails the start with both names.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import httpx

from vllm_pd.launcher.process import ServerFailed, ServerProcess
from vllm_pd.testing.pd_client import disaggregated

PRODUCERS = ("kv_producer", "kv_both")
CONSUMERS = ("kv_consumer", "kv_both")


def _kv_role(server: ServerProcess) -> str | None:
    config = server.spec.kv_transfer_config
    return config.get("kv_role") if config and server.spec.command is None else None


def _can_hand_off(producer: ServerProcess, consumer: ServerProcess) -> bool:
    """Only a server of the same connector and model can take a producer's KV: a NixlConnector decoder
    sent a PDConnector prefill's params would handshake with a side channel that speaks another protocol."""
    p, c = producer.spec, consumer.spec
    return (p.kv_transfer_config or {}).get("kv_connector") == (c.kv_transfer_config or {}).get("kv_connector") \
        and p.model == c.model


def handoff_pairs(servers: Sequence[ServerProcess]) -> list[tuple[ServerProcess, ServerProcess]]:
    """Every (producer, consumer) pair of distinct vLLM servers that can hand KV to each other."""
    producers = [s for s in servers if _kv_role(s) in PRODUCERS]
    consumers = [s for s in servers if _kv_role(s) in CONSUMERS]
    return [(p, c) for p in producers for c in consumers if p is not c and _can_hand_off(p, c)]


def warm_handoff(prefill: ServerProcess, decode: ServerProcess, timeout: float, attempts: int = 3,
                 pause_s: float = 1.0) -> None:
    """Prefill a short prompt on ``prefill`` and decode it on ``decode``; retry a failed pull.

    A failed handshake is forgotten by the connector, so the next request handshakes again.
    """
    body = {"model": decode.served_model(timeout), "prompt": list(range(1, 41)), "max_tokens": 2,
            "temperature": 0}
    failure = ""
    with httpx.Client(timeout=timeout) as client:
        for attempt in range(attempts):
            if attempt:
                time.sleep(pause_s)
            try:
                disaggregated(client, prefill.spec.url, decode.spec.url, "/v1/completions", body)
                return
            except httpx.HTTPStatusError as exc:
                failure = f"HTTP {exc.response.status_code} from {exc.request.url}: {exc.response.text[:300]}"
            except (httpx.HTTPError, RuntimeError) as exc:
                failure = f"{type(exc).__name__}: {exc}"
    raise ServerFailed(decode.spec.name, f"could not take over KV from {prefill.spec.name} in {attempts} tries; "
                       f"last: {failure}", decode.log_tail())
