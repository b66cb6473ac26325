"""The run folder: one sub-folder per pipeline stage, finished stages recorded, unfinished ones never trusted.

A stage works in ``<run>/.partial/<stage>/``. When it succeeds its record (``stage.json``: fingerprint,
summary, seconds) is written there last, atomically, and the folder is renamed to ``<run>/<stage>/``. A
stage is finished when that record exists and its fingerprint matches the one asked for; the fingerprint
chains the stage's own configuration with the fingerprints of the stages before it, so a changed setting
re-runs its stage and every stage after it. An interrupted stage leaves only its partial folder, which the
next attempt reuses when the fingerprint is the same (so finished sub-steps, e.g. one style model of many,
are not redone) and wipes otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nucleaizer.io import atomic_write

RECORD = "stage.json"
# stages whose folder is named for what it holds
FOLDER_OF_STAGE = {"bundle": "model"}
PARTIAL_FINGERPRINT = "fingerprint.txt"


def fingerprint(settings: Any, upstream: str = "") -> str:
    """A short hash of JSON-serialisable ``settings`` chained with the upstream stage's fingerprint."""
    text = json.dumps(settings, sort_keys=True, default=str) + "|" + upstream
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _write_json(path: Path, data: dict) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))


class RunFolder:
    """The folder of one experiment run (``runs/<target>``)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, stage: str) -> Path:
        """The finished folder of ``stage``."""
        return self.root / FOLDER_OF_STAGE.get(stage, stage)

    def record(self, stage: str) -> dict | None:
        """The record of a finished stage, or None."""
        record_path = self.path(stage) / RECORD
        if not record_path.exists():
            return None
        return json.loads(record_path.read_text())

    def is_done(self, stage: str, stage_fingerprint: str) -> bool:
        record = self.record(stage)
        return record is not None and record.get("fingerprint") == stage_fingerprint

    @contextmanager
    def stage(self, stage: str, stage_fingerprint: str) -> Iterator[tuple[Path, dict]]:
        """Run a stage: yields (work folder, summary dict to fill); publishes the folder on success."""
        partial = self.root / ".partial" / stage
        marker = partial / PARTIAL_FINGERPRINT
        if partial.exists() and (not marker.exists() or marker.read_text() != stage_fingerprint):
            shutil.rmtree(partial)
        partial.mkdir(parents=True, exist_ok=True)
        marker.write_text(stage_fingerprint)
        summary: dict = {}
        started = time.perf_counter()
        yield partial, summary
        record = {
            "stage": stage,
            "fingerprint": stage_fingerprint,
            "seconds": round(time.perf_counter() - started, 2),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "summary": summary,
        }
        marker.unlink()
        _write_json(partial / RECORD, record)
        final = self.path(stage)
        if final.exists():
            stale = self.root / ".partial" / f"{stage}.old"
            shutil.rmtree(stale, ignore_errors=True)
            os.replace(final, stale)
            os.replace(partial, final)
            shutil.rmtree(stale)
        else:
            os.replace(partial, final)
