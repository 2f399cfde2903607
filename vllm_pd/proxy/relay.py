"""Relaying a decode SSE stream to the client: bytes pass through untouched.

Per chunk the relay only counts events and looks for error markers with byte searches; it parses JSON
only for the rare chunk that may carry an error, and for the final ``usage`` (from a short tail).
"""

from __future__ import annotations

import re
import time

import msgspec

_DATA = b"data: "
_DONE = b"data: [DONE]"
_ERROR_HINT = b'"error'  # in '"error":' and 'finish_reason":"error"' alike
_PROMPT_TOKENS = re.compile(rb'"prompt_tokens":\s*(\d+)')
_COMPLETION_TOKENS = re.compile(rb'"completion_tokens":\s*(\d+)')
_TAIL_BYTES = 1024
_json = msgspec.json.Decoder()


def error_event(message: str, code: int = 502) -> bytes:
    """The SSE event that ends a stream whose decoder failed (clients see an error, not a silent close)."""
    payload = msgspec.json.encode({"error": {"message": message, "type": "UpstreamError", "code": code}})
    return b"data: " + payload + b"\n\n" + _DONE + b"\n\n"


def chunk_has_error(chunk: bytes) -> bool:
    """Whether a chunk carries an error event or a choice with ``finish_reason: "error"``."""
    if _ERROR_HINT not in chunk:
        return False
    for line in chunk.split(b"\n"):
        if not line.startswith(_DATA) or line.startswith(_DONE):
            continue
        try:
            event = _json.decode(line[len(_DATA):])
        except msgspec.DecodeError:
            continue  # split across chunks: the marker is only a hint
        if not isinstance(event, dict):
            continue
        if "error" in event or event.get("object") == "error":
            return True
        choices = event.get("choices")
        if isinstance(choices, list) and any(isinstance(c, dict) and c.get("finish_reason") == "error" for c in choices):
            return True
    return False


class StreamStats:
    """What the relay learns from the bytes it passes on."""

    def __init__(self, first_chunk_at: float) -> None:
        self.first_at = first_chunk_at
        self.last_at = first_chunk_at
        self.events = 0
        self.errored = False
        self._tail = b""

    def see(self, chunk: bytes) -> None:
        self.last_at = time.monotonic()
        self.events += chunk.count(_DATA)
        if chunk_has_error(chunk):
            self.errored = True
        self._tail = (self._tail + chunk)[-_TAIL_BYTES:] if len(chunk) < _TAIL_BYTES else chunk[-_TAIL_BYTES:]

    def usage(self) -> tuple[int | None, int | None]:
        """``(prompt_tokens, completion_tokens)`` from the final usage chunk, when the stream had one."""
        prompt = _PROMPT_TOKENS.findall(self._tail)
        completion = _COMPLETION_TOKENS.findall(self._tail)
        return (int(prompt[-1]) if prompt else None, int(completion[-1]) if completion else None)

    def output_tokens(self) -> int:
        _, completion = self.usage()
        if completion is not None:
            return completion
        return max(0, self.events - 1)  # minus [DONE]; an approximation when usage was not asked for
