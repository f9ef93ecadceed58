"""The fakes from ``tests/`` with timestamps, and without the costs a real service would not have.

* ``TimedDiscord`` stamps when each INTERACTION_CREATE is sent and when each request's body has been
  fully received, and (unless asked to keep them) drops uploaded bytes once a request is answered, so a
  200-job run does not hold gigabytes in the benchmark process.
* ``TimedImageAPI`` stamps each edit call from its arrival to its answer, keyed by prompt, and encodes a
  result's base64 JSON once per image instead of once per call.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass

from aiohttp import web

from tests.fake_discord import AiohttpHandler, FakeDiscord, RecordedRequest
from tests.fake_image_api import EditCall, FakeImageAPI, Reply

_CALL = web.RequestKey("bench.call", EditCall)
_RECORDED = web.RequestKey("bench.recorded", RecordedRequest)
_MARK = web.RequestKey("bench.mark", int)


class TimedDiscord(FakeDiscord):
    """``FakeDiscord`` that records send and receive times (``time.perf_counter``)."""

    def __init__(self, *, token: str, attachment_size_limit: int, keep_uploads: bool = False) -> None:
        super().__init__(token=token, attachment_size_limit=attachment_size_limit)
        self.keep_uploads = keep_uploads
        self.dispatched_at: dict[str, float] = {}  # interaction token -> INTERACTION_CREATE sent
        self.received_at: dict[int, float] = {}  # request index -> body fully received
        self.upload_bytes: dict[int, int] = {}  # request index -> bytes of files in it
        self.callbacks: dict[str, int] = {}  # token -> index of its interaction callback
        self.file_patches: dict[str, int] = {}  # token -> index of the first @original PATCH with files
        self.results: dict[str, int] = {}  # token -> index of the successful result PATCH

    async def dispatch(self, event: str, data: dict[str, object]) -> None:
        if event == "INTERACTION_CREATE":
            self.dispatched_at[str(data["token"])] = time.perf_counter()
        await super().dispatch(event, data)

    async def _record(self, request: web.Request) -> RecordedRequest:
        await request.read()  # aiohttp caches the body, so the parent's read() is free
        received = time.perf_counter()
        request[_MARK] = self.snowflake()  # whatever this request hosts on the CDN gets a later id
        rec = await super()._record(request)
        self.received_at[rec.index] = received
        self.upload_bytes[rec.index] = sum(len(f.data) for f in rec.files)
        request[_RECORDED] = rec
        return rec

    @web.middleware
    async def _middleware(self, request: web.Request, handler: AiohttpHandler) -> web.StreamResponse:
        response = await super()._middleware(request, handler)
        rec = request.get(_RECORDED)
        if rec is not None:
            self._classify(rec)
            if rec.files and not self.keep_uploads:
                self._forget_upload(rec, request[_MARK])
        return response

    def _classify(self, rec: RecordedRequest) -> None:
        """Index callbacks and result edits by interaction token (waiting stays O(1) per job)."""
        parts = rec.path.split("/")
        if rec.method == "POST" and rec.path.endswith("/callback") and len(parts) >= 6:
            self.callbacks.setdefault(parts[-2], rec.index)
        elif rec.method == "PATCH" and rec.path.startswith("/api/v10/webhooks/") and rec.files:
            # .../webhooks/{app}/{token}/messages/{@original or the message id}
            token = parts[-3]
            self.file_patches.setdefault(token, rec.index)
            if 200 <= rec.status < 300:
                self.results.setdefault(token, rec.index)

    def _forget_upload(self, rec: RecordedRequest, mark: int) -> None:
        """Drop the bytes of a request just answered (and their re-hosted CDN copies, all hosted after ``mark``:
        the CDN is searched from its newest entry back to there, not whole, as it holds every input sent)."""
        held = {id(f.data) for f in rec.files}
        copies = []
        for key, value in reversed(self._cdn.items()):
            if key < mark:
                break
            if id(value[0]) in held:
                copies.append(key)
        for key in copies:
            del self._cdn[key]
        for f in rec.files:
            f.data = b""
        rec.body = b""


@dataclass(frozen=True)
class Span:
    """One edit call as the fake API saw it: received (``start``), answered (``end``, the answer made),
    and the answer handed to the connection (``sent``)."""

    prompt: str
    start: float
    end: float
    sent: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


class TimedImageAPI(FakeImageAPI):
    """``FakeImageAPI`` that times each call and caches encoded answers."""

    def __init__(self, *, api_key: str) -> None:
        super().__init__(api_key=api_key)
        self.spans: dict[str, Span] = {}
        self._bodies: dict[int, tuple[bytes, bytes]] = {}  # id(image) -> (image kept alive, JSON body)

    async def _parse(self, request: web.Request) -> tuple[EditCall, str | None]:
        call, problem = await super()._parse(request)
        request[_CALL] = call
        return call, problem

    async def _edits(self, request: web.Request) -> web.StreamResponse:
        start = end = time.perf_counter()
        try:
            response = await super()._edits(request)
            end = time.perf_counter()
            if not response.prepared:  # written here, not after the handler, so that ``sent`` is known
                await response.prepare(request)
                await response.write_eof()
            return response
        finally:
            call = request.get(_CALL)
            prompt = (call.field("prompt") if call is not None else None) or ""
            self.spans[prompt] = Span(prompt, start, end, time.perf_counter())

    async def _reply(self, request: web.Request, call: EditCall, reply: Reply) -> web.StreamResponse:
        if reply.kind != "b64":
            return await super()._reply(request, call, reply)
        image = reply.image if reply.image is not None else self.default_image
        cached = self._bodies.get(id(image))
        if cached is None or cached[0] is not image:
            encoded = "data:image/png;base64," + base64.b64encode(image).decode()
            usage = {"input_tokens": 98, "output_tokens": 1185, "total_tokens": 1283}
            body = json.dumps({"data": [{"b64_json": encoded}], "created": 1778037127, "usage": usage})
            cached = (image, body.encode())
            self._bodies[id(image)] = cached
        return self._answer(call, web.Response(body=cached[1], content_type="application/json"))
