"""An in-process fake of Discord (REST + gateway + CDN) for end-to-end tests.

``FakeDiscord`` is an aiohttp server on 127.0.0.1 (random port) that the *real* discord.py client
talks to.  Point the client at it with::

    discord.http.Route.BASE = fake.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)

What it fakes (one guild, one bot, deterministic ids on the class):

* REST: ``/users/@me``, ``/oauth2/applications/@me``, ``/gateway[/bot]``, global and guild command
  bulk-overwrite (PUT/GET), interaction callbacks (types 1, 4-9), interaction webhooks (@original and
  follow-ups, GET/PATCH/DELETE/POST), channel messages (create/get/list/edit/delete, reactions, typing),
  threads from messages, forum posts, DM channel creation and a few guild reads.  JSON and multipart
  (``payload_json`` + ``files[n]``) bodies are both accepted; uploaded files are re-hosted on the fake CDN.
* Forms: a modal the bot opens (callback type 9) is checked against Discord's rules (:func:`check_modal`:
  at most 5 top-level components, what a Label may hold, file uploads' 0-10 files, custom_id and label
  lengths…) and refused as Discord does (400, 50035 with its field errors); :meth:`FakeDiscord.submit_modal`
  answers it as Discord sends a submission: every field in the form's order, text inputs, selects, file
  uploads (attachment ids resolved in ``data.resolved.attachments``), checkbox groups and checkboxes.
* Members' messages (:meth:`FakeDiscord.add_message`) with attachments and embeds (a pasted image link is
  an ``image`` embed whose ``proxy_url`` is on the fake CDN, :meth:`FakeDiscord.image_embed`), and message
  context-menu commands on them (:meth:`FakeDiscord.message_command`: type 2, command type 3, ``target_id``
  and ``resolved.messages``).
* Gateway: HELLO, heartbeat ACK, IDENTIFY -> READY + GUILD_CREATE, RESUME -> INVALID_SESSION(false),
  REQUEST_GUILD_MEMBERS -> one GUILD_MEMBERS_CHUNK.  MESSAGE_*/THREAD_CREATE are dispatched only when the
  client identified with the matching intents (GUILD_MESSAGES / DIRECT_MESSAGES / GUILDS), like Discord.
  Frames are plain JSON text (discord.py accepts them although it asks for zlib-stream).
* CDN: ``/cdn/attachments/{channel}/{id}/{filename}?ex=&is=&hm=`` -- the signed query is required,
  as on Discord (a URL with the query stripped gets 404).

Everything the client sends over HTTP is recorded in :attr:`FakeDiscord.requests` (raw body, parsed JSON /
``payload_json`` and file parts) before it is answered; gateway frames go to ``gateway_received``.

Discord behaviours that are modelled because bots trip over them: second callback -> 40060, expired
interaction -> 10062 / 50027, follow-up before any callback -> 10015, the first follow-up after a
"thinking" defer replaces the loading message, ``@original`` after an UPDATE/DEFERRED_UPDATE is the clicked
message, upload size limit -> 40005 (413), ephemeral messages are invisible to bot routes, one thread per
message -> 160004, JSON responses with the exact ``Content-Type: application/json``, a DM to a member whose
DMs are closed -> 50007 (:attr:`FakeDiscord.closed_dms`), a channel the bot cannot see -> 50001 on bot routes
and an ``app_permissions`` without View Channel / Read Message History (:attr:`FakeDiscord.hidden_channels`),
a reply pings the replied-to author unless ``allowed_mentions.replied_user`` is false, an interaction token
older than 15 minutes -> 50027, a first answer later than :attr:`FakeDiscord.ack_window` (3 s on Discord; off
unless set) -> 10062, an edit of a bot message older than an hour -> 30046 (a 429), with
:attr:`FakeDiscord.backdate_next_message` / ``backdate_next_interaction`` to make those ages without waiting.

Rate limits: off by default (:meth:`FakeDiscord.fail_next` injects a 429). :meth:`FakeDiscord.rate_limit_webhooks`
turns on Discord's per-token webhook bucket (``/webhooks/{app}/{token}/...``; interaction callbacks are exempt, as
on Discord): every answer on those routes carries ``X-RateLimit-*`` headers, and a request over the limit gets a 429
with ``retry_after`` (recorded in :attr:`FakeDiscord.rate_limited`).

Components V2 (message flag ``IS_COMPONENTS_V2``) are held to Discord's rules, refused with 400 / 50035 like
Discord: no ``content`` and no embeds with the flag; at most 40 components (nested ones counted) and 4,000
characters of text; a media gallery of 1 to 10 items; media that name a file of the same message
(``attachment://name``) or an http(s) URL; layout and content components only with the flag; the flag can be
set by an edit that clears the content, embeds and files, never removed. Stored V2 messages come back as Discord
returns them: components numbered, media resolved to the files' CDN links, mentions read from the text displays.
In any message, an action row holds 1 to 5 buttons.

Limits: single shard, single guild, no permission checks on REST routes (but hidden channels), no rate limits
on bot-token routes, no voice, no zlib/zstd compression, no embeds validation, mentions only from
``<@id>``/``<@&id>``/``@everyone`` in content (or a V2 message's text displays).  ``BOT_USER_ID`` deliberately
differs from ``APP_ID`` (true for older applications) so code that mixes them up fails loudly.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import io
import itertools
import json
import math
import mimetypes
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import Message as _MimeHeader
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from aiohttp import WSMsgType, web
from multidict import CIMultiDict

JSON = dict[str, Any]
# What a member puts in one field of a form (see FakeDiscord.submit_modal).
ModalAnswer = str | bool | list[str] | list[dict[str, Any]]
T = TypeVar("T")
Handler = Callable[[web.Request, "RecordedRequest"], Awaitable[web.StreamResponse]]
AiohttpHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DISCORD_EPOCH_MS = 1420070400000
MIB = 1024 * 1024
DROP = 0  # a ``fail_next`` status: the connection drops with no answer

# Permission bits (https://discord.com/developers/docs/topics/permissions)
CREATE_INSTANT_INVITE = 1 << 0
ADMINISTRATOR = 1 << 3
MANAGE_CHANNELS = 1 << 4
MANAGE_GUILD = 1 << 5
ADD_REACTIONS = 1 << 6
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
USE_EXTERNAL_EMOJIS = 1 << 18
CONNECT = 1 << 20
SPEAK = 1 << 21
CHANGE_NICKNAME = 1 << 26
USE_APPLICATION_COMMANDS = 1 << 31
MANAGE_THREADS = 1 << 34
CREATE_PUBLIC_THREADS = 1 << 35
SEND_MESSAGES_IN_THREADS = 1 << 38
ALL_PERMISSIONS = (1 << 51) - 1

#: What @everyone can do in the fake guild (a typical community server, no moderation rights).
MEMBER_PERMISSIONS = (
    CREATE_INSTANT_INVITE
    | ADD_REACTIONS
    | VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | USE_EXTERNAL_EMOJIS
    | CONNECT
    | SPEAK
    | CHANGE_NICKNAME
    | USE_APPLICATION_COMMANDS
    | CREATE_PUBLIC_THREADS
    | SEND_MESSAGES_IN_THREADS
)
MODERATOR_PERMISSIONS = MANAGE_GUILD | MANAGE_MESSAGES | MANAGE_THREADS | MANAGE_CHANNELS
BOT_PERMISSIONS = MEMBER_PERMISSIONS | MANAGE_MESSAGES | MANAGE_THREADS

# Gateway intents that gate the events the fake dispatches.
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12

# Message flags
FLAG_SUPPRESS_EMBEDS = 1 << 2
FLAG_HAS_THREAD = 1 << 5
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
FLAG_SUPPRESS_NOTIFICATIONS = 1 << 12
FLAG_IS_COMPONENTS_V2 = 1 << 15
SETTABLE_FLAGS = FLAG_SUPPRESS_EMBEDS | FLAG_EPHEMERAL | FLAG_SUPPRESS_NOTIFICATIONS | FLAG_IS_COMPONENTS_V2

_WEBHOOK_ROUTE = re.compile(r"^/api/v10/(interactions|webhooks)/")
# The requests that share one webhook bucket: everything on one webhook id and token (not the interaction callback).
_WEBHOOK_BUCKET = re.compile(r"^/api/v10/webhooks/(\d+)/([^/]+)")


class _Unset(enum.Enum):
    UNSET = 0


UNSET = _Unset.UNSET


def iso_now(offset: timedelta = timedelta()) -> str:
    return (datetime.now(UTC) + offset).isoformat()


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """``web.json_response`` adds ``; charset=utf-8``, which discord.py does NOT parse as JSON."""
    return web.Response(
        status=status,
        body=json.dumps(data).encode(),
        headers={**(headers or {}), "Content-Type": "application/json"},
    )


def error(status: int, code: int, message: str, errors: JSON | None = None) -> web.Response:
    body: JSON = {"code": code, "message": message}
    if errors:
        body["errors"] = errors
    return json_response(body, status)


class DiscordError(Exception):
    """Raised inside handlers; turned into a Discord-style JSON error response.

    ``errors`` is Discord's tree of field errors for an invalid form body (50035): the path of each
    bad field, as nested objects, ending in ``{"_errors": [{"code": …, "message": …}]}``.
    """

    def __init__(self, status: int, code: int, message: str, errors: JSON | None = None) -> None:
        super().__init__(f"{status} {code} {message}" + (f" {json.dumps(errors)}" if errors else ""))
        self.status, self.code, self.message, self.errors = status, code, message, errors


UNKNOWN_MESSAGE = (404, 10008, "Unknown Message")
UNKNOWN_CHANNEL = (404, 10003, "Unknown Channel")
UNKNOWN_WEBHOOK = (404, 10015, "Unknown Webhook")
UNKNOWN_INTERACTION = (404, 10062, "Unknown interaction")
INVALID_WEBHOOK_TOKEN = (401, 50027, "Invalid Webhook Token")
ALREADY_ACKED = (400, 40060, "Interaction has already been acknowledged.")
TOO_LARGE = (413, 40005, "Request entity too large")
INVALID_FORM = (400, 50035, "Invalid Form Body")
# The locales Discord takes in *_localizations (https://discord.com/developers/docs/reference#locales).
DISCORD_LOCALES = frozenset(
    "id da de en-GB en-US es-ES es-419 fr hr it lt hu nl no pl pt-BR ro fi sv-SE vi tr cs el bg ru uk hi th "
    "zh-CN ja zh-TW ko".split()
)
MISSING_ACCESS = (403, 50001, "Missing Access")
CANNOT_DM = (403, 50007, "Cannot send messages to this user")
TOKEN_SECONDS = 15 * 60
# Discord limits edits of messages older than an hour; modelled strictly: every such edit is refused.
OLD_MESSAGE_SECONDS = 3600
OLD_MESSAGE_EDITS = (429, 30046, "Maximum number of edits to messages older than 1 hour reached. Try again later")


@dataclass
class RecordedFile:
    field: str  # multipart field name, e.g. "files[0]"
    filename: str
    content_type: str | None
    data: bytes


@dataclass
class RecordedRequest:
    method: str
    path: str  # without the query string
    query: dict[str, str]
    headers: CIMultiDict[str]
    body: bytes
    json: Any  # None, or the parsed JSON body or the multipart "payload_json" part
    files: list[RecordedFile] = field(default_factory=list)
    status: int = 0  # 0 while the request is still being answered
    response: Any | None = None  # the JSON the fake answered with, if any
    index: int = -1
    at: float = 0.0  # time.monotonic() when it arrived
    rate_remaining: int | None = None  # what X-RateLimit-Remaining said, on a rate-limited route

    def __repr__(self) -> str:
        return f"<{self.method} {self.path} -> {self.status}>"

    @property
    def ok(self) -> bool:
        """Answered with a 2xx."""
        return 200 <= self.status < 300


_REC = web.RequestKey("fake_discord.record", RecordedRequest)


@dataclass
class InteractionHandle:
    """An interaction injected over the gateway, with helpers to find what the bot did with it."""

    id: int
    token: str
    payload: JSON  # the INTERACTION_CREATE data that was dispatched
    fake: FakeDiscord = field(repr=False)

    def _mine(self, r: RecordedRequest) -> bool:
        return f"/{self.token}" in r.path

    def callback_requests(self) -> list[RecordedRequest]:
        return [r for r in self.fake.requests if r.path.endswith(f"/{self.id}/{self.token}/callback")]

    def webhook_requests(self) -> list[RecordedRequest]:
        """Requests on ``/webhooks/{app}/{token}...`` (follow-ups and @original edits)."""
        return [r for r in self.fake.requests if r.path.startswith("/api/v10/webhooks/") and self._mine(r)]

    async def wait_for_callback(self, timeout: float = 10) -> RecordedRequest:
        return await self.fake.wait_for_callback(self, timeout)

    async def wait_for_webhook(
        self, method: str | None = None, *, timeout: float = 10, start: int = 0
    ) -> RecordedRequest:
        """First webhook request for this token (optionally of ``method``) at index >= ``start``."""
        return await self.fake.wait_for_request(
            lambda r: (
                r.path.startswith("/api/v10/webhooks/")
                and self._mine(r)
                and (method is None or r.method == method.upper())
            ),
            timeout,
            start=start,
        )

    def original_message(self) -> JSON | None:
        return self.fake.original_message(self)

    def followups(self) -> list[JSON]:
        state = self.fake._interactions[self.id]
        return [self.fake.messages[m] for m in state.followup_ids if m in self.fake.messages]

    @property
    def callback_type(self) -> int | None:
        return self.fake._interactions[self.id].callback_type

    @property
    def callback_data(self) -> JSON | None:
        """``data`` of the callback (modal definition, autocomplete choices, message body...)."""
        return self.fake._interactions[self.id].callback_data


@dataclass
class _Interaction:
    id: int
    token: str
    type: int
    payload: JSON
    channel_id: int
    message_id: int | None  # the message a component / modal interaction came from
    acked: bool = False
    expired: bool = False
    callback_type: int | None = None
    callback_data: JSON | None = None
    original_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)


@dataclass
class _Fault:
    method: str
    path: re.Pattern[str]
    status: int
    body: Any
    headers: dict[str, str]
    times: int
    only: Callable[[RecordedRequest], bool] | None = None


@dataclass
class Held:
    """A request the fake keeps unanswered until the test says: for killing a bot while it waits on Discord."""

    method: str
    path: re.Pattern[str]
    content: str | None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def matches(self, rec: RecordedRequest) -> bool:
        if rec.method != self.method or not self.path.search(rec.path):
            return False
        return self.content is None or (isinstance(rec.json, dict) and self.content in str(rec.json.get("content")))


@dataclass
class _Window:
    """One rate-limit bucket's current window: it opens with its first request and lasts ``per`` seconds."""

    opened: float  # time.monotonic()
    used: int = 0


