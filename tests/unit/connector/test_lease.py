"""The producer's lease state machine: every lease ends exactly once, and only ended leases free blocks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from vllm_pd.connector.lease import Lease, LeaseError, LeaseState, LeaseTable


def test_grant_then_expire_at_the_deadline() -> None:
    table = LeaseTable(lease_s=10.0)
    assert table.grant("a", num_blocks=3, now=100.0) == 110.0
    assert table.expire_due(109.9) == []
    assert table.expire_due(110.0) == ["a"]
    [ended] = table.take_ended()
    assert ended.state is LeaseState.EXPIRED and table.held_blocks == 0


def test_renew_pushes_the_deadline_but_never_back() -> None:
    table = LeaseTable(lease_s=10.0)
    table.grant("a", num_blocks=1, now=100.0)
    assert table.renew(["a"], now=105.0) == {"a": 115.0}
    assert table.renew(["a"], now=101.0) == {"a": 115.0}
    assert table.expire_due(114.0) == []


def test_an_expired_lease_cannot_be_renewed() -> None:
    table = LeaseTable(lease_s=10.0)
    table.grant("a", num_blocks=1, now=100.0)
    assert table.renew(["a"], now=110.0) == {}
    assert table.expire_due(110.0) == ["a"]


def test_release_ends_once() -> None:
    table = LeaseTable(lease_s=10.0)
    table.grant("a", num_blocks=1, now=0.0)
    assert table.release(["a"]) == ["a"]
    assert table.release(["a"]) == []
    assert table.expire_due(100.0) == []
    assert [lease.state for lease in table.take_ended()] == [LeaseState.RELEASED]


def test_double_grant_and_illegal_transitions_raise() -> None:
    table = LeaseTable(lease_s=10.0)
    table.grant("a", num_blocks=1, now=0.0)
    with pytest.raises(LeaseError, match="granted twice"):
        table.grant("a", num_blocks=1, now=0.0)
    lease = Lease("b", deadline=1.0, num_blocks=1, state=LeaseState.EXPIRED)
    with pytest.raises(LeaseError, match="EXPIRED -> RELEASED"):
        lease.transition(LeaseState.RELEASED)


class LeaseMachine(RuleBasedStateMachine):
    """Random grant/renew/release/expire sequences against a simple model of the table."""

    def __init__(self) -> None:
        super().__init__()
        self.table = LeaseTable(lease_s=5.0)
        self.now = 0.0
        self.live: dict[str, tuple[float, int]] = {}
        self.ended: dict[str, LeaseState] = {}
        self.counter = 0

    @rule(blocks=st.integers(1, 8))
    def grant(self, blocks: int) -> None:
        rid = f"r{self.counter}"
        self.counter += 1
        self.live[rid] = (self.table.grant(rid, blocks, self.now), blocks)

    @rule(dt=st.floats(0, 4))
    def tick(self, dt: float) -> None:
        self.now += dt
        for rid in self.table.expire_due(self.now):
            assert self.live.pop(rid)[0] <= self.now
            self.ended[rid] = LeaseState.EXPIRED

    @rule(data=st.data())
    def renew(self, data: st.DataObject) -> None:
        if not self.live:
            return
        rid = data.draw(st.sampled_from(sorted(self.live)))
        renewed = self.table.renew([rid], self.now)
        if rid in renewed:
            self.live[rid] = (renewed[rid], self.live[rid][1])

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        if not self.live:
            return
        rid = data.draw(st.sampled_from(sorted(self.live)))
        assert self.table.release([rid]) == [rid]
        del self.live[rid]
        self.ended[rid] = LeaseState.RELEASED

    @invariant()
    def table_matches_model(self) -> None:
        assert len(self.table) == len(self.live)
        assert self.table.held_blocks == sum(b for _, b in self.live.values())
        for lease in self.table.take_ended():
            assert self.ended[lease.request_id] is lease.state
        assert not set(self.live) & set(self.ended)


LeaseMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestLeaseMachine = LeaseMachine.TestCase


@given(st.lists(st.floats(0, 100), min_size=1, max_size=20))
def test_nothing_expires_before_its_deadline(grant_times: list[float]) -> None:
    table = LeaseTable(lease_s=7.0)
    for i, t in enumerate(sorted(grant_times)):
        table.grant(f"r{i}", 1, t)
    cutoff = sorted(grant_times)[0] + 7.0
    assert table.expire_due(cutoff - 1e-6) == []
