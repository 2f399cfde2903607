"""The proxy's HTTP surface over fake upstreams: protocol legs, ids, errors, streaming relay, metrics."""

from __future__ import annotations

import asyncio
import time

import pytest
from multidict import CIMultiDict

from tests.unit.proxy.conftest import harness, run, state_of
from vllm_pd.slo import SLO

BODY = {"model": "tiny", "prompt": "hello there", "max_tokens": 4}


def test_both_legs_follow_the_protocol_and_share_the_request_id():
    async def scenario():
        async with harness(local_prefill=False) as (client, [p], [d]):
            resp = await client.post("/v1/completions", json={**BODY, "min_tokens": 2},
                                     headers={"X-Request-Id": "abc123", "Authorization": "Bearer k"})
            assert resp.status == 200
            assert (await resp.json())["choices"][0]["text"] == "t0t1t2t3"
            assert resp.headers["X-Request-Id"] == "abc123"
            assert (resp.headers["X-PD-Route"], resp.headers["X-PD-Prefill"], resp.headers["X-PD-Decode"]) == \
                ("remote", p.url, d.url)
            [pre], [dec] = p.seen, d.seen
            for leg in (pre, dec):
                headers = CIMultiDict(leg.headers)
                assert headers["X-Request-Id"] == "abc123" and headers["Authorization"] == "Bearer k"
            assert pre.body["max_tokens"] == 1 and pre.body["stream"] is False and "min_tokens" not in pre.body
            assert dec.body == {**BODY, "min_tokens": 2,
                                "kv_transfer_params": {"remote_engine_id": "p0", "remote_block_ids": [1, 2],
                                                       "do_remote_prefill": True, "remote_request_id": "abc123"}}
    run(scenario)


def test_a_request_id_is_generated_when_absent():
    async def scenario():
        async with harness() as (client, [p], [d]):
            resp = await client.post("/v1/completions", json=BODY)
            rid = resp.headers["X-Request-Id"]
            assert len(rid) == 32
            assert all(CIMultiDict(s.headers)["X-Request-Id"] == rid for s in p.seen + d.seen)
    run(scenario)


def test_streamed_bytes_pass_through_unchanged():
    async def scenario():
        async with harness(local_prefill=False) as (client, _, [d]):
            body = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
            resp = await client.post("/v1/chat/completions",
                                     json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], **body})
            text = await resp.text()
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
            assert text.count("data: ") == 6 and text.endswith("data: [DONE]\n\n")
            assert '"usage": {"prompt_tokens": 5, "completion_tokens": 4' in text
            assert d.seen[0].body["stream_options"] == {"include_usage": True}
    run(scenario)


def test_client_errors_are_4xx_with_a_message():
    async def scenario():
        async with harness(max_body_bytes=1024) as (client, [p], [d]):
            bad_json = await client.post("/v1/completions", data=b"{oops", headers={"Content-Type": "application/json"})
            no_messages = await client.post("/v1/chat/completions", json={"model": "tiny"})
            unknown_model = await client.post("/v1/completions", json={**BODY, "model": "gpt-17"})
            oversize = await client.post("/v1/completions", json={**BODY, "prompt": "x" * 4096})
            wrong_path = await client.get("/v1/nothing")
            assert bad_json.status == 400 and "JSON" in (await bad_json.json())["error"]["message"]
            assert no_messages.status == 400 and "messages" in (await no_messages.json())["error"]["message"]
            assert unknown_model.status == 404 and "gpt-17" in (await unknown_model.json())["error"]["message"]
            assert oversize.status == 413
            assert wrong_path.status == 404
            assert p.seen == [] and d.seen == []
    run(scenario)


def test_a_client_header_that_cannot_go_upstream_is_a_400():
    async def scenario():
        async with harness() as (client, [p], [d]):
            resp = await client.post("/v1/completions", json=BODY, headers={"X-Request-Id": "id-\u20ac"})
            assert resp.status == 400
            assert "X-Request-Id" in (await resp.json())["error"]["message"]
            assert p.seen == [] and d.seen == []
            assert (await client.post("/v1/completions", json=BODY)).status == 200  # nothing was left held
    run(scenario)


