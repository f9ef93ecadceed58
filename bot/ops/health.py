"""Whether this process is fit to serve: for ``/healthz`` (and so Docker's HEALTHCHECK).

Healthy means the database answers a trivial query in time and, for a process with a
gateway (the Discord frontend reports its connection here), the gateway is connected.
A process without a frontend (a worker) is healthy while its event loop runs, which
answering at all proves.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

DATABASE_TIMEOUT = 3.0


class Pingable(Protocol):
    async def ping(self) -> None: ...


@dataclass(frozen=True)
class HealthReport:
    """The verdict and, when unhealthy, why."""

    healthy: bool
    checks: dict[str, str] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        return "; ".join(f"{name}: {state}" for name, state in self.checks.items() if state != "ok")


class Health:
    """The gateway's state as the frontend reports it, and a database round trip on demand."""

    def __init__(self, store: Pingable) -> None:
        self._store = store
        self._has_gateway = False
        self._gateway_up = False
        self._gateway_note = "not connected yet"

    def gateway(self, connected: bool, note: str = "") -> None:
        """The frontend's word on its gateway connection (it has one from its first report on)."""
        self._has_gateway = True
        self._gateway_up = connected
        self._gateway_note = "ok" if connected else (note or "disconnected")

    async def check(self) -> HealthReport:
        """Ask the database; combine with the gateway's last report."""
        checks: dict[str, str] = {}
        try:
            async with asyncio.timeout(DATABASE_TIMEOUT):
                await self._store.ping()
            checks["database"] = "ok"
        except TimeoutError:
            checks["database"] = f"no answer within {DATABASE_TIMEOUT:g} s"
        except Exception as exc:  # whatever the backend raises: the verdict is "unhealthy", with its name
            checks["database"] = f"error ({type(exc).__name__})"
        if self._has_gateway:
            checks["gateway"] = self._gateway_note
        return HealthReport(all(v == "ok" for v in checks.values()), checks)
