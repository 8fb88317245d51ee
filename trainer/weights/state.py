"""The full state of a TCL run as one flat dict, and loading one into the live modules.

Keys: `online.<TCL key>` (encoders, heads, temperature), `momentum.<MomentumEncoder key>` (fp32 EMA copy),
`queues.<FeatureQueue key>` (image_queue, text_queue: Q x D; ptr). Every layout on disk is read into this
namespace (trainer.weights.load) and written from it (trainer.weights.export).
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from trainer.config import RunConfig
from trainer.model.pretrained import LoadReport, WeightLoadError
from trainer.weights.official import interpolate_pos_embed

logger = logging.getLogger(__name__)

ONLINE, MOMENTUM, QUEUES = "online.", "momentum.", "queues."
ENCODERS = tuple(ONLINE + p for p in ("visual_encoder.", "vision_proj.", "text.bert.", "text_proj."))
"""What a weights start must provide: anything less is an error (a file of another layout loads nothing)."""
POS_EMBED = "visual_encoder.pos_embed"


def full_state(
    model: nn.Module, teacher: nn.Module | None = None, queues: nn.Module | None = None
) -> dict[str, Tensor]:
    """The modules' tensors under the full-state keys (views of the live tensors, not copies)."""
    parts = [(ONLINE, model), (MOMENTUM, teacher), (QUEUES, queues)]
    return {prefix + k: v for prefix, module in parts if module is not None for k, v in module.state_dict().items()}


def _fit(name: str, value: Tensor, target: Tensor, source: str) -> Tensor:
    """value shaped as target: pos_embed resampled to the target's grid; any other mismatch is an error."""
    if name.endswith(POS_EMBED) and value.shape != target.shape and value.shape[-1] == target.shape[-1]:
        value = interpolate_pos_embed(value, int((target.shape[1] - 1) ** 0.5))
    if value.shape != target.shape:
        raise WeightLoadError(
            f"{source}: shape mismatch for {name}: checkpoint {tuple(value.shape)}, model {tuple(target.shape)}"
        )
    return value


@torch.no_grad()
def apply_full_state(
    state: dict[str, Tensor], source: str, known_layouts: str,
    model: nn.Module, teacher: nn.Module | None = None, queues: nn.Module | None = None,
) -> LoadReport:
    """Copy `state` into the modules. The online encoders must all be there; the momentum encoder is taken
    whole or, when the state has none, copied from the loaded online model; the queues are taken when their
    size fits (else they stay fresh, reported missing). Nothing is written before every check has passed."""
    targets = full_state(model, teacher, queues)
    report = LoadReport(source=source, unexpected=sorted(set(state) - set(targets)))
    lacking_parts = [p for p in ENCODERS if not any(n.startswith(p) for n in state)]
    if lacking_parts:
        raise WeightLoadError(
            f"{source}: it has no {', '.join(p + '*' for p in lacking_parts)} tensors of the model's encoders."
            f" Known layouts: {known_layouts}"
        )
    absent = [n for n in targets if n.startswith(ENCODERS) and n not in state]
    if absent:
        raise WeightLoadError(
            f"{source}: it does not fit the model's config: {len(absent)} encoder tensors are not in it"
            f" (e.g. {absent[0]})"
        )
    queue_keys = [n for n in targets if n.startswith(QUEUES)]
    queues_fit = all(n in state and state[n].shape == targets[n].shape for n in queue_keys)
    momentum_keys = [n for n in targets if n.startswith(MOMENTUM)]
    has_momentum = any(n in state for n in momentum_keys)
    chosen: dict[str, Tensor] = {}
    for name, target in targets.items():
        if name.startswith(QUEUES) and not queues_fit or name not in state:
            report.missing.append(name)
        else:
            chosen[name] = _fit(name, state[name], target, source)
    if has_momentum and (lacking := [n for n in momentum_keys if n not in chosen]):
        raise WeightLoadError(f"{source}: incomplete momentum encoder (no {lacking[0]}, {len(lacking) - 1} more)")
    for name, value in chosen.items():
        targets[name].copy_(value)
    if teacher is not None and not has_momentum:
        for name, value in targets.items():
            if name.startswith(MOMENTUM):
                value.copy_(targets[ONLINE + name.removeprefix(MOMENTUM)])
        report.missing = [n for n in report.missing if not n.startswith(MOMENTUM)]
        logger.info("%s has no momentum encoder: it starts as a copy of the online weights loaded", source)
    report.loaded = list(chosen)
    return report


def check_fits(state: dict[str, Tensor], cfg: RunConfig, source: str, known_layouts: str) -> LoadReport:
    """apply_full_state on the model `cfg` describes, built on the meta device: the same checks (every
    encoder tensor there, shapes fit), no memory and no values."""
    from trainer.model import FeatureQueue, MomentumEncoder
    from trainer.model.tcl import TCL

    with torch.device("meta"):
        model = TCL(cfg.model, cfg.loss)
        teacher = MomentumEncoder(model)
        queues = FeatureQueue(cfg.model.queue_size, cfg.model.embed_dim, seed=0)
    return apply_full_state(state, source, known_layouts, model, teacher, queues)