@dataclass
class _Limited:
    """What the bucket said about one request: the headers it answers with, and whether it was refused."""

    headers: dict[str, str]
    retry_after: float | None  # seconds, when the request is over the limit


@dataclass
class _GatewayConn:
    ws: web.WebSocketResponse
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class _Session:
    id: str
    intents: int
    seq: int = 0
    resumable: bool = True
    sent: list[JSON] = field(default_factory=list)  # every dispatch, for RESUME replay


class FakeDiscord:
    APP_ID = 1200000000000000010
    BOT_USER_ID = 1200000000000000011
    OWNER_ID = 1200000000000000020
    USER_ID = 1200000000000000030  # default user that runs commands
    OTHER_USER_ID = 1200000000000000031
    GUILD_ID = 1200000000000000100
    CHANNEL_ID = 1200000000000000200
    OTHER_CHANNEL_ID = 1200000000000000201
    FORUM_ID = 1200000000000000300
    MODERATOR_ROLE_ID = 1200000000000000400
    ARTIST_ROLE_ID = 1200000000000000401
    BOT_ROLE_ID = 1200000000000000402

    def __init__(self, *, token: str = "fake-bot-token", attachment_size_limit: int = 10 * MIB) -> None:
        self.token = token
        self.attachment_size_limit = attachment_size_limit
        self.bot_upload_limit = 10 * MIB
        self.app_permissions = BOT_PERMISSIONS
        self.closed_dms: set[int] = set()  # members who accept no direct message from the bot
        self.hidden_channels: set[int] = set()  # channels the bot cannot see (View Channel denied)
        self.slow_callbacks: dict[int, float] = {}  # member id -> seconds the callbacks of their interactions take
        # Discord's window for the first answer to an interaction (3 s); off unless a test sets it, since a busy
        # machine can take that long to answer the others.
        self.ack_window: float | None = None
        self.slow_downloads: dict[str, float] = {}  # attachment filename -> seconds the CDN takes to serve it
        # What must end before this fake does: the bot processes a test started and, having failed, never stopped.
        self._before_stop: list[Callable[[], Awaitable[None]]] = []
        self.port = 0
        self.requests: list[RecordedRequest] = []
        self.gateway_received: list[JSON] = []
        self.identify: JSON | None = None
        self.messages: dict[int, JSON] = {}
        self.channels: dict[int, JSON] = {}
        self.users: dict[int, JSON] = {}
        self.member_roles: dict[int, list[int]] = {}
        self.roles: dict[int, JSON] = {}
        self.global_commands: list[JSON] = []
        self.guild_commands: dict[int, list[JSON]] = {}
        self._interactions: dict[int, _Interaction] = {}
        self._tokens: dict[str, int] = {}
        self._cdn: dict[int, tuple[bytes, str | None, str, str]] = {}  # id -> data, type, filename, hm
        self._uploads: dict[int, JSON] = {}  # user uploads from add_attachment, auto-resolved by id
        self.forms: dict[str, JSON] = {}  # the modals the bot opened (callback type 9), by custom_id: the last one
        self._faults: list[_Fault] = []
        self._holds: list[Held] = []
        self.webhook_limit: tuple[int, float] | None = None  # (requests, per seconds) per webhook token
        self.rate_limited: list[RecordedRequest] = []  # requests answered 429 by the emulated buckets
        self._windows: dict[str, _Window] = {}
        self._conns: list[_GatewayConn] = []
        self._active: _GatewayConn | None = None
        self._session: _Session | None = None
        self._ready = asyncio.Event()
        self._changed = asyncio.Event()
        self._last_snowflake = 0
        # Make the next message the bot posts, or the next interaction, look this many seconds old (its snowflake),
        # to test Discord's time limits without waiting: the 15-minute token, the 1-hour edit window.
        self.backdate_next_message = 0.0
        self.backdate_next_interaction = 0.0
        self._backdated = 0
        self.guild_locale = "en-US"
        self._runner: web.AppRunner | None = None
        self._seed()

    # ------------------------------------------------------------------ lifecycle

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def cdn_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/cdn"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    async def start(self) -> None:
        app = web.Application(client_max_size=200 * MIB, middlewares=[self._middleware])
        app.router.add_get("/gateway", self._gateway)
        for method, path, handler in self._routes():
            app.router.add_route(method, "/api/v10" + path, _adapt(handler))
        app.router.add_get("/cdn/attachments/{channel}/{id}/{filename}", _adapt(self._cdn_get))
        app.router.add_route("*", "/{tail:.*}", _adapt(self._not_found), name="unknown")
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    def before_stop(self, end: Callable[[], Awaitable[None]]) -> None:
        """Call ``end`` when this fake stops, before it closes (each time it stops; ``end`` must allow that)."""
        self._before_stop.append(end)

    async def stop(self) -> None:
        for end in self._before_stop:
            await end()
        for conn in list(self._conns):
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ ids, users, guild data

    def snowflake(self) -> int:
        """A fresh, strictly increasing snowflake for the current time."""
        candidate = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last_snowflake = max(candidate, self._last_snowflake + 1)
        return self._last_snowflake

    def _snowflake_ago(self, seconds: float) -> int:
        """A unique snowflake whose time is ``seconds`` ago (for backdated messages and interactions)."""
        self._backdated = (self._backdated + 1) & 0x3FFFFF
        return ((int((time.time() - seconds) * 1000) - DISCORD_EPOCH_MS) << 22) | self._backdated

    def _take_backdated(self, attribute: str) -> int | None:
        seconds = getattr(self, attribute)
        if not seconds:
            return None
        setattr(self, attribute, 0.0)
        return self._snowflake_ago(seconds)

    @staticmethod
    def age(snowflake: int) -> float:
        """How long ago a message or interaction was created, from its id."""
        return time.time() - (((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000)

    def _seed(self) -> None:
        self.add_user(self.BOT_USER_ID, "Atelier", bot=True, roles=[self.BOT_ROLE_ID])
        self.add_user(self.OWNER_ID, "owner", roles=[self.MODERATOR_ROLE_ID])
        self.add_user(self.USER_ID, "painter", roles=[self.ARTIST_ROLE_ID])
        self.add_user(self.OTHER_USER_ID, "sculptor", roles=[])
        for rid, name, perms, pos, extra in (
            (self.GUILD_ID, "@everyone", MEMBER_PERMISSIONS, 0, {}),
            (self.ARTIST_ROLE_ID, "Artist", 0, 1, {}),
            (self.MODERATOR_ROLE_ID, "Moderator", MODERATOR_PERMISSIONS, 2, {}),
            (self.BOT_ROLE_ID, "Atelier", BOT_PERMISSIONS, 3, {"tags": {"bot_id": str(self.BOT_USER_ID)}}),
        ):
            self.roles[rid] = {
                "id": str(rid),
                "name": name,
                "permissions": str(perms),
                "position": pos,
                "color": 0,
                "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
                "hoist": False,
                "icon": None,
                "unicode_emoji": None,
                "managed": "tags" in extra,
                "mentionable": False,
                "flags": 0,
                **extra,
            }
        for cid, name, ctype, pos in (
            (self.CHANNEL_ID, "atelier", 0, 0),
            (self.OTHER_CHANNEL_ID, "general", 0, 1),
            (self.FORUM_ID, "gallery", 15, 2),
        ):
            channel: JSON = {
                "id": str(cid),
                "type": ctype,
                "guild_id": str(self.GUILD_ID),
                "name": name,
                "position": pos,
                "parent_id": None,
                "topic": None,
                "nsfw": False,
                "rate_limit_per_user": 0,
                "last_message_id": None,
                "permission_overwrites": [],
                "flags": 0,
                "default_auto_archive_duration": 1440,
            }
            if ctype == 15:
                channel |= {"available_tags": [], "default_reaction_emoji": None, "default_sort_order": None}
                channel |= {"default_forum_layout": 0, "default_thread_rate_limit_per_user": 0}
            self.channels[cid] = channel

    def add_role(self, name: str, *, permissions: int = 0) -> int:
        """A new role in the guild, sent with the guild when the bot connects: add it before the bot starts."""
        rid = self.snowflake()
        self.roles[rid] = {
            **self.roles[self.ARTIST_ROLE_ID],
            "id": str(rid),
            "name": name,
            "permissions": str(permissions),
            "position": len(self.roles),
        }
        return rid

    def add_user(
        self, user_id: int, username: str | None = None, *, bot: bool = False, roles: list[int] | None = None
    ) -> JSON:
        """Register a guild member (used for interactions, mentions and member lookups)."""
        name = username or f"user{user_id % 10000}"
        self.users[user_id] = {
            "id": str(user_id),
            "username": name,
            "global_name": None if bot else name.title(),
            "discriminator": "0",
            "avatar": None,
            "bot": bot,
            "system": False,
            "public_flags": 0,
            "flags": 0,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
            "primary_guild": None,
            "collectibles": None,
        }
        self.member_roles[user_id] = list(roles or [])
        return self.users[user_id]

    def _user(self, user_id: int) -> JSON:
        if user_id not in self.users:
            self.add_user(user_id)
        return self.users[user_id]

    def member(self, user_id: int, *, roles: list[int] | None = None, permissions: int | None = None) -> JSON:
        roles = self.member_roles.get(user_id, []) if roles is None else roles
        data: JSON = {
            "user": self._user(user_id),
            "roles": [str(r) for r in roles],
            "nick": None,
            "avatar": None,
            "banner": None,
            "joined_at": "2024-03-01T12:00:00.000000+00:00",
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "communication_disabled_until": None,
        }
        if permissions is not None:
            data["permissions"] = str(permissions)
        return data

    def permissions_for(self, roles: list[int], user_id: int | None = None) -> int:
        if user_id == self.OWNER_ID:
            return ALL_PERMISSIONS
        perms = int(self.roles[self.GUILD_ID]["permissions"])
        for r in roles:
            if r in self.roles:
                perms |= int(self.roles[r]["permissions"])
        return ALL_PERMISSIONS if perms & ADMINISTRATOR else perms

    def bot_user(self) -> JSON:
        return {**self.users[self.BOT_USER_ID], "verified": True, "mfa_enabled": False, "locale": "en-US"}

    def guild_payload(self, *, gateway: bool = True) -> JSON:
        guild: JSON = {
            "id": str(self.GUILD_ID),
            "name": "Atelier Test Guild",
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.OWNER_ID),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 1,
            "default_message_notifications": 1,
            "explicit_content_filter": 2,
            "roles": list(self.roles.values()),
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": str(self.OTHER_CHANNEL_ID),
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "max_members": 500000,
            "vanity_url_code": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": self.guild_locale,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
        }
        if gateway:
            members = [self.member(uid) for uid in self.users]
            guild |= {
                "unavailable": False,
                "large": False,
                "member_count": len(members),
                "joined_at": "2024-03-01T12:00:00.000000+00:00",
                "channels": [c for c in self.channels.values() if c["type"] in (0, 2, 4, 5, 13, 15, 16)],
                "threads": [c for c in self.channels.values() if c["type"] in (10, 11, 12)],
                "members": [self.member(self.BOT_USER_ID)],
                "voice_states": [],
                "presences": [],
                "stage_instances": [],
                "guild_scheduled_events": [],
                "soundboard_sounds": [],
                "embedded_activities": [],
                "lazy": True,
            }
        return guild

    # ------------------------------------------------------------------ recording and waiting

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_for(self, check: Callable[[], T | None], timeout: float, describe: Callable[[], str]) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = check()
            if found is not None:
                return found
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(describe())
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(remaining, 0.02))

    def describe_requests(self, start: int = 0) -> str:
        lines = [f"  [{r.index}] {r.method} {r.path} -> {r.status}" for r in self.requests[start:]]
        return "\n".join(lines) or "  (none)"

    async def wait_for_request(
        self, predicate: Callable[[RecordedRequest], bool], timeout: float = 10, *, start: int = 0
    ) -> RecordedRequest:
        """First *answered* request with index >= start that matches ``predicate``."""

        def check() -> RecordedRequest | None:
            return next((r for r in self.requests[start:] if r.status and predicate(r)), None)

        return await self._wait_for(
            check,
            timeout,
            lambda: f"no matching request within {timeout}s; recorded since {start}:\n" + self.describe_requests(start),
        )

    async def wait_for_arrival(
        self, predicate: Callable[[RecordedRequest], bool], timeout: float = 10, *, start: int = 0
    ) -> RecordedRequest:
        """First request with index >= start that matches ``predicate``, answered or not (one the fake is
        still serving, such as a slow download, is recorded as it arrives)."""

        def check() -> RecordedRequest | None:
            return next((r for r in self.requests[start:] if predicate(r)), None)

        return await self._wait_for(
            check,
            timeout,
            lambda: f"no matching request within {timeout}s; recorded since {start}:\n" + self.describe_requests(start),
        )

    async def wait_for_gateway(self, op: int, timeout: float = 10, *, start: int = 0) -> JSON:
        """First gateway payload the client sent with opcode ``op`` (index >= start)."""
        return await self._wait_for(
            lambda: next((p for p in self.gateway_received[start:] if p.get("op") == op), None),
            timeout,
            lambda: f"client sent no op {op}; got ops {[p.get('op') for p in self.gateway_received]}",
        )

    async def wait_until_ready(self, timeout: float = 15) -> None:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            raise TimeoutError(
                f"no client IDENTIFYed within {timeout}s; requests:\n{self.describe_requests()}"
            ) from None

    def unexpected_requests(self) -> list[RecordedRequest]:
        """Requests the fake answered with a generic 404 (routes it does not know)."""
        return [r for r in self.requests if r.status == 404 and r.response == {"code": 0, "message": "404: Not Found"}]

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        *,
        times: int = 1,
        only: Callable[[RecordedRequest], bool] | None = None,
    ) -> None:
        """The next ``times`` requests matching ``method`` and ``path_regex`` (re.search on the path), and
        ``only`` when given (e.g. a request that carries files), get this answer instead.  A 429 gets
        Discord's rate-limit body and headers by default; ``DROP`` drops the connection with no answer."""
        if status == 429:
            retry = float((json_body or {}).get("retry_after", 0.05))
            json_body = json_body or {
                "message": "You are being rate limited.",
                "retry_after": retry,
                "global": False,
            }
            headers = {
                "Retry-After": str(max(1, int(retry + 0.999))),
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + retry:.3f}",
                "X-RateLimit-Reset-After": f"{retry:.3f}",
                "X-RateLimit-Bucket": "fakebucket",
                "X-RateLimit-Scope": "user",
                "Via": "1.1 google",
                **(headers or {}),
            }
        if json_body is None:
            json_body = {"code": 0, "message": f"{status}: injected failure"}
        fault = _Fault(method.upper(), re.compile(path_regex), status, json_body, headers or {}, times, only)
        self._faults.append(fault)

    def hold_next(self, method: str, path_regex: str, *, content: str | None = None) -> Held:
        """Keep the next request matching ``method``, ``path_regex`` (and whose JSON ``content`` contains
        ``content``) unanswered until ``held.release`` is set; ``held.arrived`` says it came."""
        held = Held(method.upper(), re.compile(path_regex), content)
        self._holds.append(held)
        return held

    def rate_limit_webhooks(self, limit: int, per: float) -> None:
        """Emulate Discord's per-token webhook bucket: ``limit`` requests per ``per`` seconds on each
        ``/webhooks/{app}/{token}`` (interaction callbacks are exempt, as on Discord)."""
        self.webhook_limit = (limit, per)
        self._windows.clear()

    def _take_slot(self, rec: RecordedRequest) -> _Limited | None:
        """Count a request against its bucket (``None``: the route is not limited)."""
        match = _WEBHOOK_BUCKET.match(rec.path)
        if self.webhook_limit is None or match is None:
            return None
        limit, per = self.webhook_limit
        key = f"{match[1]}:{match[2]}"
        now = rec.at
        window = self._windows.get(key)
        if window is None or now >= window.opened + per:
            window = self._windows[key] = _Window(now)
        # Three decimals, as Discord sends it, rounded up: a client that waits exactly this long is in the next window.
        reset_after = math.ceil((window.opened + per - now) * 1000) / 1000
        refused = window.used >= limit
        if not refused:
            window.used += 1
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(0, limit - window.used)),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": hashlib.sha256(key.encode()).hexdigest()[:32],
            "Via": "1.1 google",
        }
        if refused:
            headers |= {"X-RateLimit-Scope": "user", "Retry-After": str(max(1, int(reset_after + 0.999)))}
        return _Limited(headers, reset_after if refused else None)

    def _take_fault(self, rec: RecordedRequest) -> _Fault | None:
        for fault in self._faults:
            if (
                fault.method in (rec.method, "*")
                and fault.path.search(rec.path)
                and (fault.only is None or fault.only(rec))
            ):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    @web.middleware
    async def _middleware(self, request: web.Request, handler: AiohttpHandler) -> web.StreamResponse:
        if request.path == "/gateway":
            return await handler(request)
        rec = await self._record(request)
        limited = self._take_slot(rec)
        if limited is not None and limited.retry_after is not None:
            self.rate_limited.append(rec)
            body = {"message": "You are being rate limited.", "retry_after": limited.retry_after, "global": False}
            response: web.StreamResponse = json_response(body, 429)
        else:
            try:
                response = await self._answer(request, rec, handler)
            except DiscordError as e:
                response = error(e.status, e.code, e.message, e.errors)
        if limited is not None:
            response.headers.update(limited.headers)
            rec.rate_remaining = int(limited.headers["X-RateLimit-Remaining"])
        rec.status = response.status
        if isinstance(response, web.Response) and response.content_type == "application/json" and response.body:
            rec.response = json.loads(response.body)  # type: ignore[arg-type]  # body is bytes here
        self._notify()
        return response

    async def _answer(self, request: web.Request, rec: RecordedRequest, handler: AiohttpHandler) -> web.StreamResponse:
        held = next((h for h in self._holds if h.matches(rec)), None)
        if held is not None:
            self._holds.remove(held)
            held.arrived.set()
            await held.release.wait()
        fault = self._take_fault(rec)
        if fault is not None and fault.status == DROP:
            # The connection drops with no answer (the client sees it disconnected); what is returned goes nowhere.
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=599)
        if fault is not None:
            return json_response(fault.body, fault.status, fault.headers)
        if request.match_info.route.name == "unknown":
            return await self._not_found(request, rec)
        needs_bot_auth = (
            rec.path.startswith("/api/") and not _WEBHOOK_ROUTE.match(rec.path) and rec.path != "/api/v10/gateway"
        )
        if needs_bot_auth and rec.headers.get("Authorization") != f"Bot {self.token}":
            return error(401, 0, "401: Unauthorized")
        request[_REC] = rec
        return await handler(request)

    async def _record(self, request: web.Request) -> RecordedRequest:
        body = await request.read()
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=CIMultiDict(request.headers),
            body=body,
            json=None,
            index=len(self.requests),
            at=time.monotonic(),
        )
        if request.content_type == "multipart/form-data":
            boundary = _header_param(request.headers["Content-Type"], "boundary") or ""
            for headers, data in _split_multipart(body, boundary):
                disposition = headers.get("content-disposition", "")
                name = _header_param(disposition, "name") or ""
                filename = _header_param(disposition, "filename")
                if name == "payload_json" and filename is None:
                    rec.json = json.loads(data)
                elif filename is not None:
                    rec.files.append(RecordedFile(name, filename, headers.get("content-type"), data))
        elif body and request.content_type == "application/json":
            rec.json = json.loads(body)
        self.requests.append(rec)
        return rec

    async def _not_found(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        return error(404, 0, "404: Not Found")

    # ------------------------------------------------------------------ CDN

    def _host_file(
        self, channel_id: int, data: bytes, filename: str, content_type: str | None, extra: JSON | None = None
    ) -> JSON:
        att_id = self.snowflake()
        now = int(time.time())
        hm = hashlib.sha256(f"{att_id}{filename}{len(data)}".encode()).hexdigest()
        self._cdn[att_id] = (data, content_type, filename, hm)
        query = f"ex={now + 86400:x}&is={now:x}&hm={hm}&"
        url = f"{self.cdn_base}/attachments/{channel_id}/{att_id}/{quote(filename)}?{query}"
        payload: JSON = {
            "id": str(att_id),
            "filename": filename,
            "size": len(data),
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
        }
        dims = _image_size(data)
        if dims is not None:
            payload["width"], payload["height"] = dims
            payload["placeholder"] = "fakeplaceholder"
            payload["placeholder_version"] = 1
        for key in ("description", "title", "duration_secs", "waveform"):
            if extra and extra.get(key) is not None:
                payload[key] = extra[key]
        if extra and extra.get("flags"):
            payload["flags"] = extra["flags"]
        return payload

    def add_attachment(
        self,
        data: bytes,
        filename: str,
        content_type: str | None = "image/png",
        *,
        channel_id: int | None = None,
    ) -> dict[str, Any]:
        """Host bytes on the CDN as if a user uploaded them; returns the attachment payload."""
        payload = self._host_file(channel_id or self.CHANNEL_ID, data, filename, content_type)
        self._uploads[int(payload["id"])] = payload
        return payload

    def cdn_bytes(self, url: str) -> bytes:
        parts = urlsplit(url).path.split("/")
        return self._cdn[int(parts[-2])][0]

    async def _cdn_get(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        try:
            data, content_type, filename, hm = self._cdn[int(request.match_info["id"])]
        except (KeyError, ValueError):
            return web.Response(status=404, text="Not Found")
        if filename != request.match_info["filename"] or request.query.get("hm") != hm:
            return web.Response(status=404, text="This content is no longer available.")
        await asyncio.sleep(self.slow_downloads.get(filename, 0.0))
        return web.Response(body=data, content_type=content_type or "application/octet-stream")

    # ------------------------------------------------------------------ routes

    def _routes(self) -> list[tuple[str, str, Handler]]:
        wh = "/webhooks/{app}/{token}"
        return [
            ("GET", "/users/@me", self._get_me),
            ("GET", "/oauth2/applications/@me", self._get_application),
            ("GET", "/gateway", self._get_gateway),
            ("GET", "/gateway/bot", self._get_gateway),
            ("GET", "/applications/{app}/commands", self._get_commands),
            ("PUT", "/applications/{app}/commands", self._put_commands),
            ("GET", "/applications/{app}/guilds/{guild}/commands", self._get_commands),
            ("PUT", "/applications/{app}/guilds/{guild}/commands", self._put_commands),
            ("POST", "/interactions/{id}/{token}/callback", self._callback),
            ("POST", wh, self._followup),
            ("GET", wh + "/messages/{mid}", self._webhook_message),
            ("PATCH", wh + "/messages/{mid}", self._webhook_message),
            ("DELETE", wh + "/messages/{mid}", self._webhook_message),
            ("GET", "/channels/{cid}", self._get_channel),
            ("GET", "/channels/{cid}/messages", self._list_messages),
            ("POST", "/channels/{cid}/messages", self._create_message),
            ("GET", "/channels/{cid}/messages/{mid}", self._channel_message),
            ("PATCH", "/channels/{cid}/messages/{mid}", self._channel_message),
            ("DELETE", "/channels/{cid}/messages/{mid}", self._channel_message),
            ("POST", "/channels/{cid}/messages/{mid}/threads", self._thread_from_message),
            ("POST", "/channels/{cid}/threads", self._thread_without_message),
            ("PUT", "/channels/{cid}/messages/{mid}/reactions/{emoji}/@me", self._no_content),
            ("DELETE", "/channels/{cid}/messages/{mid}/reactions/{emoji}/@me", self._no_content),
            ("POST", "/channels/{cid}/typing", self._no_content),
            ("POST", "/users/@me/channels", self._create_dm),
            ("GET", "/guilds/{gid}", self._get_guild),
            ("GET", "/guilds/{gid}/channels", self._get_guild_channels),
            ("GET", "/guilds/{gid}/roles", self._get_guild_roles),
            ("GET", "/guilds/{gid}/members/{uid}", self._get_member),
        ]

    async def _no_content(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        self._channel(int(request.match_info["cid"]))
        return web.Response(status=204)

    async def _get_me(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        return json_response(self.bot_user())

    async def _get_application(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        return json_response(
            {
                "id": str(self.APP_ID),
                "name": "Atelier",
                "icon": None,
                "description": "A multi-image AI editor",
                "summary": "",
                "type": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "flags": 0,
                "owner": self.users[self.OWNER_ID],
                "team": None,
                "bot": self.bot_user(),
                "interactions_endpoint_url": None,
                "redirect_uris": [],
                "tags": [],
                "approximate_guild_count": 1,
                "integration_types_config": {"0": {}},
            }
        )

    async def _get_gateway(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        data: JSON = {"url": self.gateway_url}
        if rec.path.endswith("/bot"):
            limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
            data |= {"shards": 1, "session_start_limit": limit}
        return json_response(data)

    # -- application commands

    def _command_list(self, request: web.Request) -> list[JSON]:
        if int(request.match_info["app"]) != self.APP_ID:
            raise DiscordError(403, 20012, "You are not authorized to perform this action on this application")
        if "guild" in request.match_info:
            if int(request.match_info["guild"]) != self.GUILD_ID:
                raise DiscordError(403, 50001, "Missing Access")
            return self.guild_commands.setdefault(self.GUILD_ID, [])
        return self.global_commands

    async def _get_commands(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        return json_response(self._command_list(request))

    async def _put_commands(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        current = self._command_list(request)
        if not isinstance(rec.json, list):
            raise DiscordError(*INVALID_FORM)
        for cmd in rec.json:
            _check_command(cmd)
        old = {(c["name"], c.get("type", 1)): c["id"] for c in current}
        guild = request.match_info.get("guild")
        stored: list[JSON] = []
        for cmd in rec.json:
            ctype = cmd.get("type", 1)
            out: JSON = {
                "description": "",
                "options": [],
                "default_member_permissions": None,
                "nsfw": False,
                **cmd,
                "id": old.get((cmd["name"], ctype)) or str(self.snowflake()),
                "application_id": str(self.APP_ID),
                "type": ctype,
                "version": str(self.snowflake()),
            }
            if guild is not None:
                out["guild_id"] = guild
            stored.append(out)
        current[:] = stored
        return json_response(stored)

    def _command_id(self, name: str, guild_id: int | None) -> tuple[str, str | None]:
        """(command id, guild_id for data) for a synced command; guild commands win, like Discord."""
        if guild_id is not None:
            for cmd in self.guild_commands.get(guild_id, []):
                if cmd["name"] == name:
                    return cmd["id"], str(guild_id)
        for cmd in self.global_commands:
            if cmd["name"] == name:
                return cmd["id"], None
        return str(self.snowflake()), None

    # -- bodies and messages

    @staticmethod
    def _body(rec: RecordedRequest) -> JSON:
        if rec.json is None:
            return {}
        if not isinstance(rec.json, dict):
            raise DiscordError(*INVALID_FORM)
        return rec.json

    def _channel(self, channel_id: int) -> JSON:
        try:
            return self.channels[channel_id]
        except KeyError:
            raise DiscordError(*UNKNOWN_CHANNEL) from None

    def _readable_channel(self, channel_id: int) -> JSON:
        """A channel the bot's own token may use (not one of :attr:`hidden_channels`)."""
        channel = self._channel(channel_id)
        parent = channel.get("parent_id")
        if channel_id in self.hidden_channels or (parent is not None and int(parent) in self.hidden_channels):
            raise DiscordError(*MISSING_ACCESS)
        return channel

    def _guild_id_of(self, channel_id: int) -> int | None:
        channel = self.channels.get(channel_id)
        return int(channel["guild_id"]) if channel and channel.get("guild_id") else None

    @staticmethod
    def _check_size(files: list[RecordedFile], limit: int) -> None:
        if sum(len(f.data) for f in files) > limit:
            raise DiscordError(*TOO_LARGE)

    def _new_attachments(
        self, channel_id: int, body: JSON, files: list[RecordedFile], existing: list[JSON]
    ) -> list[JSON]:
        """Resolve ``attachments`` + ``files[n]`` into the message's attachment list."""
        by_field = {f.field: f for f in files}
        old = {a["id"]: a for a in existing}
        if "attachments" not in body:
            return existing + [self._host_file(channel_id, f.data, f.filename, _guess_type(f)) for f in files]
        result: list[JSON] = []
        used: set[str] = set()
        for meta in body["attachments"] or []:
            key = str(meta.get("id"))
            if key in old:
                kept = dict(old[key])
                if "description" in meta:
                    kept["description"] = meta["description"]
                result.append(kept)
            elif f"files[{key}]" in by_field:
                f = by_field[f"files[{key}]"]
                used.add(f.field)
                name = meta.get("filename") or f.filename
                result.append(self._host_file(channel_id, f.data, name, _guess_type(f, name), meta))
            else:
                raise DiscordError(400, 50035, f"Invalid Form Body (attachments: unknown id {key})")
        for f in files:  # files sent without metadata are still attached
            if f.field not in used:
                result.append(self._host_file(channel_id, f.data, f.filename, _guess_type(f)))
        return result

    def _mentions(self, content: str, allowed: JSON | None) -> JSON:
        parse = None if allowed is None else allowed.get("parse", [])
        user_ids = {int(m) for m in re.findall(r"<@!?(\d+)>", content)}
        role_ids = {int(m) for m in re.findall(r"<@&(\d+)>", content)}
        if parse is not None and allowed is not None:
            explicit_users = {int(u) for u in allowed.get("users", [])}
            explicit_roles = {int(r) for r in allowed.get("roles", [])}
            user_ids = user_ids if "users" in parse else user_ids & explicit_users
            role_ids = role_ids if "roles" in parse else role_ids & explicit_roles
        everyone = ("@everyone" in content or "@here" in content) and (parse is None or "everyone" in parse)
        return {
            "mentions": [self.users[u] for u in sorted(user_ids) if u in self.users],
            "mention_roles": [str(r) for r in sorted(role_ids) if r in self.roles],
            "mention_everyone": everyone,
        }

    def _build_message(
        self,
        channel_id: int,
        body: JSON,
        files: list[RecordedFile],
        *,
        msg_type: int = 0,
        flags: int = 0,
        message_id: int | None = None,
        interaction: _Interaction | None = None,
    ) -> JSON:
        content = body.get("content") or ""
        flags |= (body.get("flags") or 0) & SETTABLE_FLAGS & ~FLAG_EPHEMERAL
        attachments = self._new_attachments(channel_id, body, files, [])
        components = body.get("components") or []
        check_components(flags, content, body.get("embeds") or [], components, attachments)
        msg: JSON = {
            "id": str(message_id or self.snowflake()),
            "channel_id": str(channel_id),
            "type": msg_type,
            "content": content,
            "author": self.users[self.BOT_USER_ID],
            "attachments": attachments,
            "embeds": body.get("embeds") or [],
            "components": resolve_components(flags, components, attachments),
            **self._mentions(mention_text(flags, content, components), body.get("allowed_mentions")),
            "pinned": False,
            "tts": bool(body.get("tts")),
            "timestamp": iso_now(),
            "edited_timestamp": None,
            "flags": flags,
        }
        guild_id = self._guild_id_of(channel_id)
        if guild_id is not None:
            msg["guild_id"] = str(guild_id)
        for key in ("nonce", "sticker_ids", "poll", "enforce_nonce"):
            if body.get(key) is not None:
                msg[key] = body[key]
        if body.get("allowed_mentions") is not None:
            msg["allowed_mentions"] = body["allowed_mentions"]  # as sent, for assertions (not a Discord field)
        ref = body.get("message_reference")
        if ref:
            ref_id = int(ref["message_id"])
            referenced = self.messages.get(ref_id)
            if referenced is None and ref.get("fail_if_not_exists", True):
                raise DiscordError(400, 50035, "Invalid Form Body (message_reference: Unknown message)")
            allowed = body.get("allowed_mentions")
            if referenced is not None and (allowed is None or allowed.get("replied_user") is True):
                author = referenced["author"]
                if author not in msg["mentions"]:
                    msg["mentions"] = [*msg["mentions"], author]
            msg["message_reference"] = {
                "type": ref.get("type", 0),
                "message_id": str(ref_id),
                "channel_id": str(ref.get("channel_id") or channel_id),
                **({"guild_id": str(guild_id)} if guild_id else {}),
            }
            msg["referenced_message"] = referenced
            if msg_type == 0:
                msg["type"] = 19
        if interaction is not None:
            msg["webhook_id"] = str(self.APP_ID)
            msg["application_id"] = str(self.APP_ID)
            msg["interaction_metadata"] = self._interaction_metadata(interaction)
            msg["interaction"] = {
                "id": str(interaction.id),
                "type": interaction.type,
                "name": (interaction.payload.get("data") or {}).get("name", ""),
                "user": self._interaction_user(interaction),
            }
        return msg

    def _interaction_user(self, it: _Interaction) -> JSON:
        user: JSON = it.payload["member"]["user"] if "member" in it.payload else it.payload["user"]
        return user

    def _interaction_metadata(self, it: _Interaction) -> JSON:
        meta: JSON = {
            "id": str(it.id),
            "type": it.type,
            "user": self._interaction_user(it),
            "authorizing_integration_owners": it.payload["authorizing_integration_owners"],
        }
        if it.original_id is not None:
            meta["original_response_message_id"] = str(it.original_id)
        if it.message_id is not None:
            meta["interacted_message_id"] = str(it.message_id)
        if it.type == 2:
            meta["name"] = it.payload["data"]["name"]
            meta["command_type"] = it.payload["data"].get("type", 1)
        return meta

    def _edit_message(self, msg: JSON, body: JSON, files: list[RecordedFile]) -> JSON:
        """Apply an edit, all of it or (refused like Discord, 400 50035) nothing."""
        channel_id = int(msg["channel_id"])
        was_loading = bool(msg["flags"] & FLAG_LOADING)
        content = (body["content"] or "") if "content" in body else msg["content"]
        embeds = (body["embeds"] or []) if "embeds" in body else msg["embeds"]
        flags = msg["flags"]
        if "flags" in body and body["flags"] is not None:
            settable = FLAG_SUPPRESS_EMBEDS | FLAG_IS_COMPONENTS_V2
            flags = (flags & ~settable) | (body["flags"] & settable)
        if msg["flags"] & FLAG_IS_COMPONENTS_V2 and not flags & FLAG_IS_COMPONENTS_V2:
            # https://discord.com/developers/docs/resources/message#edit-message: IS_COMPONENTS_V2 "can only be set".
            raise _invalid("flags: IS_COMPONENTS_V2 cannot be removed from a message")
        adding_v2 = flags & FLAG_IS_COMPONENTS_V2 and not msg["flags"] & FLAG_IS_COMPONENTS_V2
        # Set by an edit: what the message carried that a V2 message may not must be cleared by the same edit
        # (its content and embeds are checked below, as the edit leaves them).
        if adding_v2 and msg["attachments"] and "attachments" not in body:
            raise _invalid("attachments: clear the message's files when setting IS_COMPONENTS_V2")
        attachments = msg["attachments"]
        if "attachments" in body or files:
            attachments = self._new_attachments(channel_id, body, files, msg["attachments"])
        # Components kept from before were resolved when they were sent (their media are links now).
        raw = (body["components"] or []) if "components" in body else msg["components"]
        check_components(flags, content, embeds, raw, attachments)
        msg.update(content=content, embeds=embeds, attachments=attachments, flags=flags)
        msg["components"] = resolve_components(flags, raw, attachments)
        if "allowed_mentions" in body or "content" in body or "components" in body:
            msg |= self._mentions(mention_text(flags, content, raw), body.get("allowed_mentions"))
        msg["flags"] &= ~FLAG_LOADING
        if not was_loading:
            msg["edited_timestamp"] = iso_now()
        return msg

    def channel_messages(self, channel_id: int) -> list[dict[str, Any]]:
        """Messages stored in a channel, oldest first (ephemeral ones included, check ``flags & 64``)."""
        return [m for m in self.messages.values() if int(m["channel_id"]) == channel_id]

    async def _store_message(self, msg: JSON) -> JSON:
        self.messages[int(msg["id"])] = msg
        channel = self.channels.get(int(msg["channel_id"]))
        if channel is not None and not msg["flags"] & FLAG_EPHEMERAL:
            channel["last_message_id"] = msg["id"]
            if channel["type"] in (10, 11, 12):
                channel["message_count"] = channel.get("message_count", 0) + 1
                channel["total_message_sent"] = channel.get("total_message_sent", 0) + 1
            await self._dispatch_message_event("MESSAGE_CREATE", msg)
        return msg

    async def _dispatch_message_event(self, event: str, msg: JSON) -> None:
        if msg["flags"] & FLAG_EPHEMERAL:
            return
        intent = INTENT_GUILD_MESSAGES if msg.get("guild_id") else INTENT_DIRECT_MESSAGES
        data = msg
        if event == "MESSAGE_DELETE":
            data = {"id": msg["id"], "channel_id": msg["channel_id"]}
            if msg.get("guild_id"):
                data["guild_id"] = msg["guild_id"]
        elif msg.get("guild_id"):
            data = {**msg, "member": {k: v for k, v in self.member(self.BOT_USER_ID).items() if k != "user"}}
        await self._dispatch_if(intent, event, data)

    # -- interaction callback

    def _interaction_for(self, interaction_id: int, token: str) -> _Interaction:
        it = self._interactions.get(interaction_id)
        if it is None or it.token != token or it.expired or self.age(it.id) > TOKEN_SECONDS:
            raise DiscordError(*UNKNOWN_INTERACTION)
        return it

    async def _callback(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        it = self._interaction_for(int(request.match_info["id"]), request.match_info["token"])
        if not it.acked and self.ack_window is not None and self.age(it.id) > self.ack_window:
            raise DiscordError(*UNKNOWN_INTERACTION)  # not answered in time: Discord has forgotten it
        member = it.payload.get("member") or {}
        await asyncio.sleep(self.slow_callbacks.get(int((member.get("user") or it.payload.get("user"))["id"]), 0.0))
        if it.acked:
            raise DiscordError(*ALREADY_ACKED)
        body = self._body(rec)
        cb_type = body.get("type")
        data: JSON = body.get("data") or {}
        allowed = {1: {1}, 2: {4, 5, 9}, 3: {4, 5, 6, 7, 9}, 4: {8}, 5: {4, 5, 6, 7}}[it.type]
        if cb_type not in allowed or (cb_type in (6, 7) and it.message_id is None):
            raise DiscordError(400, 50035, f"Invalid Form Body (type {cb_type} for interaction type {it.type})")
        if cb_type == 9:
            check_modal(data)
            self.forms[str(data["custom_id"])] = data
        self._check_size(rec.files, self.attachment_size_limit)
        message: JSON | None = None
        if cb_type == 4:
            flags = (data.get("flags") or 0) & SETTABLE_FLAGS
            message = self._build_message(it.channel_id, data, rec.files, msg_type=self._reply_type(it), interaction=it)
            message["flags"] = flags
            it.original_id = int(message["id"])
            await self._store_message(message)
        elif cb_type == 5:
            flags = FLAG_LOADING | ((data.get("flags") or 0) & FLAG_EPHEMERAL)
            message = self._build_message(it.channel_id, {}, [], msg_type=self._reply_type(it), interaction=it)
            message["flags"] = flags
            it.original_id = int(message["id"])
            await self._store_message(message)
        elif cb_type in (6, 7):
            assert it.message_id is not None
            it.original_id = it.message_id
            if cb_type == 7:
                message = self._message(it.message_id)
                self._edit_message(message, data, rec.files)
                await self._dispatch_message_event("MESSAGE_UPDATE", message)
        it.acked = True
        it.callback_type = cb_type
        it.callback_data = data
        if rec.query.get("with_response", "").lower() not in ("1", "true"):
            return web.Response(status=204)
        flags = message["flags"] if message else 0
        info: JSON = {
            "id": str(it.id),
            "type": it.type,
            "response_message_loading": cb_type == 5,
            "response_message_ephemeral": bool(flags & FLAG_EPHEMERAL),
        }
        if it.original_id is not None:
            info["response_message_id"] = str(it.original_id)
        resource: JSON = {"type": cb_type}
        if message is not None:
            resource["message"] = message
        return json_response({"interaction": info, "resource": resource})

    @staticmethod
    def _reply_type(it: _Interaction) -> int:
        if it.type == 2:
            return 20 if it.payload["data"].get("type", 1) == 1 else 23
        return 0

    # -- interaction webhooks

    def _interaction_by_token(self, request: web.Request) -> _Interaction:
        iid = self._tokens.get(request.match_info["token"])
        it = self._interactions.get(iid) if iid is not None else None
        if it is None or it.expired or self.age(it.id) > TOKEN_SECONDS:
            raise DiscordError(*INVALID_WEBHOOK_TOKEN)
        if request.match_info["app"] != str(self.APP_ID):
            raise DiscordError(*UNKNOWN_WEBHOOK)
        return it

    def _message(self, message_id: int) -> JSON:
        try:
            return self.messages[message_id]
        except KeyError:
            raise DiscordError(*UNKNOWN_MESSAGE) from None

    async def _followup(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        it = self._interaction_by_token(request)
        if not it.acked:
            raise DiscordError(*UNKNOWN_WEBHOOK)
        self._check_size(rec.files, self.attachment_size_limit)
        body = self._body(rec)
        original = self.messages.get(it.original_id or 0)
        if it.callback_type == 5 and original is not None and original["flags"] & FLAG_LOADING:
            # Discord: the first follow-up after a "thinking" defer replaces the loading message.
            msg = self._edit_message(original, body, rec.files)
            await self._dispatch_message_event("MESSAGE_UPDATE", msg)
        else:
            msg = self._build_message(it.channel_id, body, rec.files, interaction=it)
            msg["flags"] |= (body.get("flags") or 0) & FLAG_EPHEMERAL
            it.followup_ids.append(int(msg["id"]))
            await self._store_message(msg)
        if rec.query.get("wait", "").lower() not in ("1", "true"):
            return web.Response(status=204)
        return json_response(msg)

    async def _webhook_message(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        it = self._interaction_by_token(request)
        mid = request.match_info["mid"]
        if mid == "@original":
            if it.original_id is None:
                raise DiscordError(*UNKNOWN_MESSAGE)
            message_id = it.original_id
        else:
            message_id = int(mid)
            if message_id != it.original_id and message_id not in it.followup_ids:
                raise DiscordError(*UNKNOWN_MESSAGE)
        msg = self._message(message_id)
        if rec.method == "GET":
            return json_response(msg)
        if rec.method == "DELETE":
            del self.messages[message_id]
            await self._dispatch_message_event("MESSAGE_DELETE", msg)
            return web.Response(status=204)
        self._check_size(rec.files, self.attachment_size_limit)
        self._edit_message(msg, self._body(rec), rec.files)
        await self._dispatch_message_event("MESSAGE_UPDATE", msg)
        return json_response(msg)

    # -- channels (bot token)

    async def _get_channel(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        return json_response(self._channel(int(request.match_info["cid"])))

    def _visible_message(self, channel_id: int, message_id: int) -> JSON:
        msg = self._message(message_id)
        if int(msg["channel_id"]) != channel_id or msg["flags"] & FLAG_EPHEMERAL:
            raise DiscordError(*UNKNOWN_MESSAGE)
        return msg

    async def _list_messages(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        channel_id = int(request.match_info["cid"])
        self._readable_channel(channel_id)
        limit = min(int(rec.query.get("limit", 50)), 100)
        msgs = [m for m in self.channel_messages(channel_id) if not m["flags"] & FLAG_EPHEMERAL]
        if "before" in rec.query:
            msgs = [m for m in msgs if int(m["id"]) < int(rec.query["before"])]
        if "after" in rec.query:
            msgs = [m for m in msgs if int(m["id"]) > int(rec.query["after"])][:limit]
        return json_response(list(reversed(msgs))[:limit])

    async def _create_message(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        channel_id = int(request.match_info["cid"])
        channel = self._readable_channel(channel_id)
        if channel["type"] == 1 and int(channel["recipients"][0]["id"]) in self.closed_dms:
            raise DiscordError(*CANNOT_DM)
        if channel["type"] in (4, 15, 16):
            raise DiscordError(400, 50008, "Cannot send messages in a non-text channel")
        self._check_size(rec.files, self.bot_upload_limit)
        body = self._body(rec)
        if not (body.get("content") or body.get("embeds") or body.get("components") or rec.files):
            raise DiscordError(400, 50006, "Cannot send an empty message")
        backdated = self._take_backdated("backdate_next_message")
        msg = self._build_message(channel_id, body, rec.files, message_id=backdated)
        return json_response(await self._store_message(msg))

    async def _channel_message(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        channel_id, message_id = int(request.match_info["cid"]), int(request.match_info["mid"])
        self._readable_channel(channel_id)
        msg = self._visible_message(channel_id, message_id)
        if rec.method == "GET":
            return json_response(msg)
        if rec.method == "DELETE":
            del self.messages[message_id]
            await self._dispatch_message_event("MESSAGE_DELETE", msg)
            return web.Response(status=204)
        if msg["author"]["id"] != str(self.BOT_USER_ID):
            raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
        if self.age(message_id) > OLD_MESSAGE_SECONDS:
            raise DiscordError(*OLD_MESSAGE_EDITS)
        self._check_size(rec.files, self.bot_upload_limit)
        self._edit_message(msg, self._body(rec), rec.files)
        await self._dispatch_message_event("MESSAGE_UPDATE", msg)
        return json_response(msg)

    # -- threads

    def _new_thread(self, thread_id: int, parent_id: int, body: JSON, thread_type: int = 11) -> JSON:
        name = body.get("name")
        if not name or len(name) > 100:
            raise DiscordError(400, 50035, "Invalid Form Body (name)")
        duration = body.get("auto_archive_duration") or self.channels[parent_id].get(
            "default_auto_archive_duration", 1440
        )
        thread: JSON = {
            "id": str(thread_id),
            "type": thread_type,
            "guild_id": str(self.GUILD_ID),
            "parent_id": str(parent_id),
            "owner_id": str(self.BOT_USER_ID),
            "name": name,
            "last_message_id": None,
            "rate_limit_per_user": body.get("rate_limit_per_user") or 0,
            "flags": 0,
            "message_count": 0,
            "member_count": 1,
            "total_message_sent": 0,
            "applied_tags": body.get("applied_tags") or [],
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": duration,
                "archive_timestamp": iso_now(),
                "locked": False,
                "create_timestamp": iso_now(),
                **({"invitable": body.get("invitable", True)} if thread_type == 12 else {}),
            },
            "member": {
                "id": str(thread_id),
                "user_id": str(self.BOT_USER_ID),
                "join_timestamp": iso_now(),
                "flags": 0,
            },
        }
        self.channels[thread_id] = thread
        return thread

    async def _announce_thread(self, thread: JSON) -> None:
        await self._dispatch_if(INTENT_GUILDS, "THREAD_CREATE", {**thread, "newly_created": True})

    async def _thread_from_message(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        channel_id, message_id = int(request.match_info["cid"]), int(request.match_info["mid"])
        channel = self._channel(channel_id)
        if channel["type"] not in (0, 5):
            raise DiscordError(400, 50024, "Cannot execute action on this channel type")
        msg = self._visible_message(channel_id, message_id)
        if message_id in self.channels or msg.get("thread"):
            raise DiscordError(400, 160004, "A thread has already been created for this message")
        thread = self._new_thread(message_id, channel_id, self._body(rec))
        msg["thread"] = thread
        msg["flags"] |= FLAG_HAS_THREAD
        await self._announce_thread(thread)
        return json_response(thread)

    async def _thread_without_message(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        channel_id = int(request.match_info["cid"])
        channel = self._channel(channel_id)
        body = self._body(rec)
        if channel["type"] in (15, 16):
            starter = body.get("message")
            if not isinstance(starter, dict):
                raise DiscordError(400, 50035, "Invalid Form Body (message)")
            self._check_size(rec.files, self.bot_upload_limit)
            thread_id = self.snowflake()
            thread = self._new_thread(thread_id, channel_id, body)
            msg = self._build_message(thread_id, starter, rec.files, message_id=thread_id)
            await self._store_message(msg)
            channel["last_message_id"] = str(thread_id)
            await self._announce_thread(thread)
            return json_response({**thread, "message": msg})
        if channel["type"] not in (0, 5):
            raise DiscordError(400, 50024, "Cannot execute action on this channel type")
        thread = self._new_thread(self.snowflake(), channel_id, body, body.get("type") or 12)
        await self._announce_thread(thread)
        return json_response(thread)

    async def _create_dm(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        user_id = int(self._body(rec).get("recipient_id", 0))
        return json_response(self.dm_channel(user_id))

    def dm_channel(self, user_id: int) -> JSON:
        for channel in self.channels.values():
            if channel["type"] == 1 and channel["recipients"][0]["id"] == str(user_id):
                return channel
        channel_id = self.snowflake()
        self.channels[channel_id] = {
            "id": str(channel_id),
            "type": 1,
            "last_message_id": None,
            "flags": 0,
            "recipients": [self._user(user_id)],
        }
        return self.channels[channel_id]

    # -- guild

    def _check_guild(self, request: web.Request) -> None:
        if int(request.match_info["gid"]) != self.GUILD_ID:
            raise DiscordError(404, 10004, "Unknown Guild")

    async def _get_guild(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        self._check_guild(request)
        return json_response(self.guild_payload(gateway=False))

    async def _get_guild_channels(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        self._check_guild(request)
        return json_response([c for c in self.channels.values() if c["type"] not in (1, 10, 11, 12)])

    async def _get_guild_roles(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        self._check_guild(request)
        return json_response(list(self.roles.values()))

    async def _get_member(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        self._check_guild(request)
        user_id = int(request.match_info["uid"])
        if user_id not in self.users:
            raise DiscordError(404, 10007, "Unknown Member")
        return json_response(self.member(user_id))

    # ------------------------------------------------------------------ gateway

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        conn = _GatewayConn(ws)
        self._conns.append(conn)
        try:
            await self._send(conn, {"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None})
            async for frame in ws:
                if frame.type != WSMsgType.TEXT:
                    continue
                payload = json.loads(frame.data)
                self.gateway_received.append(payload)
                self._notify()
                await self._on_gateway_payload(conn, payload)
        finally:
            self._conns.remove(conn)
            if self._active is conn:
                self._active = None
                self._ready.clear()
        return ws

    async def _on_gateway_payload(self, conn: _GatewayConn, payload: JSON) -> None:
        op, data = payload.get("op"), payload.get("d") or {}
        if op == 1:
            await self._send(conn, {"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:
            await self._on_identify(conn, data)
        elif op == 6:
            await self._on_resume(conn, data)
        elif op == 8:
            wanted = {int(u) for u in data.get("user_ids") or []} or set(self.users)
            chunk = {
                "guild_id": str(self.GUILD_ID),
                "members": [self.member(u) for u in self.users if u in wanted],
                "chunk_index": 0,
                "chunk_count": 1,
                "not_found": [],
                "nonce": data.get("nonce"),
            }
            await self._dispatch_raw("GUILD_MEMBERS_CHUNK", chunk)

    async def _on_identify(self, conn: _GatewayConn, data: JSON) -> None:
        if data.get("token") not in (self.token, f"Bot {self.token}"):
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        self.identify = data
        self._session = _Session(secrets.token_hex(16), int(data.get("intents", 0)))
        self._active = conn
        ready = {
            "v": 10,
            "user": self.bot_user(),
            "guilds": [{"id": str(self.GUILD_ID), "unavailable": True}],
            "session_id": self._session.id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "shard": [0, 1],
            "application": {"id": str(self.APP_ID), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["us-east"],
            "user_settings": {},
            "auth_session_id_hash": "",
            "_trace": ["fake-discord"],
        }
        await self._dispatch_raw("READY", ready)
        if self._session.intents & INTENT_GUILDS:
            await self._dispatch_raw("GUILD_CREATE", self.guild_payload())
        self._ready.set()

    async def _on_resume(self, conn: _GatewayConn, data: JSON) -> None:
        session = self._session
        if (
            session is None
            or not session.resumable
            or data.get("session_id") != session.id
            or data.get("token") not in (self.token, f"Bot {self.token}")
        ):
            await self._send(conn, {"op": 9, "d": False, "s": None, "t": None})
            return
        self._active = conn
        last_seen = int(data.get("seq") or 0)
        for payload in session.sent:  # replay what the client missed, then RESUMED
            if payload["s"] > last_seen:
                await self._send(conn, payload)
        await self._dispatch_raw("RESUMED", {"_trace": ["fake-discord"]})
        self._ready.set()

    async def _send(self, conn: _GatewayConn, payload: JSON) -> None:
        async with conn.lock:
            if not conn.ws.closed:
                await conn.ws.send_str(json.dumps(payload))

    async def _dispatch_raw(self, event: str, data: JSON) -> None:
        """Sequence a dispatch in the current session; sent now if connected, else replayed on RESUME."""
        session = self._session
        if session is None:
            raise RuntimeError("no gateway session; await wait_until_ready() first")
        session.seq += 1
        payload = {"op": 0, "t": event, "s": session.seq, "d": data}
        session.sent.append(payload)
        if self._active is not None:
            await self._send(self._active, payload)

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a raw DISPATCH (next ``s``) to the identified client."""
        await self._dispatch_raw(event, data)

    async def _dispatch_if(self, intent: int, event: str, data: JSON) -> None:
        if self._session is not None and self._session.intents & intent:
            await self._dispatch_raw(event, data)

    async def drop_connection(self, *, resumable: bool = True, code: int = 4000) -> None:
        """Close the gateway server-side.  discord.py reconnects and RESUMEs; with ``resumable=False`` it
        gets INVALID_SESSION and re-IDENTIFYs (discord.py waits 5 s before any non-initial IDENTIFY)."""
        self._ready.clear()
        if self._session is not None:
            self._session.resumable = resumable
        conn, self._active = self._active, None
        if conn is not None:
            await conn.ws.close(code=code, message=b"fake drop")

    # ------------------------------------------------------------------ interaction injection

    async def _inject(
        self,
        itype: int,
        data: JSON,
        *,
        user_id: int | None = None,
        channel_id: int | None = None,
        guild_id: int | _Unset | None = UNSET,
        permissions: int | None = None,
        roles: list[int] | None = None,
        locale: str = "en-US",
        message: JSON | None = None,
    ) -> InteractionHandle:
        user_id = user_id or self.USER_ID
        gid = self.GUILD_ID if guild_id is UNSET else guild_id
        iid = self._take_backdated("backdate_next_interaction") or self.snowflake()
        token = "aW50ZXJhY3Rpb24" + secrets.token_urlsafe(120)
        payload: JSON = {
            "id": str(iid),
            "application_id": str(self.APP_ID),
            "type": itype,
            "data": data,
            "token": token,
            "version": 1,
            "locale": locale,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "attachment_size_limit": self.attachment_size_limit,
            "app_permissions": str(self.app_permissions),
        }
        if gid is not None:
            cid = channel_id or self.CHANNEL_ID
            if cid in self.hidden_channels:
                payload["app_permissions"] = str(self.app_permissions & ~(VIEW_CHANNEL | READ_MESSAGE_HISTORY))
            role_ids = self.member_roles.get(user_id, []) if roles is None else roles
            perms = self.permissions_for(role_ids, user_id) if permissions is None else permissions
            channel = {**self._channel(cid), "permissions": str(perms)}
            payload |= {
                "guild_id": str(gid),
                "guild": {"id": str(gid), "locale": self.guild_locale, "features": []},
                "guild_locale": self.guild_locale,
                "channel_id": str(cid),
                "channel": channel,
                "member": self.member(user_id, roles=role_ids, permissions=perms),
                "authorizing_integration_owners": {"0": str(gid)},
                "context": 0,
            }
        else:
            dm = self.dm_channel(user_id)
            cid = int(dm["id"])
            payload |= {
                "channel_id": str(cid),
                "channel": dm,
                "user": self._user(user_id),
                "authorizing_integration_owners": {"0": "0"},
                "context": 1,
                "app_permissions": str(MEMBER_PERMISSIONS & ~USE_APPLICATION_COMMANDS),
            }
        if message is not None:
            payload["message"] = message
        self._interactions[iid] = _Interaction(
            iid, token, itype, payload, cid, int(message["id"]) if message is not None else None
        )
        self._tokens[token] = iid
        await self.dispatch("INTERACTION_CREATE", payload)
        return InteractionHandle(iid, token, payload, self)

    def _resolved(self, options: list[JSON], attachments: list[JSON]) -> JSON:
        resolved: JSON = {}
        for att in attachments:
            resolved.setdefault("attachments", {})[str(att["id"])] = att

        def walk(opts: list[JSON]) -> None:
            for opt in opts:
                walk(opt.get("options") or [])
                value = opt.get("value")
                if opt.get("focused") or value is None:
                    continue
                key = str(value)
                if opt["type"] in (6, 9) and int(value) in self.users:
                    resolved.setdefault("users", {})[key] = self.users[int(value)]
                    member = {k: v for k, v in self.member(int(value)).items() if k != "user"}
                    resolved.setdefault("members", {})[key] = member
                if opt["type"] in (8, 9) and int(value) in self.roles:
                    resolved.setdefault("roles", {})[key] = self.roles[int(value)]
                if opt["type"] == 7 and int(value) in self.channels:
                    ch = self.channels[int(value)]
                    resolved.setdefault("channels", {})[key] = {**ch, "permissions": str(MEMBER_PERMISSIONS)}
                if opt["type"] == 11 and int(value) in self._uploads:
                    resolved.setdefault("attachments", {}).setdefault(key, self._uploads[int(value)])

        walk(options)
        return resolved

    async def slash_command(
        self,
        name: str,
        options: list[dict[str, Any]] | None = None,
        *,
        resolved_attachments: list[dict[str, Any]] | None = None,
        user_id: int | None = None,
        channel_id: int | None = None,
        guild_id: int | _Unset | None = UNSET,
        permissions: int | None = None,
        roles: list[int] | None = None,
        locale: str = "en-US",
    ) -> InteractionHandle:
        """Dispatch a CHAT_INPUT command.  ``permissions`` defaults to what ``roles`` (default: the
        user's registered roles) grant; ``guild_id=None`` simulates a DM with the bot."""
        return await self._inject(
            2,
            self._command_data(name, options or [], resolved_attachments or [], guild_id),
            user_id=user_id,
            channel_id=channel_id,
            guild_id=guild_id,
            permissions=permissions,
            roles=roles,
            locale=locale,
        )

    def _command_data(self, name: str, options: list[JSON], attachments: list[JSON], guild_id: Any) -> JSON:
        gid = self.GUILD_ID if guild_id is UNSET else guild_id
        cmd_id, cmd_guild = self._command_id(name, gid)
        data: JSON = {"id": cmd_id, "name": name, "type": 1, "options": options}
        resolved = self._resolved(options, attachments)
        if resolved:
            data["resolved"] = resolved
        if cmd_guild is not None:
            data["guild_id"] = cmd_guild
        return data

    def image_embed(self, data: bytes, filename: str = "linked.png", content_type: str = "image/png") -> JSON:
        """The embed Discord makes for a pasted image link: type ``image``, the picture as its thumbnail,
        ``url`` the outside address and ``proxy_url`` Discord's media proxy (here the fake CDN)."""
        hosted = self._host_file(self.CHANNEL_ID, data, filename, content_type)
        thumbnail: JSON = {"url": f"https://images.example.com/{quote(filename)}", "proxy_url": hosted["url"]}
        if "width" in hosted:
            thumbnail |= {"width": hosted["width"], "height": hosted["height"]}
        return {"type": "image", "url": thumbnail["url"], "thumbnail": thumbnail}

    async def add_message(
        self,
        content: str = "",
        *,
        files: list[tuple[bytes, str, str | None]] | None = None,
        embeds: list[JSON] | None = None,
        channel_id: int | None = None,
        author_id: int | None = None,
    ) -> JSON:
        """A member's message in a channel: ``files`` are ``(bytes, filename, content_type)`` hosted on the
        CDN as its attachments, in order; dispatched as MESSAGE_CREATE like any message."""
        cid = channel_id or self.CHANNEL_ID
        msg = self._build_message(cid, {"content": content, "embeds": embeds or []}, [])
        msg["author"] = self._user(author_id or self.USER_ID)
        msg["attachments"] = [self._host_file(cid, data, name, ctype) for data, name, ctype in files or []]
        return await self._store_message(msg)

    async def message_command(
        self,
        name: str,
        message: dict[str, Any],
        *,
        user_id: int | None = None,
        guild_id: int | _Unset | None = UNSET,
        permissions: int | None = None,
        roles: list[int] | None = None,
        locale: str = "en-US",
    ) -> InteractionHandle:
        """Dispatch a message context-menu command (Apps → ``name``) on a stored message."""
        msg = self._current(message)
        gid = self.GUILD_ID if guild_id is UNSET else guild_id
        cmd_id, cmd_guild = self._command_id(name, gid)
        data: JSON = {
            "id": cmd_id,
            "name": name,
            "type": 3,
            "target_id": msg["id"],
            "resolved": {"messages": {msg["id"]: msg}},
        }
        if cmd_guild is not None:
            data["guild_id"] = cmd_guild
        return await self._inject(
            2,
            data,
            user_id=user_id,
            channel_id=int(msg["channel_id"]),
            guild_id=guild_id,
            permissions=permissions,
            roles=roles,
            locale=locale,
        )

    async def autocomplete(
        self,
        name: str,
        options: list[dict[str, Any]],
        *,
        user_id: int | None = None,
        channel_id: int | None = None,
        guild_id: int | _Unset | None = UNSET,
        permissions: int | None = None,
        roles: list[int] | None = None,
        locale: str = "en-US",
    ) -> InteractionHandle:
        """Dispatch an APPLICATION_COMMAND_AUTOCOMPLETE; one option must have ``"focused": True``."""
        return await self._inject(
            4,
            self._command_data(name, options, [], guild_id),
            user_id=user_id,
            channel_id=channel_id,
            guild_id=guild_id,
            permissions=permissions,
            roles=roles,
            locale=locale,
        )

    def _current(self, message: JSON) -> JSON:
        return self.messages.get(int(message["id"]), message)

    async def click_button(
        self,
        message: dict[str, Any],
        custom_id: str,
        *,
        component_type: int = 2,
        values: list[str] | None = None,
        user_id: int | None = None,
        guild_id: int | _Unset | None = UNSET,
        permissions: int | None = None,
        roles: list[int] | None = None,
        locale: str = "en-US",
    ) -> InteractionHandle:
        """Dispatch a MESSAGE_COMPONENT interaction on a stored message (use ``component_type=3`` and
        ``values`` for a string select)."""
        msg = self._current(message)
        data: JSON = {"custom_id": custom_id, "component_type": component_type}
        if values is not None:
            data["values"] = values
        return await self._inject(
            3,
            data,
            user_id=user_id,
            channel_id=int(msg["channel_id"]),
            guild_id=guild_id if guild_id is not UNSET or msg.get("guild_id") else None,
            permissions=permissions,
            roles=roles,
            locale=locale,
            message=msg,
        )

    async def submit_modal(
        self,
        custom_id: str,
        values: Mapping[str, ModalAnswer],
        *,
        message: dict[str, Any] | None = None,
        user_id: int | None = None,
        channel_id: int | None = None,
        guild_id: int | _Unset | None = UNSET,
        permissions: int | None = None,
        roles: list[int] | None = None,
        locale: str = "en-US",
        tampered: bool = False,
    ) -> InteractionHandle:
        """Dispatch a MODAL_SUBMIT, as Discord sends one, with the member's ``values`` by field custom_id.

        A value is a string for a text input, a list of option values for a select or a checkbox group (one
        value alone is taken as a list of it),
        a bool for a checkbox, and for a file upload a list of attachment payloads from :meth:`add_attachment`
        (their ids are sent, and the payloads resolved in ``data.resolved.attachments``).

        When the bot opened a form with this custom_id (:attr:`forms`), the submission follows it: every field
        in the form's order, typed as the form says, and a field the member left alone sent as it was shown
        (a select's or checkbox group's default options, a checkbox's default, no text, no file). A value the
        form could not take (a field it lacks, an option it does not offer, more files than it allows) is a
        mistake in the test, unless ``tampered`` says the test means to send what only a tampered client
        could, to prove the bot checks it too. Without such a form, one Label per ``values`` item, typed by
        its value.
        """
        counter = itertools.count(1)
        resolved: dict[str, JSON] = {}
        form = self.forms.get(custom_id)
        if form is not None:
            components = _answer_form(form, values, counter, resolved, strict=not tampered)
        else:
            components = []
            for key, value in values.items():
                label_id = next(counter)
                inner = _answer(_guess_component(key, value), value, counter, resolved, strict=False)
                components.append({"type": 18, "id": label_id, "component": inner})
        data: JSON = {"custom_id": custom_id, "components": components}
        if resolved:
            data["resolved"] = {"attachments": resolved}
        msg = self._current(message) if message is not None else None
        if msg is not None:
            channel_id = int(msg["channel_id"])
        return await self._inject(
            5,
            data,
            user_id=user_id,
            channel_id=channel_id,
            guild_id=guild_id,
            permissions=permissions,
            roles=roles,
            locale=locale,
            message=msg,
        )

    def expire_interaction(self, token: str) -> None:
        """Simulate the 15-minute token lifetime running out (or the 3 s ack window passing)."""
        self._interactions[self._tokens[token]].expired = True

    async def wait_for_callback(self, handle: InteractionHandle, timeout: float = 10) -> RecordedRequest:
        suffix = f"/interactions/{handle.id}/{handle.token}/callback"
        return await self.wait_for_request(lambda r: r.path.endswith(suffix), timeout)

    def original_message(self, handle: InteractionHandle) -> dict[str, Any] | None:
        it = self._interactions[handle.id]
        return self.messages.get(it.original_id) if it.original_id is not None else None


# ---------------------------------------------------------------------- Components V2
# https://discord.com/developers/docs/components/reference: with IS_COMPONENTS_V2, "the content and embeds fields
# will no longer work", "messages allow up to 40 total components", a media gallery holds 1 to 10 items, and
# media are "attachment://<filename>" of the message's own files or URLs; 4,000 characters of text in all.

V2_COMPONENTS_MAX = 40
V2_TEXT_MAX = 4000
GALLERY_ITEMS_MAX = 10
ACTION_ROW_MAX = 5
_V2_ONLY = {9, 10, 11, 12, 13, 14, 17}  # section, text, thumbnail, gallery, file, separator, container
_MEDIA_DONE = 2  # MediaItemLoadingState.loaded


def _invalid(why: str) -> DiscordError:
    return DiscordError(INVALID_FORM[0], INVALID_FORM[1], f"{INVALID_FORM[2]} ({why})")


def walk_components(components: list[JSON]) -> list[JSON]:
    """Every component, nested ones included (a section's accessory too), in order."""
    found: list[JSON] = []
    for component in components:
        found.append(component)
        children = list(component.get("components") or [])
        if isinstance(component.get("accessory"), dict):
            children.append(component["accessory"])
        found += walk_components(children)
    return found


def _media_of(component: JSON) -> list[JSON | None]:
    kind = component.get("type")
    if kind == 11:
        return [component.get("media")]
    if kind == 13:
        return [component.get("file")]
    if kind == 12:
        return [item.get("media") if isinstance(item, dict) else None for item in component.get("items") or []]
    return []


def check_components(
    flags: int, content: str, embeds: list[JSON], components: list[JSON], attachments: list[JSON]
) -> None:
    """Refuse, like Discord (400, 50035), a message that breaks the rules of its kind of components."""
    for row in walk_components(components):
        # "An Action Row can contain up to 5 buttons, or a single select component" (components reference).
        if row.get("type") == 1 and not 1 <= len(row.get("components") or []) <= ACTION_ROW_MAX:
            raise _invalid(f"components: an action row holds 1 to {ACTION_ROW_MAX} buttons")
    if not flags & FLAG_IS_COMPONENTS_V2:
        if any(component.get("type") != 1 for component in components):
            raise _invalid("components: layout and content components need the IS_COMPONENTS_V2 flag")
        return
    if content:
        raise _invalid("content: cannot be used with the IS_COMPONENTS_V2 flag")
    if embeds:
        raise _invalid("embeds: cannot be used with the IS_COMPONENTS_V2 flag")
    every = walk_components(components)
    if len(every) > V2_COMPONENTS_MAX:
        raise _invalid(f"components: {len(every)} components, at most {V2_COMPONENTS_MAX}")
    if sum(len(c.get("content") or "") for c in every if c.get("type") == 10) > V2_TEXT_MAX:
        raise _invalid(f"components: more than {V2_TEXT_MAX} characters of text")
    names = {str(a["filename"]) for a in attachments}
    for component in every:
        if component.get("type") == 12 and not 1 <= len(component.get("items") or []) <= GALLERY_ITEMS_MAX:
            raise _invalid(f"components: a media gallery holds 1 to {GALLERY_ITEMS_MAX} items")
        for media in _media_of(component):
            url = str((media or {}).get("url") or "")
            if url.startswith("attachment://"):
                if url.removeprefix("attachment://") not in names:
                    raise _invalid(f"components: {url} is not a file of this message")
            elif component.get("type") == 13 or urlsplit(url).scheme not in ("http", "https"):
                raise _invalid(f"components: media must be an attachment:// of this message or a URL, not {url!r}")


def resolve_components(flags: int, components: list[JSON], attachments: list[JSON]) -> list[JSON]:
    """The components as Discord returns them: each with an ``id``, and media pointing at the message's own
    files resolved to their CDN links (V2 messages)."""
    if not flags & FLAG_IS_COMPONENTS_V2:
        return components
    resolved: list[JSON] = json.loads(json.dumps(components))
    by_name = {str(a["filename"]): a for a in attachments}
    every = walk_components(resolved)
    taken = {int(c["id"]) for c in every if isinstance(c.get("id"), int)}
    next_id = 1
    for component in every:
        if not isinstance(component.get("id"), int):
            while next_id in taken:
                next_id += 1
            component["id"] = next_id
            taken.add(next_id)
        for media in _media_of(component):
            attachment = by_name.get(str((media or {}).get("url") or "").removeprefix("attachment://"))
            if media is None or attachment is None:
                continue
            media.update(
                url=attachment["url"],
                proxy_url=attachment["proxy_url"],
                content_type=attachment.get("content_type"),
                attachment_id=attachment["id"],
                loading_state=_MEDIA_DONE,
                flags=0,
            )
            if "width" in attachment:
                media.update(width=attachment["width"], height=attachment["height"])
    return resolved


def mention_text(flags: int, content: str, components: list[JSON]) -> str:
    """Where a message's mentions are read from: its content, or a V2 message's text displays."""
    if not flags & FLAG_IS_COMPONENTS_V2:
        return content
    return "\n".join(str(c.get("content") or "") for c in walk_components(components) if c.get("type") == 10)


# ---------------------------------------------------------------------- helpers


def _adapt(handler: Handler) -> AiohttpHandler:
    """Route handlers take the RecordedRequest the middleware stored on the request."""

    async def route(request: web.Request) -> web.StreamResponse:
        return await handler(request, request[_REC])

    return route


def _header_param(value: str, param: str) -> str | None:
    header = _MimeHeader()
    header["x"] = value
    result = header.get_param(param, header="x")
    if isinstance(result, tuple):  # RFC 2231 encoded
        return str(result[2])
    return None if result is None else str(result)


def _split_multipart(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    parts: list[tuple[dict[str, str], bytes]] = []
    delimiter = b"--" + boundary.encode()
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.removeprefix(b"\r\n").removesuffix(b"\r\n")
        head, _, data = chunk.partition(b"\r\n\r\n")
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, sep, value = line.partition(":")
            if sep:
                headers[key.strip().lower()] = value.strip()
        parts.append((headers, data))
    return parts


def _guess_type(f: RecordedFile, filename: str | None = None) -> str | None:
    guessed = mimetypes.guess_type(filename or f.filename)[0]
    if guessed:
        return guessed
    return None if f.content_type in (None, "application/octet-stream") else f.content_type


def _image_size(data: bytes) -> tuple[int, int] | None:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        return None
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:
        return None


def _slash_name(name: Any) -> bool:
    """Discord's rule for chat-input command and option names: 1-32 lowercase letters (any script), digits, - or _."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= 32
        and name == name.lower()
        and all(c.isalnum() or c in "-_" for c in name)
    )


def _check_names(item: JSON, slash: bool) -> None:
    """Refuse, like Discord (50035), a name, description or localisation that breaks Discord's rules."""
    names = [item.get("name"), *(item.get("name_localizations") or {}).values()]
    descriptions = [item.get("description", ""), *(item.get("description_localizations") or {}).values()]
    locales = {*(item.get("name_localizations") or {}), *(item.get("description_localizations") or {})}
    if not locales <= DISCORD_LOCALES:
        raise DiscordError(*INVALID_FORM)
    if not all(_slash_name(n) if slash else isinstance(n, str) and 0 < len(n) <= 32 for n in names):
        raise DiscordError(*INVALID_FORM)
    if not all(isinstance(d, str) and len(d) <= 100 for d in descriptions):
        raise DiscordError(*INVALID_FORM)


def _check_command(cmd: JSON) -> None:
    slash = cmd.get("type", 1) == 1
    _check_names(cmd, slash)
    options = list(cmd.get("options") or [])
    while options:
        opt = options.pop()
        _check_names(opt, True)
        options += opt.get("options") or []
        for choice in opt.get("choices") or []:
            for value in [choice.get("name"), *(choice.get("name_localizations") or {}).values()]:
                if not isinstance(value, str) or not 0 < len(value) <= 100:
                    raise DiscordError(*INVALID_FORM)


# ---------------------------------------------------------------------- modals (forms)

ACTION_ROW, TEXT_INPUT, STRING_SELECT, TEXT_DISPLAY, LABEL = 1, 4, 3, 10, 18
FILE_UPLOAD, RADIO_GROUP, CHECKBOX_GROUP, CHECKBOX = 19, 21, 22, 23
SELECTS = (3, 5, 6, 7, 8)
# What a Label may hold (https://discord.com/developers/docs/components/reference#label-label-child-components).
LABEL_CHILDREN = (TEXT_INPUT, *SELECTS, FILE_UPLOAD, RADIO_GROUP, CHECKBOX_GROUP, CHECKBOX)
MODAL_TOP_LEVEL = (LABEL, TEXT_DISPLAY, ACTION_ROW)  # an action row only in the deprecated text-input layout
MODAL_MAX_COMPONENTS = 5


class _FormErrors:
    """Discord's field errors for an invalid form body (50035), collected by path."""

    def __init__(self) -> None:
        self.tree: JSON = {}

    def add(self, path: tuple[str | int, ...], code: str, message: str) -> None:
        node = self.tree
        for part in path:
            node = node.setdefault(str(part), {})
        node.setdefault("_errors", []).append({"code": code, "message": message})

    def length(self, path: tuple[str | int, ...], value: Any, low: int, high: int, *, required: bool = True) -> None:
        """A string (or list) of ``low``..``high`` items, Discord's BASE_TYPE_BAD_LENGTH otherwise."""
        if value is None and not required:
            return
        if value is None:
            self.add(path, "BASE_TYPE_REQUIRED", "This field is required")
        elif not isinstance(value, (str, list)) or not low <= len(value) <= high:
            self.add(path, "BASE_TYPE_BAD_LENGTH", f"Must be between {low} and {high} in length.")

    def number(self, path: tuple[str | int, ...], value: Any, low: int, high: int) -> None:
        """An optional integer within ``low``..``high``."""
        if value is None:
            return
        if not isinstance(value, int) or isinstance(value, bool):
            self.add(path, "NUMBER_TYPE_COERCE", f'Value "{value}" is not int.')
        elif value < low:
            self.add(path, "NUMBER_TYPE_MIN", f"int value should be greater than or equal to {low}.")
        elif value > high:
            self.add(path, "NUMBER_TYPE_MAX", f"int value should be less than or equal to {high}.")


def check_modal(data: JSON) -> None:
    """Refuse, as Discord does (400, 50035 with its field errors), a modal that breaks Discord's rules.

    The rules checked: custom_id 1-100 characters, title 1-45, 1 to 5 top-level components (Labels, text
    displays, or the deprecated action row holding one text input), a Label's text 1-45 and description up to
    100, the component types a Label may hold, every custom_id 1-100 and unique in the form, a file upload's
    min_values/max_values within 0-10 (max at least 1, min at least 1 when required), checkbox and radio
    groups' options and counts, selects' options, text inputs' lengths.
    """
    errors = _FormErrors()
    root = ("data",)
    errors.length((*root, "custom_id"), data.get("custom_id"), 1, 100)
    errors.length((*root, "title"), data.get("title"), 1, 45)
    components = data.get("components")
    errors.length((*root, "components"), components, 1, MODAL_MAX_COMPONENTS)
    seen: set[str] = set()
    for n, component in enumerate(components if isinstance(components, list) else []):
        path = (*root, "components", n)
        kind = component.get("type") if isinstance(component, dict) else None
        if kind not in MODAL_TOP_LEVEL:
            errors.add(
                (*path, "type"), "UNION_TYPE_CHOICES", f'Value of field "type" must be one of {MODAL_TOP_LEVEL}.'
            )
            continue
        if kind == TEXT_DISPLAY:
            errors.length((*path, "content"), component.get("content"), 1, 4000)
        elif kind == ACTION_ROW:
            row = component.get("components")
            errors.length((*path, "components"), row, 1, 1)
            for m, child in enumerate(row if isinstance(row, list) else []):
                if not isinstance(child, dict) or child.get("type") != TEXT_INPUT:
                    errors.add((*path, "components", m, "type"), "UNION_TYPE_CHOICES", "Only a text input.")
                    continue
                errors.length((*path, "components", m, "label"), child.get("label"), 1, 45)
                _check_field(errors, (*path, "components", m), child, seen)
        else:
            errors.length((*path, "label"), component.get("label"), 1, 45)
            errors.length((*path, "description"), component.get("description"), 0, 100, required=False)
            child = component.get("component")
            if not isinstance(child, dict) or child.get("type") not in LABEL_CHILDREN:
                errors.add(
                    (*path, "component", "type"),
                    "UNION_TYPE_CHOICES",
                    f'Value of field "type" must be one of {LABEL_CHILDREN}.',
                )
                continue
            _check_field(errors, (*path, "component"), child, seen)
    if errors.tree:
        raise DiscordError(*INVALID_FORM, errors=errors.tree)


def _check_field(errors: _FormErrors, path: tuple[str | int, ...], item: JSON, seen: set[str]) -> None:
    """One interactive component of a modal, by its type's rules."""
    custom_id = item.get("custom_id")
    errors.length((*path, "custom_id"), custom_id, 1, 100)
    if isinstance(custom_id, str):
        if custom_id in seen:
            errors.add(
                (*path, "custom_id"), "COMPONENT_CUSTOM_ID_DUPLICATED", "Component custom id cannot be duplicated"
            )
        seen.add(custom_id)
    kind = item["type"]
    required = item.get("required", True)
    low, high = item.get("min_values"), item.get("max_values")
    if kind == TEXT_INPUT:
        errors.number((*path, "min_length"), item.get("min_length"), 0, 4000)
        errors.number((*path, "max_length"), item.get("max_length"), 1, 4000)
        errors.length((*path, "placeholder"), item.get("placeholder"), 0, 100, required=False)
        errors.length((*path, "value"), item.get("value"), 0, 4000, required=False)
    elif kind == FILE_UPLOAD:
        errors.number((*path, "min_values"), low, 0, 10)
        errors.number((*path, "max_values"), high, 1, 10)
    elif kind in (STRING_SELECT, RADIO_GROUP, CHECKBOX_GROUP):
        most = {STRING_SELECT: 25, RADIO_GROUP: 10, CHECKBOX_GROUP: 10}[kind]
        options = item.get("options")
        errors.length((*path, "options"), options, 2 if kind == RADIO_GROUP else 1, most)
        values = []
        for m, option in enumerate(options if isinstance(options, list) else []):
            errors.length((*path, "options", m, "label"), option.get("label"), 1, 100)
            errors.length((*path, "options", m, "value"), option.get("value"), 1, 100)
            errors.length((*path, "options", m, "description"), option.get("description"), 0, 100, required=False)
            values.append(option.get("value"))
        if len(set(values)) != len(values):
            errors.add((*path, "options"), "SELECT_COMPONENT_OPTION_VALUE_DUPLICATED", "Option values must be unique")
        if kind != RADIO_GROUP:
            errors.number((*path, "min_values"), low, 0, most)
            errors.number((*path, "max_values"), high, 1, min(most, len(values) or most))
        if kind == STRING_SELECT:
            errors.length((*path, "placeholder"), item.get("placeholder"), 0, 150, required=False)
    elif kind == CHECKBOX and not isinstance(item.get("default", False), bool):
        errors.add((*path, "default"), "BASE_TYPE_BOOLEAN", "Must be either true or false.")
    if kind in (FILE_UPLOAD, CHECKBOX_GROUP) and isinstance(low, int) and isinstance(high, int) and low > high:
        errors.add((*path, "min_values"), "BASE_TYPE_BAD_VALUE", "min_values must be less than or equal to max_values")
    if kind in (FILE_UPLOAD, CHECKBOX_GROUP) and required is not False and low == 0:
        # "min_values must be either omitted or at least 1 if required is omitted or true" (Discord's docs).
        errors.add((*path, "min_values"), "NUMBER_TYPE_MIN", "int value should be greater than or equal to 1.")


def _guess_component(custom_id: str, value: ModalAnswer) -> JSON:
    """The component a value fits, for a submission to a form the fake never saw."""
    if isinstance(value, bool):
        return {"type": CHECKBOX, "custom_id": custom_id}
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return {"type": FILE_UPLOAD, "custom_id": custom_id, "max_values": 10}
    if isinstance(value, list):
        return {"type": STRING_SELECT, "custom_id": custom_id}
    return {"type": TEXT_INPUT, "custom_id": custom_id}


def _answer_form(
    form: JSON, values: Mapping[str, ModalAnswer], counter: Iterator[int], resolved: dict[str, JSON], *, strict: bool
) -> list[JSON]:
    """The components of a submission of ``form``: every field in order, answered from ``values`` or as shown."""
    asked = set(values)
    answered: list[JSON] = []
    for component in form["components"]:
        kind, own = component["type"], component.get("id") or next(counter)
        if kind == TEXT_DISPLAY:
            answered.append({"type": TEXT_DISPLAY, "id": own})
        elif kind == ACTION_ROW:
            children = []
            for child in component["components"]:
                asked.discard(child["custom_id"])
                children.append(_answer(child, values.get(child["custom_id"]), counter, resolved, strict=strict))
            answered.append({"type": ACTION_ROW, "id": own, "components": children})
        else:
            child = component["component"]
            asked.discard(child["custom_id"])
            answer = _answer(child, values.get(child["custom_id"]), counter, resolved, strict=strict)
            answered.append({"type": LABEL, "id": own, "component": answer})
    if asked and strict:
        raise ValueError(f"the form {form['custom_id']!r} has no field {sorted(asked)}")
    for key in sorted(asked):  # a tampered client's extra fields, after the form's
        label_id = next(counter)
        extra = _answer(_guess_component(key, values[key]), values[key], counter, resolved, strict=False)
        answered.append({"type": LABEL, "id": label_id, "component": extra})
    return answered


def _answer(
    field: JSON, value: ModalAnswer | None, counter: Iterator[int], resolved: dict[str, JSON], *, strict: bool = True
) -> JSON:
    """One field of a submission, as Discord sends it; ``None``: the member left it as it was shown."""
    kind, custom_id = field["type"], field["custom_id"]
    answer: JSON = {"type": kind, "id": field.get("id") or next(counter), "custom_id": custom_id}
    offered = [option["value"] for option in field.get("options") or []]
    shown = [option["value"] for option in field.get("options") or [] if option.get("default")]
    if kind == TEXT_INPUT:
        answer["value"] = field.get("value", "") if value is None else value
    elif kind == CHECKBOX:
        answer["value"] = bool(field.get("default", False)) if value is None else value
    elif kind == RADIO_GROUP:
        answer["value"] = (shown[0] if shown else None) if value is None else value
    elif kind == FILE_UPLOAD:
        given = [] if value is None else value
        if not isinstance(given, list) or not all(isinstance(f, dict) for f in given):
            raise ValueError(f"{custom_id}: a file upload takes attachment payloads from add_attachment")
        files = [f for f in given if isinstance(f, dict)]
        if strict and len(files) > field.get("max_values", 1):
            raise ValueError(f"{custom_id}: the form takes at most {field.get('max_values', 1)} files")
        answer["values"] = [str(f["id"]) for f in files]
        for f in files:
            resolved[str(f["id"])] = {**f, "ephemeral": True}
    else:  # a select or a checkbox group: the options picked (one given alone stands for a list of it)
        picked = shown if value is None else [value] if isinstance(value, str) else value
        if not isinstance(picked, list):
            raise ValueError(f"{custom_id}: a select or checkbox group takes a list of option values")
        if strict and offered and not set(picked) <= set(offered):
            raise ValueError(f"{custom_id}: {picked!r} is not among the options {offered}")
        if strict and kind == CHECKBOX_GROUP and len(picked) > field.get("max_values", len(offered)):
            raise ValueError(f"{custom_id}: at most {field.get('max_values')} options")
        answer["values"] = list(picked)
    return answer
