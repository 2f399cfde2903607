"""Typed options and wire messages: bad input gives a clear error naming the key."""

from __future__ import annotations

import msgspec
import pytest

from vllm_pd import wire
from vllm_pd.connector.config import ConfigError, PDConfig


def test_defaults_are_valid() -> None:
    config = PDConfig.from_extra({})
    assert config.lease_s == 30.0 and config.backends == ("UCX",)


def test_values_are_typed() -> None:
    config = PDConfig.from_extra({"lease_s": 20, "backends": ["UCX", "POSIX"], "side_channel_port": 7000})
    assert config.lease_s == 20.0 and config.backends == ("UCX", "POSIX") and config.side_channel_port == 7000


@pytest.mark.parametrize("extra, message", [
    ({"lease": 3}, r"unknown kv_connector_extra_config key\(s\) \['lease'\]"),
    ({"lease_s": "30"}, "lease_s must be a number"),
    ({"lease_s": True}, "lease_s must be a number"),
    ({"lease_s": -1}, "lease_s must be > 0"),
    ({"renew_interval_s": 20}, "at most half of lease_s"),
    ({"pull_timeout_s": 30}, "must be below lease_s"),
    ({"side_channel_port": 70000}, "out of range"),
    ({"side_channel_port": 1.5}, "side_channel_port must be an integer"),
    ({"backends": "UCX"}, "backends must be a list of strings"),
    ({"backends": ["TCP"]}, "must be a non-empty list of UCX"),
])
def test_bad_values_name_the_key(extra: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PDConfig.from_extra(extra)


def test_side_channel_address_defaults_to_vllm_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_NIXL_SIDE_CHANNEL_PORT", "6100")
    monkeypatch.setenv("VLLM_NIXL_SIDE_CHANNEL_HOST", "10.0.0.5")
    assert PDConfig().side_channel_address(dp_index=2) == ("10.0.0.5", 6102)
    assert PDConfig(side_channel_port=7000, side_channel_host="h").side_channel_address() == ("h", 7000)


def handoff_dict(**overrides) -> dict:
    params = msgspec.to_builtins(wire.HandoffParams(
        pd_protocol=wire.PROTOCOL_VERSION, remote_engine_id="e", remote_incarnation="i", remote_host="h",
        remote_port=1, remote_request_id="r", remote_block_ids=[1, 2], remote_num_tokens=40, lease_deadline=1.0,
        layout_fingerprint="f", tp_size=1, prefill_done=0.5))
    return {**params, **overrides}


def test_handoff_round_trips_and_ignores_keys_vllm_adds() -> None:
    parsed = wire.parse_handoff(handoff_dict(remote_prefill_cached_tokens=0))
    assert parsed.remote_block_ids == [1, 2] and parsed.do_remote_prefill


@pytest.mark.parametrize("params, message", [
    ({"do_remote_prefill": True}, "lack pd_protocol"),
    (handoff_dict(pd_protocol=99), "protocol mismatch"),
    (handoff_dict(remote_block_ids="1,2"), "bad PDConnector kv_transfer_params"),
])
def test_unusable_handoff_params(params: dict, message: str) -> None:
    with pytest.raises(wire.ProtocolError, match=message):
        wire.parse_handoff(params)


def test_notices_that_are_not_ours_are_ignored() -> None:
    notice = wire.PullNotice("done", "r", "i")
    assert wire.decode_notice(wire.encode(notice)) == notice
    assert wire.decode_notice(b"cmpl-123:1") is None
