"""A real local HTTP server speaking the providers' wire formats, scriptable per test.

    async with FakeProviderServer() as fake:
        fake.script("chat", [Reply.openai_error(429, "slow down", headers={"Retry-After": "1"}), Reply.chat("{...}")])
        provider = OpenAITextProvider(http, base_url=fake.openai_url, api_key="sk-test", model="m")
        ...
        assert fake.requests_to("chat")[0].headers["authorization"] == "Bearer sk-test"

Routes (name: method path):
    chat:    POST /v1/chat/completions          OpenAI chat; default: a valid story, profile or prompt
    images:  POST /v1/images/generations        default: a PNG as b64_json (or a /files URL if asked for "url")
    speech:  POST /v1/audio/speech              default: MP3 bytes
    tts:     POST /v1/text-to-speech/{voice_id} ElevenLabs; default: MP3 bytes
    files:   GET  /files/{name}                 what `add_file` stored, else 404

Each route answers from its script queue first (`script(route, replies)`), then with its default. A Reply
can carry any status, headers, JSON or raw body (malformed, truncated, oversized), a delay before answering
(past a client's read timeout), can be sent chunked (no Content-Length), or cut off mid-transfer (the
connection dropped after `drop_after` bytes). Every request is recorded.

Flaky like the real ones: with `faults=FaultMix(...)`, unscripted requests on every route fail at the
mix's rates, drawn from one seeded generator per route (the n-th request to a route always gets the
same draw for a seed), and `faults_sent` counts what was sent:

    async with FakeProviderServer(faults=FaultMix.realistic(), seed=7) as fake: ...

The server runs inside the test's event loop on a pre-bound 127.0.0.1 socket and never touches signals.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import email.utils
import logging
import random
import re
import socket
import time
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from jobs.providers.offline import render_png

__all__ = ["FAKE_MP3", "ROUTES", "FakeProviderServer", "FaultMix", "Recorded", "Reply", "story_json"]

ROUTES = ("chat", "images", "speech", "tts", "files")
FAKE_MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" + b"\x00" * 413  # ID3 tag + one MPEG frame
_SCENE_COUNT = re.compile(r"exactly (\d+) scenes")
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Reply:
    """One scripted answer. `body` (raw bytes) wins over `json`; neither means an empty body."""

    status: int = 200
    json: Any = None
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = None
    delay_s: float = 0.0  # wait this long before answering (cut short when the test ends)
    chunked: bool = False  # stream the body without Content-Length
    drop_after: int | None = None  # declare the whole body, send this many bytes of it, drop the connection

    @classmethod
    def chat(cls, content: str | None, *, finish_reason: str = "stop") -> Reply:
        """An OpenAI chat completion whose first choice says `content`."""
        return cls(json=chat_completion(content, finish_reason=finish_reason))

    @classmethod
    def openai_error(cls, status: int, message: str, *, headers: Mapping[str, str] | None = None) -> Reply:
        """An OpenAI-shaped error: {"error": {"message", "type", "code"}}."""
        error = {"message": message, "type": "invalid_request_error", "code": None}
        return cls(status=status, json={"error": error}, headers=headers or {})

    @classmethod
    def elevenlabs_error(
        cls, status: int, message: str, *, code: str = "error", headers: Mapping[str, str] | None = None
    ) -> Reply:
        """An ElevenLabs-shaped error: {"detail": {"status", "message"}}."""
        return cls(status=status, json={"detail": {"status": code, "message": message}}, headers=headers or {})

    @classmethod
    def image_b64(cls, data: bytes) -> Reply:
        return cls(json={"created": 0, "data": [{"b64_json": base64.b64encode(data).decode("ascii")}]})

    @classmethod
    def image_url(cls, url: str) -> Reply:
        return cls(json={"created": 0, "data": [{"url": url}]})

    @classmethod
    def raw(cls, body: bytes, *, content_type: str = "application/json", chunked: bool = False) -> Reply:
        """Exactly these bytes: malformed JSON, a truncated body, an oversized one, a wrong kind of file."""
        return cls(body=body, content_type=content_type, chunked=chunked)

    @classmethod
    def slow(cls, delay_s: float, then: Reply | None = None) -> Reply:
        """`then` (default: an empty 200), sent only after `delay_s` seconds."""
        return dataclasses.replace(then or cls(), delay_s=delay_s)

    @classmethod
    def dropped(cls, body: bytes, after: int, *, content_type: str = "application/json") -> Reply:
        """A 200 declaring all of `body` whose connection drops after `after` bytes of it."""
        return cls(body=body, content_type=content_type, drop_after=after)


@dataclass(frozen=True)
class FaultMix:
    """Which fraction of unscripted requests fails, and how (the rest get the route's default answer).

    rate_limited: 429 with Retry-After (`retry_after_s`, as seconds or as an HTTP date, half and half)
    server_error: 500, 502 or 503
    malformed:    a 200 whose body is cut off: on JSON routes a truncated body, an HTML error page, an
                  empty body, or a dropped connection; on media routes a dropped connection
    slow:         the right answer, after a delay drawn from `slow_s` (past a short read timeout or not)
    """

    rate_limited: float = 0.0
    server_error: float = 0.0
    malformed: float = 0.0
    slow: float = 0.0
    retry_after_s: float = 1.0
    slow_s: tuple[float, float] = (0.2, 1.0)

    def __post_init__(self) -> None:
        rates = (self.rate_limited, self.server_error, self.malformed, self.slow)
        if any(rate < 0 for rate in rates) or sum(rates) > 1:
            raise ValueError(f"fault rates must be >= 0 and add up to at most 1, got {rates}")

    @classmethod
    def realistic(cls) -> FaultMix:
        """The issue's mix: 5% 429 with Retry-After, 10% 5xx, 5% malformed bodies, 5% slow replies."""
        return cls(rate_limited=0.05, server_error=0.10, malformed=0.05, slow=0.05)

    def pick(self, draw: float) -> str | None:
        """The fault for a uniform draw in [0, 1), or None for a good answer."""
        for name in ("rate_limited", "server_error", "malformed", "slow"):
            rate: float = getattr(self, name)
            if draw < rate:
                return name
            draw -= rate
        return None


@dataclass(frozen=True)
class Recorded:
    """One request as the server saw it. Header names are lower case."""

    route: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None


def chat_completion(content: str | None, *, finish_reason: str = "stop") -> dict[str, Any]:
    message = {"role": "assistant", "content": content}
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": "fake",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def story_json(scene_count: int = 3, *, title: str = "The Lantern Fox") -> str:
    """A valid story JSON text with `scene_count` scenes."""
    scenes = [
        {
            "title": f"Scene {n}",
            "text": f"The fox walked on through part {n} of the night. The lantern glowed.",
            "image_prompt": f"a small fox with a glowing lantern, scene {n}",
        }
        for n in range(1, scene_count + 1)
    ]
    return orjson.dumps({"title": title, "scenes": scenes}).decode()


PROFILE_JSON = orjson.dumps(
    {
        "characters": "a small red fox with a green scarf",
        "setting": "a moonlit pine forest with soft snow",
        "base_style": "watercolour, warm lantern light, soft edges",
    }
).decode()
IMAGE_PROMPT_TEXT = "A small red fox with a green scarf holds a lantern in a moonlit pine forest, watercolour."


class _QuietServer(uvicorn.Server):
    """uvicorn without signal handlers: the test process keeps its own."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class FakeProviderServer:
    """The fake providers on a free loopback port, for `async with`; see the module docstring."""

    def __init__(self, *, faults: FaultMix | None = None, seed: int = 0) -> None:
        self.faults = faults
        self.faults_sent: Counter[tuple[str, str]] = Counter()  # (route, fault) -> how many were sent
        self._rngs = {route: random.Random(f"{seed}:{route}") for route in ROUTES}
        self._quiet = _DropsAreQuiet()
        self.requests: list[Recorded] = []
        self.in_flight = 0  # requests being answered now
        self.max_in_flight = 0  # the most there were at once
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._files: dict[str, tuple[bytes, str]] = {}
        self._wake = asyncio.Event()
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        """The server root: ElevenLabs' base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_url(self) -> str:
        """The OpenAI-compatible base URL (with /v1)."""
        return f"{self.base_url}/v1"

    def script(self, route: str, replies: Iterable[Reply]) -> None:
        """Queue answers for `route`; each request takes the next one, then defaults apply."""
        if route not in ROUTES:
            raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
        self._scripts[route].extend(replies)

    def pending(self, route: str) -> int:
        """Scripted answers not yet taken."""
        return len(self._scripts[route])

    def add_file(self, name: str, data: bytes, content_type: str = "image/png") -> str:
        """Serve `data` at /files/{name}; returns its URL."""
        self._files[name] = (data, content_type)
        return f"{self.base_url}/files/{name}"

    def requests_to(self, route: str) -> list[Recorded]:
        return [r for r in self.requests if r.route == route]

    def reset(self) -> None:
        """Forget scripts, files, requests and faults sent; wake delayed replies so they finish now."""
        self.requests.clear()
        self.faults_sent.clear()
        self.max_in_flight = self.in_flight
        self._scripts.clear()
        self._files.clear()
        self._wake.set()
        self._wake = asyncio.Event()

    async def __aenter__(self) -> FakeProviderServer:
        # IPPROTO_TCP named, so asyncio sets TCP_NODELAY on accepted connections (else each reply waits ~40 ms
        # for a delayed ACK between its head and body)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app(), log_config=None, lifespan="off", access_log=False, http="httptools", ws="none",
            timeout_graceful_shutdown=2,
        )  # fmt: skip
        self._server = _QuietServer(config)
        logging.getLogger("uvicorn.error").addFilter(self._quiet)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        async with asyncio.timeout(5):
            while not self._server.started:
                if self._task.done():
                    self._task.result()  # raise why it could not start
                await asyncio.sleep(0.005)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.reset()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, 10)
        logging.getLogger("uvicorn.error").removeFilter(self._quiet)

    # --- the app ------------------------------------------------------------------------------------

    def _app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._endpoint("chat"), methods=["POST"]),
                Route("/v1/images/generations", self._endpoint("images"), methods=["POST"]),
                Route("/v1/audio/speech", self._endpoint("speech"), methods=["POST"]),
                Route("/v1/text-to-speech/{voice_id}", self._endpoint("tts"), methods=["POST"]),
                Route("/files/{name}", self._endpoint("files"), methods=["GET"]),
            ]
        )

    def _endpoint(self, route: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await self._handle(route, request)

        return endpoint

    async def _handle(self, route: str, request: Request) -> Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(route, request)
        finally:
            self.in_flight -= 1

    async def _answer(self, route: str, request: Request) -> Response:
        body = await request.body()
        recorded = Recorded(route, request.method, request.url.path, dict(request.headers.items()), body)
        self.requests.append(recorded)
        queue = self._scripts[route]
        reply = queue.popleft() if queue else self._unscripted(route, recorded, request.path_params)
        if reply.delay_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), reply.delay_s)
        return _response(reply)

    def _default(self, route: str, recorded: Recorded, params: Mapping[str, Any]) -> Reply:
        if route == "chat":
            return Reply.chat(_default_chat(recorded.json))
        if route == "images":
            request = recorded.json
            png = render_png(str(request.get("prompt", "")), int(request.get("seed", 0)))
            if request.get("response_format") == "url":
                return Reply.image_url(self.add_file(f"generated-{len(self.requests)}.png", png))
            return Reply.image_b64(png)
        if route in ("speech", "tts"):
            return Reply(body=FAKE_MP3, content_type="audio/mpeg")
        stored = self._files.get(str(params.get("name")))
        if stored is None:
            return Reply(status=404, json={"error": {"message": "no such file"}})
        return Reply(body=stored[0], content_type=stored[1])

    def _unscripted(self, route: str, recorded: Recorded, params: Mapping[str, Any]) -> Reply:
        """The route's default answer, or the fault the mix draws for this request instead."""
        good = self._default(route, recorded, params)
        rng = self._rngs[route]
        fault = self.faults.pick(rng.random()) if self.faults is not None else None
        if fault is None or self.faults is None:
            return good
        self.faults_sent[route, fault] += 1
        error = Reply.elevenlabs_error if route == "tts" else Reply.openai_error
        if fault == "rate_limited":
            wait = self.faults.retry_after_s
            header = f"{wait:g}" if rng.random() < 0.5 else email.utils.formatdate(time.time() + wait, usegmt=True)
            return error(429, "Rate limit reached, slow down", headers={"Retry-After": header})
        if fault == "server_error":
            return error(rng.choice((500, 502, 503)), "The server had an error processing your request")
        if fault == "slow":
            return Reply.slow(rng.uniform(*self.faults.slow_s), good)
        return _malformed(route, good, rng)


