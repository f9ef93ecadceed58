"""Configuration: one frozen object built once from the environment (and ``.env``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bot.errors import ConfigError
from bot.settings import PrivateResults

MB = 1024 * 1024


@dataclass(frozen=True)
class Config:
    """Every setting the bot reads. Secrets are kept out of ``repr``."""

    discord_token: str = field(repr=False)
    image_api_key: str = field(repr=False)
    image_api_base: str = "https://api.apiyi.com/v1"
    image_model: str = "gpt-image-2-vip"
    image_api_timeout: float = 300.0
    image_response_format: str = "b64_json"
    image_api_max_retries: int = 3
    image_api_retry_backoff: float = 2.0
    # A 5xx within this many seconds of sending cannot follow a generation, so it is retried.
    image_api_fast_failure_seconds: float = 10.0
    discord_api_base: str | None = None
    data_dir: Path = Path("./data")
    dev_guild_id: int | None = None
    log_level: str = "INFO"
    # Community operations.
    database_path: Path | None = None
    max_concurrent_jobs: int = 4
    user_max_active: int = 2
    user_daily_limit: int | None = 25
    guild_daily_limit: int | None = None
    daily_budget_usd: float | None = None
    price_per_image: float = 0.03
    user_cooldown_seconds: float = 0.0
    exempt_role_ids: frozenset[int] = frozenset()
    allowed_channel_ids: frozenset[int] = frozenset()
    allowed_role_ids: frozenset[int] = frozenset()
    allow_dms: bool = False
    private_results: PrivateResults = PrivateResults.ALLOWED
    shutdown_grace_seconds: float = 25.0
    # Inputs of a finished job are kept this long (for Reroll), all of them within this many bytes.
    input_retention_hours: float = 24.0
    input_retention_bytes: int = 1024 * MB

    @property
    def db_file(self) -> Path:
        """Where the SQLite job store lives."""
        return self.database_path or self.data_dir / "atelier.sqlite3"


class _Reader:
    """Reads typed values from an environment mapping, naming the variable on error."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None or not value.strip():
            return None
        return value.strip()

    def required(self, name: str) -> str:
        value = self.raw(name)
        if value is None:
            raise ConfigError(f"{name} is required but not set (put it in the environment or in .env)")
        return value

    def text(self, name: str, default: str) -> str:
        return self.raw(name) or default

    def number(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            parsed = float(value)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {value!r}") from None
        if parsed < minimum:
            raise ConfigError(f"{name} must be at least {minimum:g}, got {value!r}")
        return parsed

    def integer(self, name: str, default: int, *, minimum: int = 0) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            parsed = int(value)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, got {value!r}") from None
        if parsed < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, got {value!r}")
        return parsed

    def limit(self, name: str, default: int | None) -> int | None:
        """A count where empty, 0 or ``unlimited`` mean no limit."""
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() in ("0", "unlimited", "none"):
            return None
        return self.integer(name, 0, minimum=1)

    def money(self, name: str) -> float | None:
        value = self.raw(name)
        if value is None or value.lower() in ("0", "unlimited", "none"):
            return None
        return self.number(name, 0.0)

    def snowflake(self, name: str) -> int | None:
        value = self.raw(name)
        if value is None:
            return None
        if not value.isdigit():
            raise ConfigError(f"{name} must be a Discord id (digits only), got {value!r}")
        return int(value)

    def snowflakes(self, name: str) -> frozenset[int]:
        value = self.raw(name)
        if value is None:
            return frozenset()
        parts = [p.strip() for p in value.replace(";", ",").split(",") if p.strip()]
        if not all(p.isdigit() for p in parts):
            raise ConfigError(f"{name} must be a comma-separated list of Discord ids, got {value!r}")
        return frozenset(int(p) for p in parts)

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, got {value!r}")

    def url(self, name: str, default: str | None) -> str | None:
        value = self.raw(name) or default
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ConfigError(f"{name} must be an http(s) URL, got {value!r}")
        return value.rstrip("/")


def load_config(env: Mapping[str, str] | None = None) -> Config:
    """Build the configuration from ``env`` (default: the process environment)."""
    r = _Reader(os.environ if env is None else env)
    response_format = r.text("IMAGE_RESPONSE_FORMAT", "b64_json")
    if response_format not in ("b64_json", "url"):
        raise ConfigError(f"IMAGE_RESPONSE_FORMAT must be b64_json or url, got {response_format!r}")
    database_url = r.raw("DATABASE_URL")
    database_path: Path | None = None
    if database_url is not None:
        # sqlite:///relative/path or sqlite:////absolute/path, or a bare file path.
        if database_url.startswith("sqlite:///"):
            database_path = Path(database_url.removeprefix("sqlite:///"))
        elif "://" in database_url:
            raise ConfigError(f"DATABASE_URL must be a sqlite:/// URL or a file path, got {database_url!r}")
        else:
            database_path = Path(database_url)
    private = r.text("PRIVATE_RESULTS", PrivateResults.ALLOWED).lower()
    if private not in set(PrivateResults):
        raise ConfigError(f"PRIVATE_RESULTS must be allowed, never or always, got {private!r}")
    level = r.text("LOG_LEVEL", "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    api_base = r.url("IMAGE_API_BASE", "https://api.apiyi.com/v1")
    assert api_base is not None
    return Config(
        discord_token=r.required("DISCORD_TOKEN"),
        image_api_key=r.required("IMAGE_API_KEY"),
        image_api_base=api_base,
        image_model=r.text("IMAGE_MODEL", "gpt-image-2-vip"),
        image_api_timeout=r.number("IMAGE_API_TIMEOUT", 300.0, minimum=1.0),
        image_response_format=response_format,
        image_api_max_retries=r.integer("IMAGE_API_MAX_RETRIES", 3),
        image_api_retry_backoff=r.number("IMAGE_API_RETRY_BACKOFF", 2.0),
        image_api_fast_failure_seconds=r.number("IMAGE_API_FAST_FAILURE_SECONDS", 10.0),
        discord_api_base=r.url("DISCORD_API_BASE", None),
        data_dir=Path(r.text("DATA_DIR", "./data")),
        dev_guild_id=r.snowflake("DEV_GUILD_ID"),
        log_level=level,
        database_path=database_path,
        max_concurrent_jobs=r.integer("MAX_CONCURRENT_JOBS", 4, minimum=1),
        user_max_active=r.integer("USER_MAX_ACTIVE", 2, minimum=1),
        user_daily_limit=r.limit("USER_DAILY_LIMIT", 25),
        guild_daily_limit=r.limit("GUILD_DAILY_LIMIT", None),
        daily_budget_usd=r.money("DAILY_BUDGET_USD"),
        price_per_image=r.number("PRICE_PER_IMAGE", 0.03),
        user_cooldown_seconds=r.number("USER_COOLDOWN_SECONDS", 0.0),
        exempt_role_ids=r.snowflakes("EXEMPT_ROLE_IDS"),
        allowed_channel_ids=r.snowflakes("ALLOWED_CHANNEL_IDS"),
        allowed_role_ids=r.snowflakes("ALLOWED_ROLE_IDS"),
        allow_dms=r.flag("ALLOW_DMS", False),
        private_results=PrivateResults(private),
        shutdown_grace_seconds=r.number("SHUTDOWN_GRACE_SECONDS", 25.0),
        input_retention_hours=r.number("INPUT_RETENTION_HOURS", 24.0),
        input_retention_bytes=int(r.number("INPUT_RETENTION_MB", 1024.0) * MB),
    )
