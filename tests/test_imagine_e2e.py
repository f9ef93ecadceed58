"""``/imagine``: a second kind of job on the same engine. Text to image through ``/images/generations``, answered,
queued, charged, limited, delivered and built on like an edit: Refine makes an edit of its result, Reroll imagines
again, and nothing of it needs inputs."""

from __future__ import annotations

from typing import Any

from tests.fake_discord import FLAG_EPHEMERAL as EPHEMERAL
from tests.fake_discord import FakeDiscord, InteractionHandle
from tests.fake_image_api import FakeImageAPI, Reply, make_png
from tests.harness import BotProcess, card_buttons, card_text, money, option, wait_result, wait_rows
from tests.test_refine_e2e import result_button, submit_refine, wait_thread_result
from tests.test_results_e2e import link, wait_click_result


async def imagine(fake: FakeDiscord, prompt: str, size: str | None = None, **kwargs: Any) -> InteractionHandle:
    options = [option("prompt", prompt, 3)] + ([option("size", size, 3)] if size else [])
    return await fake.slash_command("imagine", options, **kwargs)


async def test_imagine_asks_the_generations_endpoint_and_posts_a_result_with_the_usual_buttons(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    output = make_png(64, 40, (10, 20, 30))
    image_api.then(Reply(image=output))
    handle = await imagine(discord_fake, "a lighthouse on a cliff at dusk", size="2048x1360")
    ack = await handle.wait_for_callback()
    assert ack.json["type"] == 4 and not ack.json["data"].get("flags", 0) & EPHEMERAL
    assert "text only" in ack.json["data"]["content"]
    result = await wait_result(handle)
    assert result.files[0].data == output
    assert [f.filename for f in result.files] == [result.files[0].filename]  # no inputs to show
    assert "imagined from words alone" in card_text(result)
    assert [b["label"] for b in card_buttons(result)] == ["Refine", "Reroll", "Variations", "Info", "Delete"]
    (call,) = image_api.calls
    assert call.path == "/v1/images/generations" and call.parts == [] and call.json is not None
    # Byte for byte what the API is sent: the model, the prompt as typed, the size, the answer's format.
    assert call.json == {
        "model": "gpt-image-2-vip",
        "prompt": "a lighthouse on a cliff at dusk",
        "size": "2048x1360",
        "response_format": "b64_json",
    }
    assert call.headers["Content-Type"].startswith("application/json")
    rows = await wait_rows(
        bot.env, "SELECT kind, origin, input_count, status, cost FROM jobs", lambda r: r[0][3] != "delivering"
    )
    assert rows == [("imagine", "command", 0, "succeeded", 30_000)]
    assert await money(bot.env) == [("a lighthouse on a cliff at dusk", "charge")]
    assert await wait_rows(bot.env, "SELECT job_id FROM job_inputs", lambda r: True) == []  # nothing to keep


async def test_refining_an_imagined_result_is_an_edit_and_a_reroll_imagines_again(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    first = make_png(64, 40, (1, 2, 3))
    image_api.then(Reply(image=first))
    handle = await imagine(discord_fake, "a red fox in the snow")
    await wait_result(handle)
    message = handle.original_message()
    assert message is not None

    again = make_png(64, 40, (4, 5, 6))
    image_api.then(Reply(image=again))
    click = await discord_fake.click_button(message, result_button(message, "Reroll"))
    rerolled = await wait_click_result(click)
    assert rerolled.files[0].data == again
    assert f"reroll of {link(discord_fake, message)}" in card_text(rerolled)
    assert "imagined from words alone" in card_text(rerolled)

    await submit_refine(discord_fake, message, "now at night")
    thread = await discord_fake.wait_for_request(lambda r: r.path.endswith("/threads"), 10)
    await wait_thread_result(discord_fake, int(thread.response["id"]))

    calls = image_api.calls
    assert [(c.path, c.field("prompt")) for c in calls] == [
        ("/v1/images/generations", "a red fox in the snow"),
        ("/v1/images/generations", "a red fox in the snow"),
        ("/v1/images/edits", "now at night"),
    ]
    assert [p.data for p in calls[2].images] == [first]  # the imagined result is image1 of the edit
    rows = await wait_rows(
        bot.env,
        "SELECT kind, origin FROM jobs ORDER BY created_at",
        lambda r: len(r) == 3,
    )
    assert rows == [("imagine", "command"), ("imagine", "reroll"), ("edit", "refine")]
    assert [entry for _, entry in await money(bot.env)] == ["charge", "charge", "charge"]


async def test_imagine_counts_against_the_same_daily_limit(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    bot_env["USER_DAILY_LIMIT"] = "1"
    await bot_process.start()
    await wait_result(await imagine(discord_fake, "one"))
    refused = await imagine(discord_fake, "two")
    answer = await refused.wait_for_callback()
    assert answer.json["data"]["flags"] & EPHEMERAL
    assert "used 1 of your 1 edits" in answer.json["data"]["content"]
    assert len(image_api.calls) == 1
    assert [c.field("prompt") for c in image_api.calls] == ["one"]
