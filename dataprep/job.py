"""A job's state in its output folder: its settings, its finished chunks, and whether it is complete.

    OUT/.dataprep/job.json                   the settings that decide the output (rerun must match)
    OUT/.dataprep/chunks/<split>/chunk-00000.json    one ChunkReport per finished chunk

A rerun with the same settings continues where the last run stopped (finished chunks are skipped)
and does nothing when every dataset has its manifest; other settings are refused unless the caller
overwrites. A folder that dataprep did not write is never written into or deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import PurePosixPath
from typing import Any

from pydantic import ValidationError

from dataprep.schema import INDEX_NAME, MANIFEST_NAME, Manifest
from dataprep.storage import Store
from dataprep.writer import ChunkReport

logger = logging.getLogger(__name__)

STATE_DIR = ".dataprep"
JOB_FILE = f"{STATE_DIR}/job.json"


class JobError(RuntimeError):
    """The output folder cannot be used for this job (someone else's files, or other settings)."""


def fingerprint(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


class Job:
    """`Job.open` checks that the folder may be used; `start` claims it; then chunks and manifests."""

    def __init__(self, out: Store, settings: dict[str, Any], overwrite: bool, existing: list[str]) -> None:
        self.out = out
        self.settings = settings
        self.fingerprint = fingerprint(settings)
        self.overwrite = overwrite
        self._existing = existing

    @classmethod
    def open(cls, out: Store, settings: dict[str, Any], overwrite: bool) -> Job:
        """Check that `out` is empty, or holds this job, or (with overwrite) any earlier dataprep job."""
        existing = out.list()
        owned = JOB_FILE in existing
        if existing and not owned:
            raise JobError(f"{out.uri} is not empty and was not written by dataprep; refusing to use it")
        if owned and not overwrite and json.loads(out.read_text(JOB_FILE)) != settings:
            raise JobError(
                f"{out.uri} holds a conversion with other settings "
                f"({out.url(JOB_FILE)}); rerun with the same settings to continue it, or pass --overwrite"
            )
        return cls(out, settings, overwrite, existing)

    def start(self) -> None:
        """Claim the folder: delete an earlier output when overwriting, record the settings."""
        if self.overwrite and self._existing:
            logger.info("%s: overwriting, deleting the previous output", self.out.uri)
            self._clear(self._existing)
        if self.overwrite or JOB_FILE not in self._existing:
            self.out.write_text(JOB_FILE, json.dumps(self.settings, indent=2, sort_keys=True))

    def _clear(self, files: list[str]) -> None:
        """Delete everything, manifests then indexes first: no reader may see a dataset half deleted."""
        for suffix in (MANIFEST_NAME, INDEX_NAME):
            for path in files:
                if path.endswith(suffix):
                    self.out.delete_tree(path)
        self.out.delete_tree()

    @staticmethod
    def _chunks_dir(split: str) -> str:
        return f"{STATE_DIR}/chunks/{split}"

    def finished_chunks(self, split: str) -> dict[str, ChunkReport]:
        """Chunk name -> report, for every chunk of the split a previous run finished."""
        names = (PurePosixPath(p) for p in self.out.list(self._chunks_dir(split)))
        paths = [str(p) for p in names if p.suffix == ".json" and not p.name.startswith(".")]  # not temp files
        reports = (ChunkReport.model_validate_json(self.out.read_bytes(p)) for p in paths)
        return {report.name: report for report in reports}

    def save_chunk(self, split: str, report: ChunkReport) -> None:
        self.out.write_text(f"{self._chunks_dir(split)}/{report.name}.json", report.model_dump_json())

    def manifest(self, dataset: Store) -> Manifest | None:
        """The dataset's manifest if this job finished it."""
        try:
            manifest = Manifest.model_validate_json(dataset.read_bytes(MANIFEST_NAME))
        except (FileNotFoundError, ValidationError):
            return None
        return manifest if manifest.job == self.fingerprint else None

    def is_complete(self, datasets: Iterable[Store]) -> bool:
        """Whether this job finished every dataset (never, for a job that overwrites)."""
        return not self.overwrite and all(self.manifest(dataset) is not None for dataset in datasets)
