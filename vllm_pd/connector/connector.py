"""PDConnector: the class vLLM instantiates; it only routes each hook to its role's half.

vLLM creates one instance with role SCHEDULER in the EngineCore process (-> :class:`PDScheduler`,
bookkeeping) and one with role WORKER in each worker process (-> :class:`PDWorker`, NIXL).
Contracts restated from vLLM's ``KVConnectorBase_V1``:
- ``request_finished`` returning True means we own the blocks until the id comes back in
  ``finished_sending`` (producer: after the pull, or when the lease ends).
- ``get_num_new_matched_tokens`` returning ``(n, True)`` parks the request in
  WAITING_FOR_REMOTE_KVS until the id comes back in ``finished_recving``; failures are also
  listed in ``failed_recving`` and handled by ``kv_load_failure_policy``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorHandshakeMetadata,
    KVConnectorMetadata,
    KVConnectorRole,
    KVConnectorTransferResults,
)
from vllm.v1.metrics.cache_hit_source import CacheHitSource

from vllm_pd.connector.config import PDConfig
from vllm_pd.connector.metadata import PDConnectorMetadata, WorkerHandshake
from vllm_pd.connector.scheduler import PDScheduler
from vllm_pd.connector.stats import PDPromMetrics, PDStats

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.outputs import KVConnectorOutput
    from vllm.v1.request import Request

    from vllm_pd.connector.worker import PDWorker


class PDConnector(KVConnectorBase_V1):
    _cache_hit_source = CacheHitSource.P2P

    def __init__(self, vllm_config: VllmConfig, role: KVConnectorRole, kv_cache_config: KVCacheConfig) -> None:
        super().__init__(vllm_config, role, kv_cache_config)
        transfer = vllm_config.kv_transfer_config
        assert transfer is not None and transfer.engine_id is not None
        config = PDConfig.from_extra(transfer.kv_connector_extra_config)
        parallel = vllm_config.parallel_config
        if parallel.pipeline_parallel_size > 1:
            raise ValueError("PDConnector does not support pipeline parallelism yet")
        block_size = vllm_config.cache_config.block_size
        self._scheduler: PDScheduler | None = None
        self._worker: PDWorker | None = None
        if role == KVConnectorRole.SCHEDULER:
            self._scheduler = PDScheduler(engine_id=transfer.engine_id, block_size=block_size,
                                          tp_size=parallel.tensor_parallel_size, is_producer=transfer.is_kv_producer,
                                          config=config, dp_index=parallel.data_parallel_index)
        else:
            from vllm.distributed.parallel_state import get_tensor_model_parallel_rank

            from vllm_pd.connector.worker import PDWorker

            self._worker = PDWorker(engine_id=transfer.engine_id, tp_rank=get_tensor_model_parallel_rank(),
                                    tp_size=parallel.tensor_parallel_size, block_size=block_size,
                                    num_blocks=kv_cache_config.num_blocks, config=config,
                                    is_producer=transfer.is_kv_producer)

    @property
    def scheduler(self) -> PDScheduler:
        assert self._scheduler is not None, "scheduler-side hook called on a worker"
        return self._scheduler

    @property
    def worker(self) -> PDWorker:
        assert self._worker is not None, "worker-side hook called on the scheduler"
        return self._worker

    # ---- class-level hooks (also run in the API-server process) ------------------------------

    @classmethod
    def get_required_kvcache_layout(cls, vllm_config: VllmConfig) -> str | None:
        """Block-contiguous pages per layer: a run of blocks is one span per layer."""
        model = vllm_config.model_config
        return None if model is not None and model.use_mla else "LBHNC"

    @classmethod
    def build_kv_connector_stats(cls, data: dict[str, Any] | None = None) -> PDStats:
        return PDStats(data=data) if data is not None else PDStats()

    @classmethod
    def build_prom_metrics(cls, vllm_config, metric_types, labelnames, per_engine_labelvalues) -> PDPromMetrics:
        return PDPromMetrics(vllm_config, metric_types, labelnames, per_engine_labelvalues)

    # ---- scheduler side ------------------------------------------------------------------------

    def get_num_new_matched_tokens(self, request: Request, num_computed_tokens: int) -> tuple[int | None, bool]:
        return self.scheduler.get_num_new_matched_tokens(request, num_computed_tokens)

    def update_state_after_alloc(self, request: Request, blocks: KVCacheBlocks, num_external_tokens: int) -> None:
        self.scheduler.update_state_after_alloc(request, blocks, num_external_tokens)

    def build_connector_meta(self, scheduler_output: SchedulerOutput) -> KVConnectorMetadata:
        return self.scheduler.build_connector_meta()

    def on_new_request(self, request: Request) -> None:
        self.scheduler.on_new_request(request)

    def update_connector_output(self, connector_output: KVConnectorOutput) -> None:
        self.scheduler.update_connector_output(connector_output)

    def request_finished(self, request: Request, block_ids: list[int]) -> tuple[bool, dict[str, Any] | None]:
        return self.scheduler.request_finished(request, block_ids)

    def set_xfer_handshake_metadata(self, metadata: dict[int, KVConnectorHandshakeMetadata]) -> None:
        handshakes = {rank: meta for rank, meta in metadata.items() if isinstance(meta, WorkerHandshake)}
        self.scheduler.set_handshakes(handshakes)

    # ---- worker side ---------------------------------------------------------------------------

    def register_kv_caches(self, kv_caches: dict[str, Any]) -> None:
        self.worker.register_kv_caches(kv_caches)

    def get_handshake_metadata(self) -> KVConnectorHandshakeMetadata | None:
        return self.worker.handshake_metadata()

    def start_load_kv(self, forward_context: Any, **kwargs: Any) -> None:
        meta = self._get_connector_metadata()
        assert isinstance(meta, PDConnectorMetadata)
        self.worker.start_load_kv(meta)

    def wait_for_layer_load(self, layer_name: str) -> None:
        return None  # loads are whole-request and asynchronous

    def save_kv_layer(self, layer_name: str, kv_layer: Any, attn_metadata: Any, **kwargs: Any) -> None:
        return None  # the consumer pulls; nothing to push

    def wait_for_save(self) -> None:
        return None

    def get_transfer_results(self, finished_req_ids: set[str]) -> KVConnectorTransferResults:
        done = self.worker.completions()
        return KVConnectorTransferResults(finished_sending=done.sending, finished_recving=done.recving,
                                          failed_recving=done.failed)

    def build_connector_worker_meta(self):
        return self.worker.take_worker_meta()

    def get_kv_connector_stats(self) -> PDStats | None:
        if self._scheduler is not None:
            return self._scheduler.take_stats()
        return self.worker.take_stats()

    def shutdown(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown()
        if self._worker is not None:
            self._worker.shutdown()
