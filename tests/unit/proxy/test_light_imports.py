"""The proxy runs on a small box: importing and building it must not pull torch or vLLM."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
from vllm_pd.proxy.app import build_app
from vllm_pd.proxy.cli import config_from_args
from vllm_pd.proxy.config import PoolConfig, ProxyConfig
build_app(ProxyConfig(pool=PoolConfig(prefill=("http://127.0.0.1:1",), decode=("http://127.0.0.1:2",))))
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "vllm", "transformers", "nixl"))
print(",".join(heavy))
"""


def test_proxy_imports_neither_torch_nor_vllm():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""
