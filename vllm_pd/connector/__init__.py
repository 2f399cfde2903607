"""PDConnector, vllm-pd's KV-transfer connector (see docs/connector.md).

``kv_connector_module_path: "vllm_pd.connector"`` works too: the class is imported on first use,
so importing this package stays cheap (no vLLM, no NIXL).
"""

from typing import Any

__all__ = ["PDConnector"]


def __getattr__(name: str) -> Any:
    if name == "PDConnector":
        from vllm_pd.connector.connector import PDConnector

        return PDConnector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
