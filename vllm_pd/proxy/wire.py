"""Client request parsing and the bodies of the two legs (the P/D protocol).

Prefill leg: the client's request with ``max_tokens: 1`` (and ``max_completion_tokens`` if given),
``stream: false``, no ``stream_options``/``min_tokens``/``min_completion_tokens``, and
``kv_transfer_params: {"do_remote_decode": true, "do_remote_prefill": false}``.
Decode leg: the client's request plus the ``kv_transfer_params`` the prefill returned, verbatim.
A client-supplied ``kv_transfer_params`` is always dropped: it could point a decoder at any address.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

COMPLETIONS = "/v1/completions"
CHAT = "/v1/chat/completions"
DEFAULT_OUTPUT_TOKENS = 256  # assumed when the client sets no max_tokens
PREFIX_BYTES = 1024  # prompts at least this long get a prefix-affinity key
PREFILL_PARAMS = {"do_remote_decode": True, "do_remote_prefill": False}
_PREFILL_DROPPED = ("stream_options", "min_tokens", "min_completion_tokens")

_decoder = msgspec.json.Decoder()
encode = msgspec.json.Encoder().encode


class BadRequest(ValueError):
    """The client's request is malformed; the message says how (sent back as HTTP 400)."""


@dataclass(frozen=True)
class ClientRequest:
    endpoint: str
    body: dict[str, Any]  # without any client kv_transfer_params
    model: str | None
    stream: bool
    prompt_text: str
    prompt_ids: int  # prompt tokens given directly as ids
    max_tokens: int | None

    @property
    def output_tokens(self) -> int:
        return self.max_tokens or DEFAULT_OUTPUT_TOKENS

    @property
    def prefix_key(self) -> int | None:
        text = self.prompt_text
        return hash(text[:PREFIX_BYTES]) if len(text) >= PREFIX_BYTES else None


def parse_request(endpoint: str, raw: bytes) -> ClientRequest:
    try:
        body = _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    body.pop("kv_transfer_params", None)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest("'model' must be a string")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be true or false")
    max_tokens = _max_tokens(body)
    text, ids = _chat_prompt(body) if endpoint == CHAT else _completion_prompt(body)
    return ClientRequest(endpoint, body, model, stream, text, ids, max_tokens)


def _max_tokens(body: dict[str, Any]) -> int | None:
    values = []
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise BadRequest(f"'{key}' must be a positive integer, got {value!r}")
        values.append(value)
    return min(values) if values else None


def _completion_prompt(body: dict[str, Any]) -> tuple[str, int]:
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt, 0
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return "".join(prompt), 0
        if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
            return "", len(prompt)
        if all(isinstance(p, list) and all(isinstance(t, int) for t in p) for p in prompt):
            return "", sum(len(p) for p in prompt)
    raise BadRequest("'prompt' must be a string, a list of strings, or a list of token ids")


def _chat_prompt(body: dict[str, Any]) -> tuple[str, int]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list")
    parts: list[str] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a 'role'")
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return "\n".join(parts), 0


def prefill_body(req: ClientRequest) -> bytes:
    body = dict(req.body)
    for key in _PREFILL_DROPPED:
        body.pop(key, None)
    body["stream"] = False
    body["max_tokens"] = 1
    if "max_completion_tokens" in body:
        body["max_completion_tokens"] = 1
    body["kv_transfer_params"] = PREFILL_PARAMS
    return encode(body)


def decode_body(req: ClientRequest, kv_transfer_params: dict[str, Any] | None) -> bytes:
    if kv_transfer_params is None:
        return encode(req.body)
    return encode({**req.body, "kv_transfer_params": kv_transfer_params})


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class PrefillReply(msgspec.Struct):
    kv_transfer_params: dict[str, Any] | None = None
    usage: _Usage | None = None


class PDHandoff(msgspec.Struct):
    """Timings PDConnector's decoder reports (wall clock, comparable across processes)."""

    prefill_done: float
    pull_start: float
    pull_done: float
    bytes: int = 0
    descriptors: int = 0
    outcome: str = ""


class _DecodeParams(msgspec.Struct):
    pd_handoff: PDHandoff | None = None


class _Choice(msgspec.Struct):
    finish_reason: str | None = None


class DecodeReply(msgspec.Struct):
    """The few fields of a non-streamed answer the proxy reads (the body itself is relayed as is)."""

    choices: list[_Choice] = []
    usage: _Usage | None = None
    kv_transfer_params: _DecodeParams | None = None
    error: Any = None

    @property
    def failed(self) -> bool:
        return self.error is not None or any(c.finish_reason == "error" for c in self.choices)


decode_prefill_reply = msgspec.json.Decoder(PrefillReply).decode
decode_decode_reply = msgspec.json.Decoder(DecodeReply).decode
