"""Driving the real bot in tests and the benchmark: its process, its environment, and commands.

The bot runs as ``python -m bot`` exactly as an operator runs it, pointed at the fakes
through ``DISCORD_API_BASE`` and ``IMAGE_API_BASE``. Every wait has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import socket
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from tests.fake_discord import FLAG_IS_COMPONENTS_V2, FakeDiscord, InteractionHandle, RecordedRequest, walk_components

BOT_TOKEN = "MTAxNTE2.fake-bot-token.SECRET-t0k3n-value"
API_KEY = "sk-live-SECRET-image-api-key-9f8e7d"
PROVIDER_TOKEN = "SECRET-provider-access-token-5c4b3a"
SERVER_KEY = "sk-server-SECRET-own-key-1a2b3c4d"
SECRET_KEY = "YXRlbGllci10ZXN0cy1vbmx5LWZlcm5ldC1rZXktMzI="  # Fernet: b"atelier-tests-only-fernet-key-32"
#: Every secret a test bot may hold; none may reach a log line, a Discord request or a metric.
SECRETS = (BOT_TOKEN, API_KEY, PROVIDER_TOKEN, SERVER_KEY, SECRET_KEY)
ROOT = Path(__file__).resolve().parent.parent


class BotProcess:
    """The bot under test, run as its own process with its log captured to a file.

    ``role`` is ``python -m bot``'s argument: none (all in one), ``gateway`` or ``worker``.
    """

    def __init__(
        self, env: dict[str, str], workdir: Path, fake: FakeDiscord, role: str | None = None, name: str = "bot"
    ) -> None:
        self.env = env
        self.workdir = workdir
        self.fake = fake
        self.role = role
        self.proc: asyncio.subprocess.Process | None = None
        self.log_path = workdir / f"{name}.log"
        self.starts = 0
        # A test that fails before it stops its bot leaves it running: the fake's end kills it.
        fake.before_stop(self.kill)

    async def start(self, timeout: float = 30) -> None:
        """Start ``python -m bot [role]`` and wait until it is ready (identified on the gateway, or,
        for a worker, logged in and taking jobs)."""
        start_index = len(self.fake.gateway_received)
        log_size = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.starts += 1
        log = self.log_path.open("ab")
        args = ["-m", "bot", *([self.role] if self.role else [])]
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, *args, env=self.env, cwd=self.workdir, stdout=log, stderr=log
            )
        finally:
            log.close()
        if self.role == "worker":
            await self._wait_for_log("worker ready", log_size, timeout)
            return
        identify = asyncio.ensure_future(self.fake.wait_for_gateway(2, timeout, start=start_index))
        died = asyncio.ensure_future(self.proc.wait())
        done, _ = await asyncio.wait({identify, died}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if identify not in done:
            identify.cancel()
            died.cancel()
            raise AssertionError(f"bot did not identify (exit={self.proc.returncode}):\n{self.log()[-3000:]}")
        died.cancel()
        await self.fake.wait_until_ready(timeout)

    async def _wait_for_log(self, needle: str, offset: int, timeout: float) -> None:
        assert self.proc is not None
        try:
            async with asyncio.timeout(timeout):
                while needle not in self.log_path.read_text(errors="replace")[offset:]:
                    if self.proc.returncode is not None:
                        break
                    await asyncio.sleep(0.05)
        except TimeoutError:
            pass
        if needle not in self.log_path.read_text(errors="replace")[offset:]:
            raise AssertionError(f"{self.role} did not get ready (exit={self.proc.returncode}):\n{self.log()[-3000:]}")

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal the bot and wait for it to exit; kill it if it will not."""
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc else 0
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        try:
            async with asyncio.timeout(timeout):
                return await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError(f"bot did not exit within {timeout}s of signal {sig}") from None

    async def kill(self) -> None:
        """Kill the bot (stopped by a signal or not) if it is still running; nothing if it has exited."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def leaked_secrets(text: str | bytes, *, bot_token_allowed: bool = False) -> list[str]:
    """The secrets found in ``text`` (the bot token may be allowed: it is every REST call's credential)."""
    data = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return [s for s in SECRETS if s in data and not (bot_token_allowed and s == BOT_TOKEN)]


def discord_leaks(fake: FakeDiscord) -> list[str]:
    """Secrets in anything the bot sent to Discord: bodies, files, headers (the bot token only where it belongs)."""
    found: list[str] = []
    for request in fake.requests:
        found += [f"{request} body: {s[:12]}…" for s in leaked_secrets(request.body)]
        for name, value in request.headers.items():
            allowed = name.lower() == "authorization" and value == f"Bot {BOT_TOKEN}"
            found += [f"{request} header {name}: {s[:12]}…" for s in leaked_secrets(value) if not allowed]
    return found


def free_port() -> int:
    """A TCP port nothing listens on right now (for METRICS_PORT)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def bot_environment(discord_api_base: str, image_api_base: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment the bot runs with against the fakes (nothing else from this process's)."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "SYSTEMROOT", "TMPDIR", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        DISCORD_TOKEN=BOT_TOKEN,
        IMAGE_API_KEY=API_KEY,
        IMAGE_API_BASE=image_api_base,
        DISCORD_API_BASE=discord_api_base,
        DATA_DIR=str(data_dir),
        IMAGE_API_RETRY_BACKOFF="0.01",
        LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


# Helpers for driving the bot ---------------------------------------------------------------


def option(name: str, value: Any, type_: int) -> dict[str, Any]:
    return {"name": name, "type": type_, "value": value}


async def send_edit(
    fake: FakeDiscord,
    prompt: str,
    images: list[bytes | None],
    *,
    size: str | None = None,
    filenames: list[str] | None = None,
    content_types: list[str | None] | None = None,
    **kwargs: Any,
) -> InteractionHandle:
    """Run ``/edit`` with the given images as image1..N (``None`` leaves a gap)."""
    options = [option("prompt", prompt, 3)]
    attachments = []
    for n, data in enumerate(images, start=1):
        if data is None:
            continue
        filename = filenames[n - 1] if filenames else f"photo{n}.png"
        content_type = content_types[n - 1] if content_types else "image/png"
        attachment = fake.add_attachment(data, filename, content_type)
        attachments.append(attachment)
        options.append(option(f"image{n}", attachment["id"], 11))
        if n == 1 and size is not None:
            options.append(option("size", size, 3))
    return await fake.slash_command("edit", options, resolved_attachments=attachments, **kwargs)


def is_result_edit(request: RecordedRequest) -> bool:
    """A successful PATCH of an interaction's message (by token) that carries a file."""
    return (
        request.method == "PATCH"
        and request.path.startswith("/api/v10/webhooks/")
        and "/messages/" in request.path
        and bool(request.files)
        and 200 <= request.status < 300
    )


async def wait_result(handle: InteractionHandle, timeout: float = 20) -> RecordedRequest:
    """The edit that put the result image on the acknowledged message."""
    return await handle.fake.wait_for_request(lambda r: handle._mine(r) and is_result_edit(r), timeout)


async def wait_final_text(handle: InteractionHandle, needle: str, timeout: float = 20) -> RecordedRequest:
    """The first webhook request for ``handle`` whose JSON content contains ``needle``."""
    return await handle.fake.wait_for_request(
        lambda r: handle._mine(r) and isinstance(r.json, dict) and needle in str(r.json.get("content", "")),
        timeout,
    )


# Result cards (Components V2) ----------------------------------------------------------------

TEXT_DISPLAY, THUMBNAIL, MEDIA_GALLERY, BUTTON, SECTION = 10, 11, 12, 2, 9


def components_of(sent: RecordedRequest | dict[str, Any]) -> list[dict[str, Any]]:
    """Every component of a request's JSON or a stored message, nested ones included, in order."""
    body = sent.json if isinstance(sent, RecordedRequest) else sent
    assert isinstance(body, dict), body
    return walk_components(body.get("components") or [])


def is_card(sent: RecordedRequest | dict[str, Any]) -> bool:
    """Whether a request or a message is a Components V2 message (a result card)."""
    body = sent.json if isinstance(sent, RecordedRequest) else sent
    return isinstance(body, dict) and bool((body.get("flags") or 0) & FLAG_IS_COMPONENTS_V2)


def card_text(sent: RecordedRequest | dict[str, Any]) -> str:
    """What a result reads: a card's text displays, one a line (a classic message: its content)."""
    if not is_card(sent):
        body = sent.json if isinstance(sent, RecordedRequest) else sent
        return str((body or {}).get("content") or "")
    return "\n".join(str(c["content"]) for c in components_of(sent) if c["type"] == TEXT_DISPLAY)


def card_buttons(sent: RecordedRequest | dict[str, Any]) -> list[dict[str, Any]]:
    """A message's buttons, in order, wherever they sit."""
    return [c for c in components_of(sent) if c["type"] == BUTTON]


def card_media(sent: RecordedRequest | dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """(component type, media item) of every picture a card shows: gallery items, then thumbnails, in order."""
    found: list[tuple[int, dict[str, Any]]] = []
    for component in components_of(sent):
        if component["type"] == MEDIA_GALLERY:
            found += [(MEDIA_GALLERY, item) for item in component["items"]]
        elif component["type"] == THUMBNAIL:
            found.append((THUMBNAIL, component))
    return found


# The bot's database, read (and for a few set-ups written) while the bot runs -----------------------
#
# One way for both databases: SQLite in ``DATA_DIR`` unless the environment names a PostgreSQL
# ``DATABASE_URL``. Queries are written portable, with ``?`` placeholders (numbered ``$n`` for
# PostgreSQL here); each read is its own connection, so a test sees what the bot has committed.


def dialect(env: dict[str, str]) -> str:
    """``postgres`` when the bot runs on the PostgreSQL of ``DATABASE_URL``, else ``sqlite``."""
    return "postgres" if env.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")) else "sqlite"


def numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2…`` (the tests' queries hold no ``?`` in a literal)."""
    count = itertools.count(1)
    return re.sub(r"\?", lambda _: f"${next(count)}", sql)


async def records(env: dict[str, str], sql: str, *params: Any) -> list[dict[str, Any]]:
    """The rows of ``sql`` in the bot's database, as column name -> value."""
    if dialect(env) == "postgres":
        conn = await asyncpg.connect(env["DATABASE_URL"], timeout=10)
        try:
            return [dict(row) for row in await conn.fetch(numbered(sql), *params)]
        finally:
            await conn.close()
    db = sqlite3.connect(Path(env["DATA_DIR"]) / "atelier.sqlite3", timeout=10)
    try:
        cursor = db.execute(sql, params)
        names = [d[0] for d in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        db.close()


async def rows(env: dict[str, str], sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` in the bot's database, as tuples."""
    return [tuple(row.values()) for row in await records(env, sql, *params)]


async def execute(env: dict[str, str], *statements: str) -> None:
    """Run ``statements`` on the bot's database in one transaction (a test's set-up, with the bot stopped)."""
    if dialect(env) == "postgres":
        conn = await asyncpg.connect(env["DATABASE_URL"], timeout=10)
        try:
            async with conn.transaction():
                for statement in statements:
                    await conn.execute(statement)
        finally:
            await conn.close()
        return
    db = sqlite3.connect(Path(env["DATA_DIR"]) / "atelier.sqlite3", timeout=10)
    try:
        with db:
            for statement in statements:
                db.execute(statement)
    finally:
        db.close()


async def insert(env: dict[str, str], table: str, row: dict[str, Any]) -> None:
    """Add ``row`` to ``table`` in the bot's database."""
    names = ", ".join(row)
    sql = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' for _ in row)})"
    if dialect(env) == "postgres":
        conn = await asyncpg.connect(env["DATABASE_URL"], timeout=10)
        try:
            await conn.execute(numbered(sql), *row.values())
        finally:
            await conn.close()
        return
    db = sqlite3.connect(Path(env["DATA_DIR"]) / "atelier.sqlite3", timeout=10)
    try:
        with db:
            db.execute(sql, tuple(row.values()))
    finally:
        db.close()


async def wait_rows(
    env: dict[str, str], sql: str, done: Callable[[list[tuple[Any, ...]]], bool], timeout: float = 15
) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` once ``done(rows)`` holds (the store records a job's end after its upload);
    on the timeout, an assertion error that shows the rows last read."""
    found: list[tuple[Any, ...]] = []
    try:
        async with asyncio.timeout(timeout):
            while not done(found := await rows(env, sql)):  # noqa: ASYNC110  # another process writes it
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"after {timeout} s, {sql!r} still gives {found}") from None
    return found


async def settled(env: dict[str, str], timeout: float = 15) -> list[tuple[str, str, str]]:
    """(job prompt, status, its money entries joined by ``+``) once no job is unfinished, oldest job first."""
    ended = ("succeeded", "failed", "cancelled")
    sql = "SELECT id, prompt, status FROM jobs ORDER BY created_at"
    jobs = await wait_rows(env, sql, lambda r: all(status in ended for *_, status in r), timeout)
    entries: dict[str, list[str]] = {}
    for job_id, entry in await rows(env, "SELECT job_id, entry FROM money ORDER BY entry"):
        entries.setdefault(job_id, []).append(entry)
    return [(prompt, status, "+".join(entries.get(job_id, []))) for job_id, prompt, status in jobs]


async def money(env: dict[str, str]) -> list[tuple[str, str]]:
    """(job prompt, money entry) rows, oldest job first."""
    return await rows(
        env, "SELECT j.prompt, m.entry FROM money m JOIN jobs j ON j.id = m.job_id ORDER BY j.created_at, m.entry"
    )


async def wait_inputs_released(env: dict[str, str], timeout: float = 15) -> None:
    """Wait until no ended job holds inputs that are not marked kept: a failed or cancelled job's are deleted
    when it ends, a succeeded one's kept for a reroll (``ended_at``)."""
    await wait_rows(
        env,
        "SELECT i.job_id, j.status FROM input_sets i JOIN jobs j ON j.id = i.job_id "
        "WHERE i.ended_at IS NULL AND j.status IN ('succeeded', 'failed', 'cancelled')",
        lambda r: r == [],
        timeout,
    )


def is_channel_post(request: RecordedRequest, channel_id: int) -> bool:
    """A successful bot-token POST of a message in ``channel_id``."""
    return request.method == "POST" and request.path == f"/api/v10/channels/{channel_id}/messages" and request.ok


def is_message_edit_with_file(request: RecordedRequest, channel_id: int) -> bool:
    """A successful bot-token PATCH of a message in ``channel_id`` that carries a file (a result)."""
    return (
        request.method == "PATCH"
        and request.path.startswith(f"/api/v10/channels/{channel_id}/messages/")
        and bool(request.files)
        and request.ok
    )
