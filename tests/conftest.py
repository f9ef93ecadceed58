"""Fixtures: the fake Discord, the fake image API, the real bot as a subprocess (see ``harness``), and the
store on each database (see ``stores``).

Every test that runs the bot (through ``bot_env``, ``bot_process`` or ``bot``) runs twice: on SQLite
(the default, a file in ``DATA_DIR``) and on PostgreSQL (a fresh database, ``DATABASE_URL``), with
ids ``[sqlite]`` and ``[postgres]``, so that a difference between the two fails. A test that is about
one database by nature says why in its docstring and uses ``tests.databases.only_sqlite`` or
``only_postgres``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.store.store import Store
from tests.databases import DATABASES
from tests.fake_discord import FakeDiscord
from tests.fake_image_api import FakeImageAPI
from tests.harness import API_KEY, BOT_TOKEN, BotProcess, bot_environment, discord_leaks, leaked_secrets
from tests.postgres import fresh_database
from tests.stores import open_store
from tests.utc_day import DEFAULT_LONGEST, wait_for_whole_day


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    """Start no test that could still be running at 00:00 UTC (see ``tests.utc_day``).

    Outermost of the wrappers, so the wait comes before pytest-timeout starts the test's clock.
    """
    wait_for_whole_day(longest_run(item))
    yield


def longest_run(item: pytest.Item) -> float:
    """How long ``item`` may run: its ``timeout`` mark, else ``--timeout``, else the ini's (``DEFAULT_LONGEST``
    without pytest-timeout, or with no timeout set)."""
    marker = item.get_closest_marker("timeout")
    if marker is not None and (marker.args or "timeout" in marker.kwargs):
        return float(marker.kwargs.get("timeout", marker.args[0] if marker.args else 0)) or DEFAULT_LONGEST
    if not item.config.pluginmanager.hasplugin("timeout"):
        return DEFAULT_LONGEST
    given = item.config.getoption("timeout", None) or item.config.getini("timeout")
    return float(given or 0) or DEFAULT_LONGEST


@pytest.fixture
async def discord_fake() -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord(token=BOT_TOKEN)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def image_api() -> AsyncIterator[FakeImageAPI]:
    api = FakeImageAPI(api_key=API_KEY)
    await api.start()
    yield api
    await api.stop()


@pytest.fixture(params=DATABASES)
async def bot_env(
    request: pytest.FixtureRequest, tmp_path: Path, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> AsyncIterator[dict[str, str]]:
    """The environment the bot runs with, on each database in turn; tests may change it before the bot starts."""
    env = bot_environment(discord_fake.api_base, image_api.base, tmp_path / "data", IMAGE_API_TIMEOUT="20")
    if request.param == "sqlite":
        yield env
        return
    async with fresh_database() as url:  # dropped after the bot has stopped (``bot_process`` ends first)
        env["DATABASE_URL"] = url
        yield env


@pytest.fixture
async def bot_process(bot_env: dict[str, str], tmp_path: Path, discord_fake: FakeDiscord) -> AsyncIterator[BotProcess]:
    """A bot process, not yet started (for tests that change the environment or restart it)."""
    process = BotProcess(bot_env, tmp_path, discord_fake)
    yield process
    await process.stop()
    log = process.log()
    # Secrets (the bot token, the API key, the provider's access token, servers' own keys and
    # ATELIER_SECRET_KEY) never reach the log or a Discord request, whatever the test did.
    assert leaked_secrets(log) == []
    assert discord_leaks(discord_fake) == []
    assert "Traceback" not in log or getattr(process, "tracebacks_expected", False), log[-4000:]


@pytest.fixture
async def bot(bot_process: BotProcess) -> BotProcess:
    """A started bot."""
    await bot_process.start()
    return bot_process


@pytest.fixture(params=DATABASES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh, migrated store: the test runs once on SQLite and once on PostgreSQL (ids ``sqlite``, ``postgres``)."""
    async with open_store(request.param, tmp_path) as opened:
        yield opened
