"""The image API client against the fake API, over real loopback HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.config import Config, load_config
from bot.core.attempts import Attempt, AttemptOutcome
from bot.core.catalog import load_catalog
from bot.core.pricing import Usage
from bot.errors import (
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BodyCutOffError,
    ConfigError,
    ConnectFailedError,
    ConnectionLostError,
    InvalidResponseError,
    MaybeBilledError,
    QuotaExhaustedError,
    RateLimitedError,
    SafetyRejectedError,
    ServerError,
    SlowServerError,
    TransientAPIError,
)
from bot.media.images import PreparedImage
from bot.provider.client import APIAnswer, Endpoint, ImageAPIClient, ImageEditResult, ProviderRequest
from tests.fake_image_api import EditCall, FakeImageAPI, Reply, make_png

KEY = "sk-test-key-0123456789"


@pytest.fixture
async def api() -> AsyncIterator[FakeImageAPI]:
    fake = FakeImageAPI(api_key=KEY)
    await fake.start()
    yield fake
    await fake.stop()


def make_config(api: FakeImageAPI, **overrides: object) -> Config:
    base = Config(
        discord_token="t" * 30,
        image_api_key=KEY,
        image_api_base=api.base,
        image_api_retry_backoff=0.01,
        data_dir=Path("unused"),
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def image(n: int) -> PreparedImage:
    return PreparedImage(make_png(10 + n, 10), "image/png", 10 + n, 10)


def blue() -> ProviderRequest:
    return ProviderRequest(Endpoint.EDITS, "make it blue", [image(1)])


async def edit(api: FakeImageAPI, request: ProviderRequest | None = None, **overrides: object) -> ImageEditResult:
    async with aiohttp.ClientSession() as session, asyncio.timeout(30):
        client = ImageAPIClient(session, make_config(api, **overrides))
        return await client.edit(request or blue())


async def call_api(api: FakeImageAPI, attempts: list[Attempt], **overrides: object) -> APIAnswer:
    """One ``call`` (no decoding) that records its attempts into ``attempts``."""
    async with aiohttp.ClientSession() as session, asyncio.timeout(30):
        client = ImageAPIClient(session, make_config(api, **overrides))
        return await client.call(blue(), attempts)


def outcomes(attempts: list[Attempt]) -> list[tuple[AttemptOutcome, bool, int | None]]:
    return [(a.outcome, a.may_be_billed, a.http_status) for a in attempts]


def answered_ids(api: FakeImageAPI) -> list[str | None]:
    return [c.request_id for c in api.calls]


async def test_request_has_fields_in_order_and_images_in_prompt_order(api: FakeImageAPI) -> None:
    images = [image(1), image(2), image(3)]
    await edit(api, ProviderRequest(Endpoint.EDITS, "image1 into image2, style of image3", images, "2048x1360"))
    (call,) = api.calls
    assert call.path == "/v1/images/edits" and call.headers["Content-Type"].startswith("multipart/form-data")
    assert call.names == ["model", "prompt", "size", "response_format", "image", "image", "image"]
    assert call.field("model") == "gpt-image-2-vip"
    assert call.field("size") == "2048x1360"
    assert call.field("response_format") == "b64_json"
    assert [p.data for p in call.images] == [i.data for i in images]
    assert [p.filename for p in call.images] == ["image1.png", "image2.png", "image3.png"]
    assert call.headers["Authorization"] == f"Bearer {KEY}"


async def test_auto_size_leaves_the_field_out(api: FakeImageAPI) -> None:
    await edit(api)
    assert "size" not in api.calls[0].names
    assert "quality" not in api.calls[0].names and "n" not in api.calls[0].names


async def test_a_generation_is_sent_as_json_to_its_own_endpoint_without_images(api: FakeImageAPI) -> None:
    out = make_png(48, 27, (9, 99, 199))
    api.then(Reply(image=out))
    api.models.add("gpt-image-2-all")
    result = await edit(api, ProviderRequest(Endpoint.GENERATIONS, "a red fox in the snow", size="2048x1152"))
    other = ProviderRequest(Endpoint.GENERATIONS, "a red fox", model="gpt-image-2-all")
    await edit(api, other, image_response_format="url")
    first, auto = api.calls
    assert first.path == "/v1/images/generations" and first.status == 200
    assert first.headers["Content-Type"].startswith("application/json")
    assert first.json == {
        "model": "gpt-image-2-vip",
        "prompt": "a red fox in the snow",
        "size": "2048x1152",
        "response_format": "b64_json",
    }
    assert first.parts == [] and first.images == []
    assert first.headers["Authorization"] == f"Bearer {KEY}"
    assert result.image.data == out and (result.image.width, result.image.height) == (48, 27)
    # Auto size leaves the field out; the model is the request's, the format the configuration's.
    assert auto.json == {"model": "gpt-image-2-all", "prompt": "a red fox", "response_format": "url"}


@pytest.mark.parametrize("kind", ["b64", "b64_raw", "url"])
async def test_each_success_shape_decodes_to_the_same_bytes(api: FakeImageAPI, kind: str) -> None:
    out = make_png(80, 60, (1, 2, 3))
    api.then(Reply(kind=kind, image=out))
    result = await edit(api)
    assert result.image.data == out
    assert (result.image.width, result.image.height) == (80, 60)
    assert result.usage is not None and result.usage.total_tokens == 1283


async def test_url_download_never_carries_the_key(api: FakeImageAPI) -> None:
    api.then(Reply(kind="url"))
    await edit(api, image_response_format="url")
    assert api.calls[0].field("response_format") == "url"
    assert len(api.file_gets) == 1  # the fake answers 400 to a GET with Authorization


S = AttemptOutcome


@pytest.mark.parametrize(
    ("reply", "error", "text", "outcome"),
    [
        (
            Reply(kind="error", status=400, body={"error": {"message": "prompt too long"}}),
            BadRequestError,
            "prompt too long",
            S.REJECTED,
        ),
        (
            Reply(
                kind="error",
                status=400,
                body={"error": {"message": "Your request was rejected by the safety system"}},
            ),
            SafetyRejectedError,
            "safety system",
            S.SAFETY_REFUSED,
        ),
        (
            Reply(kind="error", status=500, body={"error": {"message": "content blocked by moderation"}}),
            SafetyRejectedError,
            "moderation",
            S.SAFETY_REFUSED,
        ),
        (
            Reply(kind="error", status=401, body={"error": {"message": "bad key"}}),
            AuthenticationError,
            "not configured",
            S.AUTH_FAILED,
        ),
        (
            Reply(kind="error", status=403, body={"error": {"message": "forbidden"}}),
            AuthenticationError,
            "not configured",
            S.AUTH_FAILED,
        ),
        (
            Reply(kind="error", status=429, body={"error": {"message": "insufficient quota: balance too low"}}),
            QuotaExhaustedError,
            "out of credit",
            S.QUOTA_EXHAUSTED,
        ),
        # The exchange succeeded (and was billed); only the decoding fails.
        (Reply(kind="malformed"), InvalidResponseError, "not a usable image", S.SUCCEEDED),
        (Reply(kind="truncated"), InvalidResponseError, "not a usable image", S.SUCCEEDED),
        (Reply(kind="no_image"), InvalidResponseError, "not a usable image", S.SUCCEEDED),
    ],
)
async def test_errors_that_are_never_retried(
    api: FakeImageAPI, reply: Reply, error: type, text: str, outcome: AttemptOutcome
) -> None:
    api.then(reply, Reply())
    attempts: list[Attempt] = []
    with pytest.raises(error) as caught:
        async with aiohttp.ClientSession() as session, asyncio.timeout(30):
            client = ImageAPIClient(session, make_config(api))
            await client.decode(await client.call(blue(), attempts))
    assert text in str(caught.value.user_message)  # type: ignore[attr-defined]
    assert len(api.calls) == 1
    assert [a.outcome for a in attempts] == [outcome]
    assert attempts[0].may_be_billed is (outcome is S.SUCCEEDED)
    assert attempts[0].request_id == api.calls[0].request_id


@pytest.mark.parametrize(
    "reply",
    [
        Reply(kind="error", status=429, body={"error": {"message": "slow down"}}, headers={"Retry-After": "0"}),
        Reply(kind="html", status=502),
        Reply(kind="error", status=503, body={"error": {"message": "overloaded"}}),
    ],
    ids=["429-rate-limit", "html-502", "json-503"],
)
async def test_transient_failures_are_retried_then_succeed(api: FakeImageAPI, reply: Reply) -> None:
    api.then(reply, reply)
    result = await edit(api)
    assert result.attempts == 3
    assert len(api.calls) == 3


async def test_transient_failures_give_up_after_the_bound(api: FakeImageAPI) -> None:
    api.then(*[Reply(kind="html", status=502)] * 10)
    attempts: list[Attempt] = []
    with pytest.raises(ServerError) as caught:
        await call_api(api, attempts, image_api_max_retries=2)
    assert isinstance(caught.value, TransientAPIError)
    assert "busy" in str(caught.value.user_message)
    assert len(api.calls) == 3
    assert outcomes(attempts) == [(S.SERVER_ERROR_FAST, False, 502)] * 3
    assert [a.number for a in attempts] == [1, 2, 3]


async def test_retry_after_is_honoured(api: FakeImageAPI) -> None:
    api.then(Reply(kind="error", status=429, body={"error": {"message": "rate"}}, headers={"Retry-After": "0.3"}))
    result = await edit(api, image_api_retry_backoff=0.0)
    assert result.api_seconds >= 0.3


async def test_timeout_is_not_retried(api: FakeImageAPI) -> None:
    api.then(Reply(kind="hang"))
    attempts: list[Attempt] = []
    with pytest.raises(APITimeoutError) as caught:
        await call_api(api, attempts, image_api_timeout=0.5)
    assert isinstance(caught.value, MaybeBilledError)
    assert len(api.calls) == 1
    assert outcomes(attempts) == [(S.TIMEOUT, True, None)]
    assert attempts[0].seconds >= 0.5


# --- The retry policy: repeat only what the provider cannot have billed.


def closed_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_connection_refused_is_retried_up_to_the_bound_and_never_billed(api: FakeImageAPI) -> None:
    attempts: list[Attempt] = []
    with pytest.raises(ConnectFailedError) as caught:
        await call_api(api, attempts, image_api_base=f"http://127.0.0.1:{closed_port()}/v1", image_api_max_retries=2)
    assert isinstance(caught.value, TransientAPIError)
    assert "could not be reached" in str(caught.value.user_message)
    assert api.calls == []
    assert outcomes(attempts) == [(S.CONNECT_FAILED, False, None)] * 3
    assert all(a.request_id is None for a in attempts)


async def test_rate_limit_is_retried_and_request_ids_are_recorded(api: FakeImageAPI) -> None:
    rate = Reply(kind="error", status=429, body={"error": {"message": "slow down"}}, headers={"Retry-After": "0"})
    api.then(rate, rate)
    attempts: list[Attempt] = []
    answer = await call_api(api, attempts)
    assert len(api.calls) == 3
    assert outcomes(attempts) == [(S.RATE_LIMITED, False, 429), (S.RATE_LIMITED, False, 429), (S.SUCCEEDED, True, 200)]
    assert [a.request_id for a in attempts] == answered_ids(api) == ["fake-req-1", "fake-req-2", "fake-req-3"]
    assert answer.attempts == 3 and answer.request_id == "fake-req-3"
    assert [a.number for a in attempts] == [1, 2, 3]
    assert attempts[0].started_at <= attempts[1].started_at <= attempts[2].started_at


async def test_rate_limit_that_never_clears_raises_rate_limited(api: FakeImageAPI) -> None:
    api.then(*[Reply(kind="error", status=429, body={"error": {"message": "slow down"}})] * 5)
    attempts: list[Attempt] = []
    with pytest.raises(RateLimitedError):
        await call_api(api, attempts, image_api_max_retries=1)
    assert len(api.calls) == 2
    assert outcomes(attempts) == [(S.RATE_LIMITED, False, 429)] * 2


async def test_quota_429_is_one_call(api: FakeImageAPI) -> None:
    api.then(Reply(kind="error", status=429, body={"error": {"message": "quota exceeded for this key"}}))
    attempts: list[Attempt] = []
    with pytest.raises(QuotaExhaustedError):
        await call_api(api, attempts)
    assert len(api.calls) == 1
    assert outcomes(attempts) == [(S.QUOTA_EXHAUSTED, False, 429)]


@pytest.mark.parametrize(
    "reply",
    [Reply(kind="html", status=502), Reply(kind="error", status=500, body={"error": {"message": "upstream error"}})],
    ids=["html-502", "json-500"],
)
async def test_fast_5xx_is_retried(api: FakeImageAPI, reply: Reply) -> None:
    api.then(reply)
    attempts: list[Attempt] = []
    await call_api(api, attempts, image_api_fast_failure_seconds=5.0)
    assert len(api.calls) == 2
    assert outcomes(attempts) == [(S.SERVER_ERROR_FAST, False, reply.status), (S.SUCCEEDED, True, 200)]


@pytest.mark.parametrize(
    "reply",
    [
        Reply(kind="html", status=502, delay=0.4),
        Reply(kind="error", status=503, body={"error": {"message": "upstream error"}}, delay=0.4),
    ],
    ids=["html-502", "json-503"],
)
async def test_slow_5xx_is_one_call_and_may_be_billed(api: FakeImageAPI, reply: Reply) -> None:
    api.then(reply)  # the default success after it is never asked for
    attempts: list[Attempt] = []
    with pytest.raises(SlowServerError) as caught:
        await call_api(api, attempts, image_api_fast_failure_seconds=0.2)
    assert not isinstance(caught.value, TransientAPIError)
    assert "failed while working" in str(caught.value.user_message)
    assert len(api.calls) == 1
    assert outcomes(attempts) == [(S.SERVER_ERROR_SLOW, True, reply.status)]
    assert attempts[0].request_id == api.calls[0].request_id
    assert attempts[0].seconds >= 0.4


async def test_safety_message_in_a_5xx_is_one_call(api: FakeImageAPI) -> None:
    api.then(Reply(kind="error", status=502, body={"error": {"message": "content blocked by moderation"}}))
    attempts: list[Attempt] = []
    with pytest.raises(SafetyRejectedError):
        await call_api(api, attempts)
    assert len(api.calls) == 1
    assert outcomes(attempts) == [(S.SAFETY_REFUSED, False, 502)]


async def test_body_cut_off_midway_is_one_call_and_may_be_billed(api: FakeImageAPI) -> None:
    api.then(Reply(kind="cut"))
    attempts: list[Attempt] = []
    with pytest.raises(BodyCutOffError) as caught:
        await call_api(api, attempts)
    assert isinstance(caught.value, MaybeBilledError)
    assert "answer was cut off" in str(caught.value.user_message)
    assert len(api.calls) == 1
    assert outcomes(attempts) == [(S.BODY_CUT_OFF, True, 200)]
    assert attempts[0].request_id == api.calls[0].request_id == "fake-req-1"


async def test_connection_dropped_after_sending_is_one_call_and_may_be_billed(api: FakeImageAPI) -> None:
    api.then(Reply(kind="drop"))
    attempts: list[Attempt] = []
    with pytest.raises(ConnectionLostError) as caught:
        await call_api(api, attempts)
    assert "connection to the image service was lost" in str(caught.value.user_message)
    assert len(api.calls) == 1 and api.calls[0].parts  # the whole request had arrived
    assert outcomes(attempts) == [(S.CONNECTION_LOST, True, None)]


async def test_a_cancelled_call_records_an_interrupted_attempt(api: FakeImageAPI) -> None:
    api.then(Reply(kind="hang"))
    attempts: list[Attempt] = []
    task = asyncio.create_task(call_api(api, attempts))
    await api.wait_for_started(1, timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(10):
            await task
    assert len(api.calls) == 1
    assert outcomes(attempts) == [(S.INTERRUPTED, True, None)]


async def test_a_call_cancelled_while_the_answer_arrives_keeps_its_status_and_request_id(
    api: FakeImageAPI,
) -> None:
    api.then(Reply(kind="stall"))  # 200, half the body, then nothing
    attempts: list[Attempt] = []
    task = asyncio.create_task(call_api(api, attempts))
    await api.wait_for_calls(1, timeout=10)
    await asyncio.sleep(0.2)  # the fake and the client share this loop: the headers are read by now
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(10):
            await task
    assert outcomes(attempts) == [(S.INTERRUPTED, True, 200)]
    assert attempts[0].request_id == api.calls[0].request_id == "fake-req-1"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-Request-Id": "req-abc"}, "req-abc"),  # wins over the gateway's X-Oneapi-Request-Id
        ({"REQUEST-ID": "upper-case"}, "fake-req-1"),  # X-Oneapi-Request-Id comes before Request-Id
    ],
)
async def test_request_id_header_precedence(api: FakeImageAPI, headers: dict[str, str], expected: str) -> None:
    api.then(Reply(kind="error", status=400, body={"error": {"message": "nope"}}, headers=headers))
    attempts: list[Attempt] = []
    with pytest.raises(BadRequestError):
        await call_api(api, attempts)
    assert attempts[0].request_id == expected


async def test_each_attempt_is_one_info_line_without_the_key(
    api: FakeImageAPI, caplog: pytest.LogCaptureFixture
) -> None:
    api.then(Reply(kind="html", status=502))
    with caplog.at_level(logging.INFO, logger="bot.provider.client"):
        await call_api(api, [])
    lines = [r.getMessage() for r in caplog.records if r.name == "bot.provider.client" and r.levelno == logging.INFO]
    assert len(lines) == 2
    assert lines[0].startswith("image API attempt 1: outcome=server_error_fast status=502 seconds=")
    assert "request_id=fake-req-1" in lines[0] and "retrying in" in lines[0]
    assert lines[1].startswith("image API attempt 2: outcome=succeeded status=200 seconds=")
    assert "request_id=fake-req-2" in lines[1]
    assert all(KEY not in r.getMessage() for r in caplog.records)


def test_fast_failure_window_is_read_from_the_environment() -> None:
    env = {"DISCORD_TOKEN": "t" * 30, "IMAGE_API_KEY": KEY}
    assert load_config(env).image_api_fast_failure_seconds == 10.0
    assert load_config({**env, "IMAGE_API_FAST_FAILURE_SECONDS": "2.5"}).image_api_fast_failure_seconds == 2.5
    with pytest.raises(ConfigError, match="IMAGE_API_FAST_FAILURE_SECONDS"):
        load_config({**env, "IMAGE_API_FAST_FAILURE_SECONDS": "-1"})


async def test_error_messages_never_echo_the_key(api: FakeImageAPI) -> None:
    api.then(Reply(kind="error", status=400, body={"error": {"message": f"bad header Bearer {KEY}"}}))
    with pytest.raises(BadRequestError) as caught:
        await edit(api)
    assert KEY not in str(caught.value.user_message) and KEY not in caught.value.log_detail


def test_read_answer_cuts_out_the_base64_and_falls_back_on_escapes() -> None:
    import base64
    import json

    from bot.provider.client import _decode_b64, read_answer

    png = make_png(20, 20)
    encoded = base64.b64encode(png).decode()
    plain = json.dumps({"data": [{"b64_json": "data:image/png;base64," + encoded}], "usage": {"total_tokens": 5}})
    payload, data = read_answer(plain.encode())
    assert data == png and payload["usage"]["total_tokens"] == 5
    escaped = plain.replace("/", "\\/")  # JSON allows "\/" for "/", and some servers write it
    payload, data = read_answer(escaped.encode())
    assert data is None and _decode_b64(payload["data"][0]["b64_json"]) == png


# What differs by model: the catalog entry's field name, options, response_format, timeouts ------------


def catalog_config(api: FakeImageAPI, path: Path | None = None, **overrides: object) -> Config:
    """A configuration whose models are the catalog's (the shipped one, with ``path`` on top), all in use."""
    models = load_catalog(path, 30_000).models
    return make_config(api, image_models=models, catalog=models, **overrides)


