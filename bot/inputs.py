"""Job inputs, kept from acceptance until the job ends, so a queued job survives a restart.

Two homes: files under ``DATA_DIR/inputs`` (one process), or rows in PostgreSQL so that
a worker on another machine can run any job (several processes), capped in total by
``MAX_QUEUED_INPUT_MB``.

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
        """Remove a job's inputs (when it ends, whatever the outcome)."""
        await self._on(self._writes, shutil.rmtree, self._folder(job_id), True)


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
