"""Start and stop local vLLM servers: ``vllm-pd up`` and the test fixtures use this one launcher."""

from vllm_pd.launcher.command import VllmNotInstalled, detect_vllm
from vllm_pd.launcher.deployment import Deployment
from vllm_pd.launcher.ports import PortInUse, check_ports_free, free_port, free_ports
from vllm_pd.launcher.process import ServerFailed, ServerProcess
from vllm_pd.launcher.spec import CONNECTORS, KV_ROLE, ServerSpec, kv_config, nixl_kv_config

__all__ = [
    "CONNECTORS", "KV_ROLE", "Deployment", "PortInUse", "ServerFailed", "ServerProcess", "ServerSpec",
    "VllmNotInstalled", "check_ports_free", "detect_vllm", "free_port", "free_ports", "kv_config",
    "nixl_kv_config",
]
