"""Admission: a run is accepted only if it could start. POST /v1/runs answers 422 with every reason.

Refused: what the trainer's own start-up checks refuse (`trainer.preflight.preflight`, the same function:
a global batch the requested ranks cannot compose, a split without an MDS index, shards declaring other
columns or decoders), s3:// locations outside the
allowed buckets, and what the chosen launcher cannot host: for the local launcher more ranks than the
host's cores or more GPUs than it has (or than the configured caps); for Kubernetes the configured
per-run caps. Without this a run that can never start is launched, fails, and is relaunched.
"""

from __future__ import annotations

import os
from pathlib import Path

from api.run_config import DATA_LOCATIONS, NAME_OR_PATH
from api.schemas import Resources
from api.settings import LauncherName, Settings
from trainer.config import RunConfig
from trainer.preflight import preflight

NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")
"""One entry per GPU the NVIDIA driver sees (absent without the driver): a count without torch or CUDA."""


class AdmissionError(ValueError):
    """The run could never start; the message has one line per reason."""


def host_cores() -> int:
    """Cores this process may run on (its affinity, not the machine's total)."""
    return len(os.sched_getaffinity(0))


def host_gpus() -> int:
    return len(list(NVIDIA_GPUS.iterdir())) if NVIDIA_GPUS.is_dir() else 0


def _bucket_problems(config: RunConfig, settings: Settings) -> list[str]:
    if settings.s3_buckets is None:
        return []
    tree = config.model_dump()
    problems = []
    for keys in DATA_LOCATIONS + NAME_OR_PATH:
        value: object = tree
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, str) and value.startswith("s3://"):
            bucket = value.removeprefix("s3://").partition("/")[0]
            if bucket not in settings.s3_buckets:
                problems.append(f"{'.'.join(keys)}: bucket {bucket!r} is not one this server accepts "
                                f"({', '.join(settings.s3_buckets) or 'none'})")
    return problems


def _hosting_problems(resources: Resources, launcher: LauncherName, settings: Settings) -> list[str]:
    ranks = resources.nodes * resources.procs_per_node
    gpus = ranks * resources.gpus_per_proc
    max_ranks, max_gpus = settings.run_max_ranks, settings.run_max_gpus
    rank_cap = "TCL_API_RUN_MAX_RANKS" if max_ranks is not None else ""
    gpu_cap = "TCL_API_RUN_MAX_GPUS" if max_gpus is not None else ""
    if launcher == "local":  # without a configured cap, what this host has
        if max_ranks is None:
            max_ranks, rank_cap = host_cores(), "the cores of this host"
        if max_gpus is None:
            max_gpus, gpu_cap = host_gpus(), "the GPUs of this host"
    problems = []
    if max_ranks is not None and ranks > max_ranks:
        problems.append(f"resources: {ranks} ranks (nodes x procs_per_node), more than the {launcher} launcher "
                        f"hosts per run: {max_ranks} ({rank_cap})")
    if max_gpus is not None and gpus > max_gpus:
        problems.append(f"resources: {gpus} GPUs (ranks x gpus_per_proc), more than the {launcher} launcher "
                        f"hosts per run: {max_gpus} ({gpu_cap})")
    return problems


def admit(config: RunConfig, resources: Resources, launcher: LauncherName, settings: Settings) -> None:
    """Raise AdmissionError, with one line per reason, when the run could never start."""
    problems = [
        *preflight(config, world_size=resources.nodes * resources.procs_per_node, read_remote=settings.s3_check_index),
        *_bucket_problems(config, settings),
        *_hosting_problems(resources, launcher, settings),
    ]
    if problems:
        raise AdmissionError("\n".join(problems))
