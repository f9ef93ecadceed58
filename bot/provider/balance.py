"""The provider account's balance, polled: warn when it runs low, refuse new work below a floor.

With ``PROVIDER_BALANCE_URL`` and ``PROVIDER_ACCESS_TOKEN`` set, ``GET {url}`` (the
provider's ``/api/user/self``) is called every ``BALANCE_POLL_SECONDS`` with the
account's system access token (not the API key) as a Bearer token, and
``New-Api-User: PROVIDER_USER_ID`` when that is set (older gateways ask for it). The
balance is ``data.quota / 500000`` dollars, so one unit of quota is exactly two micro-dollars.

Crossing below ``BALANCE_WARN_USD`` warns the log and the audit channels once (not at
every poll); below ``BALANCE_FLOOR_USD`` new requests are refused until the balance
is back above it; jobs already in line still run, and servers with their own key are
not affected. A failed poll is logged and changes nothing.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import aiohttp

from bot.config import Config
from bot.core.money import MICROS_PER_USD, format_usd
from bot.errors import AtelierError
from bot.i18n import Text, _t

log = logging.getLogger(__name__)

QUOTA_PER_DOLLAR = 500_000
MICROS_PER_QUOTA = MICROS_PER_USD // QUOTA_PER_DOLLAR
POLL_TIMEOUT = 20.0


class BalanceTooLowError(AtelierError):
    """New requests are refused: the operator's prepaid balance is below the floor."""

    def __init__(self) -> None:
        super().__init__(
            _t(
                "New edits are paused: the image service account that pays for them is nearly empty, and the bot's "
                "operator has been told. Edits already in line still run. Please try again later."
            )
        )


class Level(enum.IntEnum):
    """Where the balance stands; higher is worse."""

    UNKNOWN = -1
    OK = 0
    LOW = 1  # below BALANCE_WARN_USD
    FLOOR = 2  # below BALANCE_FLOOR_USD: new requests are refused


Alert = Callable[[Text], None]


class BalanceWatch:
    """Polls the balance in a task of its own; ``refusing`` is what admission reads."""

    def __init__(self, config: Config, session: aiohttp.ClientSession) -> None:
        self._config = config
        self._session = session
        self.balance: int | None = None  # micro-dollars, as last read
        self.level = Level.UNKNOWN
        self.failures = 0
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<BalanceWatch level={self.level.name} balance={self.balance}>"

    @property
    def enabled(self) -> bool:
        return bool(self._config.provider_balance_url and self._config.provider_access_token)

    @property
    def refusing(self) -> bool:
        """Whether new requests on the operator's key are refused now."""
        return self.level is Level.FLOOR

    def start(self, alert: Alert) -> None:
        """Poll now and every ``BALANCE_POLL_SECONDS``; ``alert`` tells the audit channels."""
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(alert), name="atelier-balance")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self, alert: Alert) -> None:
        while True:
            balance = await self.fetch()
            if balance is not None:
                self.update(balance, alert)
            await asyncio.sleep(self._config.balance_poll_seconds)

    async def fetch(self) -> int | None:
        """The balance in micro-dollars, or ``None`` (logged) when the provider did not say."""
        url = self._config.provider_balance_url
        token = self._config.provider_access_token
        assert url is not None and token is not None
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if self._config.provider_user_id:
            headers["New-Api-User"] = self._config.provider_user_id
        try:
            async with self._session.get(
                url, headers=headers, timeout=aiohttp.ClientTimeout(total=POLL_TIMEOUT)
            ) as response:
                status = response.status
                payload: Any = await response.json(content_type=None) if status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self._failed(f"{type(exc).__name__}")
            return None
        if status != 200:
            self._failed(f"HTTP {status}")
            return None
        data = payload.get("data") if isinstance(payload, dict) else None
        quota = data.get("quota") if isinstance(data, dict) else None
        if isinstance(quota, bool) or not isinstance(quota, (int, float)):
            message = payload.get("message") if isinstance(payload, dict) else None
            self._failed(f"no data.quota in the answer ({str(message)[:100]!r})")
            return None
        self.failures = 0
        return int(Decimal(str(quota)) * MICROS_PER_QUOTA)

    def _failed(self, why: str) -> None:
        self.failures += 1
        log.warning(
            "provider balance check failed: %s (checked again in %.0f s)", why, self._config.balance_poll_seconds
        )

    def level_of(self, balance: int) -> Level:
        floor, warn = self._config.balance_floor, self._config.balance_warn
        if floor is not None and balance < floor:
            return Level.FLOOR
        if warn is not None and balance < warn:
            return Level.LOW
        return Level.OK

    def update(self, balance: int, alert: Alert) -> None:
        """Record a reading (micro-dollars); on a crossing, tell the log and the audit channels once."""
        self.balance = balance
        before, now = self.level, self.level_of(balance)
        self.level = now
        if now == before:
            return
        warn, floor = self._config.balance_warn, self._config.balance_floor
        shown = format_usd(balance)
        if now is Level.FLOOR:
            log.error("provider balance $%s is below BALANCE_FLOOR_USD $%s: refusing new requests", shown, _usd(floor))
            alert(
                _t(
                    "🛑 **The image service balance is ${balance}**, below the floor of ${floor}. New edits are "
                    "refused until the operator tops it up; edits already in line still run.",
                    balance=shown,
                    floor=_usd(floor),
                )
            )
        elif now is Level.LOW and before in (Level.UNKNOWN, Level.OK):
            log.warning("provider balance $%s is below BALANCE_WARN_USD $%s", shown, _usd(warn))
            alert(
                _t(
                    "⚠️ **The image service balance is low: ${balance}** (warning below ${warn}).",
                    balance=shown,
                    warn=_usd(warn),
                )
            )
        elif before is Level.FLOOR:
            log.info("provider balance $%s is above the floor again: accepting new requests", shown)
            alert(
                _t(
                    "✅ The image service balance is back to ${balance}: new edits are accepted again.",
                    balance=shown,
                )
            )
        elif before is Level.LOW:
            log.info("provider balance $%s is above BALANCE_WARN_USD again", shown)


def _usd(micros: int | None) -> str:
    return format_usd(micros) if micros is not None else "?"
