"""A lean keep-alive HTTP/1.1 client for the proxy's calls to vLLM servers, on httptools' parser.

Every client request costs the proxy two upstream calls. aiohttp's client spent about 75 us more CPU
on each than this one; a bare prefill-then-decode relay on it cost 1.6x what it does on this client
(benchmarks/http_stacks.py, docs/benchmarks.md). The proxy only talks plain HTTP/1.1 (or TLS) with keep-alive to servers
it knows, so this client does that and nothing else: no redirects, cookies, compression or HTTP/2.
Parsing (chunked bodies included) is httptools', the parser uvicorn and so vLLM's own server use.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Mapping
from urllib.parse import urlsplit

import httptools

_HIGH_WATER = 1 << 20  # body bytes buffered before the socket stops being read (back-pressure)


class HTTPError(Exception):
    """The call failed on the wire: reset, closed before the answer ended, or not HTTP."""


class ConnectError(HTTPError):
    """Nothing accepted the connection (refused, unreachable, unknown host)."""


def header_line(name: str, value: str) -> bytes:
    """``name: value`` as sent; ``ValueError`` for a value HTTP cannot carry (no header injection)."""
    if "\r" in value or "\n" in value:
        raise ValueError(f"header {name!r} has a line break in its value")
    try:
        return f"{name}: {value}\r\n".encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"header {name!r} has characters HTTP cannot carry") from None


class Response:
    """An upstream answer: status and content type once it has begun, the body as it arrives.

    The owner must ``release()`` it (connection back to the pool) or ``close()`` it (connection dropped,
    which makes vLLM abort the request) on every path.
    """

    __slots__ = ("_chunks", "_conn", "_done", "_error", "_size", "_waiter", "content_type", "status")

    def __init__(self, conn: _Connection) -> None:
        self.status = 0
        self.content_type = "application/json"
        self._conn: _Connection | None = conn
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._done = False  # the whole answer is in
        self._error: HTTPError | None = None
        self._waiter: asyncio.Future[None] | None = None

    async def read(self) -> bytes:
        """The rest of the body (bound it with ``asyncio.timeout`` around the call)."""
        parts = []
        while chunk := await self.read_chunk():
            parts.append(chunk)
        return b"".join(parts)

    async def read_chunk(self, timeout_s: float | None = None) -> bytes:
        """What has arrived of the body since the last call, waiting up to ``timeout_s`` for some;
        ``b""`` once the answer is complete."""
        if not self._chunks and not self._done and self._error is None:
            await self._wait(timeout_s)
        if self._chunks:
            return self._take()
        if self._error is not None:
            raise self._error
        return b""

    def release(self) -> None:
        """Done with it: a complete answer leaves its connection open for the next call."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.finish(reuse=self._done and self._error is None)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.finish(reuse=False)

    def _take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        if self._size >= _HIGH_WATER and self._conn is not None:
            self._conn.resume()
        self._size = 0
        return data

    async def _wait(self, timeout_s: float | None) -> None:
        self._waiter = waiter = asyncio.get_running_loop().create_future()
        try:
            if timeout_s is None:
                await waiter
            else:
                async with asyncio.timeout(timeout_s):
                    await waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _feed(self, data: bytes) -> bool:
        """Buffer body bytes; True when the buffer is over the high-water mark."""
        self._chunks.append(data)
        self._size += len(data)
        self._wake()
        return self._size >= _HIGH_WATER

    def _fail(self, error: HTTPError) -> None:
        if not self._done and self._error is None:
            self._error = error
            self._wake()


