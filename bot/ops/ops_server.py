"""The operator's HTTP endpoints: ``/metrics`` (Prometheus text format) and ``/healthz``.

Served only when ``METRICS_PORT`` is set, on ``METRICS_HOST`` (127.0.0.1 unless the
operator opens it wider). ``/healthz`` answers 200 ``ok`` or 503 with the reason, in
JSON, so a load balancer, Docker's HEALTHCHECK or a person can read it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from bot.ops.health import Health
from bot.ops.metrics import CONTENT_TYPE_LATEST, Metrics

log = logging.getLogger(__name__)


class OpsServer:
    """A small aiohttp app on its own port; started and stopped with the process."""

    def __init__(
        self, host: str, port: int, metrics: Metrics, health: Health, refresh: Callable[[], Awaitable[object]]
    ) -> None:
        self._host = host
        self._port = port
        self._metrics = metrics
        self._refresh = refresh  # the store's totals behind the gauges, read once per scrape
        self._health = health
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics_page)
        app.router.add_get("/healthz", self._healthz)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await runner.setup()
        await web.TCPSite(runner, self._host, self._port).start()
        self._runner = runner
        log.info("metrics and health on http://%s:%d (/metrics, /healthz)", self._host, self._port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _metrics_page(self, request: web.Request) -> web.Response:
        try:
            await self._refresh()
        except Exception as exc:  # a database that does not answer: the last totals, and /healthz says why
            log.warning("could not read the totals for /metrics: %s", type(exc).__name__)
        response = web.Response(body=self._metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def _healthz(self, request: web.Request) -> web.Response:
        report = await self._health.check()
        body = {"status": "ok" if report.healthy else "unhealthy", "checks": report.checks}
        if not report.healthy:
            body["reason"] = report.reason
        return web.json_response(body, status=200 if report.healthy else 503)
