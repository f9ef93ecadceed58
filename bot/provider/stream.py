"""A streamed answer, read as it arrives: server-sent events, each partial image handed on at once.

A model that streams (``partial_images`` in its catalog entry) answers ``stream=true`` with
server-sent events, as OpenAI's images streaming defines them: ``image_edit.partial_image``
(``image_generation.partial_image`` for a generation) carrying a partial image as base64 in
``b64_json`` and its 0-based ``partial_image_index``, then ``image_edit.completed``
(``image_generation.completed``) carrying the final image and ``usage``. An ``error`` event
may come instead. Each event is ``event: NAME`` and ``data: JSON`` lines, ended by a blank line.

A partial image is several MB of base64 on one ``data:`` line, far past what a line reader
takes, so the events are cut out of the bytes here: ``EventReader`` holds at most one event's
bytes (up to a cap) and finds each event's end with ``find``, never rescanning what it scanned.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.errors import InvalidResponseError

PARTIAL = ".partial_image"
COMPLETED = ".completed"
ERROR = "error"
# An event ends with a blank line; lines end with LF or CRLF.
_ENDS = (b"\n\n", b"\r\n\r\n")


@dataclass(frozen=True)
class PartialImage:
    """One partial image of a streamed call, as the API sent it (decoded from its base64)."""

    index: int  # 0-based, as the API numbers them
    data: bytes


@dataclass(frozen=True)
class Event:
    """One server-sent event: its ``event:`` name (empty without one) and its ``data:`` lines joined."""

    name: str
    data: bytes


class EventReader:
    """Cuts a byte stream into events as it arrives; refuses an event over ``cap`` bytes."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._buffer = bytearray()
        self._scanned = 0  # the buffer before this holds no event's end

    def feed(self, chunk: bytes) -> list[Event]:
        """The events ``chunk`` completes, in order (comments and events without data are skipped)."""
        self._buffer += chunk
        events: list[Event] = []
        while True:
            found = [(at, len(end)) for end in _ENDS if (at := self._buffer.find(end, self._scanned)) >= 0]
            if not found:
                # An end may straddle two chunks: look again from a little before the tail.
                self._scanned = max(0, len(self._buffer) - 3)
                break
            at, length = min(found)
            block = bytes(self._buffer[:at])
            del self._buffer[: at + length]
            self._scanned = 0
            event = _parse(block)
            if event is not None:
                events.append(event)
        if len(self._buffer) > self._cap:
            raise InvalidResponseError(f"a streamed event is over the {self._cap}-byte cap")
        return events

    @property
    def pending(self) -> bool:
        """Whether bytes of an unfinished event are held (the stream ended in the middle of one)."""
        return bool(self._buffer.strip())


def _parse(block: bytes) -> Event | None:
    name = ""
    data: list[bytes] = []
    for raw in block.split(b"\n"):
        line = raw.removesuffix(b"\r")
        if not line or line.startswith(b":"):
            continue  # a comment (a keep-alive)
        key, _, value = line.partition(b":")
        value = value.removeprefix(b" ")
        if key == b"event":
            name = value.decode("utf-8", "replace").strip()
        elif key == b"data":
            data.append(value)
    if not data:
        return None
    return Event(name, b"\n".join(data))
