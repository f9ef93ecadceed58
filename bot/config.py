"""Configuration: one frozen object built once from the environment (and ``.env``).

Every variable is declared once in ``SETTINGS`` (its default, what it means, which roles act
on it), and the reader refuses to read one that is not declared. ``docs/configuration.md``
and ``.env.example`` are generated from ``SETTINGS`` by ``scripts/gen_config_docs.py``; a test
fails when they drift.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography.fernet import Fernet

from bot.core.catalog import CatalogError, load_catalog
from bot.core.models import ImageModel, SizeRule, parse_shorthand
from bot.core.money import MoneyError, parse_usd
from bot.core.overrides import PrivateResults
from bot.errors import ConfigError

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
    # postgresql://… selects the PostgreSQL backend (several processes, one queue); it may hold a password.
    database_url: str | None = field(default=None, repr=False)
    max_concurrent_jobs: int = 4
    # The most of those calls this process makes itself; None: all of them.
    worker_slots: int | None = None
    user_max_active: int = 2
    user_daily_limit: int | None = 25
    guild_daily_limit: int | None = None
    daily_budget: int | None = None  # micro-dollars (bot.core.money)
    price_per_image: int = 30_000  # micro-dollars: $0.03
    user_cooldown_seconds: float = 0.0
    exempt_role_ids: frozenset[int] = frozenset()
    allowed_channel_ids: frozenset[int] = frozenset()
    allowed_role_ids: frozenset[int] = frozenset()
    allow_dms: bool = False
    private_results: PrivateResults = PrivateResults.ALLOWED
    shutdown_grace_seconds: float = 25.0
    # How often a waiting or running job's status message is refreshed (place in line, time so far).
    status_update_seconds: float = 10.0
    # Several processes (PostgreSQL only).
    job_lease_seconds: float = 60.0
    max_queued_input_mb: float = 512.0
    shard_count: int | None = None
    shard_ids: tuple[int, ...] | None = None
    # The most PostgreSQL connections one process opens (beside its one session connection); None: by role.
    database_pool_size: int | None = None
    # Models servers may use: empty means the one model ``image_model`` at ``price_per_image``.
    # (Out of ``repr``: long; the log's first line says which models are in use, and from which catalog.)
    image_models: tuple[ImageModel, ...] = field(default=(), repr=False)
    # Every model the catalogs describe, in use or not (a job keeps its model's entry after it is turned off).
    catalog: tuple[ImageModel, ...] = field(default=(), repr=False)
    models_file: Path | None = None
    image_fallback_model: str | None = None
    image_fallback_seconds: float = 60.0  # how long new jobs go to the fallback once the breaker opens
    # Operations.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None  # /metrics and /healthz are served only when this is set
    provider_balance_url: str | None = None
    provider_access_token: str | None = field(default=None, repr=False)
    provider_user_id: str | None = None
    balance_warn: int | None = None  # micro-dollars
    balance_floor: int | None = None  # micro-dollars
    balance_poll_seconds: float = 600.0
    # Fernet key(s) for servers' own API keys at rest; without it the feature is off.
    secret_key: str | None = field(default=None, repr=False)
    # Inputs of a finished job are kept this long (for Reroll), all of them within this many bytes.
    input_retention_hours: float = 24.0
    input_retention_bytes: int = 1024 * MB

    @property
    def db_file(self) -> Path:
        """Where the SQLite job store lives."""
        return self.database_path or self.data_dir / "atelier.sqlite3"

    @property
    def shared(self) -> bool:
        """Whether jobs, money and the queue live in PostgreSQL, shared by several processes."""
        return self.database_url is not None

    @property
    def process_slots(self) -> int:
        """The most API calls this process makes at once: its ``WORKER_SLOTS``, never more than all may make."""
        return min(self.worker_slots or self.max_concurrent_jobs, self.max_concurrent_jobs)

    @property
    def models(self) -> tuple[ImageModel, ...]:
        """The models servers may use, the default first."""
        if self.image_models:
            return self.image_models
        return (ImageModel(self.image_model, self.price_per_image, SizeRule.for_model(self.image_model)),)

    def model(self, name: str | None) -> ImageModel | None:
        """The allowed model called ``name``, if there is one."""
        return next((m for m in self.models if m.name == name), None)

    def entry(self, name: str | None) -> ImageModel | None:
        """What the configuration knows of the model called ``name`` (``None``: the default): an allowed
        model, else its catalog entry (a job accepted before its model was turned off still runs)."""
        if name is None:
            return self.default_model
        return self.model(name) or next((m for m in self.catalog if m.name == name), None)

    @property
    def default_model(self) -> ImageModel:
        """The model a server uses unless it picked another."""
        return self.model(self.image_model) or self.models[0]

    @property
    def fallback_model(self) -> ImageModel | None:
        """Where new jobs go while their model fails fast, if the operator named one (``IMAGE_FALLBACK_MODEL``)."""
        return self.model(self.image_fallback_model)

    def fallback_for(self, model: ImageModel) -> ImageModel | None:
        """Where ``model``'s new jobs go while it fails fast: its own ``fallback``, else ``IMAGE_FALLBACK_MODEL``."""
        fallback = self.model(model.fallback) if model.fallback else self.fallback_model
        return fallback if fallback is not None and fallback.name != model.name else None

    @property
    def secrets(self) -> list[str]:
        """Every configured secret, for the log filter."""
        keys = [k.strip() for k in (self.secret_key or "").split(",")]
        return [s for s in (self.discord_token, self.image_api_key, self.provider_access_token, *keys) if s]


