"""Variations, end to end: one request run several times as ordinary jobs of one group, on one card.

- each run is one job in the fair queue, charged as one edit; a failed run alone is refunded;
- the runs fill the card's gallery as they finish (the card keeps the earlier outputs by id);
- Refine N and Reroll N pick a run; the Variations button under a result runs it four times;
- a limit that allows fewer runs than asked says so in the acknowledgement, and only those are charged;
- a request's runs count once against the jobs at once (they are one request);
- the cooldown applies to the request, not between its runs;
- another member's edit is not served after all of a member's variations.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.fake_discord import FakeDiscord, InteractionHandle, RecordedRequest
from tests.fake_image_api import FakeImageAPI, Reply, make_png
from tests.harness import (
    MEDIA_GALLERY,
    BotProcess,
    card_buttons,
    card_media,
    card_text,
    components_of,
    execute,
    is_card,
    is_result_edit,
    money,
    option,
    rows,
    send_edit,
    settled,
    wait_result,
    wait_rows,
)
from tests.test_refine_e2e import PROMPT_FIELD, SIZE_FIELD, result_button, wait_thread_result

EPHEMERAL = 64
ONE_SLOT = {"MAX_CONCURRENT_JOBS": "1", "USER_MAX_ACTIVE": "5", "STATUS_UPDATE_SECONDS": "0.3"}


async def start(bot: BotProcess, env: dict[str, str], **settings: str) -> None:
    env.update(ONE_SLOT | settings)
    await bot.start()


async def ask(fake: FakeDiscord, prompt: str, variations: int, **kw: Any) -> InteractionHandle:
    """``/edit`` with one image and ``variations``."""
    attachment = fake.add_attachment(make_png(30, 20), "photo1.png", "image/png")
    options = [option("prompt", prompt, 3), option("image1", attachment["id"], 11), option("variations", variations, 4)]
    return await fake.slash_command("edit", options, resolved_attachments=[attachment], **kw)


async def card_edits(handle: InteractionHandle, count: int, timeout: float = 30) -> list[RecordedRequest]:
    """The first ``count`` edits that made the acknowledged message a card with a new output."""
    found: list[RecordedRequest] = []
    while len(found) < count:
        start = found[-1].index + 1 if found else 0
        found.append(
            await handle.fake.wait_for_request(lambda r: handle._mine(r) and is_result_edit(r), timeout, start=start)
        )
    return found


def gallery(sent: RecordedRequest | dict[str, Any]) -> list[str]:
    return [item["media"]["url"] for kind, item in card_media(sent) if kind == MEDIA_GALLERY]


def shown(message: dict[str, Any]) -> list[str]:
    """The files a stored card's gallery shows, in order (Discord resolves ``attachment://`` to the file's URL)."""
    names = {a["url"]: a["filename"] for a in message["attachments"]}
    return [names.get(url, url) for url in gallery(message)]


def labels(sent: RecordedRequest | dict[str, Any]) -> list[str]:
    return [str(b["label"]) for b in card_buttons(sent)]


async def group_of(env: dict[str, str], count: int) -> list[tuple[Any, ...]]:
    """(id, variant, variants, group_id, status) of the group's runs once ``count`` exist and all ended."""
    return await wait_rows(
        env,
        "SELECT id, variant, variants, group_id, status FROM jobs WHERE group_id IS NOT NULL ORDER BY variant",
        lambda r: len(r) == count and all(row[4] in ("succeeded", "failed", "cancelled") for row in r),
        30,
    )