def test_api_key_is_checked_when_configured():
    async def scenario():
        async with harness(api_key="sekrit") as (client, _, [d]):
            denied = await client.post("/v1/completions", json=BODY)
            allowed = await client.post("/v1/completions", json=BODY, headers={"Authorization": "Bearer sekrit"})
            assert denied.status == 401 and allowed.status == 200
            assert len(d.seen) == 1
    run(scenario)


def test_upstream_4xx_keeps_status_and_body():
    async def scenario():
        async with harness(local_prefill=False) as (client, [p], [d]):
            p.fail_status = 400
            resp = await client.post("/v1/completions", json=BODY)
            assert resp.status == 400
            assert (await resp.json()) == {"error": {"message": "p0 failing"}}
            assert d.seen == []  # a bad request is not retried anywhere
    run(scenario)


def test_decode_5xx_keeps_status_and_body_once_retries_are_spent():
    async def scenario():
        async with harness(decode=1) as (client, _, [d]):
            d.fail_status = 503
            resp = await client.post("/v1/completions", json={**BODY, "stream": True})
            assert resp.status == 503  # never a 200 with an empty body
            assert (await resp.json()) == {"error": {"message": "d0 failing"}}
    run(scenario)


def test_models_ready_and_metrics_endpoints():
    async def scenario():
        async with harness(slo=SLO(ttft_s=5, tpot_s=1)) as (client, [p], [d]):
            await client.post("/v1/completions", json=BODY)
            models = await (await client.get("/v1/models")).json()
            ready = await client.get("/ready")
            metrics = await (await client.get("/metrics")).text()
            assert [m["id"] for m in models["data"]] == ["tiny"]
            assert ready.status == 200
            for name in ('vllm_pd_requests_total{outcome="met_slo"} 1.0', "vllm_pd_route_decisions_total",
                         "vllm_pd_e2e_latency_seconds_count", "vllm_pd_proxy_overhead_seconds_count",
                         "vllm_pd_goodput_rps", f'vllm_pd_inflight_requests{{instance="{d.url}",phase="decode"}} 0.0'):
                assert name in metrics, name
            d.healthy = False
            await asyncio.sleep(0.3)
            assert (await client.get("/ready")).status == 503
    run(scenario)


def test_inflight_accounting_returns_to_zero_on_every_path():
    async def scenario():
        async with harness(local_prefill=False) as (client, [p], [d]):
            await client.post("/v1/completions", json=BODY)
            await client.post("/v1/completions", json={**BODY, "stream": True})
            d.fail_status = 500
            await client.post("/v1/completions", json=BODY)
            p.fail_status = 400
            await client.post("/v1/completions", json=BODY)
            for inst in state_of(client).instances.values():
                assert inst.load.prefill_requests == inst.load.decode_requests == 0
                assert inst.load.prefill_tokens == inst.load.context_tokens == inst.load.remaining_tokens == 0
    run(scenario)


def test_ttft_is_split_from_the_connectors_pd_handoff_timings():
    async def scenario():
        async with harness(local_prefill=False) as (client, _, [d]):
            now = time.time()
            d.handoff = {"prefill_done": now + 0.01, "pull_start": now + 0.02, "pull_done": now + 0.05,
                         "bytes": 4096, "descriptors": 2, "outcome": "pulled"}
            assert (await client.post("/v1/completions", json=BODY)).status == 200
            text = await (await client.get("/metrics")).text()
            transfer_sum = next(float(line.split()[-1]) for line in text.splitlines()
                                if line.startswith('vllm_pd_ttft_stage_seconds_sum{stage="transfer"}'))
            assert transfer_sum == pytest.approx(0.03, abs=1e-6)
            assert 'vllm_pd_ttft_stage_seconds_count{stage="queue_prefill"} 1.0' in text
    run(scenario)


def test_admission_rejects_with_retry_after_when_no_pair_meets_the_slo():
    async def scenario():
        async with harness(admission="reject", slo=SLO(ttft_s=1e-6, tpot_s=1e-6)) as (client, [p], [d]):
            resp = await client.post("/v1/completions", json=BODY)
            assert resp.status == 503 and int(resp.headers["Retry-After"]) >= 1
            assert "SLO" in (await resp.json())["error"]["message"]
            assert p.seen == [] and d.seen == []
            text = await (await client.get("/metrics")).text()
            assert 'vllm_pd_requests_total{outcome="rejected"} 1.0' in text
    run(scenario)
