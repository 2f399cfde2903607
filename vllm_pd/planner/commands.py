"""The commands that realise a plan: one ``vllm serve`` per instance, grouped by node, and the proxy."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from vllm_pd.launcher.spec import kv_config
from vllm_pd.planner.plan import Candidate
from vllm_pd.planner.sim import SLO

BASE_PORT = 8100
SIDE_CHANNEL_BASE = 5600
_SERVER_ROLE = {"prefill": "prefill", "decode": "decode", "colocated": "both"}


def connector_preset(connector: str, role: str, presets: Path) -> str:
    """``--kv-transfer-config`` for a role: a preset file under ``connectors/`` if one matches, else inline."""
    config = kv_config(connector, _SERVER_ROLE[role])
    named = presets / f"{connector}-{config['kv_role'].removeprefix('kv_').replace('producer', 'producer')}.json"
    candidates = sorted(presets.glob("*.json"), key=lambda p: (p != named, len(p.name), p.name)) if presets.is_dir() else []
    for path in candidates:
        try:
            preset = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if preset.get("kv_connector") == config["kv_connector"] and preset.get("kv_role") == config["kv_role"]:
            return f'"$(cat {path})"'
    return shlex.quote(json.dumps(config, separators=(",", ":")))


def launch_commands(
    candidate: Candidate, *, model: str, slo: SLO, connector: str = "pd", presets: Path = Path("connectors"),
    max_num_seqs: int = 256, max_batched_tokens: int = 8192, latency_profile: str | None = None,
) -> list[str]:
    """Shell lines: a comment per node, its servers, then the proxy (run anywhere that reaches them)."""
    lines: list[str] = []
    urls: dict[str, list[str]] = {"prefill": [], "decode": [], "colocated": []}
    current_node = None
    for index, placement in enumerate(candidate.placements):
        node = placement.stages[0][0]
        if node != current_node:
            lines.append(f"# on node{node}")
            current_node = node
        port = BASE_PORT + index
        urls[placement.role].append(f"http://node{node}:{port}")
        env = [f"CUDA_VISIBLE_DEVICES={placement.cuda_visible_devices()}"]
        if connector == "nixl":
            env.append(f"VLLM_NIXL_SIDE_CHANNEL_PORT={SIDE_CHANNEL_BASE + index}")
        args = [
            "vllm", "serve", shlex.quote(model), "--port", str(port),
            "--tensor-parallel-size", str(placement.shape.tp), "--pipeline-parallel-size", str(placement.shape.pp),
            "--max-num-seqs", str(max_num_seqs), "--max-num-batched-tokens", str(max_batched_tokens),
            "--kv-transfer-config", connector_preset(connector, placement.role, presets),
        ]
        if len(placement.nodes) > 1:
            args += ["--distributed-executor-backend", "ray"]
            lines.append(f"# {placement.role} instance {index} spans nodes {sorted(placement.nodes)}: start a Ray "
                         "cluster over them first")
        lines.append(" ".join(env + args) + " &")
    proxy = ["vllm-pd", "proxy"]
    if urls["prefill"]:
        proxy += ["--prefill", *urls["prefill"]]
    if urls["decode"]:
        proxy += ["--decode", *urls["decode"]]
    if urls["colocated"]:
        proxy += ["--both", *urls["colocated"]]
    proxy += ["--ttft-slo", f"{slo.ttft_s:g}", "--tpot-slo", f"{slo.tpot_s:g}"]
    if latency_profile:
        proxy += ["--latency-profile", shlex.quote(latency_profile)]
    lines += ["# the proxy", " ".join(proxy)]
    return lines
