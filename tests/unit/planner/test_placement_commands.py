"""Placement packing, KV links and the launch commands of a plan."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from vllm_pd.planner.commands import connector_preset, launch_commands
from vllm_pd.planner.hardware import load_hardware
from vllm_pd.planner.placement import cross_node_pairs, interleave, kv_link, pack
from vllm_pd.planner.plan import Candidate
from vllm_pd.planner.shapes import Shape
from vllm_pd.planner.sim import SLO


def test_tp_groups_never_straddle_nodes() -> None:
    placed = pack([("prefill", Shape(1, 1)), ("decode", Shape(4, 1)), ("decode", Shape(4, 1))], gpus=16, gpus_per_node=8)
    assert [p.stages for p in placed] == [((0, (0,)),), ((0, (1, 2, 3, 4)),), ((1, (0, 1, 2, 3)),)]
    assert pack([("decode", Shape(8, 1))] * 3, gpus=16, gpus_per_node=8) is None


def test_pipeline_stages_may_span_nodes() -> None:
    (placed,) = pack([("prefill", Shape(4, 3))], gpus=16, gpus_per_node=8)
    assert placed.stages == ((0, (0, 1, 2, 3)), (0, (4, 5, 6, 7)), (1, (0, 1, 2, 3)))
    assert placed.describe() == "node0:gpu0-3 + node0:gpu4-7 + node1:gpu0-3"


def test_interleaved_pairs_share_a_node_and_get_nvlink() -> None:
    hw = load_hardware("h100")
    roles = interleave(2, 2)
    assert roles == ["prefill", "decode", "prefill", "decode"]
    placed = pack([(r, Shape(2, 1)) for r in roles], gpus=8, gpus_per_node=4)
    assert cross_node_pairs(placed) == 2  # P0-D1 and P1-D0 cross; P0-D0 and P1-D1 share a node
    near, far = kv_link(hw, placed[0], placed[1]), kv_link(hw, placed[0], placed[3])
    assert near.bandwidth == hw.nvlink_bandwidth * hw.link_efficiency * 2
    assert far.bandwidth == hw.network_bandwidth * hw.link_efficiency * 2


def _candidate() -> Candidate:
    placed = pack([("prefill", Shape(2, 1)), ("decode", Shape(1, 1)), ("decode", Shape(1, 1))], gpus=4,
                  gpus_per_node=4)
    return Candidate(kind="disaggregated", cluster_rate=10.0, gpus_used=4, copies=1, placements=tuple(placed),
                     prefill=Shape(2, 1), num_prefill=1, decode=Shape(1, 1), num_decode=2)


def test_launch_commands_name_devices_parallelism_connector_and_proxy(tmp_path: Path) -> None:
    lines = launch_commands(_candidate(), model="org/model", slo=SLO(0.3, 0.05), presets=tmp_path,
                            latency_profile="profile.yaml")
    serve = [line for line in lines if "vllm serve" in line]
    assert len(serve) == 3
    first = shlex.split(serve[0].rstrip(" &"))
    assert first[0] == "CUDA_VISIBLE_DEVICES=0,1"
    assert first[first.index("--tensor-parallel-size") + 1] == "2"
    assert json.loads(first[first.index("--kv-transfer-config") + 1]) == {
        "kv_connector": "PDConnector", "kv_role": "kv_producer"}
    assert "kv_consumer" in serve[1]
    proxy = shlex.split(lines[-1])
    assert proxy[:4] == ["vllm-pd", "proxy", "--prefill", "http://node0:8100"]
    assert proxy[proxy.index("--decode") + 1 : proxy.index("--decode") + 3] == ["http://node0:8101", "http://node0:8102"]
    assert proxy[proxy.index("--ttft-slo") + 1] == "0.3" and "profile.yaml" in proxy


def test_a_matching_preset_file_is_used(tmp_path: Path) -> None:
    (tmp_path / "pd-decode.json").write_text(json.dumps({"kv_connector": "PDConnector", "kv_role": "kv_consumer"}))
    assert connector_preset("pd", "decode", tmp_path) == f'"$(cat {tmp_path / "pd-decode.json"})"'
    assert "kv_producer" in connector_preset("pd", "prefill", tmp_path)
    nixl = launch_commands(_candidate(), model="m", slo=SLO(1, 1), connector="nixl", presets=tmp_path)
    assert "VLLM_NIXL_SIDE_CHANNEL_PORT=5600" in nixl[1] and "NixlConnector" in nixl[1]
