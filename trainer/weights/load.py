"""Read any checkpoint this trainer knows into the full state (trainer.weights.state), whatever its layout:

- an official TCL/ALBEF pretraining .pth (`torch.save({'model': state_dict, ...})`, uta-smile/TCL Pretrain.py);
- a step directory of ours (checkpoints/step_*: DeepSpeed's files, online weights consolidated from the ZeRO
  partitions with DeepSpeed's own zero_to_fp32; momentum encoder, queues and config from the client state),
  or a checkpoints directory, read at its `latest` pointer;
- a tcl export (`python -m trainer.export ... --format tcl`: one fp32 safetensors file with the config).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from trainer.checkpoint import POINTER
from trainer.config import ConfigError, RunConfig, from_dict
from trainer.model.pretrained import LoadReport, WeightLoadError
from trainer.weights import official
from trainer.weights.state import MOMENTUM, ONLINE, QUEUES, apply_full_state

logger = logging.getLogger(__name__)

KNOWN_LAYOUTS = (
    "an official TCL/ALBEF pretraining .pth (checkpoint['model'] with visual_encoder.*, text_encoder.bert.*),"
    " a step directory of this trainer (checkpoints/step_*) or its checkpoints directory (with 'latest'),"
    " a tcl export (.safetensors from `python -m trainer.export --format tcl`)"
)
MODEL_STATES = "mp_rank_00_model_states.pt"
TCL_FORMAT = "tcl-full-state"
"""The `format` entry of a tcl export's safetensors metadata."""


@dataclass
class Checkpoint:
    """A checkpoint read into the full state; `config` is the run's config where the layout carries one."""

    state: dict[str, Tensor]
    layout: str
    source: str
    config: RunConfig | None = None
    derived: list[str] = field(default_factory=list)
    """Official tensors stored twice (tied) or computed, checked against what they derive from."""
    unknown: list[str] = field(default_factory=list)
    """Keys of the file that this trainer has no place for."""


def _config(tree: Any, source: str) -> RunConfig | None:
    if tree is None:
        return None
    try:
        return from_dict(tree)
    except ConfigError as err:
        raise WeightLoadError(f"{source}: its config does not fit this trainer's: {err}") from None


def _read_official(path: Path) -> Checkpoint:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" in str(err):
            raise WeightLoadError(
                f"{path}: holds Python objects beyond tensors and plain data, which torch.load(weights_only=True)"
                " refuses; re-save checkpoint['model'] alone with torch.save"
            ) from None
        raise WeightLoadError(f"{path}: not a torch file ({err}). Known layouts: {KNOWN_LAYOUTS}") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise WeightLoadError(f"{path}: not a readable torch file ({err}). Known layouts: {KNOWN_LAYOUTS}") from None
    model_state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(model_state, dict) or not official.is_official(model_state):
        raise WeightLoadError(f"{path}: not a checkpoint layout this trainer knows. Known layouts: {KNOWN_LAYOUTS}")
    state, derived, unknown = official.from_official(model_state, str(path))
    return Checkpoint(state=state, layout="official", source=str(path), derived=derived, unknown=unknown)


def _read_tcl(path: Path) -> Checkpoint:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise WeightLoadError(f"{path}: not a readable safetensors file ({err})") from None
    if metadata.get("format") != TCL_FORMAT:
        raise WeightLoadError(f"{path}: a safetensors file but not a tcl export. Known layouts: {KNOWN_LAYOUTS}")
    config = _config(json.loads(metadata["config"]), str(path))
    return Checkpoint(state=load_file(str(path)), layout="tcl", source=str(path), config=config)


def _read_step_dir(path: Path) -> Checkpoint:
    """Online weights: fp32, consolidated from every rank's ZeRO partition by DeepSpeed's zero_to_fp32 (the
    module copy in the model states is the working precision, bf16 under bf16 training); the rest from the
    client state that rank 0 saved (plain data: it loads with weights_only=True; zero_to_fp32 reads the
    partitions with DeepSpeed's own, unpickling loader, so a step directory is trusted input)."""
    client = torch.load(path / MODEL_STATES, map_location="cpu", weights_only=True)
    if any(path.glob("*_optim_states.pt")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        with contextlib.redirect_stdout(io.StringIO()) as chatter:  # zero_to_fp32 prints its progress
            online = get_fp32_state_dict_from_zero_checkpoint(str(path.parent), tag=path.name)
        logger.debug("zero_to_fp32: %s", chatter.getvalue())
    else:  # no ZeRO partitions (stage 0): the module copy is the only one
        online = client["module"]
    missing = [k for k in ("teacher", "queues", "config") if k not in client]
    if missing:
        raise WeightLoadError(f"{path}: a DeepSpeed checkpoint without this trainer's client state {missing}")
    state = {ONLINE + k: v.float() for k, v in online.items()}
    state |= {MOMENTUM + k: v for k, v in client["teacher"].items()}
    state |= {QUEUES + k: v for k, v in client["queues"].items()}
    config = _config(client["config"], str(path))
    return Checkpoint(state=state, layout="step directory", source=str(path), config=config)


def resolve_step_dir(path: Path) -> Path | None:
    """A step directory as given, or the newest complete one of a checkpoints directory; None otherwise."""
    if (path / MODEL_STATES).is_file():
        return path
    pointer = path / POINTER
    if pointer.is_file() and (path / pointer.read_text().strip() / MODEL_STATES).is_file():
        return path / pointer.read_text().strip()
    return None


def read_checkpoint(location: str | Path) -> Checkpoint:
    """Detect the layout of a file or directory and read it; an unknown layout is an error naming the known ones."""
    path = Path(location)
    if path.is_dir():
        step_dir = resolve_step_dir(path)
        if step_dir is None:
            raise WeightLoadError(
                f"{path}: a directory without {MODEL_STATES} or a '{POINTER}' pointer. Known layouts: {KNOWN_LAYOUTS}"
            )
        return _read_step_dir(step_dir)
    if not path.is_file():
        raise WeightLoadError(f"{path}: no such file or directory")
    with path.open("rb") as f:
        head = f.read(16)
    # safetensors: 8-byte little-endian header length, then the JSON header
    if len(head) > 9 and head[8:9] == b"{":
        return _read_tcl(path)
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save: a zip archive (or a legacy pickle)
        raise WeightLoadError(f"{path}: neither a torch file nor safetensors. Known layouts: {KNOWN_LAYOUTS}")
    return _read_official(path)


def init_from(
    location: str, model: nn.Module, teacher: nn.Module | None = None, queues: nn.Module | None = None
) -> LoadReport:
    """`model.init`: the weights (online, momentum, queues where their size fits, temperature) of any known
    layout; no optimizer, schedule or step."""
    checkpoint = read_checkpoint(location)
    report = apply_full_state(
        checkpoint.state, f"model.init {checkpoint.source} ({checkpoint.layout})", KNOWN_LAYOUTS, model, teacher, queues
    )
    report.derived = checkpoint.derived
    report.unexpected = sorted(set(report.unexpected) | set(checkpoint.unknown))
    logger.info(report.summary())
    return report