async def test_the_runs_fill_one_card_cost_their_count_and_refine_2_chains_from_run_2(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await start(bot_process, bot_env)
    outputs = [make_png(60, 40, (n, n, n)) for n in (1, 2, 3)]
    second_run, third_run = asyncio.Event(), asyncio.Event()
    image_api.then(
        Reply(image=outputs[0]), Reply(image=outputs[1], until=second_run), Reply(image=outputs[2], until=third_run)
    )
    handle = await ask(discord_fake, "a fox in the snow", 3)
    ack = await handle.wait_for_callback()
    assert "3 variations" in ack.json["data"]["content"]
    # Its Cancel stops the whole group (named by its first run's id, which is the group's).
    (cancel,) = card_buttons(ack.json["data"])
    assert cancel["label"] == "Cancel" and cancel["custom_id"].startswith("atelier:cancel-group:v1:")

    # The runs end one by one (the fake API holds the later ones): each end is one edit of the card.
    (first,) = await card_edits(handle, 1)
    second_run.set()
    (_, second) = await card_edits(handle, 2)
    third_run.set()
    third = (await card_edits(handle, 3))[2]
    runs = await group_of(bot_process.env, 3)
    ids = [row[0] for row in runs]
    assert [(variant, variants, group) for _, variant, variants, group, _ in runs] == [
        (n, 3, ids[0]) for n in (1, 2, 3)
    ]
    # Each edit uploads its run's output and keeps the earlier ones by id; the gallery follows the runs' order.
    assert [(f.filename, f.data) for f in first.files] == [(f"atelier-{ids[0]}.png", outputs[0])]
    assert gallery(first) == [f"attachment://atelier-{ids[0]}.png"]
    assert "⏳ 2 of 3 still to come…" in card_text(first)
    assert labels(first) == ["Refine 1", "Reroll 1", "Info 1", "Delete"]
    assert [f.filename for f in second.files] == [f"atelier-{ids[1]}.png"]
    assert [a["filename"] for a in second.json["attachments"]] == [f"atelier-{ids[n]}.png" for n in (0, 1)]
    assert gallery(second) == [f"attachment://atelier-{ids[n]}.png" for n in (0, 1)]
    assert "⏳ 1 of 3 still to come…" in card_text(second)
    assert gallery(third) == [f"attachment://atelier-{ids[n]}.png" for n in (0, 1, 2)]
    assert "still to come" not in card_text(third) and "🎲 3 variations" in card_text(third)
    assert labels(third) == [
        *("Refine 1", "Refine 2", "Refine 3"),
        *("Reroll 1", "Reroll 2", "Reroll 3"),
        *("Info 1", "Info 2", "Info 3"),
        "Delete",
    ]
    assert [b["custom_id"] for b in card_buttons(third)][:3] == [f"atelier:refine:v1:{i}" for i in ids]
    assert len(components_of(third)) <= 40
    # As Discord keeps it: one message, the three outputs its files, in the runs' order.
    message = handle.original_message()
    assert message is not None
    assert shown(message) == [f"atelier-{i}.png" for i in ids]
    assert sorted(a["filename"] for a in message["attachments"]) == sorted(f"atelier-{i}.png" for i in ids)
    # Three runs, three edits charged: each run is one job of the fair queue.
    assert await money(bot_process.env) == [("a fox in the snow", "charge")] * 3
    assert [c.field("prompt") for c in image_api.calls] == ["a fox in the snow"] * 3

    # Info 2 tells run 2's details, privately, whoever asks.
    info = await discord_fake.click_button(
        message, result_button(message, "Info 2"), user_id=discord_fake.OTHER_USER_ID
    )
    about = (await info.wait_for_callback()).json["data"]
    assert about["flags"] & EPHEMERAL and f"job `{ids[1]}`" in about["content"], about
    assert about["embeds"][0]["description"] == "a fox in the snow"

    # Refine 2 builds on run 2's output.
    refined_output = make_png(50, 50, (9, 9, 9))
    image_api.then(Reply(image=refined_output))
    click = await discord_fake.click_button(message, result_button(message, "Refine 2"))
    modal = (await click.wait_for_callback()).json["data"]
    await discord_fake.submit_modal(
        modal["custom_id"], {PROMPT_FIELD: "add a red scarf", SIZE_FIELD: ["auto"]}, message=message
    )
    await wait_thread_result(discord_fake, int(message["id"]))
    assert image_api.calls[3].images[0].data == outputs[1]
    (parent,) = await rows(bot_process.env, "SELECT parent_job_id FROM jobs WHERE origin = 'refine'")
    assert parent == (ids[1],)


async def test_a_failed_run_shows_its_reason_the_others_arrive_and_only_it_is_refunded(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await start(bot_process, bot_env)
    image_api.then(
        Reply(image=make_png(60, 40, (1, 1, 1))),
        Reply(kind="error", status=400, body={"error": {"message": "Prompt mentions a forbidden brand"}}),
        Reply(image=make_png(60, 40, (3, 3, 3))),
    )
    handle = await ask(discord_fake, "a can of soda", 3)
    runs = await group_of(bot_process.env, 3)
    assert [row[4] for row in runs] == ["succeeded", "failed", "succeeded"]
    assert await settled(bot_process.env) == [
        ("a can of soda", "succeeded", "charge"),
        ("a can of soda", "failed", "charge+refund"),
        ("a can of soda", "succeeded", "charge"),
    ]
    ids = [row[0] for row in runs]

    def final(edit: RecordedRequest) -> bool:
        return handle._mine(edit) and edit.method == "PATCH" and edit.ok and is_card(edit) and len(gallery(edit)) == 2

    last = await discord_fake.wait_for_request(lambda r: final(r) and "Variation 2: ❌" in card_text(r), 20)
    message = handle.original_message()
    assert message is not None
    assert card_text(message) == card_text(last)
    text = card_text(message)
    assert "Variation 2: ❌" in text and "rejected the request: Prompt mentions a forbidden brand" in text
    assert "still to come" not in text
    assert shown(message) == [f"atelier-{ids[0]}.png", f"atelier-{ids[2]}.png"]
    assert labels(message) == ["Refine 1", "Refine 3", "Reroll 1", "Reroll 3", "Info 1", "Info 3", "Delete"]
    assert sorted(a["filename"] for a in message["attachments"]) == sorted(f"atelier-{ids[n]}.png" for n in (0, 2))


async def test_a_limit_that_allows_fewer_runs_says_how_many_and_charges_only_those(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await start(bot_process, bot_env, USER_DAILY_LIMIT="2")
    handle = await ask(discord_fake, "a paper boat", 4)
    ack = await handle.wait_for_callback()
    content = ack.json["data"]["content"]
    assert "Only 2 of 4 variations will run, and only they are charged:" in content
    assert "You've used 2 of your 2 edits for today" in content
    runs = await group_of(bot_process.env, 2)
    assert [(row[1], row[4]) for row in runs] == [(1, "succeeded"), (2, "succeeded")]
    assert await money(bot_process.env) == [("a paper boat", "charge")] * 2
    # Nothing left: the usual refusal, nothing charged.
    refused = await ask(discord_fake, "another boat", 2)
    answer = await refused.wait_for_callback()
    assert "used 2 of your 2 edits" in answer.json["data"]["content"]
    assert len(await money(bot_process.env)) == 2


async def test_the_cooldown_applies_to_the_request_not_between_its_runs(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await start(bot_process, bot_env, USER_COOLDOWN_SECONDS="600")
    handle = await ask(discord_fake, "a kite", 3)
    ack = await handle.wait_for_callback()
    assert "3 variations" in ack.json["data"]["content"] and "Only" not in ack.json["data"]["content"]
    assert len(await group_of(bot_process.env, 3)) == 3
    refused = await send_edit(discord_fake, "one more kite", [make_png()])
    answer = await refused.wait_for_callback()
    assert "Slow down a little" in answer.json["data"]["content"]
    assert await money(bot_process.env) == [("a kite", "charge")] * 3


async def test_variations_are_fair_against_another_members_edit(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await start(bot_process, bot_env)
    release = asyncio.Event()
    image_api.then(Reply(image=make_png(60, 40), until=release))
    await ask(discord_fake, "member A", 4)
    await image_api.wait_for_started(1, timeout=15)  # A's first run holds the one slot
    await wait_rows(bot_process.env, "SELECT id FROM jobs WHERE status = 'queued'", lambda r: len(r) == 3)
    other = await send_edit(discord_fake, "member B", [make_png()], user_id=discord_fake.OTHER_USER_ID)
    await other.wait_for_callback()
    await wait_rows(bot_process.env, "SELECT id FROM jobs WHERE status = 'queued'", lambda r: len(r) == 4)
    release.set()
    await image_api.wait_for_calls(5, timeout=30)
    # B's edit is served at A's next turn, not after all of A's runs.
    assert [c.field("prompt") for c in image_api.calls] == ["member A", "member B", "member A", "member A", "member A"]
    await settled(bot_process.env, 30)
    assert sorted(await money(bot_process.env)) == sorted([("member A", "charge")] * 4 + [("member B", "charge")])


async def test_the_variations_button_runs_a_result_four_times_on_one_card(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await start(bot_process, bot_env)
    handle = await send_edit(discord_fake, "a teapot", [make_png(30, 20, (7, 7, 7))])
    await wait_result(handle)
    result = handle.original_message()
    assert result is not None
    click = await discord_fake.click_button(result, result_button(result, "Variations"))
    ack = await click.wait_for_callback()
    assert "Making variations" in ack.json["data"]["content"] and "4 variations" in ack.json["data"]["content"]
    runs = await group_of(bot_process.env, 4)
    (parent,) = await rows(bot_process.env, "SELECT id FROM jobs WHERE group_id IS NULL")
    details = await rows(
        bot_process.env, "SELECT origin, parent_job_id FROM jobs WHERE group_id IS NOT NULL ORDER BY variant"
    )
    assert details == [("reroll", parent[0])] * 4 and [row[1] for row in runs] == [1, 2, 3, 4]
    # Each run got the result's kept inputs.
    assert all([p.data for p in call.images] == [p.data for p in image_api.calls[0].images] for call in image_api.calls)
    (last,) = (await card_edits(click, 4))[3:]
    assert len(gallery(last)) == 4
    assert labels(last)[:4] == ["Refine 1", "Refine 2", "Refine 3", "Refine 4"]
    # Four runs' Info and Delete: five buttons, the most a row holds.
    assert [[b["label"] for b in row["components"]] for row in components_of(last) if row["type"] == 1][-1] == [
        *("Info 1", "Info 2", "Info 3", "Info 4"),
        "Delete",
    ]
    assert len(await money(bot_process.env)) == 5


async def test_imagine_with_variations_makes_each_run_from_the_words_alone(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await start(bot_process, bot_env)
    options = [option("prompt", "a lighthouse at dusk", 3), option("variations", 2, 4)]
    handle = await discord_fake.slash_command("imagine", options)
    ack = await handle.wait_for_callback()
    assert "2 variations" in ack.json["data"]["content"]
    runs = await group_of(bot_process.env, 2)
    assert [row[4] for row in runs] == ["succeeded", "succeeded"]
    assert [(c.field("prompt"), c.images) for c in image_api.calls] == [("a lighthouse at dusk", [])] * 2
    last = (await card_edits(handle, 2))[1]
    assert gallery(last) == [f"attachment://atelier-{row[0]}.png" for row in runs]
    assert await money(bot_process.env) == [("a lighthouse at dusk", "charge")] * 2


async def test_runs_that_end_at_once_never_drop_each_others_output_from_the_card(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    # Four slots: the four runs are called together and answered at the same moment, so their rebuilds of the
    # card race; each must see the others' files (the card's lock makes them take turns).
    await start(bot_process, bot_env, MAX_CONCURRENT_JOBS="4")
    release = asyncio.Event()
    outputs = [make_png(60, 40, (n, n, n)) for n in range(1, 5)]
    image_api.then(*(Reply(image=o, until=release) for o in outputs))
    handle = await ask(discord_fake, "four at once", 4)
    await image_api.wait_for_started(4, timeout=15)
    release.set()
    runs = await group_of(bot_process.env, 4)
    assert [row[4] for row in runs] == ["succeeded"] * 4
    edits = await card_edits(handle, 4)
    assert [len(gallery(edit)) for edit in edits] == [1, 2, 3, 4]
    message = handle.original_message()
    assert message is not None
    assert shown(message) == [f"atelier-{row[0]}.png" for row in runs]
    # Each run's output is on the card, as the fake API made it for that run.
    by_name = {a["filename"]: a for a in message["attachments"]}
    assert len(by_name) == 4 and all(by_name[f"atelier-{row[0]}.png"]["size"] > 0 for row in runs)


async def test_private_variations_fill_their_members_ephemeral_card(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await start(bot_process, bot_env)
    attachment = discord_fake.add_attachment(make_png(30, 20), "photo1.png", "image/png")
    options = [
        option("prompt", "a secret garden", 3),
        option("image1", attachment["id"], 11),
        option("private", True, 5),
        option("variations", 2, 4),
    ]
    handle = await discord_fake.slash_command("edit", options, resolved_attachments=[attachment])
    ack = await handle.wait_for_callback()
    assert ack.json["data"]["flags"] & EPHEMERAL
    runs = await group_of(bot_process.env, 2)
    last = (await card_edits(handle, 2))[1]
    assert gallery(last) == [f"attachment://atelier-{row[0]}.png" for row in runs]
    message = handle.original_message()
    assert message is not None and message["flags"] & EPHEMERAL
    assert shown(message) == [f"atelier-{row[0]}.png" for row in runs]
    delivered = await rows(bot_process.env, "SELECT delivered FROM jobs WHERE group_id IS NOT NULL")
    assert delivered == [("private",), ("private",)]


async def test_cancel_stops_the_runs_not_started_refunds_them_and_the_card_shows_them(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await start(bot_process, bot_env)
    release = asyncio.Event()
    image_api.then(Reply(image=make_png(60, 40), until=release))
    handle = await ask(discord_fake, "a lantern", 3)
    await handle.wait_for_callback()
    await image_api.wait_for_started(1, timeout=15)  # run 1 holds the one slot; runs 2 and 3 wait
    await wait_rows(bot_process.env, "SELECT id FROM jobs WHERE status = 'queued'", lambda r: len(r) == 2)
    status = handle.original_message()
    assert status is not None
    click = await discord_fake.click_button(status, card_buttons(status)[0]["custom_id"])
    answer = await click.wait_for_callback()
    assert answer.json["type"] == 7 and answer.json["data"]["components"] == []  # the button goes
    said = await click.wait_for_webhook("POST")
    assert said.json["content"] == "🚫 2 variations cancelled; nothing was charged for them."
    assert said.json["flags"] & EPHEMERAL
    release.set()
    runs = await group_of(bot_process.env, 3)
    assert [row[4] for row in runs] == ["succeeded", "cancelled", "cancelled"]
    assert await settled(bot_process.env) == [
        ("a lantern", "succeeded", "charge"),
        ("a lantern", "cancelled", "charge+refund"),
        ("a lantern", "cancelled", "charge+refund"),
    ]
    assert len(image_api.calls) == 1

    def final(edit: RecordedRequest) -> bool:
        mine = handle._mine(edit) and edit.ok and is_card(edit)
        return mine and len(gallery(edit)) == 1 and "Variation 3: 🚫" in card_text(edit)

    last = await discord_fake.wait_for_request(lambda r: final(r) and "Variation 2: 🚫" in card_text(r), 20)
    text = card_text(last)
    assert "Variation 2: 🚫 cancelled; nothing was charged." in text and "still to come" not in text
    assert labels(last) == ["Refine 1", "Reroll 1", "Info 1", "Delete"]


async def test_a_request_for_variations_counts_once_against_the_jobs_at_once_limit(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    await start(bot_process, bot_env, USER_MAX_ACTIVE="2")
    release = asyncio.Event()
    image_api.then(Reply(image=make_png(60, 40), until=release))
    await send_edit(discord_fake, "a mill", [make_png()])
    await image_api.wait_for_started(1, timeout=15)  # one edit running: one of the two at once
    handle = await ask(discord_fake, "a windmill", 4)
    content = (await handle.wait_for_callback()).json["data"]["content"]
    assert "4 variations" in content and "Only" not in content  # the four runs are one request at once
    # The two at once are taken (the edit, and the request's four runs): a third request is refused.
    refused = await send_edit(discord_fake, "one more mill", [make_png()])
    answer = await refused.wait_for_callback()
    assert "You already have 2 edits queued or running (the most at once is 2)" in answer.json["data"]["content"]
    release.set()
    runs = await group_of(bot_process.env, 4)
    assert [(row[1], row[2], row[4]) for row in runs] == [(n, 4, "succeeded") for n in (1, 2, 3, 4)]
    assert await money(bot_process.env) == [("a mill", "charge")] + [("a windmill", "charge")] * 4
    assert len(image_api.calls) == 5


async def test_a_run_whose_card_the_database_cannot_lock_is_posted_on_its_own_not_failed(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    """The database fails the card's lock (each run's result takes its turn at the card through it): each
    paid result is posted on its own instead, and its run succeeds, charged. Before, the error ended the run as
    a bug: the paid result discarded, the run failed and refunded."""
    await start(bot_process, bot_env)
    made = ["CREATE TABLE test_fault (x INTEGER)", "INSERT INTO test_fault VALUES (1)"]
    if "DATABASE_URL" not in bot_env:
        made += [
            f"CREATE TRIGGER test_fault_{what} BEFORE {what} ON card_locks WHEN EXISTS (SELECT 1 FROM test_fault) "
            "BEGIN SELECT RAISE(ABORT, 'injected: the database refused the write'); END"
            for what in ("INSERT", "UPDATE")
        ]
    else:
        made += [
            "CREATE FUNCTION test_fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF EXISTS (SELECT 1 FROM test_fault) THEN RAISE EXCEPTION 'injected: the database refused the write'; "
            "END IF; RETURN NEW; END $$",
            "CREATE TRIGGER test_fault_lock BEFORE INSERT OR UPDATE ON card_locks FOR EACH ROW "
            "EXECUTE FUNCTION test_fault()",
        ]
    await execute(bot_env, *made)
    outputs = [make_png(60, 40, (n, n, n)) for n in (1, 2)]
    image_api.then(*(Reply(image=output) for output in outputs))
    handle = await ask(discord_fake, "a fox in the fog", 2)
    runs = await group_of(bot_env, 2)
    assert [row[4] for row in runs] == ["succeeded", "succeeded"]
    assert await money(bot_env) == [("a fox in the fog", "charge")] * 2
    posted = [f.data for r in discord_fake.requests for f in r.files]
    assert all(output in posted for output in outputs)
    assert "its result goes on its own" in bot_process.log()
    said = [str(r.json.get("content", "")) for r in handle.webhook_requests() if isinstance(r.json, dict)]
    assert not any("❌" in text for text in said), said
