"""The producer's side channel: handshakes and lease renew/release over ZMQ, bounded on both ends.

The server runs as one daemon thread in the producer's EngineCore process (where the lease table
lives); clients are consumer workers (handshake) and the consumer's scheduler (renew, release).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import msgspec
import zmq

from vllm_pd import wire

logger = logging.getLogger(__name__)

_POLL_MS = 200


class SideChannelError(RuntimeError):
    """The peer did not answer in time, or answered with an error."""


class SideChannelServer:
    """Answers :class:`wire.SideRequest` messages until ``close()``."""

    def __init__(
        self,
        host: str,
        port: int,
        incarnation: str,
        handshakes: dict[int, wire.HandshakeReply],
        renew: Callable[[list[str]], dict[str, float]],
        release: Callable[[list[str]], None],
    ) -> None:
        self._incarnation = incarnation
        self._handshakes = handshakes
        self._renew = renew
        self._release = release
        self._stop = threading.Event()
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        bind_host = "*" if host in ("0.0.0.0", "") else host
        try:
            self._sock.bind(f"tcp://{bind_host}:{port}")
        except zmq.ZMQError as e:
            self._sock.close()
            self._ctx.term()
            raise SideChannelError(f"PDConnector side channel cannot bind {host}:{port}: {e}") from e
        self._thread = threading.Thread(target=self._serve, name="pd-side-channel", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * _POLL_MS / 1000 + 1)
        self._sock.close()
        self._ctx.term()

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(_POLL_MS):
                continue
            identity, _, payload = self._sock.recv_multipart()
            try:
                reply = self._answer(payload)
            except Exception as e:  # a bad request must never kill the channel
                logger.warning("PDConnector side channel: %s", e)
                reply = wire.ErrorReply(pd_protocol=wire.PROTOCOL_VERSION, error=str(e))
            self._sock.send_multipart([identity, b"", wire.encode(reply)])

    def _answer(self, payload: bytes) -> msgspec.Struct:
        request = wire.decode_side_request(payload)
        wire.check_version(request.pd_protocol, "the consumer")
        if isinstance(request, wire.HandshakeRequest):
            reply = self._handshakes.get(request.tp_rank)
            if reply is None:
                raise wire.ProtocolError(f"no tensor-parallel rank {request.tp_rank} here")
            return msgspec.structs.replace(reply, clock=time.time())
        assert isinstance(request, (wire.LeaseRenew, wire.LeaseRelease))
        if request.incarnation != self._incarnation:
            # The producer restarted since these params were made: those blocks are gone.
            return wire.LeaseReply(pd_protocol=wire.PROTOCOL_VERSION, incarnation=self._incarnation, deadlines={})
        if isinstance(request, wire.LeaseRenew):
            deadlines = self._renew(request.request_ids)
        else:
            self._release(request.request_ids)
            deadlines = {}
        return wire.LeaseReply(pd_protocol=wire.PROTOCOL_VERSION, incarnation=self._incarnation, deadlines=deadlines)


def side_request(host: str, port: int, request: wire.SideRequest, reply_type: type, timeout_s: float):
    """One bounded round trip; raises SideChannelError on timeout, ProtocolError on a bad answer."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    timeout_ms = max(1, int(timeout_s * 1000))
    sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
    sock.setsockopt(zmq.SNDTIMEO, timeout_ms)
    try:
        sock.connect(f"tcp://{host}:{port}")
        sock.send(wire.encode(request))
        data = sock.recv()
    except zmq.Again as e:
        raise SideChannelError(f"PDConnector side channel {host}:{port} did not answer in {timeout_s}s") from e
    finally:
        sock.close()
    return wire.decode_reply(data, reply_type)
