"""Upgrading from 0.1: the inputs the single process kept as files move into the database, once (whichever
database: the step is the engine's, not a dialect's; the ``store`` fixture runs it on both)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from bot.core.job import Job, JobRequest, utc_day
from bot.core.quota import Quota
from bot.core.states import JobState
from bot.store.legacy import IMPORTED, import_input_folders
from bot.store.store import Store


def old_folder(root: Path, job_id: str, images: list[bytes], ended: float | None = None) -> None:
    """A job's inputs as version 0.1 wrote them."""
    folder = root / "inputs" / job_id
    folder.mkdir(parents=True)
    meta = []
    for n, data in enumerate(images, start=1):
        (folder / f"image{n}.png").write_bytes(data)
        meta.append({"file": f"image{n}.png", "mime": "image/png", "width": n, "height": n})
    (folder / "inputs.json").write_text(json.dumps(meta))
    if ended is not None:
        (folder / "ended_at").write_text(repr(ended))


async def test_old_input_folders_move_into_the_database_once(store: Store, tmp_path: Path) -> None:
    now = time.time()
    for job_id, user in (("queued1", 1), ("done1", 2)):
        job = Job(job_id, JobRequest("edit", user, 10, 100, "p", None, 2), JobState.ACCEPTED, now, utc_day(now),
                  30_000, holder="old")  # fmt: skip
        assert await store.admit(job, Quota(now), now + 60) is None
    old_folder(tmp_path, "queued1", [b"first", b"second"])
    old_folder(tmp_path, "done1", [b"kept"], ended=now - 10)
    old_folder(tmp_path, "gone1", [b"orphan"])  # a job the database does not know
    (tmp_path / "inputs" / "broken1").mkdir()  # an interrupted save: no inputs.json
    assert await import_input_folders(store, tmp_path) == 2
    queued = await store.load_inputs("queued1")
    assert queued is not None and [i.data for i in queued] == [b"first", b"second"]
    assert [(i.width, i.height, i.mime) for i in queued] == [(1, 1, "image/png"), (2, 2, "image/png")]
    assert await store.inputs_kept("done1", now - 20) and not await store.inputs_kept("done1", now - 5)
    assert await store.load_inputs("gone1") is None
    assert not (tmp_path / "inputs").exists() and (tmp_path / IMPORTED / "queued1").is_dir()
    assert await import_input_folders(store, tmp_path) == 0  # once