async def send(config: Config, request: ProviderRequest) -> ImageEditResult:
    async with aiohttp.ClientSession() as session, asyncio.timeout(30):
        return await ImageAPIClient(session, config).edit(request)


def text_parts(call: EditCall) -> list[tuple[str, bytes]]:
    """Every non-file part as sent: its name and its bytes, in order."""
    return [(p.name, p.data) for p in call.parts if p.filename is None]


async def test_images_go_in_the_field_the_models_catalog_entry_names(api: FakeImageAPI, tmp_path: Path) -> None:
    api.models.add("gpt-image-2")
    images = [image(1), image(2)]
    config = catalog_config(api)
    await send(config, ProviderRequest(Endpoint.EDITS, "image1 in image2", images, model="gpt-image-2-vip"))
    await send(config, ProviderRequest(Endpoint.EDITS, "image1 in image2", images, model="gpt-image-2"))
    # An operator switches the vip route to image[] in their own catalog: no code changes.
    switched = tmp_path / "models.toml"
    switched.write_text('[models.gpt-image-2-vip]\nimage_field = "image[]"\n')
    await send(
        catalog_config(api, switched),
        ProviderRequest(Endpoint.EDITS, "image1 in image2", images, model="gpt-image-2-vip"),
    )
    vip, official, operator = api.calls
    assert vip.names == ["model", "prompt", "response_format", "image", "image"] and vip.image_field == "image"
    # OpenAI's route takes no response_format: never sent to it.
    assert official.names == ["model", "prompt", "image[]", "image[]"] and official.image_field == "image[]"
    assert operator.names == ["model", "prompt", "response_format", "image[]", "image[]"]
    for call in (vip, official, operator):
        assert call.status == 200
        assert [p.data for p in call.images] == [i.data for i in images]
        assert [p.filename for p in call.images] == ["image1.png", "image2.png"]


