"""Client for the provider's OpenAI-compatible image API: ``POST {base}/images/edits`` and ``/images/generations``.

Read ``shared/reference/image-edits-api.txt`` before changing this. In short: an edit is one
multipart request with ``model``, ``prompt``, ``size`` (optional), ``response_format``
and the images as repeated parts in prompt order; never ``n``. A generation (text to image)
is the same without images, as JSON. A job kind says which it makes (``ProviderRequest.endpoint``);
everything below is the same for both. What differs by model comes from its catalog entry
(``bot.core.models.ImageModel``): the wire name, the endpoint paths, the images' field name
(``image`` or ``image[]``), whether it takes ``response_format``, the options it takes (a job
sends exactly those it asked, checked at admission; an option the model does not take is never
sent), and the timeouts.

The provider bills a call even when we hang up, so a call is repeated only when the
provider cannot have started billing it: the connection failed before the request was
sent, a 429 rate limit (not an exhausted quota), or a 5xx (not a content block) that
came back within ``IMAGE_API_FAST_FAILURE_SECONDS``. Everything that may follow a
billed generation (a slower 5xx, an answer cut off midway, a connection lost after
sending, a timeout) is never repeated. Every attempt is recorded as an ``Attempt``,
with the provider's request id, and logged in one line.

A job with live previews asks a model that streams for ``stream=true`` and its
``partial_images`` (``bot.provider.stream`` reads the events): each partial image is handed to
the caller's ``on_partial`` as it arrives, and the call ends with the completed event's image
and ``usage``. Until the first event the rules above hold unchanged (a refused connection, a
quick 5xx or an HTML error page is repeated as always); a stream that stops after its first
event was being generated, and may be billed: never repeated (``StreamCutError``). A stall
between events is bounded by the model's timeout, which covers the whole call.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import enum
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bot.config import Config
from bot.core.attempts import Attempt, AttemptOutcome
from bot.core.models import OPTION_NAMES, PARTIAL_IMAGES, ImageModel, SizeRule
from bot.core.pricing import Usage
from bot.errors import (
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BodyCutOffError,
    ConnectFailedError,
    ConnectionLostError,
    ImageAPIError,
    InvalidResponseError,
    QuotaExhaustedError,
    RateLimitedError,
    SafetyRejectedError,
    ServerError,
    SlowServerError,
    StreamCutError,
    TransientAPIError,
)
from bot.i18n import _t
from bot.media.images import OutputImage, PreparedImage, check_output
from bot.provider.stream import COMPLETED, ERROR, PARTIAL, Event, EventReader, PartialImage

log = logging.getLogger(__name__)

# A 3840x2160 PNG is ~12 MB, ~16 MB as base64; anything far above that is not an image answer.
MAX_RESPONSE_BYTES = 128 * 1024 * 1024
MAX_URL_DOWNLOAD_BYTES = 64 * 1024 * 1024
URL_DOWNLOAD_TIMEOUT = 120.0
MAX_RETRY_AFTER = 60.0

_SAFETY_WORDS = re.compile(r"safety|moderation|content polic|policy violation|blocked|not allowed|sexual|violen")
_QUOTA_WORDS = re.compile(r"quota|insufficient|balance|credit|billing|余额|额度")
_DATA_URL_PREFIX = re.compile(rb"^data:[\w./+-]*;base64,")
# Where providers and their gateways (one-api, new-api) put the id their support asks for; first present wins.
_REQUEST_ID_HEADERS = ("x-request-id", "x-oneapi-request-id", "request-id", "x-new-api-request-id")


# Error class -> outcome, most specific first. An attempt never raises a bare TransientAPIError.
_OUTCOME_OF_ERROR: tuple[tuple[type[ImageAPIError], AttemptOutcome], ...] = (
    (SafetyRejectedError, AttemptOutcome.SAFETY_REFUSED),
    (BadRequestError, AttemptOutcome.REJECTED),
    (AuthenticationError, AttemptOutcome.AUTH_FAILED),
    (QuotaExhaustedError, AttemptOutcome.QUOTA_EXHAUSTED),
    (RateLimitedError, AttemptOutcome.RATE_LIMITED),
    (ServerError, AttemptOutcome.SERVER_ERROR_FAST),
    (SlowServerError, AttemptOutcome.SERVER_ERROR_SLOW),
    (ConnectFailedError, AttemptOutcome.CONNECT_FAILED),
    (BodyCutOffError, AttemptOutcome.BODY_CUT_OFF),
    (InvalidResponseError, AttemptOutcome.BODY_CUT_OFF),  # an answer over the size cap: we stopped reading it
    (APITimeoutError, AttemptOutcome.TIMEOUT),
    (ConnectionLostError, AttemptOutcome.CONNECTION_LOST),
)


def _outcome_of(error: ImageAPIError) -> AttemptOutcome:
    for cls, outcome in _OUTCOME_OF_ERROR:
        if isinstance(error, cls):
            return outcome
    # Unknown means unproven: treat it as reaching the provider, which is never repeated.
    return AttemptOutcome.CONNECTION_LOST


@dataclass
class _Exchange:
    """What one attempt has learned so far; kept outside it so an interruption still records it."""

    started_at: float = field(default_factory=time.time)  # wall clock, for the record
    started: float = field(default_factory=time.monotonic)  # when sending began, for durations
    status: int | None = None
    request_id: str | None = None
    answered_after: float | None = None  # seconds from starting to send to the response headers
    streamed: bool = False  # the answer is an event stream (the final image is its completed event)
    events: int = 0  # events read from it so far: after the first, the call was under way


class Endpoint(enum.StrEnum):
    """Which of the provider's image endpoints a request goes to."""

    EDITS = "edits"  # images and an instruction, multipart
    GENERATIONS = "generations"  # an instruction alone, JSON


