"""Convert image-text corpora into MDS datasets (local or s3://): parallel, resumable, deterministic.

The pipeline: sources -> split assignment (`dataprep.split`) -> worker processes (`dataprep.process`:
decode, validate, normalise, clean) -> this process, in input order: duplicate check, then the
split's current chunk (`dataprep.writer`). Chunk i of a split always holds the same input items, so a
resumed run skips finished chunks, rewrites the one that was cut off, and gives the same dataset an
uninterrupted run gives.
"""

from __future__ import annotations

import logging
import math
import os
from functools import partial
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dataprep.images import ImageOptions
from dataprep.job import Job
from dataprep.limits import Limits
from dataprep.parallel import ordered_map
from dataprep.process import Accepted, Outcome, crashed, process_batch
from dataprep.records import CAPTION_LEVEL, Item, Reject, RejectReason, SourceRecord
from dataprep.schema import Manifest
from dataprep.sources import SourceSpec, count_source
from dataprep.split import SPLITS, Split, assign_splits
from dataprep.storage import Store, join, open_store
from dataprep.writer import ChunkReport, ChunkWriter, ShardOptions, chunk_name, finalize_dataset

logger = logging.getLogger(__name__)

class Progress(Protocol):
    """What convert reports progress to (a tqdm bar fits): the total, then source records as they are handled."""

    def reset(self, total: int | None = None) -> None: ...

    def update(self, n: int = 1) -> None: ...


class _NoProgress:
    def reset(self, total: int | None = None) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass


class ConvertConfig(BaseModel):
    """One conversion: where from, where to, and how."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    out: str = Field(min_length=1)
    """Output folder or s3://bucket/prefix. With a held-out split, datasets go to OUT/train and OUT/eval."""
    sources: list[SourceSpec] = Field(min_length=1)
    images: ImageOptions = ImageOptions()
    limits: Limits = Limits()
    """Per-record bounds (file, JSON record and caption bytes); a record past one is rejected with its reason."""
    max_words: int = Field(30, ge=1)
    """Caption cleaning keeps at most this many words (TCL's pre_caption)."""
    shards: ShardOptions = ShardOptions()
    eval_fraction: float = Field(0.0, ge=0, lt=1)
    """Fraction of images held out (0: no split, one dataset at OUT)."""
    seed: int = 0
    """Seed of the held-out split."""
    chunk_size: int = Field(10_000, ge=1)
    """Input records per chunk sub-folder: the unit of resume."""
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    """Worker processes (1: everything in this process). Workers are spawned: a script calling convert with
    more than one needs the `if __name__ == "__main__":` guard, and each worker re-imports its top level."""
    batch_size: int = Field(32, ge=1)
    """Records per worker task."""
    max_reject_fraction: float | None = Field(None, ge=0, le=1)
    """Fail (after writing everything) when a larger fraction of records is rejected."""
    max_reject_count: int | None = Field(None, ge=0)
    """Fail (after writing everything) when more records than this are rejected."""
    overwrite: bool = False
    """Delete a previous output at OUT (written by dataprep) and start fresh."""

    @model_validator(mode="after")
    def _distinct_source_names(self) -> ConvertConfig:
        names = [spec.source_name for spec in self.sources]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"sources share the names {repeated}: give each a distinct `name` (sample ids use it)")
        for spec in self.sources:
            spec._limits = self.limits  # what each reader bounds its records by
        return self

    @property
    def splits(self) -> tuple[Split, ...]:
        return SPLITS if self.eval_fraction else ("train",)

    def dataset_location(self, split: Split) -> str:
        return join(self.out, split) if self.eval_fraction else self.out

    def output_settings(self) -> dict:
        """The settings that decide the output: a resumed run must use the same ones."""
        fields = {"sources", "images", "limits", "max_words", "shards", "eval_fraction", "seed", "chunk_size"}
        return self.model_dump(mode="json", include=fields)


class DatasetResult(BaseModel):
    location: str
    manifest: Manifest


class ConvertResult(BaseModel):
    datasets: dict[str, DatasetResult]
    """Split -> where its dataset is and what it holds."""
    already_complete: bool
    """True when a previous run had finished the same job (nothing was done)."""
    reject_limit_error: str | None
    """Set when the rejects exceed max_reject_fraction / max_reject_count."""


def count_records(config: ConvertConfig) -> int | None:
    """Source records in all sources (None if a source cannot tell without a download)."""
    counts = [count_source(spec) for spec in config.sources]
    return None if None in counts else sum(c for c in counts if c is not None)