async def test_options_are_sent_exactly_to_a_model_that_takes_them_and_never_to_one_that_does_not(
    api: FakeImageAPI, caplog: pytest.LogCaptureFixture
) -> None:
    api.models.add("gpt-image-2")
    asked = {"quality": "high", "output_format": "webp", "output_compression": 80, "background": "opaque"}
    config = catalog_config(api)
    await send(config, ProviderRequest(Endpoint.EDITS, "p", [image(1)], "1024x1024", "gpt-image-2", options=asked))
    edit_call = api.calls[-1]
    assert text_parts(edit_call) == [
        ("model", b"gpt-image-2"),
        ("prompt", b"p"),
        ("size", b"1024x1024"),
        ("quality", b"high"),
        ("output_format", b"webp"),
        ("output_compression", b"80"),
        ("background", b"opaque"),
    ]
    sticker = {"background": "transparent", "output_format": "png", "quality": "low"}
    await send(config, ProviderRequest(Endpoint.GENERATIONS, "a fox sticker", model="gpt-image-2", options=sticker))
    assert api.calls[-1].json == {
        "model": "gpt-image-2",
        "prompt": "a fox sticker",
        "quality": "low",
        "output_format": "png",
        "background": "transparent",
    }
    # A job whose model no longer takes what it asked (the catalog changed since): never sent, and logged.
    with caplog.at_level(logging.WARNING, logger="bot.provider.client"):
        await send(config, ProviderRequest(Endpoint.EDITS, "p", [image(1)], model="gpt-image-2-vip", options=asked))
    vip = api.calls[-1]
    assert vip.status == 200
    assert text_parts(vip) == [("model", b"gpt-image-2-vip"), ("prompt", b"p"), ("response_format", b"b64_json")]
    assert "not sending quality: model gpt-image-2-vip no longer takes it" in caplog.text