@dataclass(frozen=True)
class ProviderRequest:
    """What one call asks of the API; ``images`` are in prompt order (image1 first).

    ``model`` empty means ``IMAGE_MODEL``; ``api_key`` is a server's own key (``None``: the operator's);
    ``options`` are the model's options the job asked for, by wire name (checked at admission); ``mask`` is
    a region edit's mask (a PNG whose transparent pixels mark where to edit, applied to image1).
    """

    endpoint: Endpoint
    prompt: str
    images: Sequence[PreparedImage] = ()
    size: str | None = None
    model: str = ""
    api_key: str | None = field(default=None, repr=False)
    options: Mapping[str, str | int] = field(default_factory=dict)
    mask: PreparedImage | None = None


@dataclass(frozen=True)
class APIAnswer:
    """A successful answer, not yet decoded: the call, and its bill, are over."""

    body: bytes  # the JSON as received
    api_seconds: float
    attempts: int
    request_id: str | None = None  # the provider's id for the attempt that succeeded
    api_key: str | None = field(default=None, repr=False)  # a server's own key, to keep out of errors
    streamed: bool = False  # ``body`` is a streamed answer's completed event, not ``{"data": [...]}``


@dataclass(frozen=True)
class ImageEditResult:
    """A decoded result with what the call cost and how long it took."""

    image: OutputImage
    usage: Usage | None
    api_seconds: float
    attempts: int


