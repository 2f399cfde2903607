"""vLLM's real Scheduler with PDConnector, driven step by step without a model (after vLLM's
tests/v1/kv_connector/unit/utils.py): ``schedule()``, a fake runner output, ``update_from_output()``.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import torch
from vllm import SamplingParams
from vllm.config import CacheConfig, DeviceConfig, KVTransferConfig, ModelConfig, SchedulerConfig, VllmConfig
from vllm.utils.hashing import sha256
from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
from vllm.v1.outputs import KVConnectorOutput, ModelRunnerOutput
from vllm.v1.request import Request
from vllm.v1.structured_output import StructuredOutputManager

import vllm_pd.plugin

BLOCK_SIZE = 32
EOS = 2
_ids = itertools.count(1)
init_none_hash(sha256)
vllm_pd.plugin.register()


def make_scheduler(model: Path, role: str, extra: dict[str, Any], *, num_blocks: int = 200,
                   policy: str = "recompute", engine_id: str | None = None) -> Scheduler:
    model_config = ModelConfig(model=str(model), dtype="float32", seed=0, max_model_len=4096)
    vllm_config = VllmConfig(
        model_config=model_config,
        scheduler_config=SchedulerConfig(max_num_seqs=16, max_num_batched_tokens=1024, max_model_len=4096,
                                         enable_chunked_prefill=True, is_encoder_decoder=False,
                                         disable_hybrid_kv_cache_manager=True),
        cache_config=CacheConfig(block_size=BLOCK_SIZE, enable_prefix_caching=True),
        kv_transfer_config=KVTransferConfig(kv_connector="PDConnector", kv_role=role, engine_id=engine_id,
                                            kv_connector_extra_config=extra, kv_load_failure_policy=policy),
        device_config=DeviceConfig("cpu"),
    )
    vllm_config.cache_config.num_gpu_blocks = num_blocks
    kv_cache_config = KVCacheConfig(num_blocks=num_blocks, kv_cache_tensors=[], kv_cache_groups=[
        KVCacheGroupSpec(["layer"], FullAttentionSpec(block_size=BLOCK_SIZE, num_kv_heads=1, head_size=1,
                                                      dtype=torch.float32))])
    return Scheduler(vllm_config=vllm_config, kv_cache_config=kv_cache_config, log_stats=True,
                     structured_output_manager=StructuredOutputManager(vllm_config), block_size=BLOCK_SIZE)


def make_request(num_tokens: int, *, max_tokens: int = 4, kv_transfer_params: dict | None = None,
                 prompt: list[int] | None = None) -> Request:
    n = next(_ids)
    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
    params.update_from_generation_config({}, EOS)
    request = Request(request_id=f"req-{n}", prompt_token_ids=prompt or [(n * 7 + i) % 300 + 3 for i in
                                                                           range(num_tokens)],
                      sampling_params=params, pooling_params=None, mm_features=None,
                      block_hasher=get_request_block_hasher(BLOCK_SIZE, sha256))
    request.kv_transfer_params = kv_transfer_params
    return request


def runner_output(reqs: list[Request], *, sending: set[str] | None = None, recving: set[str] | None = None,
                  failed: set[str] | None = None, worker_meta: Any = None) -> ModelRunnerOutput:
    ids = [r.request_id for r in reqs]
    kv = None
    if sending or recving or failed or worker_meta:
        kv = KVConnectorOutput(finished_sending=sending, finished_recving=recving, failed_recving=failed or set(),
                               kv_connector_worker_meta=worker_meta)
    return ModelRunnerOutput(req_ids=ids, req_id_to_index={r: i for i, r in enumerate(ids)},
                             sampled_token_ids=[[5] for _ in ids], logprobs=None, prompt_logprobs_dict={},
                             pooler_output=None, kv_connector_output=kv)


def step(scheduler: Scheduler, **kv: Any):
    """One engine step; returns (scheduler output, engine outputs by request id)."""
    out = scheduler.schedule()
    running = [scheduler.requests[rid] for rid in out.num_scheduled_tokens]
    engine_outputs = scheduler.update_from_output(out, runner_output(running, **kv))
    by_id = {o.request_id: o for eo in engine_outputs.values() for o in eo.outputs}
    return out, by_id


def step_stats(scheduler: Scheduler, **kv: Any) -> dict[str, Any]:
    """One engine step; returns the connector stats it reported (vLLM's SchedulerStats path)."""
    out = scheduler.schedule()
    running = [scheduler.requests[rid] for rid in out.num_scheduled_tokens]
    engine_outputs = scheduler.update_from_output(out, runner_output(running, **kv))
    stats = [eo.scheduler_stats for eo in engine_outputs.values() if eo.scheduler_stats is not None]
    return stats[0].kv_connector_stats or {} if stats else {}


def assert_scheduler_empty(scheduler: Scheduler) -> None:
    """No request, no held block: everything the test started was released."""
    assert not scheduler.requests and not scheduler.waiting and not scheduler.running
    pool = scheduler.kv_cache_manager.block_pool
    assert pool.free_block_queue.num_free_blocks == pool.num_gpu_blocks - 1
    assert all(block.ref_cnt == 0 for block in pool.blocks)
