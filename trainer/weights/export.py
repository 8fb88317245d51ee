"""Writers of a checkpoint's full state for use elsewhere; each writes to a temporary name and renames, so
an interrupted export leaves nothing half-written under the final name.

- `tcl`: the whole state (online, momentum, queues, temperature), fp32, in one safetensors file with the
  config in its metadata; `model.init` and `tcl-eval` read it back.
- `official`: `{'model': state_dict, 'config': ...}` in the official TCL/ALBEF layout, for the official
  fine-tuning scripts (Retrieval.py, VQA.py, NLVR.py load `checkpoint['model']` with their own code).
- `hf`: `text/` = the text + fusion BERT as a transformers BertForMaskedLM directory (self-attention, FFN,
  embeddings, MLM head of all layers; safetensors, config, tokenizer) with the fusion layers'
  cross-attention in `text/crossattention.safetensors` (transformers' BertModel cannot use it: its
  cross-attention exists only in decoder mode, on every layer, with hidden-width keys);
  `vision/` = the image encoder as a timm checkpoint (`timm.create_model("local-dir:<out>/vision",
  pretrained=True)`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from trainer.config import RunConfig
from trainer.data.transforms import CLIP_MEAN, CLIP_STD
from trainer.weights import official
from trainer.weights.load import TCL_FORMAT, Checkpoint
from trainer.weights.state import ONLINE

if TYPE_CHECKING:
    from transformers import BertConfig

FORMATS = ("tcl", "official", "hf")
CROSS_ATTENTION_FILE = "crossattention.safetensors"


def _atomic(out: Path, write: Callable[[Path], None]) -> Path:
    """write(tmp) then rename tmp -> out (a file or a directory); an existing `out` is replaced."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    tmp.unlink(missing_ok=True)
    write(tmp)
    if out.is_dir():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def _fp32(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in state.items()}


def write_tcl(checkpoint: Checkpoint, cfg: RunConfig, out: Path) -> Path:
    from safetensors.torch import save_file

    metadata = {"format": TCL_FORMAT, "config": json.dumps(cfg.model_dump(mode="json"))}
    return _atomic(out, lambda tmp: save_file(_fp32(checkpoint.state), str(tmp), metadata=metadata))


def official_config(cfg: RunConfig) -> dict:
    """The entries of the official configs/Pretrain.yaml that describe the weights, plus the BERT config."""
    m, t = cfg.model, cfg.model.text
    return {
        "image_res": m.vision.img_size, "vision_width": m.vision.width, "embed_dim": m.embed_dim,
        "queue_size": m.queue_size, "momentum": m.momentum, "temp": m.temp_init,
        "bert_config": {**_bert_config(cfg).to_dict(), "fusion_layer": t.text_layers, "encoder_width": m.vision.width},
    }


def write_official(checkpoint: Checkpoint, cfg: RunConfig, out: Path) -> Path:
    model = official.to_official(_fp32(checkpoint.state), cfg.model.text.max_position_embeddings)
    return _atomic(out, lambda tmp: torch.save({"model": model, "config": official_config(cfg)}, tmp))


def _bert_config(cfg: RunConfig) -> BertConfig:
    from transformers import BertConfig

    t = cfg.model.text
    return BertConfig(
        vocab_size=t.vocab_size, hidden_size=t.hidden_size, num_hidden_layers=t.text_layers + t.fusion_layers,
        num_attention_heads=t.num_heads, intermediate_size=t.intermediate_size, hidden_act="gelu",
        hidden_dropout_prob=t.dropout, attention_probs_dropout_prob=t.dropout,
        max_position_embeddings=t.max_position_embeddings, type_vocab_size=t.type_vocab_size,
        layer_norm_eps=t.layer_norm_eps, pad_token_id=0,
    )


def _timm_config(cfg: RunConfig) -> dict:
    v = cfg.model.vision
    return {
        "architecture": "vit_base_patch16_224",
        "num_classes": 0,
        "global_pool": "",
        "model_args": {
            "img_size": v.img_size, "patch_size": v.patch_size, "embed_dim": v.width, "depth": v.depth,
            "num_heads": v.num_heads, "mlp_ratio": v.mlp_ratio, "qkv_bias": True, "global_pool": "",
        },
        "pretrained_cfg": {
            "input_size": [3, v.img_size, v.img_size], "interpolation": "bicubic", "crop_pct": 1.0,
            "mean": list(CLIP_MEAN), "std": list(CLIP_STD), "num_classes": 0,
        },
    }


def write_hf(checkpoint: Checkpoint, cfg: RunConfig, out: Path) -> Path:
    from safetensors.torch import save_file
    from transformers import BertForMaskedLM

    from trainer.data.tokenizer import load_tokenizer

    online = {k.removeprefix(ONLINE): v for k, v in _fp32(checkpoint.state).items() if k.startswith(ONLINE)}
    text = {k.removeprefix("text."): v for k, v in online.items() if k.startswith("text.")}
    cross = {k: v for k, v in text.items() if ".crossattention." in k}
    vision = {k.removeprefix("visual_encoder."): v for k, v in online.items() if k.startswith("visual_encoder.")}

    def write(tmp: Path) -> None:
        bert = BertForMaskedLM(_bert_config(cfg))
        result = bert.load_state_dict({k: v for k, v in text.items() if k not in cross}, strict=False)
        untied = set(result.missing_keys) - {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
        if untied or result.unexpected_keys:  # our BERT names are transformers': anything else is a bug here
            raise RuntimeError(f"hf export: not transformers' BERT names: {sorted(untied)} {result.unexpected_keys}")
        bert.save_pretrained(tmp / "text", safe_serialization=True)
        layout = {"key_value_width": str(cfg.model.vision.width), "first_fusion_layer": str(cfg.model.text.text_layers)}
        save_file(cross, str(tmp / "text" / CROSS_ATTENTION_FILE), metadata=layout)
        load_tokenizer(cfg.model.text.tokenizer).save_pretrained(tmp / "text")
        (tmp / "vision").mkdir()
        save_file(vision, str(tmp / "vision" / "model.safetensors"))
        (tmp / "vision" / "config.json").write_text(json.dumps(_timm_config(cfg), indent=2))

    return _atomic(out, write)


WRITERS: dict[str, Callable[[Checkpoint, RunConfig, Path], Path]] = {
    "tcl": write_tcl, "official": write_official, "hf": write_hf,
}
