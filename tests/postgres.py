"""A fresh PostgreSQL database per test, on the server ``.ci/run`` makes sure is running.

``ATELIER_TEST_POSTGRES`` names the server (default: the local one, trust auth, user
``postgres``). ``.ci/run`` starts it if needed and creates the ``atelier_test`` database,
from which each test creates its own database, dropped afterwards (``postgres`` serves
when ``atelier_test`` does not exist). CI never skips these tests: if the server cannot be
reached, they fail and say so.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

SERVER = os.environ.get("ATELIER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """The URL of a new, empty database that is dropped when the block ends."""
    name = f"atelier_test_{secrets.token_hex(4)}"
    try:
        try:
            admin = await asyncpg.connect(f"{SERVER}/atelier_test", timeout=10)
        except asyncpg.InvalidCatalogNameError:
            admin = await asyncpg.connect(f"{SERVER}/postgres", timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise AssertionError(
            f"PostgreSQL is not reachable at {SERVER} ({exc}); .ci/run starts it, or set ATELIER_TEST_POSTGRES"
        ) from exc
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{SERVER}/{name}"
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
