"""The ``vllm.general_plugins`` entry point: makes ``"kv_connector": "PDConnector"`` resolve.

vLLM calls ``register()`` in every process (API server, EngineCore, workers), so it must be
idempotent and cheap: it records a lazy import path and imports neither the connector nor NIXL.
"""

from __future__ import annotations

CONNECTOR_NAME = "PDConnector"


def register() -> None:
    from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory

    if CONNECTOR_NAME not in KVConnectorFactory._registry:
        KVConnectorFactory.register_connector(CONNECTOR_NAME, "vllm_pd.connector.connector", CONNECTOR_NAME)