class _Connection(asyncio.Protocol):
    """One keep-alive connection; it carries one request at a time."""

    def __init__(self, client: UpstreamClient) -> None:
        self._client = client
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.response: Response | None = None
        self.idle_since = 0.0
        self._paused = False
        self._keep_alive = False  # the last answer allows another request on this connection

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.response is None:  # nothing was asked: the connection is out of step
            self._drop()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.response._fail(HTTPError(f"{self._client.url} sent a malformed HTTP answer: {exc}"))
            self._drop()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.response is not None:
            reason = f": {exc}" if exc else ""
            self.response._fail(HTTPError(f"{self._client.url} closed the connection before the answer ended{reason}"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-type" and self.response is not None:
            self.response.content_type = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self.response is not None:
            self.response.status = self._parser.get_status_code()
            self.response._wake()

    def on_body(self, body: bytes) -> None:
        if self.response is not None and self.response._feed(body) and not self._paused and self.transport:
            self._paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        response = self.response
        if response is not None:
            response._done = True
            self._keep_alive = self._parser.should_keep_alive()
            response._wake()

    # used by Response and UpstreamClient
    def send(self, request: bytes) -> Response:
        self.response = response = Response(self)
        self._keep_alive = False
        assert self.transport is not None
        self.transport.write(request)
        return response

    def resume(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def finish(self, reuse: bool) -> None:
        self.response = None
        if reuse and self._keep_alive and self.transport is not None:
            self.resume()
            self._client._give_back(self)
        else:
            self._drop()
            self._client._give_back(None)

    def _drop(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None


class UpstreamClient:
    """The connections to one upstream server: at most ``max_connections`` in use, idle ones reused
    LIFO and dropped after ``keepalive_s`` (keep it below the server's own keep-alive, so that a
    connection is never reused just as the server closes it)."""

    def __init__(self, url: str, max_connections: int, keepalive_s: float, connect_timeout_s: float) -> None:
        parts = urlsplit(url)
        self.url = url
        https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if https else 80)
        self._ssl: ssl.SSLContext | None = ssl.create_default_context() if https else None
        self._host_line = b"Host: " + parts.netloc.encode("idna") + b"\r\n"
        self._keepalive_s = keepalive_s
        self._connect_timeout_s = connect_timeout_s
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._closed = False

    async def request(self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None,
                      timeout_s: float | None = None) -> Response:
        """Send a request and wait up to ``timeout_s`` for its status line and headers."""
        request = self._encode(method, path, body, headers)
        await self._slots.acquire()
        response: Response | None = None
        try:
            async with asyncio.timeout(timeout_s):
                conn = self._reusable() or await self._connect()
                response = conn.send(request)
                while response.status == 0:
                    if response._error is not None:
                        raise response._error
                    await response._wait(None)
        except BaseException:
            if response is not None:
                response.close()  # gives the slot back
            else:
                self._slots.release()
            raise
        return response

    async def fetch(self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None,
                    timeout_s: float | None = None) -> tuple[int, str, bytes]:
        """A whole call within ``timeout_s``: ``(status, content type, body)``."""
        async with asyncio.timeout(timeout_s):
            resp = await self.request(method, path, body, headers)
            try:
                return resp.status, resp.content_type, await resp.read()
            finally:
                resp.release()

    async def close(self) -> None:
        self._closed = True
        for conn in self._idle:
            conn._drop()
        self._idle.clear()

    def _encode(self, method: str, path: str, body: bytes, headers: Mapping[str, str] | None) -> bytes:
        lines = [f"{method} {path} HTTP/1.1\r\n".encode(), self._host_line]
        if headers:
            lines.extend(header_line(name, value) for name, value in headers.items())
        lines.append(b"Content-Length: %d\r\n\r\n" % len(body))
        lines.append(body)
        return b"".join(lines)

    def _reusable(self) -> _Connection | None:
        idle, now = self._idle, time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.transport is not None and now - conn.idle_since < self._keepalive_s:
                return conn
            conn._drop()
        return None

    async def _connect(self) -> _Connection:
        if self._closed:
            raise HTTPError(f"{self.url}: client is closed")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, conn = await loop.create_connection(lambda: _Connection(self), self._host, self._port,
                                                       ssl=self._ssl)
        except OSError as exc:
            raise ConnectError(f"cannot connect to {self.url}: {exc.strerror or exc}") from None
        return conn

    def _give_back(self, conn: _Connection | None) -> None:
        """A call is over: its slot is free, and its connection (None if dropped) can be reused."""
        if conn is not None and self._closed:
            conn._drop()
        elif conn is not None:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        self._slots.release()