# The settings, declared ------------------------------------------------------------------------

#: The roles a process plays (``python -m bot [gateway | worker]``).
ALL_IN_ONE, GATEWAY, WORKER = "all-in-one", "gateway", "worker"
EVERY_ROLE: Final = (ALL_IN_ONE, GATEWAY, WORKER)
ADMITS: Final = (ALL_IN_ONE, GATEWAY)  # takes interactions: limits, charges, commands
CALLS: Final = (ALL_IN_ONE, WORKER)  # runs jobs: the API calls and the image work


@dataclass(frozen=True)
class Section:
    """A group of settings, in the reference and in ``.env.example``."""

    title: str
    intro: str = ""


@dataclass(frozen=True)
class Setting:
    """One environment variable: its default as the reference shows it, what it means, who acts on it.

    ``default`` is either one literal in backticks, which is what ``load_config`` uses (a test
    checks), or words ("required", "none", "unlimited"). ``example`` is what ``.env.example``
    shows when that is not the literal default.
    """

    name: str
    default: str
    meaning: str
    roles: tuple[str, ...]
    section: Section
    secret: bool = False
    example: str | None = None


REQUIRED = Section("Required", "Every role checks that both are set, even one that does not use them.")
API = Section("The image API", "The provider's OpenAI-compatible `POST {base}/images/edits`.")
MODELS = Section(
    "Models and prices",
    "The models servers may pick (`/atelier settings model`), what a job costs, and where jobs go while a model fails.",
)
DISCORD = Section("Discord")
STORAGE = Section("Storage and logs")
LIMITS = Section(
    "Queue and limits",
    "The defaults of every server; a server's admins change theirs with `/atelier limits`. A daily limit or "
    "budget of `0`, `unlimited` or `none` means no limit.",
)
RESULTS = Section("Private results and kept inputs")
STOPPING = Section("Shutdown and status messages")
SHARED = Section(
    "The queue and several processes", "Leases and inputs apply to both databases; connections to PostgreSQL."
)
OPS = Section("Metrics and health")
BALANCE = Section(
    "The provider's balance (optional)",
    "Off unless `PROVIDER_BALANCE_URL` and `PROVIDER_ACCESS_TOKEN` are both set; then every process reads the balance.",
)
KEYS = Section("Servers' own API keys (optional)")