class ImageAPIClient:
    """Makes edit calls with the shared session; one instance per bot."""

    def __init__(self, session: aiohttp.ClientSession, config: Config) -> None:
        self._session = session
        self._config = config

    def _redact(self, text: str, guild_key: str | None = None) -> str:
        """Remove the API keys (the operator's, and a server's own) from any text that might be logged or shown."""
        for key in (self._config.image_api_key, guild_key):
            if key:
                text = text.replace(key, "[redacted]")
        return text

    def _model(self, request: ProviderRequest) -> ImageModel:
        """The request's model as the catalog describes it (a name it does not know: a plain model)."""
        name = request.model or self._config.image_model
        return self._config.entry(name) or ImageModel(name, 0, SizeRule.for_model(name))

    def _partials(self, request: ProviderRequest, model: ImageModel) -> int:
        """How many partial images to stream (0: the call is not streamed): what the job asked, if the model
        streams that many."""
        asked = request.options.get(PARTIAL_IMAGES)
        if not isinstance(asked, int) or asked <= 0:
            return 0
        if model.partial_images is None or not model.partial_images[0] <= asked <= model.partial_images[1]:
            # The catalog changed since the job was accepted: a plain call, as the model takes it.
            log.warning("not streaming %d partial images: model %s no longer streams them", asked, model.name)
            return 0
        return asked

    def _body(
        self, request: ProviderRequest, model: ImageModel, partials: int = 0
    ) -> aiohttp.FormData | dict[str, str | int | bool]:
        """An edit's multipart form (the images as repeated parts named as the model's catalog entry says, in
        prompt order, then a region edit's ``mask``), or a generation's JSON. ``response_format`` always when the
        model takes it, since the provider's default may change; the job's options exactly, and only those the model
        takes; ``stream`` and ``partial_images`` when ``partials`` are asked. A mask goes only to a model that takes
        one: otherwise nothing is sent (``BadRequestError``)."""
        if request.mask is not None and (not model.mask or request.endpoint is not Endpoint.EDITS):
            # The catalog changed since the job was accepted. Without its mask the whole image would be
            # repainted (and billed): refuse before anything is sent.
            raise BadRequestError(
                _t("{model} no longer takes a mask, so this region edit was not sent.", model=model.name),
                log_detail=f"not sending a mask to model {model.name}, which takes none",
            )
        fields: dict[str, str | int | bool] = {"model": model.wire, "prompt": request.prompt}
        if request.size:
            fields["size"] = request.size
        if model.response_format:
            fields["response_format"] = self._config.image_response_format
        for name in OPTION_NAMES:
            if name not in request.options:
                continue
            if model.options.takes(name):
                fields[name] = request.options[name]
            else:  # the catalog changed since the job was accepted: never send what the model does not take
                log.warning("not sending %s: model %s no longer takes it", name, model.name)
        if partials:
            fields["stream"] = True
            fields[PARTIAL_IMAGES] = partials
        if request.endpoint is Endpoint.GENERATIONS:
            return fields
        form = aiohttp.FormData(quote_fields=False)
        for name, value in fields.items():
            form.add_field(name, ("true" if value else "false") if isinstance(value, bool) else str(value))
        for number, image in enumerate(request.images, start=1):
            form.add_field(
                model.image_field,
                image.data,
                filename=f"image{number}.{image.extension}",
                content_type=image.mime,
            )
        if request.mask is not None:
            form.add_field("mask", request.mask.data, filename="mask.png", content_type=request.mask.mime)
        return form

    async def edit(self, request: ProviderRequest) -> ImageEditResult:
        """Make the call and decode its image; raise an ``ImageAPIError``."""
        return await self.decode(await self.call(request))

    async def call(
        self,
        request: ProviderRequest,
        attempts: list[Attempt] | None = None,
        on_partial: Callable[[PartialImage], None] | None = None,
    ) -> APIAnswer:
        """Make the call, repeating only what cannot have been billed; raise an ``ImageAPIError``.

        Each finished attempt is appended to ``attempts`` as soon as it ends, also when this
        raises or is cancelled. Returns as soon as the answer is in, so the caller can free
        its API slot before the (CPU-bound) decoding. A streamed call hands each partial image
        to ``on_partial`` as it arrives (it must return at once and never raise).
        """
        started = time.monotonic()
        number = 0
        while True:
            number += 1
            exchange = _Exchange()
            try:
                body = await self._attempt(request, exchange, on_partial)
            except ImageAPIError as exc:
                error: ImageAPIError | None = exc
                outcome = _outcome_of(exc)
            except BaseException as exc:
                # A cancellation (shutdown) or a bug mid-attempt: the request may be at the provider.
                self._record(attempts, number, exchange, AttemptOutcome.INTERRUPTED, f" ({type(exc).__name__})")
                raise
            else:
                error, outcome = None, AttemptOutcome.SUCCEEDED
            if error is None:
                self._record(attempts, number, exchange, outcome, "")
                return APIAnswer(
                    body, time.monotonic() - started, number, exchange.request_id, request.api_key, exchange.streamed
                )
            retry = outcome.retried and number <= self._config.image_api_max_retries
            retry_after = error.retry_after if isinstance(error, TransientAPIError) else None
            delay = self._backoff(number, retry_after) if retry else 0.0
            note = f" ({error.log_detail}); retrying in {delay:.2f}s" if retry else f" ({error.log_detail})"
            self._record(attempts, number, exchange, outcome, note)
            if outcome in (AttemptOutcome.AUTH_FAILED, AttemptOutcome.QUOTA_EXHAUSTED):
                _tell_who_must_act(error, request.api_key is not None)
            if not retry:
                if outcome.retried:
                    log.warning("image API still failing after %d attempts: %s", number, error.log_detail)
                raise error
            await asyncio.sleep(delay)

    def _record(
        self,
        attempts: list[Attempt] | None,
        number: int,
        exchange: _Exchange,
        outcome: AttemptOutcome,
        note: str,
    ) -> None:
        """Append the attempt for the caller and log its one line."""
        attempt = Attempt(
            number=number,
            started_at=exchange.started_at,
            seconds=time.monotonic() - exchange.started,
            outcome=outcome,
            may_be_billed=outcome.may_be_billed,
            http_status=exchange.status,
            request_id=exchange.request_id,
        )
        if attempts is not None:
            attempts.append(attempt)
        log.info(
            "image API attempt %d: outcome=%s status=%s seconds=%.2f request_id=%s%s",
            attempt.number,
            attempt.outcome,
            attempt.http_status if attempt.http_status is not None else "-",
            attempt.seconds,
            attempt.request_id or "-",
            note,
        )

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), MAX_RETRY_AFTER)
        return float(self._config.image_api_retry_backoff * 2 ** (attempt - 1))

    async def _attempt(
        self, request: ProviderRequest, exchange: _Exchange, on_partial: Callable[[PartialImage], None] | None
    ) -> bytes:
        """One HTTP exchange; what it learns goes into ``exchange`` as soon as it is known."""
        model = self._model(request)
        # The whole call, a stream's every event included: a stall between events ends here too.
        seconds = model.timeout_for(request.size, len(request.images), self._config.image_api_timeout)
        timeout = aiohttp.ClientTimeout(total=seconds)
        partials = self._partials(request, model)
        headers = {
            "Authorization": f"Bearer {request.api_key or self._config.image_api_key}",
            "Accept": "text/event-stream, application/json" if partials else "application/json",
        }
        key = request.api_key
        try:
            payload = self._body(request, model, partials)
            url = self._config.image_api_base + (model.path(request.endpoint) or f"/images/{request.endpoint}")
            sent = {"json": payload} if isinstance(payload, dict) else {"data": payload}
            async with self._session.post(url, headers=headers, timeout=timeout, **sent) as response:
                exchange.answered_after = time.monotonic() - exchange.started
                exchange.status = response.status
                exchange.request_id = self._request_id(response.headers, key)
                if partials and response.status < 400 and response.content_type == "text/event-stream":
                    exchange.streamed = True
                    return await self._read_stream(response, exchange, on_partial, key)
                # Not a stream (an error, or a route that answers whole whatever was asked): as always.
                try:
                    body = await _read_capped(response, MAX_RESPONSE_BYTES)
                except aiohttp.ClientPayloadError as exc:
                    # The answer was on its way, so whatever it carried was produced: never repeat.
                    raise BodyCutOffError(
                        self._redact(f"HTTP {response.status} answer cut off: {exc}", key)[:500]
                    ) from None
                if response.status >= 400:
                    raise self._error_for(response.status, response.headers, body, exchange.answered_after, key)
        except TimeoutError:
            raise APITimeoutError(seconds) from None
        except aiohttp.ClientError as exc:
            if exchange.events:
                # The stream had begun: whatever was being made may be billed, and is never repeated.
                raise StreamCutError(
                    self._redact(f"stream cut after {exchange.events} event(s): {type(exc).__name__}: {exc}", key)[:500]
                ) from None
            raise self._lost(exc, key) from None
        return body

    def _lost(self, exc: aiohttp.ClientError, key: str | None) -> ImageAPIError:
        """What a connection error before any event means: refused before sending, or lost after."""
        if isinstance(exc, aiohttp.ClientConnectorError):
            # Refused, reset or unresolvable before a byte of the request left: nothing to bill.
            return ConnectFailedError(self._redact(f"connection failed: {type(exc).__name__}: {exc}", key)[:500])
        # Lost after the request was sent (or an unreadable answer): the provider may be working on it.
        return ConnectionLostError(self._redact(f"connection lost: {type(exc).__name__}: {exc}", key)[:500])

    async def _read_stream(
        self,
        response: aiohttp.ClientResponse,
        exchange: _Exchange,
        on_partial: Callable[[PartialImage], None] | None,
        key: str | None,
    ) -> bytes:
        """Read a streamed answer's events as they come; its completed event (the JSON as received)."""
        reader = EventReader(MAX_RESPONSE_BYTES)
        try:
            async for chunk in response.content.iter_any():
                for event in reader.feed(chunk):
                    exchange.events += 1
                    completed = await self._event(event, exchange.events, on_partial, key)
                    if completed is not None:
                        return completed
        except aiohttp.ClientPayloadError as exc:
            detail = f"HTTP {response.status} stream cut off after {exchange.events} event(s): {exc}"
            if exchange.events:
                raise StreamCutError(self._redact(detail, key)[:500]) from None
            # Nothing of it arrived, but it was answered 200: as an answer cut off, never repeated.
            raise BodyCutOffError(self._redact(detail, key)[:500]) from None
        ended = "in the middle of an event" if reader.pending else "without its completed event"
        if exchange.events:
            raise StreamCutError(f"stream ended {ended} after {exchange.events} event(s)")
        raise BodyCutOffError(f"HTTP {response.status} stream ended {ended}, before any event")

    async def _event(
        self, event: Event, number: int, on_partial: Callable[[PartialImage], None] | None, key: str | None
    ) -> bytes | None:
        """Act on one event: hand on a partial image, raise an error event; a completed event's bytes."""
        payload, b64 = split_answer(event.data)
        if not isinstance(payload, dict):
            raise InvalidResponseError(f"streamed event {number} is not a JSON object")
        kind = str(payload.get("type") or event.name)
        if kind == ERROR or "error" in payload:
            error = payload.get("error") if isinstance(payload.get("error"), dict) else payload
            failure = self._error_for(400, {}, json.dumps({"error": error}).encode(), None, key)
            if number > 1 and not isinstance(failure, (SafetyRejectedError, AuthenticationError, QuotaExhaustedError)):
                # After a partial image the call was under way: it may be billed.
                raise StreamCutError(
                    f"stream ended by an error event after {number - 1} event(s): {failure.log_detail}"[:500]
                )
            raise failure
        if kind.endswith(COMPLETED):
            return event.data
        if kind.endswith(PARTIAL) and on_partial is not None:
            partial = await _partial_of(payload, b64)
            if partial is None:
                log.info("streamed event %d: a partial image that cannot be read; not shown", number)
            else:
                on_partial(partial)
        return None

    def _request_id(self, headers: Any, guild_key: str | None = None) -> str | None:
        for name in _REQUEST_ID_HEADERS:
            value = headers.get(name)
            if value and value.strip():
                return self._redact(value.strip(), guild_key)[:200]
        return None

    def _error_for(
        self,
        status: int,
        headers: Any,
        body: bytes,
        answered_after: float | None = None,
        guild_key: str | None = None,
    ) -> ImageAPIError:
        message = self._redact(_error_message(body), guild_key)
        own_key = guild_key is not None
        detail = f"HTTP {status}: {message}"[:500]
        lowered = message.lower()
        if _SAFETY_WORDS.search(lowered):
            # A hard content block can come back as any status, a 5xx included: never retry it.
            return SafetyRejectedError(
                _t("The image service refused this request: {reason}", reason=_shorten(message, 300)),
                log_detail=detail,
            )
        if status in (401, 403):
            return AuthenticationError(detail, guild_key=own_key)
        if status == 429 or status == 402:
            if _QUOTA_WORDS.search(lowered):
                return QuotaExhaustedError(detail, guild_key=own_key)
            return RateLimitedError(detail, retry_after=_retry_after(headers))
        if status >= 500:
            # Too quick to follow a generation, it cannot have been billed; a later one may have been.
            if answered_after is not None and answered_after <= self._config.image_api_fast_failure_seconds:
                return ServerError(detail, retry_after=_retry_after(headers))
            took = f" after {answered_after:.1f} s" if answered_after is not None else ""
            return SlowServerError(f"HTTP {status}{took}: {message}"[:500])
        if status == 413:
            return BadRequestError(
                _t("The images are too large for the image service; use fewer or smaller images."),
                log_detail=detail,
            )
        return BadRequestError(
            _t("The image service rejected the request: {reason}", reason=_shorten(message, 300)), log_detail=detail
        )

    def _first_item(self, payload: Any, guild_key: str | None = None) -> dict[str, Any]:
        """``data[0]`` of a 2xx answer, or the error the answer carries instead."""
        if not isinstance(payload, dict):
            raise InvalidResponseError("response is not a JSON object")
        items = payload.get("data")
        if not isinstance(items, list) or not items or not isinstance(items[0], dict):
            error = payload.get("error")
            if isinstance(error, dict) and error.get("message"):
                exc = self._error_for(400, {}, json.dumps({"error": error}).encode(), None, guild_key)
                if isinstance(exc, (AuthenticationError, QuotaExhaustedError)):
                    _tell_who_must_act(exc, guild_key is not None)
                raise exc
            raise InvalidResponseError("no image in the response's data")
        return items[0]

    async def decode(self, answer: APIAnswer) -> ImageEditResult:
        """The image in an answer: base64 (with or without its data-URL prefix) or a URL to fetch."""
        # Not behind the Editor's per-core limit: decoding at once frees the body (a third larger).
        # One trip to a thread for the usual answer (base64 in the body): decoded and checked there.
        payload, data, image = await asyncio.to_thread(_read_and_check, answer.body)
        # A stream's completed event carries its image at the top, not in ``data``.
        item = payload if answer.streamed and isinstance(payload, dict) else self._first_item(payload, answer.api_key)
        if isinstance(image, InvalidResponseError):
            raise image
        if image is None:
            b64 = item.get("b64_json")
            url = item.get("url")
            if data is not None:
                pass
            elif isinstance(b64, str) and b64:
                data = await asyncio.to_thread(_decode_b64, b64)
            elif isinstance(url, str) and url:
                data = await self._download(url)
            else:
                raise InvalidResponseError("data[0] has neither b64_json nor url")
            image = await asyncio.to_thread(check_output, data)
        return ImageEditResult(image, _usage(payload.get("usage")), answer.api_seconds, answer.attempts)

    async def _download(self, url: str) -> bytes:
        if not url.startswith(("http://", "https://")):
            raise InvalidResponseError("result url is not http(s)")
        timeout = aiohttp.ClientTimeout(total=URL_DOWNLOAD_TIMEOUT)
        try:
            # No Authorization header: the key must never go to the CDN host.
            async with self._session.get(url, timeout=timeout) as response:
                if response.status != 200:
                    raise InvalidResponseError(f"result url answered HTTP {response.status}")
                return await _read_capped(response, MAX_URL_DOWNLOAD_BYTES)
        except TimeoutError:
            raise InvalidResponseError("timed out downloading the result url") from None
        except aiohttp.ClientError as exc:
            raise InvalidResponseError(f"could not download the result url: {type(exc).__name__}") from None


