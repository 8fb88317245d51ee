"""Save on every rank, count a checkpoint only when every rank's part is there, and resume from one tag
that all ranks agreed on.

Two calls resume a run, on either side of `deepspeed.initialize`:
  plan = checkpointer.plan_resume("auto" | PATH)   # before the engine: which tag, saved world size,
  cfg = plan.adapt(cfg)                             # global batch held, load_universal if elastic
  ... build the engine from cfg ...
  client_state = checkpointer.load(engine, plan)    # files fetched and checked on every rank, loaded
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from trainer.checkpoint.elastic import convert_to_universal
from trainer.checkpoint.layout import (
    COMPLETE,
    POINTER,
    UNIVERSAL,
    Manifest,
    manifest_name,
    missing_files,
    parse_pointer,
    read_pointer,
    rng_name,
    step_of,
    tag_for,
    tags,
    write_durably,
)
from trainer.checkpoint.outputs import restore_outputs, sync_outputs
from trainer.checkpoint.rng import load_rng_state, rng_state
from trainer.checkpoint.storage import LocalStorage, S3Storage, Storage, is_s3
from trainer.config import ConfigError, RunConfig, from_dict
from trainer.config.run import merge
from trainer.distributed import DistInfo, barrier

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
_MODEL_STATES = re.compile(r"mp_rank_\d+_model_states\.pt")
_FULL_BELOW = 64 * 2**20
"""Free bytes under which a failed save is reported as a full disk (a failed write leaves less than a buffer)."""


class CheckpointError(ValueError):
    """A checkpoint could not be written or read; the message is the same on every rank."""


@dataclass(frozen=True)
class SavedCheckpoint:
    path: Path
    """This node's local copy (the checkpoint itself on a filesystem, the staging copy for s3://)."""
    uri: str
    """Its address in the run's storage: file:// or s3://."""


def storage_mode(cfg: RunConfig) -> str:
    """'s3', 'shared' or 'node_local' from checkpoint.storage and the form of output_dir."""
    wanted, remote = cfg.checkpoint.storage, is_s3(cfg.output_dir)
    if remote and wanted != "auto":
        raise ConfigError(f"checkpoint.storage={wanted} needs a filesystem output_dir, not {cfg.output_dir!r}"
                          " (s3:// output uses object storage: leave checkpoint.storage=auto)")
    return "s3" if remote else ("node_local" if wanted == "node_local" else "shared")


