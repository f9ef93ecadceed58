"""A fake of the provider's ``POST {base}/images/edits`` and ``/images/generations``, strict about what it accepts.

It parses an edit's multipart body the way ``shared/reference/image-edits-api.txt``
describes (``model``, ``prompt``, repeated ``image`` parts, optional ``size``,
``response_format``), and a generation's JSON body (the same fields, no image),
rejects what the real API rejects (``n``, an unknown size, an option the model does not
take: ``options`` says which model takes which, as OpenAI's route for ``gpt-image-2``
does, which also refuses ``response_format``; a ``mask`` to a model not in ``masks``, or
one that breaks OpenAI's rules: a PNG with an alpha channel, under 4 MB, the first image's
size), records every request (the images' field name too: ``image`` or ``image[]``, both
accepted; the mask as ``EditCall.mask``), and answers both from one
script: each success
shape (prefixed or raw base64, url) and each failure (4xx, 429, HTML 5xx,
malformed JSON, truncated base64, no image, a hang, a dropped connection, a 200
whose body is cut off midway). Every answer carries an ``X-Oneapi-Request-Id``
from a counter, as the provider's gateway does, unless the reply sets its own.

It streams as OpenAI's images API does, for a model in ``streams``: a request with
``stream=true`` and ``partial_images`` (refused for a model that does not stream) is
answered with server-sent events, ``image_edit.partial_image`` (``image_generation.…``
for a generation) for each partial image, then ``….completed`` with the final image and
``usage``; the reply's ``gaps`` pause before each event. Scripted faults: the connection
cut after the first partial (``stream_cut``), a stall after it (``stream_stall``), an error
event after it (``stream_error``); a stream that never starts is any error reply
(``error``, ``html``), which answers before any event. ``EditCall.events`` records what was sent.
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
from collections import deque
from collections.abc import Awaitable, Callable
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
IMAGE_FIELDS = ("image", "image[]")
OPTION_FIELDS = ("quality", "output_format", "output_compression", "background")
STREAM_FIELDS = ("stream", "partial_images")
ALLOWED_FIELDS = {
    "model", "prompt", *IMAGE_FIELDS, "mask", "size", "response_format", *OPTION_FIELDS, *STREAM_FIELDS
}  # fmt: skip
GENERATION_FIELDS = ALLOWED_FIELDS - {*IMAGE_FIELDS, "mask"}
MASK_MAX_BYTES = 4_000_000  # OpenAI: "a PNG under 4 MB"
# What OpenAI's images API takes (the provider's official gpt-image-2 route follows it).
OPENAI_OPTIONS: dict[str, set[str]] = {
    "quality": {"low", "medium", "high", "auto"},
    "output_format": {"png", "jpeg", "webp"},
    "output_compression": {str(n) for n in range(101)},
    "background": {"transparent", "opaque", "auto"},
}
_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


def make_png(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 80, 40)) -> bytes:
    """A small real PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def partial_png(index: int) -> bytes:
    """The default ``index``-th partial image of a stream: a small PNG of its own colour."""
    return make_png(32, 24, (30 + 60 * index, 140, 220 - 60 * index))


