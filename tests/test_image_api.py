"""The image API client against the fake API, over real loopback HTTP."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.config import Config
from bot.errors import (
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    InvalidResponseError,
    QuotaExhaustedError,
    SafetyRejectedError,
    TransientAPIError,
)
from bot.image_api import ImageAPIClient, ImageEditRequest
from bot.images import PreparedImage
from tests.fake_image_api import FakeImageAPI, Reply, make_png

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


async def edit(api: FakeImageAPI, request: ImageEditRequest | None = None, **overrides: object):  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as session:
        client = ImageAPIClient(session, make_config(api, **overrides))
        return await client.edit(request or ImageEditRequest("make it blue", [image(1)]))


async def test_request_has_fields_in_order_and_images_in_prompt_order(api: FakeImageAPI) -> None:
    images = [image(1), image(2), image(3)]
    await edit(api, ImageEditRequest("image1 into image2, style of image3", images, "2048x1360"))
    (call,) = api.calls
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


@pytest.mark.parametrize(
    ("reply", "error", "text"),
    [
        (
            Reply(kind="error", status=400, body={"error": {"message": "prompt too long"}}),
            BadRequestError,
            "prompt too long",
        ),
        (
            Reply(
                kind="error",
                status=400,
                body={"error": {"message": "Your request was rejected by the safety system"}},
            ),
            SafetyRejectedError,
            "safety system",
        ),
        (
            Reply(kind="error", status=500, body={"error": {"message": "content blocked by moderation"}}),
            SafetyRejectedError,
            "moderation",
        ),
        (
            Reply(kind="error", status=401, body={"error": {"message": "bad key"}}),
            AuthenticationError,
            "not configured",
        ),
        (
            Reply(kind="error", status=403, body={"error": {"message": "forbidden"}}),
            AuthenticationError,
            "not configured",
        ),
        (
            Reply(kind="error", status=429, body={"error": {"message": "insufficient quota: balance too low"}}),
            QuotaExhaustedError,
            "out of credit",
        ),
        (Reply(kind="malformed"), InvalidResponseError, "not a usable image"),
        (Reply(kind="truncated"), InvalidResponseError, "not a usable image"),
        (Reply(kind="no_image"), InvalidResponseError, "not a usable image"),
    ],
)
async def test_errors_that_are_never_retried(api: FakeImageAPI, reply: Reply, error: type, text: str) -> None:
    api.then(reply)
    with pytest.raises(error) as caught:
        await edit(api)
    assert text in caught.value.user_message  # type: ignore[attr-defined]
    assert len(api.calls) == 1


@pytest.mark.parametrize(
    "reply",
    [
        Reply(kind="error", status=429, body={"error": {"message": "slow down"}}, headers={"Retry-After": "0"}),
        Reply(kind="html", status=502),
        Reply(kind="error", status=503, body={"error": {"message": "overloaded"}}),
        Reply(kind="drop"),
    ],
)
async def test_transient_failures_are_retried_then_succeed(api: FakeImageAPI, reply: Reply) -> None:
    api.then(reply, reply)
    result = await edit(api)
    assert result.attempts == 3
    assert len(api.calls) == 3


async def test_transient_failures_give_up_after_the_bound(api: FakeImageAPI) -> None:
    api.then(*[Reply(kind="html", status=502)] * 10)
    with pytest.raises(TransientAPIError) as caught:
        await edit(api, image_api_max_retries=2)
    assert "busy" in caught.value.user_message
    assert len(api.calls) == 3


async def test_retry_after_is_honoured(api: FakeImageAPI) -> None:
    api.then(Reply(kind="error", status=429, body={"error": {"message": "rate"}}, headers={"Retry-After": "0.3"}))
    result = await edit(api, image_api_retry_backoff=0.0)
    assert result.api_seconds >= 0.3


async def test_timeout_is_not_retried(api: FakeImageAPI) -> None:
    api.then(Reply(kind="hang"))
    with pytest.raises(APITimeoutError):
        await edit(api, image_api_timeout=0.5)
    assert len(api.calls) == 1


async def test_error_messages_never_echo_the_key(api: FakeImageAPI) -> None:
    api.then(Reply(kind="error", status=400, body={"error": {"message": f"bad header Bearer {KEY}"}}))
    with pytest.raises(BadRequestError) as caught:
        await edit(api)
    assert KEY not in caught.value.user_message and KEY not in caught.value.log_detail


def test_read_answer_cuts_out_the_base64_and_falls_back_on_escapes() -> None:
    import base64
    import json

    from bot.image_api import _decode_b64, read_answer

    png = make_png(20, 20)
    encoded = base64.b64encode(png).decode()
    plain = json.dumps({"data": [{"b64_json": "data:image/png;base64," + encoded}], "usage": {"total_tokens": 5}})
    payload, data = read_answer(plain.encode())
    assert data == png and payload["usage"]["total_tokens"] == 5
    escaped = plain.replace("/", "\\/")  # JSON allows "\/" for "/", and some servers write it
    payload, data = read_answer(escaped.encode())
    assert data is None and _decode_b64(payload["data"][0]["b64_json"]) == png
