"""An upgrade step, once: job inputs that versions before 0.2 kept as files now go into the database.

Before the one engine, the single process kept each job's images under ``DATA_DIR/inputs/<job>/``
(``inputs.json`` listing ``image1.png``…, and ``ended_at`` once the job ended and its inputs were
kept for Reroll). Now every database keeps them as rows (``job_inputs``). At the first start of
the new version, the folders of jobs the database still knows are copied into it (unfinished jobs'
as theirs, ended jobs' as kept since they ended), and the folder is renamed ``inputs.imported``, so
no queued job loses its images across the upgrade and the step never runs twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Generator
from pathlib import Path
from typing import Any

from bot.store.script import Op, execute, execute_many, fetch_value
from bot.store.store import Store

log = logging.getLogger(__name__)

ENDED_FILE = "ended_at"
IMPORTED = "inputs.imported"


def _read_folder(folder: Path) -> tuple[list[dict[str, Any]], float | None] | None:
    """A job folder's images (as rows, image1 first) and when its job ended; ``None`` if it is incomplete."""
    try:
        meta = json.loads((folder / "inputs.json").read_text())
        images = [
            {"mime": str(m["mime"]), "width": int(m["width"]), "height": int(m["height"]),
             "data": (folder / str(m["file"])).read_bytes()}
            for m in meta
        ]  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        ended: float | None = float((folder / ENDED_FILE).read_text())
    except (OSError, ValueError):
        ended = None
    return images, ended


def _import(job_id: str, images: list[dict[str, Any]], ended: float | None) -> Generator[Op, Any, bool]:
    if not (yield from fetch_value("SELECT COUNT(*) AS n FROM jobs WHERE id = :id", id=job_id)):
        return False  # a job the database does not know: nothing would ever read it
    if (yield from fetch_value("SELECT COUNT(*) AS n FROM input_sets WHERE job_id = :id", id=job_id)):
        return False
    rows = [{"job_id": job_id, "number": n, **image} for n, image in enumerate(images, start=1)]
    yield from execute_many(
        "INSERT INTO job_inputs (job_id, number, mime, width, height, data) "
        "VALUES (:job_id, :number, :mime, :width, :height, :data)",
        rows,
    )
    yield from execute(
        "INSERT INTO input_sets (job_id, bytes, ended_at) VALUES (:id, :bytes, :ended)",
        id=job_id,
        bytes=sum(len(image["data"]) for image in images),
        ended=ended,
    )
    return True


async def import_input_folders(store: Store, data_dir: Path) -> int:
    """Copy ``DATA_DIR/inputs`` into the database once (then rename it); how many jobs' inputs came in.

    Whatever the database: only jobs it knows take images, and a job that has its images keeps them, so the
    data folder of another install imports nothing. A folder renamed meanwhile by another process that shares
    it is not an error."""
    root = data_dir / "inputs"
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name.isalnum())
    except (FileNotFoundError, NotADirectoryError):
        return 0
    imported = 0
    for folder in folders:
        found = await asyncio.to_thread(_read_folder, folder)
        if found is not None and await store.database.run(_import(folder.name, *found)):
            imported += 1
    try:
        await asyncio.to_thread(root.rename, data_dir / IMPORTED)
    except FileNotFoundError:
        return imported  # another process sharing this folder renamed it first
    log.info("moved the inputs of %d job(s) from %s into the database (the folder is now %s)", imported, root, IMPORTED)
    return imported