def default_staging(output_dir: str) -> Path:
    digest = hashlib.sha256(output_dir.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "tcl-staging" / digest


@dataclass(frozen=True)
class ResumePlan:
    """The checkpoint a run resumes from, decided (and agreed by all ranks) before its engine is built."""

    tag: str
    source: str
    """Address of the checkpoints folder it comes from (file:// or s3://)."""
    saved_world_size: int
    world_size: int
    meta: dict[str, Any] = field(default_factory=dict)
    """Run facts saved beside it (batch sizes), read from rank 0's manifest."""

    @property
    def elastic(self) -> bool:
        """Saved on another data-parallel size: loaded through DeepSpeed's universal format."""
        return self.saved_world_size != self.world_size

    @property
    def step(self) -> int:
        return step_of(self.tag) or 0

    def adapt(self, cfg: RunConfig) -> RunConfig:
        """cfg for the resumed run: the saved global batch held on this world size (data.global_batch_size,
        from which trainer.config.resolve_batch derives the accumulation, refusing a global batch that
        this world size cannot compose), and `checkpoint.load_universal` on an elastic resume. Refuses
        (ConfigError) a global batch that would change the run."""
        update: dict[str, Any] = {"checkpoint": {"load_universal": self.elastic}}
        saved = self.meta.get("global_batch")
        wanted = cfg.data.global_batch_size
        if saved is not None and wanted is not None and wanted != saved:
            raise ConfigError(
                f"checkpoint {self.tag} was trained with a global batch of {saved}; data.global_batch_size={wanted}"
                f" would change the run: set data.global_batch_size={saved} (or start a new run)")
        if saved is not None and wanted is None and saved != cfg.data.batch_size * self.world_size:
            update["data"] = {"global_batch_size": saved}
        if self.elastic:
            logger.info("elastic resume of %s: %d -> %d ranks, global batch %s held (the accumulation follows;"
                        " a global batch this world size cannot compose is refused with the ways out)",
                        self.tag, self.saved_world_size, self.world_size, saved)
        return from_dict(merge(cfg.model_dump(mode="json"), update))


class Registry(Protocol):
    """The control plane's checkpoint registry, as pruning sees it (trainer.control_plane.ControlPlane)."""

    def kept_checkpoints(self) -> list[str] | None:
        """URIs that must not be pruned (pinned or best); None when the registry did not answer."""

    def report_deleted(self, uris: list[str]) -> None:
        """The URIs pruning deleted."""


class Checkpointer:
    """Saves and resumes a run's checkpoints under <output_dir>/checkpoints/ on its storage layout.
    With a registry (rank 0, launched by the API), pruning keeps what the registry keeps and reports what
    it deleted."""

    def __init__(self, cfg: RunConfig, dist: DistInfo, registry: Registry | None = None) -> None:
        self.dist = dist
        self.registry = registry
        self.keep_last = cfg.checkpoint.keep_last
        self.mode = storage_mode(cfg)
        if self.mode == "s3":
            self.run_dir = Path(cfg.checkpoint.staging_dir or default_staging(cfg.output_dir))
            self.outputs: Storage = S3Storage(cfg.output_dir)
            self.store: Storage = S3Storage(f"{cfg.output_dir.rstrip('/')}/{CHECKPOINTS}")
        else:
            self.run_dir = Path(cfg.output_dir)
            self.outputs = LocalStorage(self.run_dir)
            self.store = LocalStorage(self.run_dir / CHECKPOINTS)
        self.root = self.run_dir / CHECKPOINTS
        """The local folder DeepSpeed writes into: the store itself, or the staging area of s3 output."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.mode == "shared":
            self._check_shared()

    # --- who does what ---------------------------------------------------------------------------
    @property
    def is_writer(self) -> bool:
        """Writes the pointer and prunes: global rank 0, or each node's first rank on node-local disks."""
        return self.dist.local_rank == 0 if self.mode == "node_local" else self.dist.is_main

    def _node_first_rank(self) -> int:
        return self.dist.rank - self.dist.local_rank

    def _needed_ranks(self) -> list[int]:
        """Whose parts this rank loads on the same world size: its own, and the model-states writer's."""
        return sorted({self.dist.rank, self._node_first_rank() if self.mode == "node_local" else 0})

    def _ranks_here(self, world_size: int) -> range:
        """The ranks whose files this rank's storage holds."""
        if self.mode == "node_local":
            first = self._node_first_rank()
            return range(first, min(first + self.dist.local_world_size, world_size))
        return range(world_size)

    # --- start-up check --------------------------------------------------------------------------
    def _check_shared(self) -> None:
        """Refuse a filesystem output_dir that some node does not share: rank 0 writes a nonce there,
        every rank reads it back (one broadcast, one gather); all ranks stop with the same message."""
        if self.dist.world_size == 1:
            return
        probe = self.run_dir / ".shared-check"
        nonce = [secrets.token_hex(8) if self.dist.is_main else None]
        if self.dist.is_main:
            write_durably(probe, nonce[0])
        torch.distributed.broadcast_object_list(nonce, src=0)
        try:
            seen = probe.read_text() == nonce[0]
        except OSError:
            seen = False
        views = _gather((seen, os.uname().nodename))
        if self.dist.is_main:
            probe.unlink(missing_ok=True)
        blind = [f"rank {r} on {host}" for r, (ok, host) in enumerate(views) if not ok]
        if blind:
            raise ValueError(
                f"output_dir {self.run_dir} is not shared by every node: {', '.join(blind)} cannot see what rank 0"
                f" wrote there. Use a filesystem all nodes mount, output_dir=s3://bucket/prefix, or"
                f" checkpoint.storage=node_local (each node keeps its own ranks' files)")

    # --- save ------------------------------------------------------------------------------------
    def save(self, engine: Any, step: int, client_state: dict[str, Any]) -> SavedCheckpoint:
        """Save on every rank; the checkpoint counts (pointer updated, old ones pruned) only after every
        rank's files are durable in the store. Returns the checkpoint's address (file:// or s3://).
        Raises CheckpointError on every rank when any rank failed (a full disk): the partial checkpoint
        is removed, the previous complete one and the pointer to it are left as they were."""
        tag, rank = tag_for(step), self.dist.rank
        tag_dir = self.root / tag
        own = manifest_name(rank)
        error, deepspeed_done = None, False
        try:
            self.store.delete(f"{tag}/{own}")  # a re-save of the tag must not look complete half-way
            engine.save_checkpoint(str(self.root), tag=tag, client_state=client_state, save_latest=False)
            deepspeed_done = True
            torch.save(rng_state(), tag_dir / rng_name(rank))
            files = self._own_files(engine, tag_dir)
            for name in files:
                self.store.put(tag_dir / name, f"{tag}/{name}")
            manifest = Manifest(rank, self.dist.world_size, {n: (tag_dir / n).stat().st_size for n in files},
                                _run_facts(engine, self.dist.world_size))
            write_durably(tag_dir / own, manifest.to_json())
            self.store.put(tag_dir / own, f"{tag}/{own}")
        except Exception as err:  # noqa: BLE001 - every rank must learn of it, or the others hang
            error = f"rank {rank}: {type(err).__name__}: {err}{_disk_full_note(self.root)}"
            logger.debug("checkpoint %s failed on rank %d", tag, rank, exc_info=True)
            if not deepspeed_done:
                barrier()  # DeepSpeed's closing barrier, which the failing rank skipped
        errors = [e for e in _gather(error) if e]
        if not errors:  # every rank's files are in the store: the writers confirm it from a listing
            errors = [e for e in _gather(self._incomplete_parts(tag) if self.is_writer else None) if e]
        if errors:
            if self.is_writer:
                self.store.delete(f"{tag}/")
                if self.mode == "s3":
                    LocalStorage(self.root).delete(tag)
            previous = read_pointer(self.root)
            raise CheckpointError(f"checkpoint {self.store.uri(tag)} could not be saved ({'; '.join(errors)});"
                                  f" the previous complete checkpoint {previous or '(none)'} is untouched")
        protected = self._protected()
        if self.is_writer:
            write_durably(self.root / POINTER, tag)
            self.store.put(self.root / POINTER, POINTER)
            if protected is not None:
                self._prune(keep=tag, protected=protected)
        self.sync_outputs()
        barrier()
        logger.info("checkpoint %s complete", self.store.uri(tag))
        return SavedCheckpoint(tag_dir, self.store.uri(tag))

    def sync_outputs(self) -> None:
        """Put the run's other outputs (metrics, config, plot) into its storage (rank 0; at the end of a run)."""
        if self.dist.is_main:
            sync_outputs(self.run_dir, self.outputs)

    def _own_files(self, engine: Any, tag_dir: Path) -> list[str]:
        """This rank's files in tag_dir: its ZeRO partition, its RNG state, and DeepSpeed's model-states
        file if this rank writes it."""
        zero = re.compile(rf"(bf16_)?zero_pp_rank_{self.dist.rank}_mp_rank_\d+_optim_states\.pt")
        names = [p.name for p in tag_dir.iterdir() if zero.fullmatch(p.name)]
        if engine.save_non_zero_checkpoint:
            names += [p.name for p in tag_dir.iterdir() if _MODEL_STATES.fullmatch(p.name)]
        return sorted(names) + [rng_name(self.dist.rank)]

    def _incomplete_parts(
        self, tag: str, world_size: int | None = None, listing: dict[str, int] | None = None
    ) -> str | None:
        """None when every part of tag that this rank's storage holds is complete, else why not."""
        world_size = world_size or self.dist.world_size
        listing = self.store.list(f"{tag}/") if listing is None else listing
        problems = _problems(self.store, listing, tag, world_size, self._ranks_here(world_size))
        return f"{self.store.uri(tag)} is incomplete: {'; '.join(problems)}" if problems else None

    def _protected(self) -> set[str] | None:
        """The tags the registry keeps, asked by rank 0 and shared with every writer (one collective): empty
        without a registry, None when it did not answer (nothing is pruned then)."""
        kept: set[str] | None = set()
        if self.dist.is_main and self.registry is not None:
            uris = self.registry.kept_checkpoints()
            kept = None if uris is None else {
                tag for tag in (u.rstrip("/").rsplit("/", 1)[-1] for u in uris) if self.store.uri(tag) in uris
            }
        return _gather(kept)[0]

    def _prune(self, keep: str, protected: set[str]) -> None:
        """Keep the newest keep_last complete tags up to `keep` and every protected one; delete older complete
        ones and older partial ones."""
        listing = self.store.list()
        older = [t for t in tags(listing) if (step_of(t) or 0) <= (step_of(keep) or 0)]
        complete = [t for t in older if t == keep or self._parts_complete(t, listing)]
        kept = set(complete[-self.keep_last:])
        oldest_kept = min(kept, key=lambda t: step_of(t) or 0)
        deleted = []
        for old in older:
            if old in kept or old in protected:
                continue
            if old in complete or (step_of(old) or 0) < (step_of(oldest_kept) or 0):
                self.store.delete(f"{old}/")
                if self.mode == "s3":
                    LocalStorage(self.root).delete(old)
                deleted.append(old)
        if self.dist.is_main and self.registry is not None:
            self.registry.report_deleted([self.store.uri(t) for t in deleted if t in complete])

    def _parts_complete(self, tag: str, listing: dict[str, int]) -> bool:
        ref = _read_manifest(self.store, listing, tag, self._ranks_here(self.dist.world_size)[0])
        return ref is not None and self._incomplete_parts(tag, ref.world_size, listing) is None

    # --- resume ----------------------------------------------------------------------------------
    def plan_resume(self, resume: str) -> ResumePlan | None:
        """Decide, on every rank alike, what `--resume` loads: 'auto' = the newest checkpoint complete for
        every rank (the pointer's when it is; a missing, empty or torn pointer falls back to the newest),
        None when there is none; a PATH = exactly that checkpoint folder, or CheckpointError.
        Collective: every rank must call it, before building the engine (see ResumePlan.adapt)."""
        store, local, wanted = self._source(resume)
        verdicts = self._loadable(store, wanted)
        pointer = self._pointer(store) if self.dist.is_main else None
        gathered = _gather(verdicts)
        decision: list[Any] = [None]
        if self.dist.is_main:
            decision[0] = _decide(gathered, pointer, wanted, store.uri())
        if _distributed():
            torch.distributed.broadcast_object_list(decision, src=0)
        tag, saved_world, meta, error = decision[0]
        if error:
            raise CheckpointError(error)
        if tag is None:
            logger.info("no complete checkpoint under %s: starting fresh", store.uri())
            return None
        self._resume_source = (store, local)
        return ResumePlan(tag, store.uri(), saved_world, self.dist.world_size, meta)

    def _source(self, resume: str) -> tuple[Storage, Path, str | None]:
        """(store, its local folder, the one tag asked for or None) of a --resume value."""
        if resume == "auto":
            return self.store, self.root, None
        parent, _, tag = resume.rstrip("/").rpartition("/")
        if step_of(tag) is None or not parent:
            raise CheckpointError(f"--resume {resume}: not a checkpoint folder (expected .../step_NNNNNNNN)")
        if is_s3(parent):
            return S3Storage(parent), self.root, tag
        return LocalStorage(Path(parent)), Path(parent), tag

    def _pointer(self, store: Storage) -> str | None:
        text = _read_text(store, POINTER) if POINTER in store.list(POINTER) else None
        return None if text is None else parse_pointer(text, store.uri(POINTER))

    def _loadable(self, store: Storage, wanted: str | None) -> dict[str, Any]:
        """tag -> (saved world size, rank 0's run facts or None, why not loadable here or None, whether
        that reason forbids starting fresh instead)."""
        listing = store.list()
        world, rank = self.dist.world_size, self.dist.rank
        out: dict[str, Any] = {}
        for tag in tags(listing) if wanted is None else [wanted]:
            own = _read_manifest(store, listing, tag, rank)
            ref = own or _read_manifest(store, listing, tag, self._ranks_here(world)[0])
            if ref is None:
                out[tag] = (None, None, f"rank {rank}: no manifest of {tag} in {store.uri()}", False)
                continue
            saved = ref.world_size
            if saved == world:
                problems = _problems(store, listing, tag, saved, self._needed_ranks()) if own else [
                    f"rank {rank}: no manifest of its own"]
            elif self.mode == "node_local":
                problems = [f"{tag} was saved by {saved} ranks: resuming it on {world} needs every rank's files in"
                            " one place (shared or s3:// storage), not node-local disks"]
            else:
                problems = _problems(store, listing, tag, saved, range(saved))
            blocking = saved != world and self.mode == "node_local"
            out[tag] = (saved, ref.meta if self.dist.is_main else None, "; ".join(problems) or None, blocking)
        return out

    def load(self, engine: Any, plan: ResumePlan) -> dict[str, Any]:
        """Fetch what this rank needs (object storage: only its own files), check it on every rank, load
        DeepSpeed's state (universal on an elastic resume) and this rank's RNG; return the client state.

        Trust: DeepSpeed's loader unpickles its files (torch.load(weights_only=False)), so a checkpoint
        is trusted input, like code: resume only from checkpoints your own runs wrote. The project's own
        files (RNG state, manifests, pointer) load with weights_only=True or as JSON."""
        store, local = self._resume_source
        tag_dir = local / plan.tag
        error = None
        try:
            if plan.elastic:
                load_dir, load_tag = self._universal(store, local, plan), UNIVERSAL
            else:
                self._fetch(store, local, plan)
                load_dir, load_tag = local, plan.tag
        except Exception as err:  # noqa: BLE001 - every rank must learn of it
            error = f"rank {self.dist.rank}: {type(err).__name__}: {err}"
        errors = [e for e in _gather(error) if e]
        if errors:
            raise CheckpointError(f"cannot resume from {store.uri(plan.tag)}: {'; '.join(errors)}")
        path, client_state = engine.load_checkpoint(
            str(load_dir), tag=load_tag, load_optimizer_states=True, load_lr_scheduler_states=True
        )
        if path is None:
            raise CheckpointError(f"checkpoint {store.uri(plan.tag)} could not be loaded")
        rng_file = tag_dir / rng_name(self.dist.rank)
        if rng_file.is_file():
            load_rng_state(rng_file)
        if self.dist.is_main:
            restore_outputs(self.run_dir, self.outputs, plan.step)
        barrier()
        logger.info("resumed from %s", store.uri(plan.tag))
        return client_state

    def _fetch(self, store: Storage, local: Path, plan: ResumePlan) -> None:
        """Make this rank's files and the model-states file present locally (downloads only those from
        object storage; on a filesystem they are in place) and check each one's size."""
        listing = store.list(f"{plan.tag}/")
        needed = {}
        for q in self._needed_ranks():
            manifest = _read_manifest(store, listing, plan.tag, q)
            if manifest is None:
                raise FileNotFoundError(f"rank {q}'s manifest of {plan.tag} is gone")
            needed |= {f"{plan.tag}/{n}": size for n, size in manifest.files.items()
                       if q == self.dist.rank or _MODEL_STATES.fullmatch(n)}
        _get_all(store, local, needed)

    def _universal(self, store: Storage, local: Path, plan: ResumePlan) -> Path:
        """The tag converted to DeepSpeed's universal format (once; rank 0 converts where every saved
        rank's files are, others wait); returns the folder holding `universal/`."""
        tag_dir = local / plan.tag
        error = None
        if self.dist.is_main:
            try:
                listing = store.list(f"{plan.tag}/")
                if f"{plan.tag}/{UNIVERSAL}/{COMPLETE}" not in listing:
                    _get_all(store, local, {k: s for k, s in listing.items() if f"/{UNIVERSAL}/" not in k})
                    convert_to_universal(tag_dir)
                    done = tag_dir / UNIVERSAL / COMPLETE  # uploaded last: it marks the upload complete
                    files = sorted(p for p in (tag_dir / UNIVERSAL).rglob("*") if p.is_file() and p != done)
                    for path in [*files, done]:
                        store.put(path, f"{plan.tag}/{path.relative_to(tag_dir).as_posix()}")
            except Exception as err:  # noqa: BLE001 - the others wait on the gather below
                error = f"converting {plan.tag} to the universal format failed: {type(err).__name__}: {err}"
        errors = [e for e in _gather(error) if e]
        if errors:
            raise CheckpointError(errors[0])
        listing = store.list(f"{plan.tag}/")
        if f"{plan.tag}/{UNIVERSAL}/{COMPLETE}" not in listing:
            raise FileNotFoundError(f"{store.uri(plan.tag)}/{UNIVERSAL} is incomplete")
        own_rng = f"{plan.tag}/{rng_name(self.dist.rank)}"
        _get_all(store, local, {k: size for k, size in listing.items()
                                if k.startswith(f"{plan.tag}/{UNIVERSAL}/") or k == own_rng})
        return tag_dir


def _disk_full_note(path: Path) -> str:
    """Names a full disk, which torch's writer reports only as 'unexpected pos' or 'file write failed'."""
    usage = shutil.disk_usage(path)
    if usage.free < _FULL_BELOW:
        return f" (the disk is full: {usage.free / 2**20:.1f} MiB of {usage.total / 2**20:.0f} MiB free under {path})"
    return ""


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _gather(obj: Any) -> list[Any]:
    """obj of every rank, in rank order (a world of one without a process group)."""
    if not _distributed():
        return [obj]
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def _get_all(store: Storage, local: Path, sizes: dict[str, int]) -> None:
    """Each key present at local/key with its size: fetched unless already there, checked after."""
    for key, size in sizes.items():
        path = local / key
        if not (path.is_file() and path.stat().st_size == size):
            store.get(key, path)
        if path.stat().st_size != size:
            raise FileNotFoundError(f"{path} has {path.stat().st_size} bytes, its manifest says {size}")


def _read_text(store: Storage, key: str) -> str | None:
    """A small file's text (a manifest, the pointer) without leaving a copy; None when absent or not text."""
    with tempfile.TemporaryDirectory(prefix="tcl-ckpt-") as scratch:
        try:
            store.get(key, Path(scratch) / "file")
            return (Path(scratch) / "file").read_text()
        except (FileNotFoundError, UnicodeDecodeError):
            return None


def _read_manifest(store: Storage, listing: dict[str, int], tag: str, rank: int) -> Manifest | None:
    key = f"{tag}/{manifest_name(rank)}"
    text = _read_text(store, key) if key in listing else None
    return None if text is None else Manifest.from_json(text)


def _problems(store: Storage, listing: dict[str, int], tag: str, world_size: int,
              ranks: range | list[int]) -> list[str]:
    """What keeps the parts of `ranks` of tag (saved by world_size ranks) from being complete."""
    problems = []
    for q in ranks:
        manifest = _read_manifest(store, listing, tag, q)
        if manifest is None:
            problems.append(f"rank {q}'s part of {tag} has no manifest")
        elif manifest.world_size != world_size:
            problems.append(f"rank {q}'s part of {tag} was saved by {manifest.world_size} ranks, not {world_size}")
        elif missing := missing_files(manifest, tag, listing):
            problems.append(f"rank {q}'s {', '.join(missing)} of {tag} are missing or truncated")
    return problems


def _decide(gathered: list[dict[str, Any]], pointer: str | None, wanted: str | None, where: str) -> tuple:
    """(tag, saved world size, meta, error) from every rank's verdicts: a tag counts when every rank can
    load it with the same saved world size."""
    every = set.intersection(*(set(v) for v in gathered)) if gathered else set()
    complete = sorted(
        (t for t in every if all(v[t][2] is None for v in gathered) and len({v[t][0] for v in gathered}) == 1),
        key=lambda t: step_of(t) or 0,
    )
    if wanted is not None:
        if wanted in complete:
            return wanted, gathered[0][wanted][0], gathered[0][wanted][1], None
        reasons = sorted({v[wanted][2] for v in gathered if wanted in v and v[wanted][2]})
        return None, None, None, f"--resume {where}/{wanted}: not a complete checkpoint ({'; '.join(reasons)})"
    if not complete:
        reasons = "; ".join(sorted({v[t][2] for v in gathered for t in v if v[t][2]}))
        if any(v[t][3] for v in gathered for t in v):
            return None, None, None, f"cannot resume from {where}: {reasons}"
        if reasons:
            logger.warning("no checkpoint under %s is complete for every rank (%s): starting fresh", where, reasons)
        return None, None, None, None
    tag = pointer if pointer in complete else complete[-1]
    if pointer is not None and pointer != tag:
        logger.warning("pointer names %s, which is not complete for every rank: resuming from %s", pointer, tag)
    elif pointer is None:
        logger.warning("no valid pointer under %s: resuming from the newest complete checkpoint %s", where, tag)
    return tag, gathered[0][tag][0], gathered[0][tag][1], None


def _run_facts(engine: Any, world_size: int) -> dict[str, Any]:
    """What a resume must know before it builds its engine."""
    return {
        "world_size": world_size, "micro_batch": engine.train_micro_batch_size_per_gpu(),
        "accumulation": engine.gradient_accumulation_steps(), "global_batch": engine.train_batch_size(),
    }
