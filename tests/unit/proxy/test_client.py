"""The proxy's upstream HTTP client against real servers on sockets: aiohttp's for well-formed answers,
raw asyncio servers for the broken ones."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.unit.proxy.conftest import run
from vllm_pd.launcher import free_port
from vllm_pd.proxy.client import ConnectError, HTTPError, UpstreamClient


class Upstream:
    """An aiohttp server that counts the connections it has seen and those still open."""

    def __init__(self) -> None:
        self.peers: set[tuple] = set()
        self.open_streams = 0
        self.app = web.Application(client_max_size=8 << 20)
        self.app.router.add_post("/echo", self.echo)
        self.app.router.add_get("/stream", self.stream)
        self.app.router.add_get("/slow", self.slow)

    def _seen(self, request: web.Request) -> None:
        self.peers.add(request.transport.get_extra_info("peername"))

    async def echo(self, request: web.Request) -> web.Response:
        self._seen(request)
        body = await request.read()
        return web.Response(body=body, status=int(request.headers.get("X-Status", "200")),
                            headers={"X-Seen": request.headers.get("X-Request-Id", "")},
                            content_type="application/json")

    async def stream(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        self.open_streams += 1
        try:
            for i in range(int(request.query.get("n", "3"))):
                await out.write(b"data: %d\n\n" % i)
                await asyncio.sleep(float(request.query.get("gap", "0")))
            await out.write_eof()
        finally:
            self.open_streams -= 1
        return out

    async def slow(self, request: web.Request) -> web.Response:
        self._seen(request)
        await asyncio.sleep(float(request.query.get("s", "5")))
        return web.Response(text="late")


@contextlib.asynccontextmanager
async def upstream(**client_settings) -> AsyncIterator[tuple[Upstream, UpstreamClient]]:
    up = Upstream()
    server = TestServer(up.app)
    await server.start_server()
    settings = {"max_connections": 8, "keepalive_s": 4.0, "connect_timeout_s": 2.0, **client_settings}
    client = UpstreamClient(str(server.make_url("")).rstrip("/"), **settings)
    try:
        yield up, client
    finally:
        await client.close()
        await server.close()


async def post(client: UpstreamClient, body: bytes, **headers: str) -> tuple[int, str, bytes]:
    return await client.fetch("POST", "/echo", body, {"Content-Type": "application/json", **headers})


def test_sequential_calls_reuse_one_connection_and_bodies_round_trip():
    async def scenario():
        async with upstream() as (up, client):
            for i in range(5):
                assert await post(client, b'{"i": %d}' % i) == (200, "application/json",
                                                                 b'{"i": %d}' % i)
            assert len(up.peers) == 1
            big = b"x" * (3 << 20)  # over the high-water mark: read back through paused reading
            assert (await post(client, big))[2] == big
            assert len(up.peers) == 1
    run(scenario)


def test_statuses_and_headers_pass_and_a_line_break_in_a_header_is_refused():
    async def scenario():
        async with upstream() as (_, client):
            assert (await post(client, b"{}", **{"X-Status": "503"}))[0] == 503
            assert (await post(client, b"{}", **{"X-Status": "404"}))[0] == 404
            with pytest.raises(ValueError, match="line break"):
                await client.request("POST", "/echo", b"", {"X-Request-Id": "a\r\nX-Evil: 1"})
            assert (await post(client, b"{}"))[0] == 200  # the refused call took no slot
    run(scenario)


def test_a_chunked_stream_arrives_in_order_and_ends_with_empty_bytes():
    async def scenario():
        async with upstream() as (up, client):
            resp = await client.request("GET", "/stream?n=4&gap=0.01")
            assert resp.status == 200 and resp.content_type == "text/event-stream"
            got = b""
            while chunk := await resp.read_chunk(5.0):
                got += chunk
            resp.release()
            assert got == b"".join(b"data: %d\n\n" % i for i in range(4))
            assert (await post(client, b"{}"))[0] == 200 and len(up.peers) == 1  # reused after the stream
    run(scenario)


def test_closing_a_stream_midway_drops_the_connection_and_the_server_sees_it():
    async def scenario():
        async with upstream() as (up, client):
            resp = await client.request("GET", "/stream?n=100&gap=0.02")
            assert await resp.read_chunk(5.0)
            resp.close()
            for _ in range(100):
                if up.open_streams == 0:
                    break
                await asyncio.sleep(0.02)
            assert up.open_streams == 0, "the server still streams to a closed connection"
            assert (await post(client, b"{}"))[0] == 200 and len(up.peers) == 2  # a fresh connection
    run(scenario)


def test_timeouts_bound_the_headers_and_each_read():
    async def scenario():
        async with upstream() as (_, client):
            with pytest.raises(TimeoutError):
                await client.request("GET", "/slow?s=5", timeout_s=0.2)
            resp = await client.request("GET", "/stream?n=2&gap=1")
            assert await resp.read_chunk(5.0)
            with pytest.raises(TimeoutError):
                await resp.read_chunk(0.2)
            resp.close()
            assert (await post(client, b"{}"))[0] == 200
    run(scenario)


def test_cancelling_a_call_frees_its_slot():
    async def scenario():
        async with upstream(max_connections=1) as (_, client):
            call = asyncio.create_task(client.request("GET", "/slow?s=5"))
            await asyncio.sleep(0.2)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            async with asyncio.timeout(2):
                assert (await post(client, b"{}"))[0] == 200
    run(scenario)


def test_the_pool_is_bounded_and_waiters_get_a_connection_in_turn():
    async def scenario():
        async with upstream(max_connections=2) as (up, client):
            streams = [await client.request("GET", "/stream?n=2&gap=0.3") for _ in range(2)]
            third = asyncio.create_task(post(client, b"{}"))
            await asyncio.sleep(0.1)
            assert not third.done(), "a third connection was opened past the bound"
            for resp in streams:
                while await resp.read_chunk(5.0):
                    pass
                resp.release()
            assert (await third)[0] == 200
            assert len(up.peers) == 2
    run(scenario)


def test_an_idle_connection_past_keepalive_is_not_reused():
    async def scenario():
        async with upstream(keepalive_s=0.1) as (up, client):
            await post(client, b"{}")
            await asyncio.sleep(0.3)
            await post(client, b"{}")
            assert len(up.peers) == 2
    run(scenario)


def test_nothing_listening_is_a_connect_error():
    async def scenario():
        client = UpstreamClient(f"http://127.0.0.1:{free_port()}", 4, 4.0, 2.0)
        with pytest.raises(ConnectError, match="cannot connect"):
            await client.request("GET", "/health")
        await client.close()
    run(scenario)


async def raw_server(answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await answer(reader, writer)
        writer.close()
    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize("answer, match", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"partial\"", "closed the connection before the answer ended"),
    (b"NOT HTTP AT ALL\r\n\r\n", "malformed HTTP answer"),
    (b"", "closed the connection"),
], ids=["cut-mid-body", "not-http", "closed-at-once"])
def test_a_broken_answer_is_an_http_error_not_a_hang(answer: bytes, match: str):
    async def scenario():
        async def reply(reader, writer):
            writer.write(answer)
            await writer.drain()
        server = await raw_server(reply)
        port = server.sockets[0].getsockname()[1]
        client = UpstreamClient(f"http://127.0.0.1:{port}", 4, 4.0, 2.0)
        async with asyncio.timeout(5):
            with pytest.raises(HTTPError, match=match):
                resp = await client.request("POST", "/x", b"{}")
                try:
                    await resp.read()
                finally:
                    resp.close()
        await client.close()
        server.close()
        await server.wait_closed()
    run(scenario)


def test_connection_close_from_the_server_is_honoured():
    async def scenario():
        connections = 0

        async def reply(reader, writer):
            nonlocal connections
            connections += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        server = await raw_server(reply)
        port = server.sockets[0].getsockname()[1]
        client = UpstreamClient(f"http://127.0.0.1:{port}", 4, 4.0, 2.0)
        for _ in range(3):
            resp = await client.request("GET", "/x")
            assert await resp.read() == b"ok"
            resp.release()
        assert connections == 3
        await client.close()
        server.close()
        await server.wait_closed()
    run(scenario)