def _malformed(route: str, good: Reply, rng: random.Random) -> Reply:
    """`good` broken on the way: cut off, dropped, empty, or an HTML page (JSON routes); dropped (media)."""
    body = bytes(_response(good).body)
    how = rng.choice(("truncated", "html", "empty", "dropped")) if route in ("chat", "images") else "dropped"
    if how == "truncated" and len(body) > 1:
        return Reply.raw(body[: rng.randrange(1, len(body))])
    if how == "html":
        return Reply.raw(_BAD_GATEWAY_PAGE, content_type="text/html")
    if how == "empty":
        return Reply.raw(b"")
    return Reply.dropped(body, rng.randrange(0, max(len(body), 1)), content_type=good.content_type or "")


_BAD_GATEWAY_PAGE = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"


class _DroppedOnPurpose(Exception):
    """Raised by a dropped reply after its partial body, so the server closes the connection."""


class _DropsAreQuiet(logging.Filter):
    """Keep the server's error log free of the connection drops the fake makes on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _DroppedOnPurpose))


class _DroppedResponse(Response):
    """Declares the whole body's length, sends `sent` bytes of it, then drops the connection."""

    def __init__(self, body: bytes, sent: int, *, headers: Mapping[str, str], media_type: str) -> None:
        super().__init__(body, headers=dict(headers), media_type=media_type)
        self.sent = sent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": bytes(self.body[: self.sent]), "more_body": True})
        raise _DroppedOnPurpose(f"connection dropped after {self.sent} of {len(self.body)} bytes")


def _default_chat(request: Any) -> str:
    """A story for story prompts (honouring "exactly N scenes"), a profile for profile prompts, else a prompt."""
    messages = request.get("messages", []) if isinstance(request, dict) else []
    text = "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    if '"scenes"' in text:
        found = _SCENE_COUNT.findall(text)
        return story_json(int(found[-1]) if found else 3)
    if '"base_style"' in text:
        return PROFILE_JSON
    return IMAGE_PROMPT_TEXT


def _response(reply: Reply) -> Response:
    if reply.body is not None:
        body, content_type = reply.body, reply.content_type or "application/octet-stream"
    elif reply.json is not None:
        body, content_type = orjson.dumps(reply.json), reply.content_type or "application/json"
    else:
        body, content_type = b"", reply.content_type or "text/plain"
    headers = dict(reply.headers)
    if reply.drop_after is not None:
        return _DroppedResponse(body, reply.drop_after, headers=headers, media_type=content_type)
    if reply.chunked:
        return StreamingResponse(_chunks(body), status_code=reply.status, headers=headers, media_type=content_type)
    return Response(body, status_code=reply.status, headers=headers, media_type=content_type)


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), _CHUNK):
        yield body[start : start + _CHUNK]
        await asyncio.sleep(0)
