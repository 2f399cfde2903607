"""Every message PDConnector sends between processes, as msgspec Structs.

Three channels carry them:
- ``kv_transfer_params`` (producer response -> proxy -> consumer request): :class:`HandoffParams`.
- the side channel (ZMQ REQ/ROUTER, consumer -> producer's EngineCore process): :class:`SideRequest`
  and the replies :class:`HandshakeReply`, :class:`LeaseReply`.
- NIXL notifications (consumer worker -> producer worker): :class:`PullNotice`.

PROTOCOL_VERSION changelog:
- 1: first version (handshake with incarnation and layout fingerprint, lease renew/release,
  pull-done and release notices).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

PROTOCOL_VERSION = 1


class ProtocolError(ValueError):
    """A peer sent something this version cannot use (wrong version, bad fields)."""


class HandoffParams(msgspec.Struct, frozen=True, kw_only=True):
    """Where a consumer pulls a prefilled prompt from; the producer's ``kv_transfer_params``.

    ``lease_deadline`` and ``prefill_done`` are the producer's wall clock (``time.time()``).
    """

    do_remote_prefill: bool = True
    do_remote_decode: bool = False
    pd_protocol: int
    remote_engine_id: str
    remote_incarnation: str
    remote_host: str
    remote_port: int
    remote_request_id: str
    remote_block_ids: list[int]
    remote_num_tokens: int
    lease_deadline: float
    layout_fingerprint: str
    tp_size: int
    prefill_done: float


class HandoffTimings(msgspec.Struct, frozen=True):
    """``pd_handoff`` in the consumer's response: lets the proxy split TTFT (wall clock seconds)."""

    prefill_done: float
    pull_start: float
    pull_done: float
    bytes: int
    descriptors: int
    outcome: Literal["pulled", "recomputed", "cached"]


class Region(msgspec.Struct, frozen=True, array_like=True):
    """One registered KV region (a layer's cache): ``num_blocks`` pages of ``block_len`` bytes."""

    base_addr: int
    block_len: int
    num_blocks: int


class SideReply(msgspec.Struct, frozen=True, tag_field="kind", kw_only=True):
    """Base of side-channel replies (tagged union)."""

    pd_protocol: int


class HandshakeReply(SideReply, frozen=True, tag="identity", kw_only=True):
    """A producer worker's NIXL identity, served by the producer's side channel."""

    engine_id: str
    incarnation: str
    tp_rank: int
    agent_metadata: bytes
    regions: list[Region]
    layout_fingerprint: str
    device_id: int
    mem_type: str
    clock: float = 0.0  # producer time.time() when the reply was sent, to estimate clock offset


class SideRequest(msgspec.Struct, frozen=True, tag_field="kind", kw_only=True):
    """Base of side-channel requests (tagged union)."""

    pd_protocol: int


class HandshakeRequest(SideRequest, frozen=True, tag="handshake", kw_only=True):
    tp_rank: int


class LeaseRenew(SideRequest, frozen=True, tag="renew", kw_only=True):
    """Keep these leases alive: the consumer is still waiting to pull them."""

    incarnation: str
    request_ids: list[str]


class LeaseRelease(SideRequest, frozen=True, tag="release", kw_only=True):
    """Free these leases now: the consumer will never pull them (rejected, aborted, cached)."""

    incarnation: str
    request_ids: list[str]


class LeaseReply(SideReply, frozen=True, tag="leases", kw_only=True):
    """Per request: the new deadline (producer clock), or absent when the lease is gone."""

    incarnation: str
    deadlines: dict[str, float]


class ErrorReply(SideReply, frozen=True, tag="error", kw_only=True):
    error: str


NoticeKind = Literal["done", "release"]  # pulled, or given up on: either way the producer may free


class PullNotice(msgspec.Struct, frozen=True, array_like=True):
    """NIXL notification from consumer to producer worker: the blocks of a request may be freed."""

    kind: NoticeKind
    request_id: str
    incarnation: str


SIDE_REQUEST_TYPES = HandshakeRequest | LeaseRenew | LeaseRelease
_side_request_decoder = msgspec.msgpack.Decoder(SIDE_REQUEST_TYPES)
_notice_decoder = msgspec.msgpack.Decoder(PullNotice)
_encoder = msgspec.msgpack.Encoder()


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


def decode_side_request(data: bytes) -> SideRequest:
    try:
        return _side_request_decoder.decode(data)
    except msgspec.DecodeError as e:
        raise ProtocolError(f"bad side-channel request: {e}") from e


def decode_reply(data: bytes, reply_type: type[msgspec.Struct]) -> Any:
    """Decode a side-channel reply; an ErrorReply or a protocol mismatch raises ProtocolError."""
    try:
        reply = msgspec.msgpack.decode(data, type=reply_type | ErrorReply)
    except msgspec.DecodeError as e:
        raise ProtocolError(f"bad side-channel reply: {e}") from e
    if isinstance(reply, ErrorReply):
        raise ProtocolError(f"peer refused: {reply.error}")
    check_version(reply.pd_protocol, "peer")
    return reply


def decode_notice(data: bytes) -> PullNotice | None:
    """A PullNotice, or None for a notification that is not ours."""
    try:
        return _notice_decoder.decode(data)
    except msgspec.DecodeError:
        return None


def check_version(version: int, who: str) -> None:
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"PDConnector protocol mismatch: {who} speaks version {version}, this side "
            f"speaks {PROTOCOL_VERSION}; run the same vllm-pd version on prefill and decode"
        )


def parse_handoff(params: dict[str, Any]) -> HandoffParams:
    """Typed view of a consumer request's ``kv_transfer_params``; raises ProtocolError when unusable."""
    version = params.get("pd_protocol")
    if not isinstance(version, int):
        raise ProtocolError("kv_transfer_params lack pd_protocol: not produced by a PDConnector producer")
    check_version(version, "the producer that made these kv_transfer_params")
    try:
        return msgspec.convert(params, HandoffParams, strict=False)
    except msgspec.ValidationError as e:
        raise ProtocolError(f"bad PDConnector kv_transfer_params: {e}") from e