def make_image(fmt: str = "png", *, transparent: bool = False, width: int = 64, height: int = 48) -> bytes:
    """A small real image in ``fmt``; ``transparent``: its left half fully transparent (a sticker's background)."""
    if transparent:
        image = Image.new("RGBA", (width, height), (200, 80, 40, 255))
        image.paste((0, 0, 0, 0), (0, 0, width // 2, height))
    else:
        image = Image.new("RGB", (width, height), (200, 80, 40))
    buffer = io.BytesIO()
    image.save(buffer, format=_PIL_FORMATS[fmt])
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
    """One request to the edits (or generations) endpoint, as received."""

    headers: dict[str, str]
    parts: list[Part]
    status: int = 0
    request_id: str | None = None  # the X-Oneapi-Request-Id it was answered with
    path: str = "/v1/images/edits"
    json: dict[str, Any] | None = None  # a generation's body
    events: list[str] = field(default_factory=list)  # a streamed answer's events, in the order they were sent
    event_times: list[float] = field(default_factory=list)  # when each was sent (loop time)
    started: float = 0.0  # when the request arrived (loop time)
    ended: float | None = None  # when its handler ended (loop time): until then it was in flight

    def field(self, name: str) -> str | None:
        """The text of a non-file field (a generation's JSON value), or None."""
        if self.json is not None:
            value = self.json.get(name)
            return None if value is None else str(value)
        for part in self.parts:
            if part.name == name and part.filename is None:
                return part.data.decode()
        return None

    @property
    def images(self) -> list[Part]:
        """The image parts (``image`` or ``image[]``) in the order they were sent."""
        return [p for p in self.parts if p.name in IMAGE_FIELDS]

    @property
    def mask(self) -> Part | None:
        """The ``mask`` part (a region edit's), or None."""
        found = [p for p in self.parts if p.name == "mask"]
        return found[0] if found else None

    @property
    def image_field(self) -> str | None:
        """The field name the images came in (``image`` or ``image[]``), or None without images."""
        names = {p.name for p in self.images}
        return names.pop() if len(names) == 1 else None

    @property
    def streamed(self) -> bool:
        """Whether the request asked for a stream (``stream=true``)."""
        return self.field("stream") in ("true", "True")

    def options(self) -> dict[str, str]:
        """The option fields sent (quality, output_format, output_compression, background), as text."""
        return {name: value for name in OPTION_FIELDS if (value := self.field(name)) is not None}

    @property
    def names(self) -> list[str]:
        """Part names in order."""
        return [p.name for p in self.parts]


@dataclass
class Reply:
    """One scripted answer. ``kind`` picks the shape; the rest tunes it."""

    # b64 | b64_raw | url | error | html | malformed | truncated | no_image | hang | drop | cut | stall
    # | stream_cut | stream_stall | stream_error (a streamed answer's faults, after its first partial image)
    kind: str = "b64"
    image: bytes | None = None
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    usage: dict[str, Any] | None = None
    no_usage: bool = False  # answer without ``usage`` (a provider or route that leaves it out)
    partials: list[bytes] | None = None  # a stream's partial images (None: as many as asked, ``partial_png``)
    gaps: tuple[float, ...] = ()  # a stream's pauses (s) before each event in turn, the fault's included
    stall: float = 3600.0  # stream_stall: how long nothing comes after the first partial, then the rest
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
        # The options each model takes, with their values; a model not here takes none.
        self.options: dict[str, dict[str, set[str]]] = {"gpt-image-2": OPENAI_OPTIONS}
        # Models that refuse ``response_format`` (OpenAI's gpt-image routes always answer base64).
        self.no_response_format: set[str] = {"gpt-image-2"}
        # Models that take a ``mask`` (OpenAI's gpt-image routes do; the provider's vip route does not).
        self.masks: set[str] = {"gpt-image-2"}
        # Models that stream, with the partial images they take (OpenAI's: 0 to 3); the rest refuse ``stream``.
        self.streams: dict[str, tuple[int, int]] = {"gpt-image-2": (0, 3)}
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
        app.router.add_post("/v1/images/generations", self._generations)
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
        call = EditCall(headers=dict(request.headers), parts=[], path=request.path)
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
        for name in ("model", "prompt", "mask", "size", "response_format", *OPTION_FIELDS, *STREAM_FIELDS):
            if sum(1 for p in call.parts if p.name == name) > 1:
                return call, f"{name} given more than once"
        problem = self._check_fields(call)
        if problem:
            return call, problem
        if not call.images:
            return call, "image is required"
        if call.image_field is None:
            return call, "images must all come as image or all as image[]"
        for image in call.images:
            if image.filename is None or not image.data:
                return call, "each image must be a file"
        return call, self._check_mask(call)

    def _check_mask(self, call: EditCall) -> str | None:
        """What OpenAI's images/edits refuses in a ``mask`` (and any mask, to a model that takes none)."""
        mask = call.mask
        if mask is None:
            return None
        if (call.field("model") or "") not in self.masks:
            return "Unknown parameter: 'mask'."
        if mask.filename is None or len(mask.data) >= MASK_MAX_BYTES:
            return "mask must be a PNG file under 4 MB"
        try:
            with Image.open(io.BytesIO(mask.data)) as opened, Image.open(io.BytesIO(call.images[0].data)) as first:
                if opened.format != "PNG" or "A" not in opened.getbands():
                    return "Invalid mask: it must be a PNG with an alpha channel"
                if opened.size != first.size:
                    return f"Invalid mask: {opened.size} is not the size of the first image {first.size}"
        except OSError:
            return "Invalid mask: not an image"
        return None

    async def _parse_json(self, request: web.Request) -> tuple[EditCall, str | None]:
        """A generation: ``model``, ``prompt``, optional ``size`` and ``response_format``, as JSON."""
        call = EditCall(headers=dict(request.headers), parts=[], path=request.path)
        if request.content_type != "application/json":
            return call, f"Content-Type must be application/json, got {request.content_type}"
        try:
            body = await request.json()
        except ValueError:
            return call, "the body is not JSON"
        if not isinstance(body, dict):
            return call, "the body must be a JSON object"
        call.json = body
        unknown = [name for name in body if name not in GENERATION_FIELDS]
        if unknown:
            return call, f"Unsupported parameter(s): {', '.join(unknown)}"
        return call, self._check_fields(call)

    def _check_fields(self, call: EditCall) -> str | None:
        """What the real API refuses in the fields both endpoints share."""
        model = call.field("model") or ""
        if model != self.model and model not in self.models:
            return f"model must be {self.model}"
        if not (call.field("prompt") or "").strip():
            return "prompt is required"
        size = call.field("size")
        if size is not None and size != "auto" and size not in SIZES and model.endswith("-vip"):
            return f"Invalid size {size}"
        if call.field("response_format") not in (None, "b64_json", "url"):
            return "response_format must be b64_json or url"
        if model in self.no_response_format and call.field("response_format") is not None:
            return "Unknown parameter: 'response_format'."
        takes = self.options.get(model, {})
        for name, value in call.options().items():
            if name not in takes:
                return f"Unknown parameter: '{name}'."
            if value not in takes[name]:
                return f"Invalid value for '{name}': {value}"
        if call.field("background") == "transparent" and call.field("output_format") not in (None, "png", "webp"):
            return "Transparent background requires output_format png or webp"
        return self._check_stream(call, model)

    def _check_stream(self, call: EditCall, model: str) -> str | None:
        stream, partials = call.field("stream"), call.field("partial_images")
        if stream is None and partials is None:
            return None
        if model not in self.streams:
            return f"Unknown parameter: '{'stream' if stream is not None else 'partial_images'}'."
        if stream not in ("true", "True", "false", "False"):
            return f"Invalid value for 'stream': {stream}"
        low, high = self.streams[model]
        if partials is not None and (not partials.isdigit() or not low <= int(partials) <= high):
            return f"Invalid value for 'partial_images': {partials}"
        if partials is not None and not call.streamed:
            return "partial_images requires stream=true"
        return None

    async def _edits(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self._parse)

    async def _generations(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self._parse_json)

    async def _serve(
        self, request: web.Request, parse: Callable[[web.Request], Awaitable[tuple[EditCall, str | None]]]
    ) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        started = asyncio.get_running_loop().time()
        call = EditCall(headers=dict(request.headers), parts=[], path=request.path, started=started)
        try:
            if request.headers.get("Authorization") not in {f"Bearer {k}" for k in {self.api_key, *self.api_keys}}:
                self.calls.append(call)
                return self._answer(call, web.json_response({"error": {"message": "Invalid token"}}, status=401))
            call, problem = await parse(request)
            call.started = started
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
            call.ended = asyncio.get_running_loop().time()
            self.in_flight -= 1
            await self._notify()

    def _answer(self, call: EditCall, response: web.StreamResponse) -> web.StreamResponse:
        call.status = response.status
        response.headers.setdefault("X-Oneapi-Request-Id", f"fake-req-{next(self._request_ids)}")
        call.request_id = response.headers["X-Oneapi-Request-Id"]
        return response

    def _image_for(self, call: EditCall) -> bytes:
        """The default answer's image: in the format asked, transparent when asked, as the real API makes it."""
        fmt = call.field("output_format")
        transparent = call.field("background") == "transparent"
        if fmt is None and not transparent:
            return self.default_image
        return make_image(fmt or "png", transparent=transparent)

    async def _reply(self, request: web.Request, call: EditCall, reply: Reply) -> web.StreamResponse:
        image = reply.image if reply.image is not None else self._image_for(call)
        usage = reply.usage or {"input_tokens": 98, "output_tokens": 1185, "total_tokens": 1283}
        extra: dict[str, Any] = {} if reply.no_usage else {"usage": usage}
        kind = reply.kind
        if call.streamed and kind in ("b64", "b64_raw", "stream_cut", "stream_stall", "stream_error"):
            return await self._stream(request, call, reply, image, extra)
        if kind in ("b64", "b64_raw"):
            encoded = base64.b64encode(image).decode()
            value = ("data:image/png;base64," + encoded) if kind == "b64" else encoded
            body = json.dumps({"data": [{"b64_json": value}], "created": 1778037127, **extra})
            return self._answer(call, web.Response(text=body, content_type="application/json"))
        if kind == "url":
            name = f"{next(self._ids)}.png"
            self._files[name] = image
            url = f"http://127.0.0.1:{self.port}/files/{name}"
            return self._answer(call, web.json_response({"data": [{"url": url}], "created": 1, **extra}))
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

    async def _stream(
        self, request: web.Request, call: EditCall, reply: Reply, image: bytes, extra: dict[str, Any]
    ) -> web.StreamResponse:
        """A streamed answer: each partial image, then the completed event (or the scripted fault after the first)."""
        prefix = "image_generation" if call.json is not None else "image_edit"
        asked = int(call.field("partial_images") or 0)
        partials = reply.partials if reply.partials is not None else [partial_png(n) for n in range(asked)]
        response = self._answer(
            call,
            web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream", **reply.headers}),
        )
        await response.prepare(request)
        shared = {"created_at": 1778037127, "size": call.field("size") or "auto", "quality": "auto"}
        loop = asyncio.get_running_loop()

        async def pause() -> None:
            number = len(call.events)
            if number < len(reply.gaps) and reply.gaps[number] > 0:
                await asyncio.sleep(reply.gaps[number])

        async def send(name: str, payload: dict[str, Any]) -> None:
            await pause()
            await response.write(f"event: {name}\ndata: {json.dumps({'type': name, **payload})}\n\n".encode())
            call.events.append(name)
            call.event_times.append(loop.time())
            await self._notify()

        async def cut() -> web.StreamResponse:
            await pause()
            call.events.append("cut")
            call.event_times.append(loop.time())
            await self._notify()
            assert request.transport is not None
            request.transport.close()  # mid-stream: the chunked body never ends
            return response

        if reply.kind == "stream_cut" and not partials:
            return await cut()  # a 200 that ends before its first event
        for index, data in enumerate(partials):
            b64 = base64.b64encode(data).decode()
            await send(f"{prefix}.partial_image", {"b64_json": b64, "partial_image_index": index, **shared})
            if index > 0:
                continue
            if reply.kind == "stream_cut":
                return await cut()
            if reply.kind == "stream_error":
                await send("error", {"error": {"message": "scripted failure mid-stream", "type": "server_error"}})
                await response.write_eof()
                return response
            if reply.kind == "stream_stall":
                await asyncio.sleep(reply.stall)
        b64 = base64.b64encode(image).decode()
        await send(f"{prefix}.completed", {"b64_json": b64, **shared, **extra})
        await response.write_eof()
        return response
