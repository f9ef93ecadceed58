"""A fake of the provider's account endpoint, ``GET /api/user/self``, for the balance watch.

It answers like a new-api/one-api gateway: ``{"success": true, "data": {"quota": N, …}}``
with ``quota`` in units of 500,000 per dollar, and only to ``Authorization: Bearer
<access token>``. Tests set ``dollars`` (or ``status`` to make it fail) and read ``requests``.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

QUOTA_PER_DOLLAR = 500_000


class FakeBalance:
    """The endpoint on 127.0.0.1; ``url`` is what the bot's ``PROVIDER_BALANCE_URL`` should be."""

    def __init__(self, access_token: str, dollars: float = 100.0) -> None:
        self.access_token = access_token
        self.dollars = dollars
        self.status = 200
        self.requests: list[dict[str, str]] = []
        self._polled = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/user/self"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/user/self", self._self)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for_polls(self, count: int, timeout: float = 10) -> None:
        """Wait until the bot has asked at least ``count`` times in all."""
        async with asyncio.timeout(timeout):
            while len(self.requests) < count:
                self._polled.clear()
                await self._polled.wait()

    async def _self(self, request: web.Request) -> web.Response:
        self.requests.append(dict(request.headers))
        self._polled.set()
        if request.headers.get("Authorization") != f"Bearer {self.access_token}":
            return web.json_response({"success": False, "message": "无权进行此操作，access token 无效"}, status=401)
        if self.status != 200:
            return web.json_response({"success": False, "message": "scripted failure"}, status=self.status)
        quota = round(self.dollars * QUOTA_PER_DOLLAR)
        data = {"id": 1, "username": "operator", "quota": quota, "used_quota": 123456, "request_count": 42}
        return web.json_response({"success": True, "message": "", "data": data})
