"""Limits by role end to end: ``/atelier limits role:@Role …`` gives members holding a role their own
daily limit, most jobs at once and cooldown; a member gets the most generous of their roles', the
server's where none of their roles sets one; ``/usage`` and ``/atelier settings`` say where each
limit comes from. The roles come with the interaction (no privileged intent)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.fake_discord import FakeDiscord, InteractionHandle
from tests.fake_image_api import FakeImageAPI, Reply, make_png
from tests.harness import BotProcess, send_edit, wait_result

EPHEMERAL = 64
FAN_ID = 1200000000000000050
PATRON_ID = 1200000000000000051


async def answer(handle: InteractionHandle) -> str:
    """The ephemeral text a command answered with."""
    callback = await handle.wait_for_callback()
    data = callback.json["data"]
    assert data.get("flags", 0) & EPHEMERAL, data
    return str(data["content"])


async def limits(fake: FakeDiscord, **values: Any) -> str:
    """``/atelier limits`` as the owner, with ``values`` as its options (a role as its id)."""
    types = {"role": 8, "channels": 3, "reset": 5, "guild_daily": 4}
    options = [
        {"name": name, "type": types.get(name, 4), "value": str(value) if name == "role" else value}
        for name, value in values.items()
    ]
    return await answer(
        await fake.slash_command("atelier", [{"type": 1, "name": "limits", "options": options}], user_id=fake.OWNER_ID)
    )


async def accepted(fake: FakeDiscord, prompt: str, user_id: int) -> InteractionHandle:
    """An edit that was accepted (its first answer is the public status, not a refusal)."""
    handle = await send_edit(fake, prompt, [make_png()], user_id=user_id)
    callback = await handle.wait_for_callback()
    assert not callback.json["data"].get("flags", 0) & EPHEMERAL, callback.json
    return handle


async def usage(fake: FakeDiscord, user_id: int) -> str:
    return await answer(await fake.slash_command("usage", [], user_id=user_id))


async def until_nothing_active(fake: FakeDiscord, user_id: int, timeout: float = 10) -> None:
    """Wait until ``/usage`` shows none of the member's jobs in progress (a result is posted a moment
    before its job ends)."""
    async with asyncio.timeout(timeout):
        while "Nothing of yours is queued or running." not in await usage(fake, user_id):  # noqa: ASYNC110  # the bot ends it
            await asyncio.sleep(0.05)


async def test_a_role_s_daily_limit_holds_at_its_edge_and_others_keep_the_server_s(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    supporter = discord_fake.add_role("Supporter")
    discord_fake.add_user(FAN_ID, "fan", roles=[supporter])
    bot_env["USER_DAILY_LIMIT"] = "1"
    await bot_process.start()
    shown = await limits(discord_fake, role=supporter, user_daily=3)
    assert f"Limits for <@&{supporter}> updated" in shown
    assert f"• <@&{supporter}>: edits per day **3**, at once **the server's**, cooldown **the server's**" in shown

    for n in range(3):
        await wait_result(await accepted(discord_fake, f"fan {n}", FAN_ID))
    refused = await answer(await send_edit(discord_fake, "fan 4", [make_png()], user_id=FAN_ID))
    assert "You've used 3 of your 3 edits for today" in refused
    report = await usage(discord_fake, FAN_ID)
    assert "3 of 3 edits used, **0 left**" in report
    assert f"Your limits come from <@&{supporter}>; the others are this server's." in report

    # A member without the role keeps the server's limit of one, and is told nothing about roles.
    await wait_result(await accepted(discord_fake, "other 1", discord_fake.OTHER_USER_ID))
    refused = await answer(await send_edit(discord_fake, "other 2", [make_png()], user_id=discord_fake.OTHER_USER_ID))
    assert "You've used 1 of your 1 edits for today" in refused
    report = await usage(discord_fake, discord_fake.OTHER_USER_ID)
    assert "1 of 1 edit used, **0 left**" in report and "come from" not in report
    assert sorted(call.field("prompt") or "" for call in image_api.calls) == ["fan 0", "fan 1", "fan 2", "other 1"]


async def test_the_most_generous_of_a_member_s_roles_wins_limit_by_limit(
    bot_process: BotProcess, bot_env: dict[str, str], discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    """The server: 5 a day, 2 at once, an hour's cooldown. Basic sets no cooldown and 2 a day; premium
    sets 3 a day, one job at once and an hour's cooldown. A member with both gets 3 a day (premium's,
    though the server's is higher: a role's limit replaces the server's), one at once (only premium
    sets it) and no cooldown (basic's)."""
    basic = discord_fake.add_role("Basic")
    premium = discord_fake.add_role("Premium")
    discord_fake.add_user(PATRON_ID, "patron", roles=[basic, premium])
    bot_env |= {"USER_DAILY_LIMIT": "5", "USER_COOLDOWN_SECONDS": "3600", "USER_MAX_ACTIVE": "2"}
    await bot_process.start()
    await limits(discord_fake, role=basic, user_daily=2, cooldown=0)
    shown = await limits(discord_fake, role=premium, user_daily=3, active=1, cooldown=3600)
    assert "Limits by role (a member gets the most generous of their roles'):" in shown
    assert f"• <@&{basic}>: edits per day **2**, at once **the server's**, cooldown **0 s**" in shown
    assert f"• <@&{premium}>: edits per day **3**, at once **1**, cooldown **3600 s**" in shown

    release = asyncio.Event()  # the first edit is the one active job until the checks below, however slow the machine
    image_api.then(Reply(until=release))
    first = await accepted(discord_fake, "patron 1", PATRON_ID)
    await image_api.wait_for_started(1)
    busy = await answer(await send_edit(discord_fake, "patron busy", [make_png()], user_id=PATRON_ID))
    assert "You already have 1 edit queued or running (the most at once is 1)" in busy
    report = await usage(discord_fake, PATRON_ID)
    assert f"Your limits come from <@&{premium}>, <@&{basic}>." in report
    assert "In progress (1 of at most 1):" in report
    release.set()
    await wait_result(first)
    await until_nothing_active(discord_fake, PATRON_ID)
    # No cooldown for the patron (basic's 0 s beats the server's hour), up to premium's 3 a day.
    for n in (2, 3):
        await wait_result(await accepted(discord_fake, f"patron {n}", PATRON_ID))
        await until_nothing_active(discord_fake, PATRON_ID)
    refused = await answer(await send_edit(discord_fake, "patron 4", [make_png()], user_id=PATRON_ID))
    assert "You've used 3 of your 3 edits for today" in refused

    # The server's hour of cooldown still holds for a member holding neither role.
    await wait_result(await accepted(discord_fake, "sculptor 1", discord_fake.OTHER_USER_ID))
    slow = await answer(await send_edit(discord_fake, "sculptor 2", [make_png()], user_id=discord_fake.OTHER_USER_ID))
    assert "Slow down a little" in slow
    assert len(image_api.calls) == 4


async def test_admins_set_show_and_forget_a_role_s_limits(
    bot: BotProcess, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    artist = discord_fake.ARTIST_ROLE_ID
    mixed = await limits(discord_fake, role=artist, user_daily=5, guild_daily=10)
    assert "`guild_daily` apply to the whole server, not to one role; send them without `role`." in mixed
    everyone = await limits(discord_fake, role=discord_fake.GUILD_ID, user_daily=5)
    assert "@everyone is every member: set the server's limits without `role`." in everyone
    assert "Limits by role" not in await limits(discord_fake)  # neither changed anything

    await limits(discord_fake, role=artist, user_daily=0, active=4)
    await bot.stop()
    await bot.start()
    settings = await answer(
        await discord_fake.slash_command(
            "atelier", [{"type": 1, "name": "settings", "options": []}], user_id=discord_fake.OWNER_ID
        )
    )
    assert f"• <@&{artist}>: edits per day **unlimited**, at once **4**, cooldown **the server's**" in settings
    report = await usage(discord_fake, discord_fake.USER_ID)  # the painter holds the artist role
    assert "(no daily limit)" in report
    assert f"Your limits come from <@&{artist}>; the others are this server's." in report

    forgotten = await limits(discord_fake, role=artist, reset=True)
    assert f"Limits for <@&{artist}> updated" in forgotten and "Limits by role" not in forgotten
    report = await usage(discord_fake, discord_fake.USER_ID)
    assert "come from" not in report and "0 of 25 edits used" in report
    assert image_api.calls == []