# fmt: off
SETTINGS: Final = (
    Setting("DISCORD_TOKEN", "required", "The bot's token (developer portal → Bot → Token).", EVERY_ROLE, REQUIRED,
            secret=True),
    Setting("IMAGE_API_KEY", "required", "The image API key, sent as `Authorization: Bearer …`.", CALLS, REQUIRED,
            secret=True),
    Setting("IMAGE_API_BASE", "`https://api.apiyi.com/v1`", "The API's base URL; the bot calls "
            "`{base}/images/edits`.", CALLS, API),
    Setting("IMAGE_API_TIMEOUT", "`300`", "Seconds one API call may take, as the provider recommends. A call that "
            "times out is not repeated: it may still be billed.", CALLS, API),
    Setting("IMAGE_RESPONSE_FORMAT", "`b64_json`", "How the image comes back: `b64_json` or `url` (always sent).",
            CALLS, API),
    Setting("IMAGE_API_MAX_RETRIES", "`3`", "Retries of what cannot have been billed: a connection that failed "
            "before sending, a 429 rate limit, a fast 5xx.", CALLS, API),
    Setting("IMAGE_API_RETRY_BACKOFF", "`2`", "Seconds before the first retry, doubled at each one, unless the "
            "API's `Retry-After` says otherwise.", CALLS, API),
    Setting("IMAGE_API_FAST_FAILURE_SECONDS", "`10`", "A 5xx within this many seconds of sending is retried (too "
            "quick to follow a generation); a later one may follow a billed generation and is not.", CALLS, API),
    Setting("MODELS_FILE", "none: the shipped catalog", "A TOML model catalog read on top of the shipped one "
            "(`bot/core/models.toml`): each model's wire name, endpoints, image field, sizes, price (flat, or by "
            "tokens), options, timeouts and fallback, and which models are enabled. See docs/operations.md.",
            EVERY_ROLE, MODELS, example="/etc/atelier/models.toml"),
    Setting("IMAGE_MODEL", "the catalog's default", "The default model (the request's `model` field). With "
            "`IMAGE_MODELS` or `MODELS_FILE`, one of the enabled models; with neither, the only model (from the "
            "catalog if it knows the name, else at `PRICE_PER_IMAGE`).", EVERY_ROLE, MODELS,
            example="gpt-image-2-vip"),
    Setting("IMAGE_MODELS", "the catalog's enabled models", "A shorthand for the models servers may pick, "
            "comma-separated `name=price[:table|any|free]`, instead of the catalog's enabled ones. A name the "
            "catalog knows keeps its entry (options, image field, endpoints…), made flat at the price given; "
            "another is a plain model. Without a price: the catalog's, else `PRICE_PER_IMAGE`. `table`: the "
            "provider's 30 sizes (the default for names ending in `-vip`); `any`: sides that are multiples of 16, "
            "the long side at most 3840 and at most 3 times the short one, at most 3840×2160 pixels in all; "
            "`free`: any size.", EVERY_ROLE, MODELS, example="gpt-image-2-vip=0.03,gpt-image-2-all=0.02"),
    Setting("PRICE_PER_IMAGE", "`0.03`", "Dollars charged per accepted job on a flat-priced model whose catalog "
            "entry or `IMAGE_MODELS` entry gives no price (refunded if the job fails or is cancelled).", EVERY_ROLE,
            MODELS),
    Setting("IMAGE_FALLBACK_MODEL", "none", "One of the enabled models. After two fast failures in a row of a "
            "model (a connection that failed before sending, a fast 5xx), its new jobs go to this one for "
            "`IMAGE_FALLBACK_SECONDS`, unless its catalog entry names its own `fallback`.", EVERY_ROLE, MODELS,
            example="gpt-image-2-all"),
    Setting("IMAGE_FALLBACK_SECONDS", "`60`", "How long new jobs go to the fallback once a model failed fast twice "
            "in a row; then the model is tried again.", EVERY_ROLE, MODELS),
    Setting("DISCORD_API_BASE", "Discord's", "The REST base URL, for a REST proxy (or the tests' fake Discord); "
            "the gateway's address then comes from `GET {base}/gateway/bot`.", EVERY_ROLE, DISCORD,
            example="https://discord.com/api/v10"),
    Setting("DEV_GUILD_ID", "none", "Sync the commands to this one server, where they appear at once (global "
            "commands can take up to an hour).", ADMITS, DISCORD),
    Setting("SHARD_COUNT", "none", "The number of gateway shards, for a bot in more than 2,500 servers.", ADMITS,
            DISCORD),
    Setting("SHARD_IDS", "all", "The shards this process runs, comma-separated (e.g. `0,1` of 4), to split the "
            "gateway across processes (which needs PostgreSQL). Needs `SHARD_COUNT`.", ADMITS, DISCORD),
    Setting("DATA_DIR", "`./data`", "Where the bot writes: the SQLite database (with its jobs' inputs) and the "
            "hash of the last command sync.", EVERY_ROLE, STORAGE),
    Setting("DATABASE_URL", "`DATA_DIR/atelier.sqlite3`", "`sqlite:///path` or a file path: SQLite, for one "
            "process. `postgresql://user:password@host/db`: PostgreSQL, shared by any number of processes (the "
            "gateway and worker roles need it). The password is kept out of the logs.", EVERY_ROLE, STORAGE,
            example="postgresql://atelier:password@127.0.0.1:5432/atelier"),
    Setting("LOG_LEVEL", "`INFO`", "`DEBUG`, `INFO`, `WARNING` or `ERROR`; the log goes to stderr.", EVERY_ROLE,
            STORAGE),
    Setting("MAX_CONCURRENT_JOBS", "`4`", "API calls in flight at once (with PostgreSQL, across all workers).",
            EVERY_ROLE, LIMITS),
    Setting("WORKER_SLOTS", "all of `MAX_CONCURRENT_JOBS`", "The most API calls one process makes at once, of the "
            "`MAX_CONCURRENT_JOBS` all share. With several workers, `MAX_CONCURRENT_JOBS` ÷ workers spreads the "
            "calls (and their decoding, delivery and database work) over them; else the first worker to start can "
            "take every slot and keep it, as a call's end hands its slot to the next job in the same worker.",
            CALLS, LIMITS, example="4"),
    Setting("USER_MAX_ACTIVE", "`2`", "Requests a member may have queued or running at once (a request's "
            "variations count once).", ADMITS, LIMITS),
    Setting("USER_DAILY_LIMIT", "`25`", "Edits per member per UTC day.", ADMITS, LIMITS),
    Setting("GUILD_DAILY_LIMIT", "unlimited", "Edits per server per UTC day.", ADMITS, LIMITS, example="unlimited"),
    Setting("DAILY_BUDGET_USD", "unlimited", "Dollars per UTC day across all servers, on the bot's key (jobs on a "
            "server's own key are outside it).", ADMITS, LIMITS, example="unlimited"),
    Setting("USER_COOLDOWN_SECONDS", "`0`", "Seconds between a member's edits.", ADMITS, LIMITS),
    Setting("EXEMPT_ROLE_IDS", "none", "Comma-separated role ids whose members bypass the member limits (daily "
            "count, cooldown, jobs at once), never the server's limit or the budget.", ADMITS, LIMITS),
    Setting("ALLOWED_CHANNEL_IDS", "everywhere", "Comma-separated channel ids where the bot works (and their "
            "threads).", ADMITS, LIMITS),
    Setting("ALLOWED_ROLE_IDS", "everyone", "Comma-separated role ids allowed to use the bot.", ADMITS, LIMITS),
    Setting("ALLOW_DMS", "`false`", "Allow `/edit` in direct messages.", ADMITS, LIMITS),
    Setting("PRIVATE_RESULTS", "`allowed`", "Whether members may ask for results only they see: `allowed` (each "
            "member chooses), `never` or `always`. Per server: `/atelier limits private:`.", ADMITS, RESULTS),
    Setting("INPUT_RETENTION_HOURS", "`24`", "Hours a succeeded job's inputs are kept, so it can be rerolled "
            "(`0` keeps none).", EVERY_ROLE, RESULTS),
    Setting("INPUT_RETENTION_MB", "`1024`", "The most all kept inputs may take, in MiB (in the database, on either "
            "kind); past it the oldest go first.", EVERY_ROLE, RESULTS),
    Setting("SHUTDOWN_GRACE_SECONDS", "`25`", "On SIGTERM, how long running API calls get to finish; what does not "
            "finish goes back in line. Give Docker longer (`docker stop -t 35`).", EVERY_ROLE, STOPPING),
    Setting("STATUS_UPDATE_SECONDS", "`10`", "How often a status message shows the new place in line or the time "
            "so far (Discord rate-limits edits; the tests shorten it).", EVERY_ROLE, STOPPING),
    Setting("JOB_LEASE_SECONDS", "`60`", "How long a process's hold on a job lasts without renewal (renewed every "
            "third of it); after that a stalled process loses it and another takes the job over, once. A process "
            "that died loses its jobs within seconds (PostgreSQL sees its session end).", EVERY_ROLE, SHARED),
    Setting("MAX_QUEUED_INPUT_MB", "`512`", "The most the images of unfinished jobs may take in the database; past "
            "it new requests are refused (not charged) until some finish.", ADMITS, SHARED),
    Setting("DATABASE_POOL_SIZE", "by role: `6` (all-in-one, gateway), `4` (worker)", "The most PostgreSQL "
            "connections one process opens: its pool starts with one and grows to what its role uses; each process "
            "also holds one session connection (notices, liveness).", EVERY_ROLE, SHARED),
    Setting("METRICS_PORT", "off (`9464` in the Docker image)", "Serve `/metrics` (Prometheus) and `/healthz` on "
            "this port.", EVERY_ROLE, OPS, example="9464"),
    Setting("METRICS_HOST", "`127.0.0.1`", "The address they listen on: `0.0.0.0` to be scraped from outside the "
            "host or container.", EVERY_ROLE, OPS),
    Setting("PROVIDER_BALANCE_URL", "off", "The provider's `/api/user/self`, read for the account's balance.",
            EVERY_ROLE, BALANCE, example="https://api.apiyi.com/api/user/self"),
    Setting("PROVIDER_ACCESS_TOKEN", "off", "The account's system access token for that URL, from the provider's "
            "dashboard (not the API key).", EVERY_ROLE, BALANCE, secret=True),
    Setting("PROVIDER_USER_ID", "none", "Sent as `New-Api-User` with the balance check, for gateways that ask "
            "for it.", EVERY_ROLE, BALANCE),
    Setting("BALANCE_WARN_USD", "none", "Below this balance, warn the log and every audit channel, once per "
            "crossing.", EVERY_ROLE, BALANCE, example="10"),
    Setting("BALANCE_FLOOR_USD", "none", "Below this balance, new requests are refused until it is back above; "
            "jobs already in line still run, and servers with their own key are not affected.", EVERY_ROLE, BALANCE,
            example="2"),
    Setting("BALANCE_POLL_SECONDS", "`600`", "How often the balance is read.", EVERY_ROLE, BALANCE),
    Setting("ATELIER_SECRET_KEY", "off", "Fernet key(s), comma-separated, that encrypt servers' own API keys at "
            "rest: the first encrypts, any decrypts (to rotate: `new,old`). Without it `/atelier key set` is off. "
            "Make one: `python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`.",
            EVERY_ROLE, KEYS, secret=True),
)
# fmt: on
DECLARED: Final = frozenset(s.name for s in SETTINGS)


