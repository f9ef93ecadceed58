"""``python -m bot``: read the configuration, open the shared session, build the engine, run the frontend.

The engine knows no Discord. The Discord side (``cogs/``) registers itself as the
``discord`` frontend under the ``atelier.frontends`` entry point (``pyproject.toml``),
so this module finds it without importing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import signal
import sys
from collections.abc import Callable
from importlib.metadata import entry_points

import aiohttp
from dotenv import find_dotenv, load_dotenv

from bot.config import Config, load_config
from bot.engine import JobEngine
from bot.errors import ConfigError
from bot.media.editor import Editor
from bot.ops.logging_setup import RedactSecrets, setup_logging
from bot.ops.ops_server import OpsServer
from bot.ports import Frontend
from bot.provider.balance import BalanceWatch
from bot.provider.client import ImageAPIClient
from bot.store.database import Database
from bot.store.postgres import PostgresDatabase
from bot.store.sqlite import SQLiteDatabase
from bot.store.store import Store

ROLES = {"all": "discord", "gateway": "gateway", "worker": "worker"}
# The most connections a process's pool opens, unless DATABASE_POOL_SIZE says: a gateway's admissions
# run side by side; a run needs a connection only for its moves, between the API calls.
POOL_BY_ROLE = {"all": 6, "gateway": 6, "worker": 4}

FrontendFactory = Callable[[Config, JobEngine], Frontend]
USAGE = "usage: python -m bot [gateway | worker]   (no argument: gateway and worker in one process)"

log = logging.getLogger("bot")

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


async def run(
    config: Config, frontend_factory: FrontendFactory, redact: RedactSecrets | None = None, role: str = "all"
) -> None:
    """Run the engine and its frontend until a signal or a fatal error stops them."""
    # Per-call timeouts are set where calls are made; this only guards connection set-up.
    timeout = aiohttp.ClientTimeout(total=None, connect=30, sock_connect=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        store = Store(open_database(config, role))
        balance = BalanceWatch(config, session) if config.provider_balance_url else None
        engine = JobEngine(
            config,
            store,
            ImageAPIClient(session, config),
            Editor(),
            balance=balance,
            redact=redact.add if redact is not None else lambda secret: None,
        )
        frontend = frontend_factory(config, engine)
        ops = (
            OpsServer(config.metrics_host, config.metrics_port, engine.metrics, engine.health, engine.refresh_totals)
            if config.metrics_port
            else None
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, frontend.request_stop, signum.name)
        try:
            await engine.open()
            if ops is not None:
                await ops.start()
            await frontend.run()
        finally:
            if ops is not None:
                await ops.stop()
            await engine.close()


def open_database(config: Config, role: str = "all") -> Database:
    """SQLite (one process), or PostgreSQL (several processes), with the connections ``role`` uses."""
    if config.database_url is not None:
        return PostgresDatabase(config.database_url, pool_size=config.database_pool_size or POOL_BY_ROLE[role])
    return SQLiteDatabase(config.db_file)


def load_frontend(name: str) -> FrontendFactory:
    """The frontend registered as ``name`` under the ``atelier.frontends`` entry point."""
    found = entry_points(group="atelier.frontends", name=name)
    if not found:
        raise ConfigError(f"no frontend named {name!r} is installed (run: pip install -e .)")
    factory: FrontendFactory = next(iter(found)).load()
    return factory


def database_secrets(config: Config) -> list[str]:
    """The password in a PostgreSQL URL, so that no log line can show it."""
    from urllib.parse import urlsplit

    if config.database_url is None:
        return []
    password = urlsplit(config.database_url).password
    return [password] if password else []


def return_big_buffers_to_the_os() -> None:
    """Ask glibc to mmap every allocation over 128 KiB, so a freed result is given back at once.

    By default glibc raises that threshold after large frees, keeping multi-MB image
    buffers in the heap: peak memory then grows with every 4K result handled at once.
    The same as MALLOC_MMAP_THRESHOLD_=131072; a no-op where glibc is not the allocator.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)


def main() -> None:
    """Entry point: one clear line and exit status 2 on a configuration error."""
    # Look for .env from the working directory up, not from where the package is installed.
    load_dotenv(find_dotenv(usecwd=True))
    try:
        config = load_config()
    except ConfigError as exc:
        print(f"atelier: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    redact = setup_logging(config.log_level, [*config.secrets, *database_secrets(config)])
    role = sys.argv[1] if len(sys.argv) > 1 else "all"
    if role not in ROLES or len(sys.argv) > 2:
        print(USAGE, file=sys.stderr)
        raise SystemExit(2)
    try:
        if role != "all" and not config.shared:
            raise ConfigError(f"the {role} role needs PostgreSQL: set DATABASE_URL=postgresql://…")
        frontend = load_frontend(ROLES[role])
    except ConfigError as exc:
        print(f"atelier: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if sys.platform.startswith("linux"):
        return_big_buffers_to_the_os()
    config.data_dir.mkdir(parents=True, exist_ok=True)
    log.info(
        "models in use: %s (default %s; catalog: the shipped one%s)",
        ", ".join(model.name for model in config.models), config.default_model.name,
        f" with MODELS_FILE {config.models_file}" if config.models_file else "",
    )  # fmt: skip
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run(config, frontend, redact, role))
    except ConfigError as exc:  # found at start: the database refused (a second process on SQLite, a bad file)
        print(f"atelier: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    log.info("stopped")


if __name__ == "__main__":
    main()
