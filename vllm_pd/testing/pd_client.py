"""The P->D handoff done by hand, as a client that talks to both legs itself.

This is the protocol the proxy automates, written out once so that tests, the demo and the proxy
benchmark's baseline share it: prefill with ``max_tokens: 1`` and ``do_remote_decode``, then the
original request to decode with the prefill response's ``kv_transfer_params``.
"""

from __future__ import annotations

import copy
from typing import Any

import httpx

PREFILL_PARAMS = {"do_remote_decode": True, "do_remote_prefill": False}


def prefill_body(body: dict[str, Any]) -> dict[str, Any]:
    leg = copy.deepcopy(body)
    leg.update(max_tokens=1, stream=False, kv_transfer_params=dict(PREFILL_PARAMS))
    if "max_completion_tokens" in leg:
        leg["max_completion_tokens"] = 1
    for key in ("stream_options", "min_tokens"):
        leg.pop(key, None)
    return leg


def disaggregated(client: httpx.Client, prefill_url: str, decode_url: str, path: str,
                  body: dict[str, Any], request_id: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one request through prefill then decode; returns (prefill response, decode response)."""
    headers = {"X-Request-Id": request_id} if request_id else {}
    prefill = client.post(prefill_url + path, json=prefill_body(body), headers=headers)
    prefill.raise_for_status()
    prefill_json = prefill.json()
    params = prefill_json.get("kv_transfer_params")
    if not params:
        raise RuntimeError(f"prefill at {prefill_url} returned no kv_transfer_params: {prefill_json}")
    decode = client.post(decode_url + path, json={**body, "kv_transfer_params": params}, headers=headers)
    decode.raise_for_status()
    return prefill_json, decode.json()


def completion_tokens(response: dict[str, Any]) -> tuple[list[int], list[float]]:
    """(token ids, logprobs) of the first choice of a non-streamed completion or chat response.

    The request must set ``return_token_ids`` and ``logprobs``: ids, not text, are the oracle, since
    byte-level tokens of a random model often decode to nothing.
    """
    choice = response["choices"][0]
    logprobs = choice.get("logprobs") or {}
    if "token_logprobs" in logprobs:  # /v1/completions
        values = list(logprobs["token_logprobs"])
    else:  # /v1/chat/completions
        values = [c["logprob"] for c in logprobs.get("content") or []]
    return list(choice["token_ids"]), values
