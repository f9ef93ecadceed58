"""Job inputs: from acceptance until the job ends, so a queued job survives a restart, and after
that as long as retention keeps them (for Reroll).

Two homes: files under ``DATA_DIR/inputs`` (one process), or rows in PostgreSQL so that
a worker on another machine can run any job (several processes); there, the inputs of
unfinished jobs are capped in total by ``MAX_QUEUED_INPUT_MB``.

On disk, reads and writes each have a thread of their own: starting a job reads its
inputs while the shared default executor may be busy decoding results, and a burst of
new jobs saving theirs must not hold up the read of the job that is about to start.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from bot.images import PreparedImage

T = TypeVar("T")

# Written when a job has ended and its inputs are kept: the time it ended.
ENDED_FILE = "ended_at"


class JobInputs(Protocol):
    """Where a job's prepared images wait for its API call."""

    async def save(self, job_id: str, images: Sequence[PreparedImage]) -> None: ...
    async def load(self, job_id: str) -> list[PreparedImage] | None: ...
    async def exists(self, job_id: str) -> bool: ...
    async def delete(self, job_id: str) -> None: ...
    async def full(self) -> bool:
        """Whether queued inputs fill their cap (new work is then refused before it is charged)."""
        ...


class InputStore:
    """One folder per job under ``DATA_DIR/inputs``; files are written and read off the event loop."""

    async def full(self) -> bool:
        return False  # the disk is the operator's to size

    def __init__(self, root: Path) -> None:
        self.root = root
        self._reads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="atelier-inputs-read")
        self._writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="atelier-inputs-write")

    @staticmethod
    async def _on(executor: ThreadPoolExecutor, work: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, work, *args)

    def _folder(self, job_id: str) -> Path:
        if not job_id.isalnum():
            raise ValueError(f"bad job id {job_id!r}")
        return self.root / job_id

    async def save(self, job_id: str, images: Sequence[PreparedImage]) -> None:
        """Write the prepared inputs of ``job_id`` (image1 first)."""
        await self._on(self._writes, self._save, job_id, list(images))

    def _save(self, job_id: str, images: list[PreparedImage]) -> None:
        folder = self._folder(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        meta = []
        for number, image in enumerate(images, start=1):
            name = f"image{number}.{image.extension}"
            (folder / name).write_bytes(image.data)
            meta.append({"file": name, "mime": image.mime, "width": image.width, "height": image.height})
        # Written last: a folder without it is an interrupted save and counts as missing.
        (folder / "inputs.json").write_text(json.dumps(meta))

    async def load(self, job_id: str) -> list[PreparedImage] | None:
        """The saved inputs, or ``None`` if they are missing or incomplete."""
        return await self._on(self._reads, self._load, job_id)

    def _load(self, job_id: str) -> list[PreparedImage] | None:
        folder = self._folder(job_id)
        try:
            meta = json.loads((folder / "inputs.json").read_text())
            return [PreparedImage((folder / m["file"]).read_bytes(), m["mime"], m["width"], m["height"]) for m in meta]
        except (OSError, ValueError, KeyError):
            return None

    async def exists(self, job_id: str) -> bool:
        """Whether the inputs of ``job_id`` were saved completely."""
        return await self._on(self._reads, (self._folder(job_id) / "inputs.json").exists)

    async def delete(self, job_id: str) -> None:
        """Remove a job's inputs."""
        await self._on(self._writes, shutil.rmtree, self._folder(job_id), True)

    async def size(self, job_id: str) -> int | None:
        """Bytes of a job's inputs, or ``None`` if they are not all there."""
        return await self._on(self._reads, self._size_if_complete, job_id)

    def _size_if_complete(self, job_id: str) -> int | None:
        folder = self._folder(job_id)
        return _size(folder) if (folder / "inputs.json").exists() else None

    async def mark_ended(self, job_id: str, at: float) -> int | None:
        """Record that ``job_id`` ended at ``at``; its inputs' size in bytes, or ``None`` if they are not all there."""
        return await self._on(self._writes, self._mark_ended, job_id, at)

    def _mark_ended(self, job_id: str, at: float) -> int | None:
        folder = self._folder(job_id)
        if not (folder / "inputs.json").exists():
            return None
        (folder / ENDED_FILE).write_text(repr(at))
        return _size(folder)

    async def scan(self) -> list[tuple[str, float | None, int]]:
        """Every job folder: its job id, when it was marked ended (``None`` if never) and its size."""
        return await self._on(self._reads, self._scan)

    def _scan(self) -> list[tuple[str, float | None, int]]:
        found: list[tuple[str, float | None, int]] = []
        if not self.root.is_dir():
            return found
        for folder in self.root.iterdir():
            if not folder.is_dir() or not folder.name.isalnum():
                continue
            try:
                ended: float | None = float((folder / ENDED_FILE).read_text())
            except (OSError, ValueError):
                ended = None
            found.append((folder.name, ended, _size(folder)))
        return found


def _size(folder: Path) -> int:
    """Bytes of the files in ``folder`` (0 if it vanished meanwhile)."""
    try:
        paths = list(folder.iterdir())
    except OSError:
        return 0
    total = 0
    for path in paths:
        try:
            total += path.stat().st_size
        except OSError:
            continue
    return total


class InputRows(Protocol):
    """The database side of ``DatabaseInputStore`` (``bot.postgres_store.PostgresJobStore``)."""

    async def save_inputs(self, job_id: str, images: Sequence[PreparedImage], cap_bytes: int) -> None: ...
    async def load_inputs(self, job_id: str) -> list[PreparedImage] | None: ...
    async def inputs_exist(self, job_id: str) -> bool: ...
    async def delete_inputs(self, job_id: str) -> None: ...
    async def queued_input_bytes(self) -> int: ...


class DatabaseInputStore:
    """Job inputs as rows in the shared database, within ``cap_bytes`` for all of them together.

    Whether the cap is reached is read at most once a second (admission asks on every
    request); the cap itself is enforced exactly when inputs are saved.
    """

    FULL_CHECK_EVERY = 1.0

    def __init__(self, rows: InputRows, cap_bytes: int) -> None:
        self._rows = rows
        self.cap_bytes = cap_bytes
        self._full = False
        self._checked = 0.0

    async def save(self, job_id: str, images: Sequence[PreparedImage]) -> None:
        await self._rows.save_inputs(job_id, images, self.cap_bytes)

    async def load(self, job_id: str) -> list[PreparedImage] | None:
        return await self._rows.load_inputs(job_id)

    async def exists(self, job_id: str) -> bool:
        return await self._rows.inputs_exist(job_id)

    async def delete(self, job_id: str) -> None:
        await self._rows.delete_inputs(job_id)

    async def full(self) -> bool:
        now = time.monotonic()
        if now - self._checked >= self.FULL_CHECK_EVERY:
            self._checked = now
            self._full = await self._rows.queued_input_bytes() >= self.cap_bytes
        return self._full
