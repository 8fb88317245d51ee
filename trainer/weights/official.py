"""The official TCL/ALBEF pretraining layout (uta-smile/TCL models/model_pretrain.py, class ALBEF) <-> ours.

Ours is the flat "full state" of trainer.weights.state: `online.<TCL key>`, `momentum.<MomentumEncoder key>`,
`queues.<FeatureQueue key>`. The official checkpoint is `torch.save({'model': state_dict, ...})` (Pretrain.py).
One prefix table maps the module trees both ways; the few tensors stored differently are converted here too:
- `temp` is 0-d there, a one-element parameter here (a 0-d parameter breaks DeepSpeed ZeRO);
- the queues are D x Q there, Q x D here; `queue_ptr` is our `queues.ptr`;
- xbert's `bert.embeddings.position_ids` buffer and the MLM decoder (`cls.predictions.decoder.weight`/`.bias`,
  tied to the word embeddings and to `cls.predictions.bias`) have no tensor of their own here: they are
  written from what they are tied to and, on reading, checked equal to it.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from trainer.model.pretrained import WeightLoadError

PREFIXES: tuple[tuple[str, str], ...] = (
    # (ours, official)
    ("online.visual_encoder.", "visual_encoder."),
    ("online.vision_proj.", "vision_proj."),
    ("online.text.", "text_encoder."),  # text.bert.* / text.cls.* = xbert BertForMaskedLM's bert.* / cls.*
    ("online.text_proj.", "text_proj."),
    ("online.itm_head.", "itm_head."),
    ("momentum.visual_encoder.", "visual_encoder_m."),
    ("momentum.vision_proj.", "vision_proj_m."),
    ("momentum.text.", "text_encoder_m."),
    ("momentum.text_proj.", "text_proj_m."),
)
TEMP = ("online.temp", "temp")
QUEUES = (("queues.image_queue", "image_queue"), ("queues.text_queue", "text_queue"))
POINTER = ("queues.ptr", "queue_ptr")
TIED = (
    # (official suffix under text_encoder[_m].: the official tensor tied to it, same suffix)
    ("cls.predictions.decoder.weight", "bert.embeddings.word_embeddings.weight"),
    ("cls.predictions.decoder.bias", "cls.predictions.bias"),
)
POSITION_IDS = "bert.embeddings.position_ids"
TEXT_ROOTS = ("text_encoder.", "text_encoder_m.")


def official_name(ours: str) -> str | None:
    """The official key of one of our full-state keys (None: not in the official layout)."""
    for mine, theirs in PREFIXES:
        if ours.startswith(mine):
            return theirs + ours.removeprefix(mine)
    return {TEMP[0]: TEMP[1], POINTER[0]: POINTER[1], **dict(QUEUES)}.get(ours)


def our_name(official: str) -> str | None:
    """Our full-state key of an official key (None: derived or unknown)."""
    for mine, theirs in PREFIXES:
        if official.startswith(theirs):
            return mine + official.removeprefix(theirs)
    return {TEMP[1]: TEMP[0], POINTER[1]: POINTER[0], **{b: a for a, b in QUEUES}}.get(official)


def _derived(official: str) -> str | None:
    """For a tensor the official layout stores twice (tied) or computes (position_ids): what it derives from."""
    for root in TEXT_ROOTS:
        for suffix, source in TIED:
            if official == root + suffix:
                return root + source
        if official == root + POSITION_IDS:
            return POSITION_IDS
    return None


def to_official(state: dict[str, Tensor], max_position_embeddings: int) -> dict[str, Tensor]:
    """Our full state -> the official `checkpoint['model']` dict (every tensor a fresh contiguous copy)."""
    out: dict[str, Tensor] = {}
    for name, value in state.items():
        theirs = official_name(name)
        if theirs is None:
            raise WeightLoadError(f"{name}: no official TCL/ALBEF counterpart")
        if name == TEMP[0]:
            value = value.reshape(())
        elif name in dict(QUEUES):
            value = value.t()
        out[theirs] = value.detach().clone().contiguous()
    for root in TEXT_ROOTS:
        if not any(k.startswith(root) for k in out):
            continue
        for suffix, source in TIED:
            out[root + suffix] = out[root + source]  # tied, as in xbert: one storage, two names
        out[root + POSITION_IDS] = torch.arange(max_position_embeddings).unsqueeze(0)
    return out


def from_official(model_state: dict[str, Tensor], source: str) -> tuple[dict[str, Tensor], list[str], list[str]]:
    """The official `checkpoint['model']` -> (our full state, derived keys checked, unknown keys).
    A derived tensor that disagrees with what it is tied to is an error naming both keys."""
    ours: dict[str, Tensor] = {}
    derived, unknown = [], []
    for name, value in model_state.items():
        if (tied_to := _derived(name)) is not None:
            if tied_to == POSITION_IDS:
                want = torch.arange(value.shape[-1]).expand_as(value)
                consistent = torch.equal(value.long(), want)
            else:
                consistent = tied_to in model_state and torch.equal(value, model_state[tied_to])
            if not consistent:
                raise WeightLoadError(f"{source}: {name} differs from {tied_to}, which the official model ties it to")
            derived.append(name)
            continue
        mine = our_name(name)
        if mine is None:
            unknown.append(name)
            continue
        if name == TEMP[1]:
            value = value.reshape(1)
        elif mine in dict(QUEUES):
            value = value.t().contiguous()
        ours[mine] = value
    return ours, derived, unknown


def interpolate_pos_embed(pos_embed: Tensor, grid: int, num_prefix_tokens: int = 1) -> Tensor:
    """(1, prefix + n*n, W) -> (1, prefix + grid*grid, W) as the official `interpolate_pos_embed`
    (models/vit.py): plain bicubic, align_corners=False, no antialias; the CLS position is kept."""
    old = int((pos_embed.shape[1] - num_prefix_tokens) ** 0.5)
    if old == grid:
        return pos_embed
    prefix, tokens = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    width = pos_embed.shape[-1]
    tokens = tokens.reshape(1, old, old, width).permute(0, 3, 1, 2).float()
    tokens = F.interpolate(tokens, size=(grid, grid), mode="bicubic", align_corners=False)
    tokens = tokens.permute(0, 2, 3, 1).flatten(1, 2).to(pos_embed.dtype)
    return torch.cat([prefix, tokens], dim=1)


def is_official(keys: Iterable[str]) -> bool:
    """Whether state-dict keys are the official pretraining layout's (its image and text encoder roots)."""
    return any(k.startswith(("visual_encoder.", "text_encoder.bert.")) for k in keys)