class SettingsReader:
    """Reads typed values from an environment mapping, naming the variable on error.

    Only declared settings can be read. ``defaults`` records, for each one read, the default the
    code gave (``None`` when it gave none), so a test can hold ``SETTINGS`` to it.
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.defaults: dict[str, object] = {}

    def raw(self, name: str, default: object = None) -> str | None:
        if name not in DECLARED:
            raise LookupError(f"{name} is read but not declared in bot.config.SETTINGS")
        self.defaults.setdefault(name, default)
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
        return self.raw(name, default) or default

    def number(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        value = self.raw(name, default)
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
        value = self.raw(name, default)
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
        value = self.raw(name, default)
        if value is None:
            return default
        if value.lower() in ("0", "unlimited", "none"):
            return None
        return self.integer(name, 0, minimum=1)

    def money(self, name: str) -> int | None:
        """An amount of dollars as micro-dollars, where empty, 0 or ``unlimited`` mean no amount."""
        value = self.raw(name)
        if value is None or value.lower() in ("0", "unlimited", "none"):
            return None
        return self.price(name, 0)

    def price(self, name: str, default: int) -> int:
        """An amount of dollars (``0.03``) as micro-dollars, exactly."""
        value = self.raw(name)
        if value is None:
            return default
        try:
            return parse_usd(value)
        except MoneyError:
            raise ConfigError(
                f"{name} must be an amount of dollars with at most 6 decimals, e.g. 0.03, got {value!r}"
            ) from None

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

    def integers(self, name: str) -> tuple[int, ...] | None:
        """A comma-separated list of whole numbers, or ``None`` when not set."""
        value = self.raw(name)
        if value is None:
            return None
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if not parts or not all(p.isdigit() for p in parts):
            raise ConfigError(f"{name} must be a comma-separated list of whole numbers, got {value!r}")
        return tuple(sorted({int(p) for p in parts}))

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw(name, default)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, got {value!r}")

    def url(self, name: str, default: str | None) -> str | None:
        value = self.raw(name, default) or default
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ConfigError(f"{name} must be an http(s) URL, got {value!r}")
        return value.rstrip("/")


def load_config(env: Mapping[str, str] | None = None) -> Config:
    """Build the configuration from ``env`` (default: the process environment)."""
    return read_config(SettingsReader(os.environ if env is None else env))


def read_config(r: SettingsReader) -> Config:
    """Build the configuration with ``r``; every value is checked, and an error names its variable."""
    response_format = r.text("IMAGE_RESPONSE_FORMAT", "b64_json")
    if response_format not in ("b64_json", "url"):
        raise ConfigError(f"IMAGE_RESPONSE_FORMAT must be b64_json or url, got {response_format!r}")
    database_url = r.raw("DATABASE_URL")
    database_path: Path | None = None
    postgres_url: str | None = None
    if database_url is not None:
        # sqlite:///relative/path or sqlite:////absolute/path, a bare file path, or postgresql://…
        if database_url.startswith("sqlite:///"):
            database_path = Path(database_url.removeprefix("sqlite:///"))
        elif database_url.startswith(("postgresql://", "postgres://")):
            postgres_url = database_url
        elif "://" in database_url:
            # Never echo the URL: it may carry a password.
            raise ConfigError("DATABASE_URL must be a sqlite:/// or postgresql:// URL, or a file path")
        else:
            database_path = Path(database_url)
    shard_count = r.integer("SHARD_COUNT", 0, minimum=0) or None
    shard_ids = r.integers("SHARD_IDS")
    if shard_ids is not None:
        if shard_count is None:
            raise ConfigError("SHARD_IDS needs SHARD_COUNT")
        if any(i >= shard_count for i in shard_ids):
            raise ConfigError(f"SHARD_IDS must be below SHARD_COUNT ({shard_count}), got {sorted(shard_ids)}")
    private = r.text("PRIVATE_RESULTS", PrivateResults.ALLOWED).lower()
    if private not in set(PrivateResults):
        raise ConfigError(f"PRIVATE_RESULTS must be allowed, never or always, got {private!r}")
    level = r.text("LOG_LEVEL", "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    api_base = r.url("IMAGE_API_BASE", "https://api.apiyi.com/v1")
    assert api_base is not None
    price = r.price("PRICE_PER_IMAGE", 30_000)
    models, catalog, default_model = _models(r, price)
    models_file = r.raw("MODELS_FILE")
    fallback = r.raw("IMAGE_FALLBACK_MODEL")
    if fallback is not None and not any(m.name == fallback for m in models):
        names = ", ".join(m.name for m in models)
        raise ConfigError(f"IMAGE_FALLBACK_MODEL {fallback!r} must be one of the models in use ({names})")
    balance_url = r.url("PROVIDER_BALANCE_URL", None)
    access_token = r.raw("PROVIDER_ACCESS_TOKEN")
    if (balance_url is None) != (access_token is None):
        raise ConfigError("PROVIDER_BALANCE_URL and PROVIDER_ACCESS_TOKEN must be set together (or neither)")
    warn, floor = r.money("BALANCE_WARN_USD"), r.money("BALANCE_FLOOR_USD")
    if warn is not None and floor is not None and floor > warn:
        raise ConfigError("BALANCE_FLOOR_USD must not be above BALANCE_WARN_USD")
    metrics_port = r.integer("METRICS_PORT", 0, minimum=0) or None
    if metrics_port is not None and metrics_port > 65535:
        raise ConfigError(f"METRICS_PORT must be a TCP port (1-65535), got {metrics_port}")
    return Config(
        discord_token=r.required("DISCORD_TOKEN"),
        image_api_key=r.required("IMAGE_API_KEY"),
        image_api_base=api_base,
        image_model=default_model,
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
        database_url=postgres_url,
        max_concurrent_jobs=r.integer("MAX_CONCURRENT_JOBS", 4, minimum=1),
        worker_slots=r.integer("WORKER_SLOTS", 0, minimum=0) or None,
        user_max_active=r.integer("USER_MAX_ACTIVE", 2, minimum=1),
        user_daily_limit=r.limit("USER_DAILY_LIMIT", 25),
        guild_daily_limit=r.limit("GUILD_DAILY_LIMIT", None),
        daily_budget=r.money("DAILY_BUDGET_USD"),
        price_per_image=price,
        user_cooldown_seconds=r.number("USER_COOLDOWN_SECONDS", 0.0),
        exempt_role_ids=r.snowflakes("EXEMPT_ROLE_IDS"),
        allowed_channel_ids=r.snowflakes("ALLOWED_CHANNEL_IDS"),
        allowed_role_ids=r.snowflakes("ALLOWED_ROLE_IDS"),
        allow_dms=r.flag("ALLOW_DMS", False),
        private_results=PrivateResults(private),
        shutdown_grace_seconds=r.number("SHUTDOWN_GRACE_SECONDS", 25.0),
        status_update_seconds=r.number("STATUS_UPDATE_SECONDS", 10.0, minimum=0.05),
        job_lease_seconds=r.number("JOB_LEASE_SECONDS", 60.0, minimum=1.0),
        max_queued_input_mb=r.number("MAX_QUEUED_INPUT_MB", 512.0, minimum=1.0),
        shard_count=shard_count,
        shard_ids=shard_ids,
        database_pool_size=r.integer("DATABASE_POOL_SIZE", 0, minimum=0) or None,
        image_models=models,
        catalog=catalog,
        models_file=Path(models_file) if models_file else None,
        image_fallback_model=fallback,
        image_fallback_seconds=r.number("IMAGE_FALLBACK_SECONDS", 60.0, minimum=0.01),
        metrics_host=r.text("METRICS_HOST", "127.0.0.1"),
        metrics_port=metrics_port,
        provider_balance_url=balance_url,
        provider_access_token=access_token,
        provider_user_id=r.raw("PROVIDER_USER_ID"),
        balance_warn=warn,
        balance_floor=floor,
        balance_poll_seconds=r.number("BALANCE_POLL_SECONDS", 600.0, minimum=0.05),
        secret_key=_secret_key(r),
        input_retention_hours=r.number("INPUT_RETENTION_HOURS", 24.0),
        input_retention_bytes=int(r.number("INPUT_RETENTION_MB", 1024.0) * MB),
    )


def _models(r: SettingsReader, price: int) -> tuple[tuple[ImageModel, ...], tuple[ImageModel, ...], str]:
    """The models servers may use, every model the catalogs describe, and the default model's name.

    ``IMAGE_MODELS`` (the shorthand) lists them; else the catalog's enabled models (the shipped one,
    with ``MODELS_FILE`` on top); else, with neither set, ``IMAGE_MODEL`` alone is the one model, as
    before the catalog.
    """
    named = r.raw("IMAGE_MODEL")
    listed = r.raw("IMAGE_MODELS")
    path = r.raw("MODELS_FILE")
    try:
        catalog = load_catalog(Path(path) if path else None, price)
    except CatalogError as exc:
        raise ConfigError(str(exc)) from None
    if listed is not None:
        try:
            shorthand = parse_shorthand(listed)
        except ValueError as exc:
            raise ConfigError(
                f"IMAGE_MODELS: {exc} (expected e.g. gpt-image-2-vip=0.03,gpt-image-2-all=0.02)"
            ) from None
        models = tuple(catalog.shorthand(entry, price) for entry in shorthand)
        if named is not None and not any(m.name == named for m in models):
            raise ConfigError(f"IMAGE_MODEL {named!r} must be one of the models in IMAGE_MODELS")
        default = named or models[0].name
    elif path is None and named is not None:
        known = catalog.entry(named)
        models = (known.model if known else ImageModel(named, price, SizeRule.for_model(named)),)
        default = named
    else:
        models = catalog.enabled()
        names = [m.name for m in models]
        if not models:
            raise ConfigError(f"MODELS_FILE {path}: enabled: no model is enabled (set enabled = true on one)")
        if named is not None and named not in names:
            raise ConfigError(f"IMAGE_MODEL {named!r} must be one of the catalog's enabled models ({', '.join(names)})")
        if named is None and catalog.default is not None and catalog.default not in names:
            raise ConfigError(f"{catalog.default_source}: default: {catalog.default!r} is not an enabled model")
        default = named or catalog.default or names[0]
    try:
        catalog.check_fallbacks(models)
    except CatalogError as exc:
        raise ConfigError(str(exc)) from None
    return models, catalog.models, default


def _secret_key(r: SettingsReader) -> str | None:
    """``ATELIER_SECRET_KEY``: one or more Fernet keys, the first encrypts (checked, never echoed)."""
    value = r.raw("ATELIER_SECRET_KEY")
    if value is None:
        return None
    for key in value.split(","):
        try:
            Fernet(key.strip().encode())
        except (ValueError, TypeError):
            raise ConfigError(
                "ATELIER_SECRET_KEY must be a Fernet key (32 url-safe base64 bytes), or several separated by "
                "commas; make one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'"
            ) from None
    return value