class _SplitWriter:
    """Writes one split's chunks in order; chunk i holds the split's items i*chunk_size ... (i+1)*chunk_size-1."""

    def __init__(self, job: Job, split: Split, dataset: Store, config: ConvertConfig) -> None:
        self.job, self.split, self.dataset = job, split, dataset
        self.shards, self.chunk_size = config.shards, config.chunk_size
        self.reports = job.finished_chunks(split)
        """Chunk name -> report of every finished chunk (by a previous run or this one)."""
        self.items = 0
        self._current: ChunkWriter | None = None

    def place(self) -> int | None:
        """Position of the split's next item, or None when a previous run finished its chunk."""
        position = self.items
        self.items += 1
        return None if chunk_name(position // self.chunk_size) in self.reports else position

    def add(self, position: int, item: Item, outcome: Outcome, seen: dict[str, str]) -> None:
        name = chunk_name(position // self.chunk_size)
        if self._current is None or self._current.name != name:
            self._finish_current()
            self._current = ChunkWriter(self.dataset, name, self.shards)
        if isinstance(outcome, Reject):
            self._current.reject(outcome)
            return
        assert isinstance(item, SourceRecord) and isinstance(outcome, Accepted)
        first = seen.get(outcome.digest)
        if first is not None:
            self._current.reject(item.reject(RejectReason.DUPLICATE, f"same image bytes and caption as {first}"))
            return
        seen[outcome.digest] = item.sample_id
        for dropped in outcome.dropped:
            self._current.reject(item.reject(dropped.reason, f"caption {dropped.index} {dropped.caption!r}"))
        row = {
            "image": outcome.image, "caption": outcome.caption, "sample_id": item.sample_id,
            "source": item.source, "width": outcome.width, "height": outcome.height,
        }
        self._current.write(row, outcome.digest)

    def close(self) -> None:
        self._finish_current()
        if self.items == 0 and chunk_name(0) not in self.reports:  # an empty split is an empty dataset
            self._current = ChunkWriter(self.dataset, chunk_name(0), self.shards)
            self._finish_current()

    def abort(self) -> None:
        if self._current is not None:
            self._current.abort()
            self._current = None

    def _finish_current(self) -> None:
        if self._current is None:
            return
        report = self._current.finish()
        self.job.save_chunk(self.split, report)
        self.reports[report.name] = report
        self._current = None
        logger.info("%s %s done: %d rows, %d rejected", self.split, report.name, report.samples, len(report.rejects))

    def chunk_reports(self) -> list[ChunkReport]:
        """Every chunk of the split, in order (all must be finished)."""
        names = [chunk_name(i) for i in range(max(1, math.ceil(self.items / self.chunk_size)))]
        missing = [name for name in names if name not in self.reports]
        if missing:
            raise RuntimeError(f"{self.split}: chunks {missing} were not written")
        return [self.reports[name] for name in names]


def _reject_limit_error(config: ConvertConfig, manifests: list[Manifest]) -> str | None:
    rejected = sum(count for m in manifests for reason, count in m.rejected.items() if reason not in CAPTION_LEVEL)
    total = rejected + sum(m.samples for m in manifests)
    if config.max_reject_count is not None and rejected > config.max_reject_count:
        return f"{rejected} records rejected, more than the allowed {config.max_reject_count}"
    if config.max_reject_fraction is not None and total and rejected / total > config.max_reject_fraction:
        return f"{rejected} of {total} records rejected ({rejected / total:.1%}), more than the allowed " \
               f"{config.max_reject_fraction:.1%}"
    return None


def _write_chunks(config: ConvertConfig, writers: dict[Split, _SplitWriter], progress: Progress) -> None:
    seen = {
        digest: sample_id
        for writer in writers.values()
        for report in writer.reports.values()
        for digest, sample_id in report.digests.items()
    }

    def tasks():
        for split, item, weight in assign_splits(config.sources, config.eval_fraction, config.seed):
            position = writers[split].place()
            if position is None:
                progress.update(weight)
            else:
                yield (split, position, item, weight), item

    work = partial(process_batch, images=config.images, max_words=config.max_words, limits=config.limits)
    outcomes = ordered_map(work, tasks(), config.workers, config.batch_size, crashed)
    try:
        for (split, position, item, weight), outcome in outcomes:
            writers[split].add(position, item, outcome, seen)
            progress.update(weight)
        for writer in writers.values():
            writer.close()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise


def convert(config: ConvertConfig, progress: Progress | None = None) -> ConvertResult:
    """Run (or continue, or recognise as done) the conversion; see ConvertConfig.

    Skipped records of finished chunks count as progress too; the total is set once work starts.
    """
    job = Job.open(open_store(config.out), config.output_settings(), overwrite=config.overwrite)
    datasets = {split: open_store(config.dataset_location(split)) for split in config.splits}
    already_complete = job.is_complete(datasets.values())
    if already_complete:
        logger.info("%s: this conversion is already complete; nothing to do", config.out)
        manifests = {split: job.manifest(dataset) for split, dataset in datasets.items()}
    else:
        progress = progress if progress is not None else _NoProgress()  # (a tqdm bar has no truth value)
        progress.reset(total=count_records(config))  # opens every source: a bad one fails before any change
        job.start()
        writers = {split: _SplitWriter(job, split, dataset, config) for split, dataset in datasets.items()}
        _write_chunks(config, writers, progress)
        manifests = {
            split: finalize_dataset(datasets[split], writer.chunk_reports(), job.fingerprint)
            for split, writer in writers.items()
        }
    results = {
        split: DatasetResult(location=datasets[split].uri, manifest=manifest)
        for split, manifest in manifests.items() if manifest is not None
    }
    error = _reject_limit_error(config, [r.manifest for r in results.values()])
    return ConvertResult(datasets=results, already_complete=already_complete, reject_limit_error=error)
