"""A scriptable stand-in for a vLLM server speaking the P/D protocol, for fast proxy tests.

It only checks what the proxy sends and lets a test inject failures; correctness of real outputs is
proven by the e2e tests against real vLLM servers.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict


@dataclass
class FakeVLLM:
    name: str
    model: str = "tiny"
    seen: list[Seen] = field(default_factory=list)
    fail_status: int | None = None  # answer every generate call with this status
    fail_times: int | None = None  # ... only this many times (None: always)
    hang_s: float = 0.0  # sleep before answering a generate call
    handoff_hang_s: float = 0.0  # ... a decode that pulls KV from a prefill (as from a dead producer)
    die_after_chunks: int | None = None  # streaming: drop the connection after this many chunks
    error_finish: bool = False  # answer 200 with finish_reason "error"
    healthy: bool = True
    chunk_delay_s: float = 0.0
    handoff: dict | None = None  # pd_handoff timings to report in non-streamed decode answers
    server: TestServer | None = None
    active: int = 0

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/v1/completions", self._generate)
        app.router.add_post("/v1/chat/completions", self._generate)
        return app

    async def start(self) -> None:
        self.server = TestServer(self.app(), host="127.0.0.1")
        await self.server.start_server()

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.healthy else 503)

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=f'vllm:num_requests_running{{model_name="{self.model}"}} {self.active}.0\n'
                                 f'vllm:num_requests_waiting{{model_name="{self.model}"}} 0.0\n')

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen.append(Seen(request.path, dict(request.headers), body))
        if self.fail_status is not None and (self.fail_times is None or self.fail_times > 0):
            if self.fail_times is not None:
                self.fail_times -= 1
            return web.json_response({"error": {"message": f"{self.name} failing"}}, status=self.fail_status)
        self.active += 1
        try:
            if self.hang_s:
                await asyncio.sleep(self.hang_s)
            if self.handoff_hang_s and (body.get("kv_transfer_params") or {}).get("do_remote_prefill"):
                await asyncio.sleep(self.handoff_hang_s)
            return await self._answer(request, body)
        finally:
            self.active -= 1

    def _tokens(self, body: dict) -> list[str]:
        n = body.get("max_tokens") or 8
        return [f"t{i}" for i in range(n)]

    async def _answer(self, request: web.Request, body: dict) -> web.StreamResponse:
        params = body.get("kv_transfer_params")
        chat = request.path.endswith("chat/completions")
        tokens = self._tokens(body)
        finish = "error" if self.error_finish else "length"
        usage = {"prompt_tokens": 5, "completion_tokens": len(tokens), "total_tokens": 5 + len(tokens)}
        if params and params.get("do_remote_decode"):
            return web.json_response({"choices": [{"text": "t0", "finish_reason": "length"}], "usage": usage,
                                      "kv_transfer_params": {"remote_engine_id": self.name,
                                                             "remote_block_ids": [1, 2], "do_remote_prefill": True,
                                                             "remote_request_id": request.headers.get("X-Request-Id")}})
        if not body.get("stream"):
            choice = ({"message": {"role": "assistant", "content": "".join(tokens)}} if chat
                      else {"text": "".join(tokens)})
            extra = {"kv_transfer_params": {"pd_handoff": self.handoff}} if self.handoff else {}
            return web.json_response({"id": "x", "choices": [{**choice, "index": 0, "finish_reason": finish}],
                                      "usage": usage, "served_by": self.name, **extra})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i, tok in enumerate(tokens):
            if self.die_after_chunks is not None and i >= self.die_after_chunks:
                assert request.transport is not None
                request.transport.close()
                return resp
            delta = {"delta": {"content": tok}} if chat else {"text": tok}
            last = i == len(tokens) - 1
            event = {"choices": [{"index": 0, **delta, "finish_reason": finish if last else None}]}
            await resp.write(b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n")
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
