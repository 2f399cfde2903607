"""How vLLM finds PDConnector: the entry point, kv_connector_module_path, and the JSON presets."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

PRESETS = sorted((Path(__file__).parents[3] / "connectors").glob("pd-*.json"))


def test_entry_point_is_declared() -> None:
    points = {ep.name: ep.value for ep in metadata.entry_points(group="vllm.general_plugins")}
    assert points.get("vllm_pd") == "vllm_pd.plugin:register"


def test_register_is_idempotent_and_imports_neither_the_connector_nor_nixl() -> None:
    code = ("import sys, vllm_pd.plugin as p; p.register(); p.register();"
            "from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory as F;"
            "assert 'PDConnector' in F._registry;"
            "bad = [m for m in ('nixl', 'vllm_pd.connector.connector', 'vllm_pd.connector.worker') if m in sys.modules];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("module_path", [None, "vllm_pd.connector", "vllm_pd.connector.connector"])
def test_name_and_module_path_resolve_to_the_class(module_path: str | None) -> None:
    from vllm.config import KVTransferConfig
    from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory

    import vllm_pd.plugin
    from vllm_pd.connector.connector import PDConnector

    vllm_pd.plugin.register()
    config = KVTransferConfig(kv_connector="PDConnector", kv_connector_module_path=module_path, kv_role="kv_both")
    assert KVConnectorFactory.get_connector_class(config) is PDConnector


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_presets_are_valid_configs(preset: Path) -> None:
    from vllm.config import KVTransferConfig

    from vllm_pd.connector.config import PDConfig

    data = json.loads(preset.read_text())
    assert KVTransferConfig(**data).kv_connector == "PDConnector"
    PDConfig.from_extra(data.get("kv_connector_extra_config"))


def test_there_is_a_preset_per_role() -> None:
    roles = {json.loads(p.read_text())["kv_role"] for p in PRESETS}
    assert roles == {"kv_producer", "kv_consumer", "kv_both"}
