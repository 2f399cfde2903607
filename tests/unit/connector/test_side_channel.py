"""The side channel for real over loopback ZMQ: handshake, renew, release, errors, bounded waits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vllm_pd import wire
from vllm_pd.connector.lease import LeaseTable
from vllm_pd.connector.side_channel import SideChannelError, SideChannelServer, side_request
from vllm_pd.launcher import free_port

INCARNATION = "inc-1"


def identity(tp_rank: int) -> wire.HandshakeReply:
    return wire.HandshakeReply(pd_protocol=wire.PROTOCOL_VERSION, engine_id="e", incarnation=INCARNATION,
                               tp_rank=tp_rank, agent_metadata=b"meta", regions=[wire.Region(4096, 512, 10)],
                               layout_fingerprint="fp", device_id=0, mem_type="DRAM")


@pytest.fixture
def served() -> Iterator[tuple[int, LeaseTable]]:
    port = free_port()
    table = LeaseTable(lease_s=30.0)
    server = SideChannelServer("127.0.0.1", port, INCARNATION, {0: identity(0)},
                               renew=lambda ids: table.renew(ids, now=100.0), release=table.release)
    try:
        yield port, table
    finally:
        server.close()


def test_handshake_returns_identity_with_a_clock(served: tuple[int, LeaseTable]) -> None:
    port, _ = served
    reply = side_request("127.0.0.1", port, wire.HandshakeRequest(pd_protocol=wire.PROTOCOL_VERSION, tp_rank=0),
                         wire.HandshakeReply, timeout_s=2)
    assert reply.agent_metadata == b"meta" and reply.regions == [wire.Region(4096, 512, 10)]
    assert reply.clock > 0


def test_unknown_rank_is_a_clear_error(served: tuple[int, LeaseTable]) -> None:
    port, _ = served
    with pytest.raises(wire.ProtocolError, match="no tensor-parallel rank 3"):
        side_request("127.0.0.1", port, wire.HandshakeRequest(pd_protocol=wire.PROTOCOL_VERSION, tp_rank=3),
                     wire.HandshakeReply, timeout_s=2)


def test_protocol_mismatch_fails_the_handshake(served: tuple[int, LeaseTable]) -> None:
    port, _ = served
    with pytest.raises(wire.ProtocolError, match="protocol mismatch"):
        side_request("127.0.0.1", port, wire.HandshakeRequest(pd_protocol=wire.PROTOCOL_VERSION + 1, tp_rank=0),
                     wire.HandshakeReply, timeout_s=2)


def test_renew_and_release_act_on_the_lease_table(served: tuple[int, LeaseTable]) -> None:
    port, table = served
    table.grant("r1", num_blocks=2, now=90.0)
    table.grant("r2", num_blocks=3, now=90.0)
    renew = wire.LeaseRenew(pd_protocol=wire.PROTOCOL_VERSION, incarnation=INCARNATION, request_ids=["r1", "zz"])
    reply = side_request("127.0.0.1", port, renew, wire.LeaseReply, timeout_s=2)
    assert reply.deadlines == {"r1": 130.0}

    release = wire.LeaseRelease(pd_protocol=wire.PROTOCOL_VERSION, incarnation=INCARNATION, request_ids=["r2"])
    side_request("127.0.0.1", port, release, wire.LeaseReply, timeout_s=2)
    assert [lease.request_id for lease in table.take_ended()] == ["r2"]
    assert table.held_blocks == 2


def test_stale_incarnation_renews_nothing(served: tuple[int, LeaseTable]) -> None:
    port, table = served
    table.grant("r1", num_blocks=2, now=90.0)
    renew = wire.LeaseRenew(pd_protocol=wire.PROTOCOL_VERSION, incarnation="old", request_ids=["r1"])
    reply = side_request("127.0.0.1", port, renew, wire.LeaseReply, timeout_s=2)
    assert reply.deadlines == {} and reply.incarnation == INCARNATION


def test_a_silent_peer_times_out() -> None:
    port = free_port()  # nobody listens: the REQ waits for a connection that never comes
    with pytest.raises(SideChannelError, match="did not answer"):
        side_request("127.0.0.1", port, wire.HandshakeRequest(pd_protocol=wire.PROTOCOL_VERSION, tp_rank=0),
                     wire.HandshakeReply, timeout_s=0.3)


def test_garbage_gets_an_error_reply_and_the_server_keeps_serving(served: tuple[int, LeaseTable]) -> None:
    import zmq

    port, _ = served
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.RCVTIMEO, 2000)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    sock.send(b"\x93not-a-request")
    with pytest.raises(wire.ProtocolError, match="peer refused"):
        wire.decode_reply(sock.recv(), wire.HandshakeReply)
    sock.close()
    test_handshake_returns_identity_with_a_clock(served)
