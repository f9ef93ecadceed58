"""``python -m bot``: read the configuration, open the shared session, run the bot."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import signal
import sys

import aiohttp
from dotenv import find_dotenv, load_dotenv

from bot.client import AtelierBot
from bot.config import Config, load_config
from bot.discord_base import use_rest_base
from bot.errors import ConfigError
from bot.logging_setup import setup_logging

log = logging.getLogger("bot")

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


async def run(config: Config) -> None:
    """Run the bot until it is closed by a signal or a fatal error."""
    # Per-call timeouts are set where calls are made; this only guards connection set-up.
    timeout = aiohttp.ClientTimeout(total=None, connect=30, sock_connect=30)
    async with aiohttp.ClientSession(timeout=timeout) as session, AtelierBot(config, session) as bot:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, bot.request_shutdown, signum.name)
        try:
            await bot.start(config.discord_token)
        finally:
            await bot.wait_shut_down()


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
    setup_logging(config.log_level, [config.discord_token, config.image_api_key])
    if sys.platform.startswith("linux"):
        return_big_buffers_to_the_os()
    if config.discord_api_base:
        use_rest_base(config.discord_api_base)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(config))
    log.info("stopped")


if __name__ == "__main__":
    main()
