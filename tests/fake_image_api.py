"""A fake of the provider's ``POST {base}/images/edits``, strict about what it accepts.

It parses the multipart body the way ``shared/reference/image-edits-api.txt``
describes (``model``, ``prompt``, repeated ``image`` parts, optional ``size``,
``response_format``), rejects what the real API rejects (``quality``, ``n``, an
unknown size), records every request, and answers from a script: each success
shape (prefixed or raw base64, url) and each failure (4xx, 429, HTML 5xx,
malformed JSON, truncated base64, no image, a hang, a dropped connection, a 200
whose body is cut off midway). Every answer carries an ``X-Oneapi-Request-Id``
from a counter, as the provider's gateway does, unless the reply sets its own.
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image

SIZES = set(
    "1280x1280 848x1280 1280x848 960x1280 1280x960 1024x1280 1280x1024 720x1280 1280x720 1280x544 "
    "2048x2048 1360x2048 2048x1360 1536x2048 2048x1536 1632x2048 2048x1632 1152x2048 2048x1152 2048x864 "
    "2880x2880 2336x3520 3520x2336 2480x3312 3312x2480 2560x3216 3216x2560 "
    "2160x3840 3840x2160 3840x1632".split()
)
ALLOWED_FIELDS = {"model", "prompt", "image", "size", "response_format"}


def make_png(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 80, 40)) -> bytes:
    """A small real PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Part:
    """One multipart part as received."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class EditCall:
    """One request to the edits endpoint, as received."""

    headers: dict[str, str]
    parts: list[Part]
    status: int = 0
    request_id: str | None = None  # the X-Oneapi-Request-Id it was answered with

    def field(self, name: str) -> str | None:
        """The text of a non-file field, or None."""
        for part in self.parts:
            if part.name == name and part.filename is None:
                return part.data.decode()
        return None

    @property
    def images(self) -> list[Part]:
        """The ``image`` parts in the order they were sent."""
        return [p for p in self.parts if p.name == "image"]

    @property
    def names(self) -> list[str]:
        """Part names in order."""
        return [p.name for p in self.parts]


@dataclass
class Reply:
    """One scripted answer. ``kind`` picks the shape; the rest tunes it."""

    # b64 | b64_raw | url | error | html | malformed | truncated | no_image | hang | drop | cut | stall
    kind: str = "b64"
    image: bytes | None = None
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    usage: dict[str, int] | None = None
    # Answer only once the test sets this (then after ``delay``): a call that holds its slot until a
    # scenario is in place, whatever the machine's speed.
    until: asyncio.Event | None = field(default=None, compare=False)


class FakeImageAPI:
    """The fake server. ``base`` is what the bot's ``IMAGE_API_BASE`` should be."""

    def __init__(self, *, api_key: str = "sk-test-key-0123456789", model: str = "gpt-image-2-vip") -> None:
        self.api_key = api_key
        self.model = model
        # More keys and models it accepts (a server's own key; the models an operator configures).
        # A model not ending in -vip takes any WIDTHxHEIGHT, as the provider's -all models do.
        self.api_keys: set[str] = set()
        self.models: set[str] = set()
        self.calls: list[EditCall] = []
        self.script: deque[Reply] = deque()
        self.default = Reply()
        self.default_image = make_png()
        self.latency = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self.file_gets: list[str] = []
        self._files: dict[str, bytes] = {}
        self._ids = itertools.count(1)
        self._request_ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def then(self, *replies: Reply) -> None:
        """Queue replies for the next calls (after them, the default success)."""
        self.script.extend(replies)

    async def start(self) -> None:
        app = web.Application(client_max_size=512 * 1024 * 1024)
        app.router.add_post("/v1/images/edits", self._edits)
        app.router.add_get("/files/{name}", self._file)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for_calls(self, count: int, timeout: float = 10) -> list[EditCall]:
        """Wait until at least ``count`` calls have been answered."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(lambda: sum(1 for c in self.calls if c.status) >= count)
        return self.calls

    async def wait_for_started(self, count: int, timeout: float = 10) -> None:
        """Wait until at least ``count`` calls have arrived (answered or not)."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.calls) >= count)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.file_gets.append(name)
        if "authorization" in {k.lower() for k in request.headers}:
            return web.json_response({"error": {"message": "unexpected Authorization to CDN"}}, status=400)
        data = self._files.get(name)
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="image/png")

    async def _parse(self, request: web.Request) -> tuple[EditCall, str | None]:
        call = EditCall(headers=dict(request.headers), parts=[])
        if not request.content_type.startswith("multipart/form-data"):
            return call, f"Content-Type must be multipart/form-data, got {request.content_type}"
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            data = await part.read()  # type: ignore[union-attr]
            call.parts.append(
                Part(part.name or "", part.filename, part.headers.get("Content-Type"), bytes(data))  # type: ignore[union-attr]
            )
        unknown = [p.name for p in call.parts if p.name not in ALLOWED_FIELDS]
        if unknown:
            return call, f"Unsupported parameter(s): {', '.join(unknown)}"
        for name in ("model", "prompt", "size", "response_format"):
            if sum(1 for p in call.parts if p.name == name) > 1:
                return call, f"{name} given more than once"
        model = call.field("model") or ""
        if model != self.model and model not in self.models:
            return call, f"model must be {self.model}"
        if not (call.field("prompt") or "").strip():
            return call, "prompt is required"
        size = call.field("size")
        if size is not None and size != "auto" and size not in SIZES and model.endswith("-vip"):
            return call, f"Invalid size {size}"
        if call.field("response_format") not in (None, "b64_json", "url"):
            return call, "response_format must be b64_json or url"
        if not call.images:
            return call, "image is required"
        for image in call.images:
            if image.filename is None or not image.data:
                return call, "each image must be a file"
        return call, None

    async def _edits(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        call = EditCall(headers=dict(request.headers), parts=[])
        try:
            if request.headers.get("Authorization") not in {f"Bearer {k}" for k in {self.api_key, *self.api_keys}}:
                self.calls.append(call)
                return self._answer(call, web.json_response({"error": {"message": "Invalid token"}}, status=401))
            call, problem = await self._parse(request)
            self.calls.append(call)
            if problem:
                return self._answer(
                    call,
                    web.json_response({"error": {"message": problem, "type": "invalid_request"}}, status=400),
                )
            reply = self.script.popleft() if self.script else self.default
            await self._notify()
            if reply.until is not None:
                await reply.until.wait()
            await asyncio.sleep(reply.delay or self.latency)
            return await self._reply(request, call, reply)
        finally:
            self.in_flight -= 1
            await self._notify()

    def _answer(self, call: EditCall, response: web.StreamResponse) -> web.StreamResponse:
        call.status = response.status
        response.headers.setdefault("X-Oneapi-Request-Id", f"fake-req-{next(self._request_ids)}")
        call.request_id = response.headers["X-Oneapi-Request-Id"]
        return response

    async def _reply(self, request: web.Request, call: EditCall, reply: Reply) -> web.StreamResponse:
        image = reply.image if reply.image is not None else self.default_image
        usage = reply.usage or {"input_tokens": 98, "output_tokens": 1185, "total_tokens": 1283}
        kind = reply.kind
        if kind in ("b64", "b64_raw"):
            encoded = base64.b64encode(image).decode()
            value = ("data:image/png;base64," + encoded) if kind == "b64" else encoded
            body = json.dumps({"data": [{"b64_json": value}], "created": 1778037127, "usage": usage})
            return self._answer(call, web.Response(text=body, content_type="application/json"))
        if kind == "url":
            name = f"{next(self._ids)}.png"
            self._files[name] = image
            url = f"http://127.0.0.1:{self.port}/files/{name}"
            return self._answer(call, web.json_response({"data": [{"url": url}], "created": 1, "usage": usage}))
        if kind == "error":
            body = reply.body if reply.body is not None else {"error": {"message": "scripted error"}}
            return self._answer(call, web.json_response(body, status=reply.status, headers=reply.headers))
        if kind == "html":
            page = "<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>"
            return self._answer(
                call,
                web.Response(text=page, status=reply.status or 502, content_type="text/html", headers=reply.headers),
            )
        if kind == "malformed":
            return self._answer(
                call, web.Response(text='{"data": [{"b64_json": "iVBOR', content_type="application/json")
            )
        if kind == "truncated":
            encoded = base64.b64encode(image).decode()
            cut = encoded[: len(encoded) // 2]
            body = json.dumps({"data": [{"b64_json": "data:image/png;base64," + cut}], "created": 1})
            return self._answer(call, web.Response(text=body, content_type="application/json"))
        if kind == "no_image":
            return self._answer(call, web.json_response({"data": [], "created": 1}))
        if kind in ("cut", "stall"):
            # 200 and a Content-Length for the whole answer, half of it, then the connection
            # ends (cut) or nothing more comes (stall).
            encoded = base64.b64encode(image).decode()
            whole = json.dumps({"data": [{"b64_json": encoded}], "created": 1, "usage": usage}).encode()
            response = self._answer(
                call, web.StreamResponse(status=200, headers={"Content-Type": "application/json", **reply.headers})
            )
            response.content_length = len(whole)
            await response.prepare(request)
            await response.write(whole[: len(whole) // 2])
            if kind == "stall":
                await self._notify()  # wait_for_calls sees it answered
                await asyncio.sleep(3600)
            assert request.transport is not None
            request.transport.close()  # close() sends what was written first; abort() might not
            return response
        if kind == "hang":
            await asyncio.sleep(3600)
        if kind == "drop":
            call.status = -1
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        raise AssertionError(f"unknown reply kind {kind}")
