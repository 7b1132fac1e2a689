"""The connection pool under the process's httpx client, in place of httpcore's.

httpcore's pool re-examines every connection on each request and on each response's close: it counts the
idle ones once per idle one (quadratic) and polls each idle socket through anyio. With the twenty or so
keep-alive connections a busy worker holds to a provider, that was a third of a worker's CPU in the story
workload over HTTP. Here idle connections wait per origin in a stack (the most recently used first), the
event loop reports a server's close as it happens, and a request touches only the connection it takes.

httpx stays the API: its transport (and the OpenTelemetry instrumentation of it), timeouts, redirects,
proxies (their own transports) and content decoding are unchanged. HTTP/1.1 only."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import httpcore
import httpx

from runner.http.connection import Connection, Timeouts, request_head

__all__ = ["ConnectionPool", "PooledTransport"]

Origin = tuple[bytes, bytes, int]
DEFAULT_PORTS = {b"http": 80, b"https": 443}


class ConnectionPool:
    """Keep-alive HTTP/1.1 connections, at most `max_connections` open (busy or idle) and at most
    `max_keepalive` idle; an idle one is closed after `keepalive_s` (servers close theirs after 5 s or more)."""

    def __init__(
        self, ssl_context: ssl.SSLContext, *, max_connections: int, max_keepalive: int, keepalive_s: float = 4.0
    ) -> None:
        self._ssl = ssl_context
        self._max_connections = max_connections
        self._max_keepalive = max_keepalive
        self._keepalive_s = keepalive_s
        self._idle: dict[Origin, list[Connection]] = {}
        self._idle_count = 0
        self._open = 0  # connections open or opening, busy or idle
        self._waiting: deque[asyncio.Future[None]] = deque()  # requests waiting for room in the pool
        self._closed = False

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        """httpcore's pool interface, which httpx's transport calls."""
        url = request.url
        if url.scheme not in DEFAULT_PORTS:
            raise httpcore.UnsupportedProtocol(f"{url.scheme.decode()!r} URLs are not supported: use http or https")
        origin = (url.scheme, url.host, url.port or DEFAULT_PORTS[url.scheme])
        timeouts: Timeouts = request.extensions.get("timeout", {})
        sni = request.extensions.get("sni_hostname")
        head, chunked = request_head(request)  # refused before any connection is taken
        connection = await self._acquire(origin, timeouts, sni.decode() if isinstance(sni, bytes) else sni)
        try:
            await connection.send(request, head, chunked, timeouts)
        except BaseException:
            self.discard(connection)
            raise
        return httpcore.Response(
            connection.status,
            headers=connection.headers,
            content=_Body(self, connection, timeouts.get("read")),
            extensions={"http_version": connection.http_version, "reason_phrase": connection.reason},
        )

    # --- taking and giving back ----------------------------------------------------------------------

    async def _acquire(self, origin: Origin, timeouts: Timeouts, sni: str | None) -> Connection:
        pool_timeout = timeouts.get("pool")
        deadline = None if pool_timeout is None else time.monotonic() + pool_timeout
        while True:
            if self._closed:
                raise httpcore.PoolTimeout("the HTTP client is closed")
            if (connection := self._take_idle(origin)) is not None:
                return connection
            if self._open >= self._max_connections and self._idle_count:
                self._close_oldest_idle()  # room for this origin, taken from another's idle connection
            if self._open < self._max_connections:
                return await self._connect(origin, timeouts.get("connect"), sni)
            await self._wait_for_room(deadline)

    def _take_idle(self, origin: Origin) -> Connection | None:
        stack = self._idle.get(origin)
        now = time.monotonic()
        while stack:
            connection = stack.pop()
            self._idle_count -= 1
            if not connection.expired(now, self._keepalive_s):
                return connection
            connection.close()
            self._gone()
        return None

    def _close_oldest_idle(self) -> None:
        _, stack = min(
            ((o, s) for o, s in self._idle.items() if s), key=lambda item: item[1][0].idle_since
        )  # fmt: skip
        stack.pop(0).close()
        self._idle_count -= 1
        self._gone()

    async def _connect(self, origin: Origin, limit_s: float | None, sni: str | None) -> Connection:
        scheme, host, port = origin
        self._open += 1
        loop = asyncio.get_running_loop()
        tls = scheme == b"https"
        try:
            async with asyncio.timeout(limit_s):
                _, connection = await loop.create_connection(
                    lambda: Connection(origin), host.decode("ascii"), port,
                    ssl=self._ssl if tls else None, server_hostname=(sni or host.decode("ascii")) if tls else None,
                )  # fmt: skip
        except TimeoutError:
            self._gone()
            raise httpcore.ConnectTimeout(f"no connection to {host.decode()}:{port} within {limit_s} s") from None
        except OSError as exc:
            self._gone()
            raise httpcore.ConnectError(f"cannot connect to {host.decode()}:{port}: {exc}") from exc
        except BaseException:
            self._gone()
            raise
        return connection

    async def _wait_for_room(self, deadline: float | None) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        woken = False
        try:
            timeout = None if deadline is None else max(deadline - time.monotonic(), 0)
            async with asyncio.timeout(timeout):
                await waiter
            woken = True
        except TimeoutError:
            raise httpcore.PoolTimeout(
                f"no free connection within the pool timeout ({self._max_connections} in use)"
            ) from None
        finally:
            if not woken:
                if waiter.done():  # woken as it gave up (cancelled, timed out): the room goes to the next
                    self._room()
                else:
                    self._waiting.remove(waiter)

    def release(self, connection: Connection) -> None:
        """A response read to its end (or given up): keep the connection for the next request, or close it."""
        connection.in_flight = False
        if not connection.reusable or self._closed or self._idle_count >= self._max_keepalive:
            self.discard(connection)
            return
        connection.idle_since = time.monotonic()
        self._idle.setdefault(connection.origin, []).append(connection)
        self._idle_count += 1
        self._room()

    def discard(self, connection: Connection) -> None:
        """A connection that cannot carry another request (cut short, failed, or not keep-alive): closed."""
        connection.in_flight = False
        connection.close()
        self._gone()

    def _gone(self) -> None:
        self._open -= 1
        self._room()

    def _room(self) -> None:
        """Wake the longest-waiting request: there is an idle connection, or room for a new one."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    # --- lifetime --------------------------------------------------------------------------------------

    async def aclose(self) -> None:
        self._closed = True
        for stack in self._idle.values():
            for connection in stack:
                connection.close()
        self._idle.clear()
        self._idle_count = 0
        for waiter in self._waiting:
            if not waiter.done():
                waiter.set_result(None)

    async def __aenter__(self) -> ConnectionPool:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class _Body:
    """A response's body, as httpx reads it: chunk by chunk; the connection goes back to the pool at its end."""

    def __init__(self, pool: ConnectionPool, connection: Connection, read_timeout: float | None) -> None:
        self._pool = pool
        self._connection: Connection | None = connection
        self._read_timeout = read_timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None:
            return
        try:
            while chunk := await connection.read(self._read_timeout):
                yield chunk
        except BaseException:
            self._give_back(reusable=False)
            raise
        self._give_back(reusable=True)

    async def aclose(self) -> None:
        self._give_back(reusable=True)  # reused only if the body was read to its end

    def _give_back(self, *, reusable: bool) -> None:
        if (connection := self._connection) is None:
            return
        self._connection = None
        if reusable:
            self._pool.release(connection)
        else:
            self._pool.discard(connection)


class PooledTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport over `ConnectionPool`: what it does around the pool (mapping errors to httpx's,
    wrapping the response) is kept, and so is the OpenTelemetry instrumentation, which patches this class."""

    def __init__(self, ssl_context: ssl.SSLContext, *, max_connections: int, max_keepalive: int, **kwargs: Any) -> None:
        super().__init__(verify=ssl_context, **kwargs)
        self._pool = ConnectionPool(  # type: ignore[assignment]  # httpcore's pool interface, not its class
            ssl_context, max_connections=max_connections, max_keepalive=max_keepalive
        )
