"""The image API client's streamed calls (live previews) against the fake API, over real loopback HTTP.

A job with previews asks a model that streams for ``stream=true`` and its ``partial_images``; each partial
image reaches ``on_partial`` as it arrives, the call ends with the completed event's image and usage. Until
the first event the usual retry rules hold (a refused connection, a quick 5xx or an HTML page is repeated);
after it, a cut, an error or a stall is a call that may be billed: one attempt, never repeated.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from bot.config import Config
from bot.core.attempts import Attempt, AttemptOutcome
from bot.core.models import PARTIAL_IMAGES
from bot.core.pricing import Usage
from bot.errors import (
    APITimeoutError,
    BodyCutOffError,
    ConnectFailedError,
    InvalidResponseError,
    MaybeBilledError,
    ServerError,
    StreamCutError,
)
from bot.provider.client import Endpoint, ImageAPIClient, ImageEditResult, ProviderRequest
from bot.provider.stream import Event, EventReader, PartialImage
from tests.fake_image_api import FakeImageAPI, Reply, make_png, partial_png
from tests.test_image_api import api, catalog_config, closed_port, image, outcomes, text_parts

__all__ = ["api"]  # the fixture, imported

S = AttemptOutcome
STREAMED = {PARTIAL_IMAGES: 3}


def streaming(api: FakeImageAPI, path: Path | None = None, **overrides: object) -> Config:
    api.models.add("gpt-image-2")
    return catalog_config(api, path, **overrides)


def edit_request(**options: str | int) -> ProviderRequest:
    return ProviderRequest(Endpoint.EDITS, "make it blue", [image(1)], model="gpt-image-2", options=options)


async def streamed_call(
    config: Config, request: ProviderRequest, attempts: list[Attempt], partials: list[tuple[float, PartialImage]]
) -> ImageEditResult:
    """Make the call, noting each partial image with the loop time it reached ``on_partial``."""
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session, asyncio.timeout(30):
        client = ImageAPIClient(session, config)
        answer = await client.call(request, attempts, lambda p: partials.append((loop.time(), p)))
        return await client.decode(answer)


async def test_a_streamed_edit_asks_for_its_partials_hands_each_on_as_it_arrives_and_ends_with_the_final_image(
    api: FakeImageAPI,
) -> None:
    final = make_png(80, 60, (1, 2, 3))
    usage = {"input_tokens": 1040, "output_tokens": 4460, "total_tokens": 5500,
             "input_tokens_details": {"text_tokens": 40, "image_tokens": 1000}}  # fmt: skip
    api.then(Reply(image=final, usage=usage, gaps=(0.0, 0.4, 0.4, 0.4)))
    attempts: list[Attempt] = []
    partials: list[tuple[float, PartialImage]] = []
    result = await streamed_call(streaming(api), edit_request(quality="high", **STREAMED), attempts, partials)
    (call,) = api.calls
    assert text_parts(call) == [
        ("model", b"gpt-image-2"), ("prompt", b"make it blue"), ("quality", b"high"), ("stream", b"true"),
        ("partial_images", b"3"),
    ]  # fmt: skip
    assert call.events == ["image_edit.partial_image"] * 3 + ["image_edit.completed"]
    assert [p.index for _, p in partials] == [0, 1, 2]
    assert [p.data for _, p in partials] == [partial_png(0), partial_png(1), partial_png(2)]
    # Each was handed on as it arrived, not at the end: before the fake sent the next event.
    for (handed, _), next_sent in zip(partials, call.event_times[1:], strict=True):
        assert handed < next_sent
    assert result.image.data == final and (result.image.width, result.image.height) == (80, 60)
    assert result.usage == Usage(1040, 4460, 5500, text_tokens=40, image_tokens=1000)
    assert outcomes(attempts) == [(S.SUCCEEDED, True, 200)]


async def test_a_streamed_generation_sends_stream_as_json_and_reads_the_generation_events(api: FakeImageAPI) -> None:
    attempts: list[Attempt] = []
    partials: list[tuple[float, PartialImage]] = []
    request = ProviderRequest(Endpoint.GENERATIONS, "a fox", model="gpt-image-2", options={PARTIAL_IMAGES: 2})
    result = await streamed_call(streaming(api), request, attempts, partials)
    (call,) = api.calls
    assert call.json == {"model": "gpt-image-2", "prompt": "a fox", "stream": True, "partial_images": 2}
    assert call.events == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert [p.data for _, p in partials] == [partial_png(0), partial_png(1)]
    assert result.image.data == make_png() and result.usage is not None


async def test_without_partials_asked_nothing_is_streamed_and_a_model_that_does_not_stream_is_never_asked(
    api: FakeImageAPI, caplog: pytest.LogCaptureFixture
) -> None:
    config = streaming(api)
    await streamed_call(config, edit_request(), [], partials := [])
    plain = ProviderRequest(Endpoint.EDITS, "p", [image(1)], model="gpt-image-2-vip", options=STREAMED)
    await streamed_call(config, plain, [], partials)
    official, vip = api.calls
    assert "stream" not in official.names and "partial_images" not in official.names and not official.events
    assert "stream" not in vip.names and "partial_images" not in vip.names and vip.status == 200
    assert partials == []
    assert "not streaming 3 partial images: model gpt-image-2-vip no longer streams them" in caplog.text


async def test_a_stream_cut_after_its_first_partial_is_one_attempt_that_may_be_billed(api: FakeImageAPI) -> None:
    api.then(Reply(kind="stream_cut"), Reply())
    attempts: list[Attempt] = []
    partials: list[tuple[float, PartialImage]] = []
    with pytest.raises(StreamCutError) as caught:
        await streamed_call(streaming(api), edit_request(**STREAMED), attempts, partials)
    assert isinstance(caught.value, MaybeBilledError)
    assert "stopped sending after a preview" in str(caught.value.user_message)
    assert "You were not charged" in str(caught.value.user_message)
    assert len(api.calls) == 1 and api.calls[0].events == ["image_edit.partial_image", "cut"]
    assert [p.data for _, p in partials] == [partial_png(0)]
    assert outcomes(attempts) == [(S.BODY_CUT_OFF, True, 200)]


async def test_an_error_event_after_a_partial_is_a_cut_stream_never_repeated(api: FakeImageAPI) -> None:
    api.then(Reply(kind="stream_error"), Reply())
    attempts: list[Attempt] = []
    with pytest.raises(StreamCutError) as caught:
        await streamed_call(streaming(api), edit_request(**STREAMED), attempts, [])
    assert "scripted failure mid-stream" in caught.value.log_detail
    assert len(api.calls) == 1 and outcomes(attempts) == [(S.BODY_CUT_OFF, True, 200)]


async def test_a_stall_between_events_ends_at_the_models_timeout_and_is_never_repeated(
    api: FakeImageAPI, tmp_path: Path
) -> None:
    own = tmp_path / "models.toml"
    own.write_text("[models.gpt-image-2]\nenabled = true\ntimeout = 1\n")
    api.then(Reply(kind="stream_stall"), Reply())
    attempts: list[Attempt] = []
    partials: list[tuple[float, PartialImage]] = []
    started = asyncio.get_running_loop().time()
    with pytest.raises(APITimeoutError) as caught:
        await streamed_call(streaming(api, own, image_api_timeout=30.0), edit_request(**STREAMED), attempts, partials)
    took = asyncio.get_running_loop().time() - started
    assert caught.value.log_detail == "timeout after 1 s" and 1 <= took < 6
    assert [p.index for _, p in partials] == [0]  # the preview came before the stall
    assert len(api.calls) == 1 and outcomes(attempts) == [(S.TIMEOUT, True, 200)]


@pytest.mark.parametrize(
    "never_started",
    [Reply(kind="html", status=502), Reply(kind="error", status=503, body={"error": {"message": "overloaded"}})],
    ids=["html-502", "json-503"],
)
async def test_a_stream_that_never_starts_follows_the_usual_retry_rules(
    api: FakeImageAPI, never_started: Reply
) -> None:
    api.then(never_started, never_started)
    attempts: list[Attempt] = []
    partials: list[tuple[float, PartialImage]] = []
    result = await streamed_call(streaming(api), edit_request(**STREAMED), attempts, partials)
    assert outcomes(attempts) == [(S.SERVER_ERROR_FAST, False, never_started.status)] * 2 + [(S.SUCCEEDED, True, 200)]
    assert [c.streamed for c in api.calls] == [True, True, True]  # each try asked for the stream again
    assert [p.index for _, p in partials] == [0, 1, 2] and result.image.data == make_png()


async def test_a_stream_that_never_starts_gives_up_after_the_bound_and_a_refused_connection_is_retried(
    api: FakeImageAPI,
) -> None:
    api.then(*[Reply(kind="html", status=502)] * 5)
    attempts: list[Attempt] = []
    with pytest.raises(ServerError):
        await streamed_call(streaming(api, image_api_max_retries=1), edit_request(**STREAMED), attempts, [])
    assert outcomes(attempts) == [(S.SERVER_ERROR_FAST, False, 502)] * 2
    refused: list[Attempt] = []
    base = f"http://127.0.0.1:{closed_port()}/v1"
    with pytest.raises(ConnectFailedError):
        await streamed_call(
            streaming(api, image_api_base=base, image_api_max_retries=2), edit_request(**STREAMED), refused, []
        )
    assert outcomes(refused) == [(S.CONNECT_FAILED, False, None)] * 3


async def test_a_route_that_answers_whole_despite_the_stream_asked_is_read_as_usual(api: FakeImageAPI) -> None:
    """A provider that ignores ``stream`` answers JSON: nothing to preview, the image all the same."""
    api.then(Reply(kind="url"))
    partials: list[tuple[float, PartialImage]] = []
    # ``url`` is not a stream reply: the fake answers it whole, as a route that ignores ``stream`` would.
    result = await streamed_call(streaming(api), edit_request(**STREAMED), [], partials)
    assert partials == [] and result.image.data == make_png()


async def test_a_200_stream_that_ends_before_any_event_is_one_attempt(api: FakeImageAPI) -> None:
    api.then(Reply(partials=[], kind="stream_cut"), Reply())
    attempts: list[Attempt] = []
    with pytest.raises(BodyCutOffError) as caught:
        await streamed_call(streaming(api), edit_request(**STREAMED), attempts, [])
    assert not isinstance(caught.value, StreamCutError)
    assert len(api.calls) == 1 and outcomes(attempts) == [(S.BODY_CUT_OFF, True, 200)]


def test_the_event_reader_cuts_events_across_chunks_and_line_endings() -> None:
    reader = EventReader(cap=1 << 20)
    stream = (
        b": keep-alive\n\n"
        b'event: image_edit.partial_image\ndata: {"a": 1}\n\n'
        b'event: image_edit.completed\r\ndata: {"b":\r\ndata: 2}\r\n\r\n'
        b'data: {"c": 3}\n\n'
    )
    events: list[Event] = []
    for at in range(0, len(stream), 3):  # three bytes at a time: ends straddle chunks
        events += reader.feed(stream[at : at + 3])
    assert events == [
        Event("image_edit.partial_image", b'{"a": 1}'),
        Event("image_edit.completed", b'{"b":\n2}'),
        Event("", b'{"c": 3}'),
    ]
    assert not reader.pending
    assert reader.feed(b'data: {"half"') == [] and reader.pending
    with pytest.raises(InvalidResponseError) as over:
        EventReader(cap=8).feed(b"data: 0123456789")
    assert over.value.log_detail == "a streamed event is over the 8-byte cap"
