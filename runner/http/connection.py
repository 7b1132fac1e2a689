"""One HTTP/1.1 client connection: an asyncio protocol that writes a request and parses the response with
httptools (C). The event loop tells it when the server closes (`connection_lost`, `eof_received`), so an
idle connection is known dead without polling its socket. Errors are httpcore's (httpx maps them), of the
same kinds httpcore raises for the same failures."""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncIterable
from typing import cast

import httpcore
import httptools

__all__ = ["Connection", "Timeouts", "request_head"]

Timeouts = dict[str, float | None]  # httpx's per-request "timeout" extension: connect, read, write, pool

# Body bytes buffered unread before the socket stops being read (and read again below the low mark).
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024

# What may be written in a request head: a token for the method and names; no CR, LF or NUL in the target or
# values (else a value could end the header and start another: request splitting).
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_UNSAFE = re.compile(rb"[\r\n\0]")


class Connection(asyncio.Protocol):
    """A connection to one origin, carrying one request at a time (no pipelining)."""

    def __init__(self, origin: tuple[bytes, bytes, int]) -> None:
        self.origin = origin
        self.idle_since = 0.0
        self.closed = False
        self.in_flight = False  # a request is out and its response not all read
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None  # set while the transport's buffer is full
        self._error: Exception | None = None
        self._paused = False  # reading paused: too much body buffered unread
        self._last_data = 0.0  # loop time of the last bytes received, or of the wait's start if later
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.reason = b""
        self.http_version = b"HTTP/1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self._head_done = self._complete = self._head_only = self._keep_alive = False
        self._chunks: deque[bytes] = deque()
        self._buffered = 0

    # --- the request, from the pool ------------------------------------------------------------------

    async def send(self, request: httpcore.Request, head: bytes, chunked: bool, timeouts: Timeouts) -> None:
        """Write `request` (its `head` from `request_head`) and wait for the response's head (`status`,
        `reason`, `headers`)."""
        self._reset()
        self.in_flight = True
        self._head_only = request.method == b"HEAD"
        self._write(head)
        if isinstance(request.stream, AsyncIterable):
            async for chunk in request.stream:
                if chunk:
                    self._write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                await self._drained(timeouts.get("write"))
        if chunked:
            self._write(b"0\r\n\r\n")
        await self._drained(timeouts.get("write"))
        while not self._head_done:
            await self._wait(timeouts.get("read"), "reading the response head")

    async def read(self, limit_s: float | None) -> bytes:
        """The next chunk of the body (waiting at most `limit_s` for bytes to arrive); b"" once it has all come."""
        while not self._chunks:
            if self._complete:
                return b""
            await self._wait(limit_s, "reading the response body")
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered < LOW_WATER and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return chunk

    @property
    def reusable(self) -> bool:
        """Whether the response has been read to its end and the connection may carry another request."""
        return (
            self._complete and self._keep_alive and not self.closed and not self._head_only
            and not self._chunks and not self._paused
        )  # fmt: skip

    def expired(self, now: float, keepalive_s: float) -> bool:
        return self.closed or now - self.idle_since > keepalive_s

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    # --- waiting ---------------------------------------------------------------------------------------

    async def _wait(self, limit_s: float | None, doing: str) -> None:
        """Wait for the protocol's next event; ReadTimeout once no byte has come for `limit_s` (one timer,
        moved on as bytes arrive, not a task)."""
        if self._error is not None:
            raise self._error
        self._last_data = self._loop.time()  # the wait starts the count (however long the reader took)
        waiter = self._waiter = self._loop.create_future()
        timer = None
        if limit_s is not None:
            timer = self._loop.call_at(self._last_data + limit_s, self._time_out, waiter, doing, limit_s)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def _time_out(self, waiter: asyncio.Future[None], doing: str, limit_s: float) -> None:
        if waiter.done():
            return
        quiet_since = self._last_data
        if self._loop.time() - quiet_since < limit_s:  # bytes came meanwhile: wait out the rest
            self._loop.call_at(quiet_since + limit_s, self._time_out, waiter, doing, limit_s)
            return
        self.close()  # a response may still come: this connection cannot carry another request
        waiter.set_exception(httpcore.ReadTimeout(f"no data for {limit_s} s while {doing}"))

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)

    def _write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self._transport is None or self._transport.is_closing():
            raise httpcore.WriteError("the connection was closed before the request was sent")
        self._transport.write(data)

    async def _drained(self, limit_s: float | None) -> None:
        """Wait (at most `limit_s`) while the transport's write buffer is full."""
        if self._writable is None:
            return
        try:
            async with asyncio.timeout(limit_s):
                await asyncio.shield(self._writable)
        except TimeoutError:
            self.close()
            raise httpcore.WriteTimeout(f"could not send the request within {limit_s} s") from None

    # --- asyncio.Protocol ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)  # uvloop's is not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        if not self.in_flight or self._complete:  # bytes while no response is due: garbage, or a close notice
            self.close()
            return
        self._last_data = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.close()
            self._fail(httpcore.RemoteProtocolError("the server switched protocols (101): not supported here"))
        except httptools.HttpParserError as exc:
            self.close()
            self._fail(httpcore.RemoteProtocolError(f"the server's response is not valid HTTP/1.1: {exc}"))

    def eof_received(self) -> bool | None:
        self._server_closed(None)
        return None  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self._server_closed(exc)
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def _server_closed(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.in_flight or self._complete:
            return
        if exc is None and self._head_done and self._until_close():
            self._complete = True  # a body delimited by the close itself (no length, not chunked)
            self._wake()
        elif exc is not None:  # reset, or another error of the socket: httpcore's ReadError
            self._fail(httpcore.ReadError(f"the connection broke while reading the response: {exc}"))
        elif self._head_done:
            self._fail(httpcore.RemoteProtocolError("the server closed the connection mid-body"))
        else:
            self._fail(httpcore.RemoteProtocolError("Server disconnected without sending a response."))

    def _until_close(self) -> bool:
        names = {name.lower() for name, _ in self.headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def pause_writing(self) -> None:
        self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # --- httptools callbacks -------------------------------------------------------------------------
    # Once the response is complete, whatever follows is no part of it (data_received closes on the next
    # bytes; these skip a stray message that came in the same bytes).

    def on_status(self, status: bytes) -> None:
        if not self._complete:
            self.reason += status  # httptools may hand it over in pieces

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._complete:
            self.closed = True
            return
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._complete:
            return
        self.status = self._parser.get_status_code()
        if 100 <= self.status < 200:  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            self.headers, self.reason = [], b""
            return
        self._head_done = True
        self._keep_alive = self._parser.should_keep_alive()
        self.http_version = b"HTTP/" + self._parser.get_http_version().encode("ascii")
        if self._head_only:
            self._complete = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self._complete:
            self.closed = True
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._head_done and not self._complete:
            self._complete = True
            self._wake()


def request_head(request: httpcore.Request) -> tuple[bytes, bool]:
    """The request line and headers, checked (LocalProtocolError: nothing is sent); and whether the body
    goes chunked."""
    method, target = request.method, request.url.target
    if not _TOKEN.fullmatch(method):
        raise httpcore.LocalProtocolError(f"illegal method {method!r}")
    if _UNSAFE.search(target) or b" " in target:
        raise httpcore.LocalProtocolError(f"illegal request target {target!r}")
    head = [method, b" ", target, b" HTTP/1.1\r\n"]
    chunked = False
    for name, value in request.headers:
        if not _TOKEN.fullmatch(name) or _UNSAFE.search(value):
            raise httpcore.LocalProtocolError(f"illegal header {name!r}: {value!r}")
        head += (name, b": ", value, b"\r\n")
        if name.lower() == b"transfer-encoding":
            chunked = value.lower().rstrip().endswith(b"chunked")
    head.append(b"\r\n")
    return b"".join(head), chunked
