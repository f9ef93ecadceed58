"""Make docs/img/stats.png: the chart ``/atelier stats`` posts, from a real run of the bot.

    python scripts/make_readme_chart.py [--output docs/img/stats.png]   # about two minutes

The real bot (``python -m bot``, as the tests run it) works against the fake Discord and the
fake image API of ``tests/`` on loopback, over several simulated days: before each day's
run, the bot's wall clock (``time.time``, through a ``sitecustomize`` on its path) is set
back that many days, so its jobs are recorded on that day. Each day a few members send a
few edits at once; the fake API takes 1-4 s per call and refuses some (failed, refunded),
and now and then a queued edit is cancelled. On the last day, at today's date, the server's
owner runs ``/atelier stats``, and the chart the bot attaches to its answer is written out,
byte for byte. Nothing is drawn here.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the fakes live in tests/, which is not installed

from tests.fake_discord import FakeDiscord, InteractionHandle  # noqa: E402
from tests.fake_image_api import FakeImageAPI, Reply, make_png  # noqa: E402
from tests.harness import API_KEY, BOT_TOKEN, BotProcess, bot_environment, rows, send_edit  # noqa: E402

# Days ago on which the server was busy (the chart covers the last 30), and how many edits each day.
DAYS = (22, 20, 19, 17, 15, 14, 13, 11, 10, 8, 7, 6, 4, 3, 2, 1, 0)
EDITS_PER_DAY = (3, 8)
REFUSED_SHARE = 0.12
SHIFT_CLOCK = """\
import os
import time

_shift = float(os.environ.get("ATELIER_DAYS_AGO", "0")) * 86400
if _shift:
    _real_time = time.time
    time.time = lambda: _real_time() - _shift
"""
MEMBERS = (FakeDiscord.USER_ID, FakeDiscord.OTHER_USER_ID, 1200000000000000032, 1200000000000000033)
PROMPTS = (
    "make it dusk, with warm window lights",
    "put the cat from image1 on the sofa in image2",
    "as a loose watercolour painting",
    "remove the people in the background",
    "swap the sky for a stormy one",
)


async def settled(env: dict[str, str], jobs: int, timeout: float = 60) -> None:
    """Wait until the store holds ``jobs`` jobs and every one has ended (succeeded, failed or cancelled)."""
    sql = "SELECT COUNT(*), COUNT(*) FILTER (WHERE status IN ('succeeded', 'failed', 'cancelled')) FROM jobs"
    async with asyncio.timeout(timeout):
        while (await rows(env, sql))[0] != (jobs, jobs):  # noqa: ASYNC110  # the bot's process writes it
            await asyncio.sleep(0.2)


async def cancel_when_queued(fake: FakeDiscord, handle: InteractionHandle) -> None:
    """Press Cancel on an edit's status while it waits in line (if it is still waiting)."""
    await fake.wait_for_request(
        lambda r: handle._mine(r) and isinstance(r.json, dict) and "Queued" in str(r.json.get("content", "")), 20
    )
    message = handle.original_message()
    if message is not None and message.get("components"):
        await fake.click_button(message, message["components"][0]["components"][0]["custom_id"])


async def one_day(fake: FakeDiscord, api: FakeImageAPI, rng: random.Random) -> int:
    """A burst of edits from a few members, some refused by the API, perhaps one cancelled; how many."""
    count = rng.randint(*EDITS_PER_DAY)
    cancelled = count - 1 if count >= 5 and rng.random() < 0.5 else None
    calls = count - (cancelled is not None)
    api.then(
        *(
            Reply(kind="error", status=400, body={"error": {"message": "invalid image"}}, delay=rng.uniform(0.3, 1))
            if rng.random() < REFUSED_SHARE
            else Reply(delay=rng.uniform(1.0, 4.0))
            for _ in range(calls)
        )
    )
    handles = [
        await send_edit(fake, rng.choice(PROMPTS), [make_png(96, 64)], user_id=MEMBERS[n % len(MEMBERS)])
        for n in range(count)
    ]
    if cancelled is not None:
        await cancel_when_queued(fake, handles[cancelled])
    return count


async def make_chart(seed: int) -> bytes:
    """Run the days, then ``/atelier stats``; the PNG the bot attached to its answer."""
    rng = random.Random(seed)
    png = b""
    jobs = 0
    with tempfile.TemporaryDirectory(prefix="atelier-chart-") as scratch:
        workdir = Path(scratch)
        (workdir / "clock").mkdir()
        (workdir / "clock" / "sitecustomize.py").write_text(SHIFT_CLOCK)
        fake, api = FakeDiscord(token=BOT_TOKEN), FakeImageAPI(api_key=API_KEY)
        await fake.start()
        await api.start()
        try:
            for member in MEMBERS[2:]:
                fake.add_user(member)
            env = bot_environment(fake.api_base, api.base, workdir / "data", MAX_CONCURRENT_JOBS="2")
            env.update(USER_MAX_ACTIVE="10", USER_DAILY_LIMIT="0", IMAGE_API_TIMEOUT="30")
            env["PYTHONPATH"] = f"{workdir / 'clock'}:{env['PYTHONPATH']}"
            bot = BotProcess(env, workdir, fake)
            for days_ago in DAYS:
                env["ATELIER_DAYS_AGO"] = str(days_ago)
                await bot.start()
                try:
                    jobs += await one_day(fake, api, rng)
                    await settled(env, jobs)
                    if days_ago == 0:
                        stats = await fake.slash_command(
                            "atelier", [{"type": 1, "name": "stats", "options": []}], user_id=fake.OWNER_ID
                        )
                        chart = await stats.wait_for_webhook("PATCH", timeout=30)
                        png = chart.files[0].data
                        print(chart.json["content"])
                finally:
                    await bot.stop()
                print(f"day -{days_ago}: {len(api.calls)} API calls so far", file=sys.stderr)
        finally:
            await api.stop()
            await fake.stop()
    return png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "img" / "stats.png")
    parser.add_argument("--seed", type=int, default=15, help="the same seed makes the same days (default 15)")
    args = parser.parse_args()
    png = asyncio.run(make_chart(args.seed))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(png)
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