def _read_and_check(body: bytes) -> tuple[Any, bytes | None, OutputImage | InvalidResponseError | None]:
    """The answer's JSON and, when the body carries base64, the image in it, checked (or why it is not
    usable: raised by the caller after it has looked at the JSON, as if checked separately)."""
    payload, data = read_answer(body)
    if data is None:
        return payload, data, None
    try:
        return payload, data, check_output(data)
    except InvalidResponseError as exc:
        return payload, data, exc


async def _read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes:
    if response.content_length is not None and response.content_length > cap:
        raise InvalidResponseError(f"response of {response.content_length} bytes is over the cap")
    # A list and one join copy the body once; growing a bytearray copied it again and again.
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(1 << 20):
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            raise InvalidResponseError("response is over the size cap")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


_B64_KEY = b'"b64_json"'
_B64_VALUE_START = re.compile(rb'"b64_json"\s*:\s*"')
_B64_CHUNK = 1 << 20  # characters per a2b_base64 call, a multiple of 4


def _parse_json(body: bytes | str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidResponseError(f"response is not JSON (starts {body[:60]!r})") from None


def read_answer(body: bytes) -> tuple[Any, bytes | None]:
    """Parse an answer and decode its image, cutting the base64 out of the bytes as it is.

    The JSON scanner never walks the multi-MB value and no str copy of it is made: the
    value is found with ``find`` (memchr speed), decoded from a memoryview, and the small
    rest is parsed. Anything unusual (escapes such as ``\\/``) falls back to a full parse,
    and then the image is ``None`` and ``data[0].b64_json`` holds it as text.
    """
    payload, b64 = split_answer(body)
    return payload, None if b64 is None else _decode_b64(b64)


def split_answer(body: bytes) -> tuple[Any, memoryview | None]:
    """An answer's JSON without its ``b64_json`` value, and that value as a view of ``body`` (``None`` when it
    could not be cut out: the JSON then holds it, as text). See ``read_answer``."""
    key = body.find(_B64_KEY)
    match = _B64_VALUE_START.match(body, key) if key >= 0 else None
    if match is None:
        return _parse_json(body), None
    start = match.end()
    end = body.find(b'"', start)
    if end < 0 or body.find(b"\\", start, end) >= 0:
        return _parse_json(body), None
    return _parse_json(body[:start] + body[end:]), memoryview(body)[start:end]


async def _partial_of(payload: dict[str, Any], b64: memoryview | None) -> PartialImage | None:
    """A partial image event's image (decoded in a thread), or ``None`` when it holds none that reads."""
    index = payload.get("partial_image_index")
    value = b64 if b64 is not None else payload.get("b64_json")
    if isinstance(index, bool) or not isinstance(index, int) or not isinstance(value, (str, memoryview)) or not value:
        return None
    try:
        return PartialImage(index, await asyncio.to_thread(_decode_b64, value))
    except InvalidResponseError:
        return None


def _decode_b64(value: str | bytes | memoryview) -> bytes:
    """Decode ``b64_json`` with or without its ``data:image/...;base64,`` prefix.

    ``a2b_base64`` holds the GIL: decoding in 1 MB slices lets the event loop run between
    them when this runs in a worker thread.
    """
    if isinstance(value, str):
        if not value.isascii():
            raise InvalidResponseError("b64_json holds non-ASCII characters")
        value = value.encode("ascii")
    view = memoryview(value)
    match = _DATA_URL_PREFIX.match(bytes(view[:100]))
    if match:
        view = view[match.end() :]
    try:
        if len(view) % 4 == 0:
            with contextlib.suppress(binascii.Error):
                return b"".join(
                    binascii.a2b_base64(view[i : i + _B64_CHUNK], strict_mode=False)
                    for i in range(0, len(view), _B64_CHUNK)
                )
        # Whitespace or stray characters can shift the 4-character groups across slices: decode whole.
        return binascii.a2b_base64(view, strict_mode=False)
    except binascii.Error as exc:
        raise InvalidResponseError(f"b64_json is not valid base64 ({exc})") from None


def _tell_who_must_act(error: ImageAPIError, own_key: bool) -> None:
    """The log line for a refused key or an empty account: the operator's problem, or a server's."""
    if own_key:
        # Not the operator's to fix: the engine tells that server's admins (see bot.ops.audit).
        log.warning("a server's own API key was refused: %s (its admins are told)", error.log_detail)
    else:
        # Members are told the admin knows; this line is how the admin knows.
        log.error("image API needs the operator: %s (check IMAGE_API_KEY and the account)", error.log_detail)


def _error_message(body: bytes) -> str:
    """The API's own ``error.message``, or a short description of a non-JSON page."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        text = body[:2000].decode("utf-8", "replace")
        title = re.search(r"<title>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        if title:
            return f"non-JSON page: {title.group(1).strip()}"
        return f"non-JSON answer: {text[:120].strip()}" if text.strip() else "empty answer"
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if isinstance(payload.get("message"), str):
            return str(payload["message"])
    return "no error message"


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers else None
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _usage(value: Any) -> Usage | None:
    """The answer's ``usage`` (with ``input_tokens_details`` when given), or ``None`` when it has none."""
    if not isinstance(value, dict):
        return None
    try:
        details = value.get("input_tokens_details")
        text = image = None
        if isinstance(details, dict) and "text_tokens" in details and "image_tokens" in details:
            text, image = int(details["text_tokens"]), int(details["image_tokens"])
        return Usage(
            int(value.get("input_tokens", 0)),
            int(value.get("output_tokens", 0)),
            int(value.get("total_tokens", 0)),
            text_tokens=text,
            image_tokens=image,
        )
    except (TypeError, ValueError):
        return None


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
