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
(past a client's read timeout), and can be sent chunked (no Content-Length). Every request is recorded.
The server runs inside the test's event loop on a pre-bound 127.0.0.1 socket and never touches signals.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import socket
from collections import defaultdict, deque
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

from jobs.providers.offline import render_png

__all__ = ["FAKE_MP3", "ROUTES", "FakeProviderServer", "Recorded", "Reply", "story_json"]

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
        base = then or cls()
        return cls(base.status, base.json, base.body, base.headers, base.content_type, delay_s, base.chunked)


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

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
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
        """Forget scripts, files and requests; wake delayed replies so they finish now."""
        self.requests.clear()
        self._scripts.clear()
        self._files.clear()
        self._wake.set()
        self._wake = asyncio.Event()

    async def __aenter__(self) -> FakeProviderServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app(), log_config=None, lifespan="off", access_log=False, http="h11", ws="none",
            timeout_graceful_shutdown=2,
        )  # fmt: skip
        self._server = _QuietServer(config)
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
        body = await request.body()
        recorded = Recorded(route, request.method, request.url.path, dict(request.headers.items()), body)
        self.requests.append(recorded)
        queue = self._scripts[route]
        reply = queue.popleft() if queue else self._default(route, recorded, request.path_params)
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
    if reply.chunked:
        return StreamingResponse(_chunks(body), status_code=reply.status, headers=headers, media_type=content_type)
    return Response(body, status_code=reply.status, headers=headers, media_type=content_type)


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), _CHUNK):
        yield body[start : start + _CHUNK]
        await asyncio.sleep(0)
