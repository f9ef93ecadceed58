"""A loopback proxy in front of the test PostgreSQL server that can lose a commit's answer.

Every connection passes through unchanged, but one the server marked: a test's trigger raises a
NOTICE carrying ``MARK`` inside a transaction. When that transaction has ended (the server's next
ReadyForQuery says "idle"), the proxy closes the connection instead of passing the end on. The
server has committed; the client only sees its connection drop, and cannot know whether its
transaction was written. That is a network failure at the worst moment, made deterministic.

The proxy reads the server's messages (a type byte and a length), so the client must not ask for
TLS: its URL carries ``sslmode=disable``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

MARK = "test-fault: lose this commit's answer"


class CommitAnswerLoss:
    def __init__(self, server_url: str) -> None:
        parts = urlsplit(server_url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 5432
        self._server_url = server_url
        self.lost = 0  # commits whose answer was lost
        self.port = 0

    def url(self) -> str:
        """``server_url`` pointed at the proxy."""
        parts = urlsplit(self._server_url)
        netloc = parts.netloc.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{self.port}")
        return parts._replace(netloc=netloc, query="sslmode=disable").geturl()

    async def _serve(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        server_in, server_out = await asyncio.open_connection(self._host, self._port)
        up = asyncio.ensure_future(_pipe(client_in, server_out))
        try:
            await self._down(server_in, client_out)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            up.cancel()
            for writer in (client_out, server_out):
                writer.close()

    async def _down(self, server_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        marked = False
        while True:
            head = await server_in.readexactly(5)
            body = await server_in.readexactly(int.from_bytes(head[1:5], "big") - 4)
            if head[:1] == b"N" and MARK.encode() in body:
                marked = True  # swallowed: the client hears nothing of it
                continue
            if marked and head[:1] == b"Z" and body == b"I":
                self.lost += 1  # the transaction ended (committed): its answer is never passed on
                return
            client_out.write(head + body)
            await client_out.drain()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    sink.close()


@asynccontextmanager
async def commit_answer_loss(server_url: str) -> AsyncIterator[CommitAnswerLoss]:
    """A proxy in front of ``server_url`` (a database's URL) for the block."""
    proxy = CommitAnswerLoss(server_url)
    server = await asyncio.start_server(proxy._serve, "127.0.0.1", 0)
    proxy.port = server.sockets[0].getsockname()[1]
    try:
        yield proxy
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await server.wait_closed()