async def test_the_fake_refuses_an_option_a_model_does_not_take_as_the_provider_would(api: FakeImageAPI) -> None:
    """So a test that sends one by mistake fails, whatever it checks."""
    plain = dataclasses.replace(load_catalog(None, 30_000).models[1], name="gpt-image-2-vip", wire_name="")
    config = make_config(api, image_models=(plain,), catalog=(plain,))
    with pytest.raises(BadRequestError):
        await send(config, ProviderRequest(Endpoint.EDITS, "p", [image(1)], options={"quality": "high"}))
    assert api.calls[-1].status == 400 and api.calls[-1].options() == {"quality": "high"}


async def test_a_models_timeouts_come_from_its_catalog_entry(api: FakeImageAPI, tmp_path: Path) -> None:
    own = tmp_path / "models.toml"
    own.write_text("[models.gpt-image-2-vip]\ntimeout = 0.2\ntimeout_large = 0.4\n")
    api.then(Reply(kind="hang"), Reply(kind="hang"))
    config = catalog_config(api, own, image_api_timeout=30.0)
    for size, seconds in ((None, 0.2), ("3840x2160", 0.4)):
        started = asyncio.get_running_loop().time()
        with pytest.raises(APITimeoutError) as raised:
            await send(config, ProviderRequest(Endpoint.EDITS, "p", [image(1)], size))
        assert raised.value.log_detail == f"timeout after {seconds:g} s"
        assert seconds <= asyncio.get_running_loop().time() - started < seconds + 5


async def test_usage_with_the_split_of_its_input_tokens_is_read(api: FakeImageAPI) -> None:
    details = {"text_tokens": 40, "image_tokens": 1000}
    api.then(Reply(usage={"input_tokens": 1040, "output_tokens": 4160, "total_tokens": 5200,
                          "input_tokens_details": details}), Reply(no_usage=True))  # fmt: skip
    result = await edit(api)
    assert result.usage == Usage(1040, 4160, 5200, text_tokens=40, image_tokens=1000)
    assert (await edit(api)).usage is None
