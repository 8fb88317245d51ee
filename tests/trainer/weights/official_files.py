"""Official-layout test material: the key lists of data/ (facts from the official model definition, see
data/README.md), files with random values in that layout, and the official forward passes written by hand
from models/vit.py and models/xbert.py with plain torch ops."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

DATA = Path(__file__).parent / "data"


def official_keys(name: str) -> dict:
    """data/official_keys_<name>.json: {'keys': {key: [shape, dtype]}, 'config', 'bert_config', 'vit', ...}."""
    return json.loads((DATA / f"official_keys_{name}.json").read_text())


def random_official_state(name: str, seed: int = 0) -> dict[str, Tensor]:
    """A `checkpoint['model']` of the official model with random values, tied as the official model ties
    them: the MLM decoder is the word embedding and its bias the prediction bias; position_ids an arange."""
    keys = official_keys(name)["keys"]
    g = torch.Generator().manual_seed(seed)
    state: dict[str, Tensor] = {}
    for key, (shape, _) in keys.items():
        if key.endswith("position_ids"):
            state[key] = torch.arange(shape[-1]).expand(shape)
        elif key == "queue_ptr":
            state[key] = torch.tensor([7])
        elif key.endswith("norm.weight") or key.endswith(("norm1.weight", "norm2.weight", "LayerNorm.weight")):
            state[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            state[key] = 0.1 * torch.randn(shape, generator=g)
    state["temp"] = torch.tensor(0.05)
    for root in ("text_encoder.", "text_encoder_m."):
        state[root + "cls.predictions.decoder.weight"] = state[root + "bert.embeddings.word_embeddings.weight"]
        state[root + "cls.predictions.decoder.bias"] = state[root + "cls.predictions.bias"]
    return state


def vit_image_feature(sd: dict[str, Tensor], visual: str, proj: str, image: Tensor, heads: int, depth: int) -> Tensor:
    """models/vit.py VisionTransformer.forward, then F.normalize(vision_proj(CLS)) as model_pretrain.py."""
    w = sd[visual + "patch_embed.proj.weight"]
    x = F.conv2d(image, w, sd[visual + "patch_embed.proj.bias"], stride=w.shape[-1]).flatten(2).transpose(1, 2)
    b, width = x.shape[0], x.shape[-1]
    x = torch.cat([sd[visual + "cls_token"].expand(b, -1, -1), x], dim=1) + sd[visual + "pos_embed"]
    n = x.shape[1]
    for i in range(depth):
        p = f"{visual}blocks.{i}."
        h = F.layer_norm(x, (width,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        qkv = h @ sd[p + "attn.qkv.weight"].t() + sd[p + "attn.qkv.bias"]
        q, k, v = qkv.reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * (width // heads) ** -0.5).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, width)
        x = x + out @ sd[p + "attn.proj.weight"].t() + sd[p + "attn.proj.bias"]
        h = F.layer_norm(x, (width,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        h = F.gelu(h @ sd[p + "mlp.fc1.weight"].t() + sd[p + "mlp.fc1.bias"])
        x = x + h @ sd[p + "mlp.fc2.weight"].t() + sd[p + "mlp.fc2.bias"]
    x = F.layer_norm(x, (width,), sd[visual + "norm.weight"], sd[visual + "norm.bias"], eps=1e-6)
    return F.normalize(x[:, 0] @ sd[proj + "weight"].t() + sd[proj + "bias"], dim=-1)


def bert_text_feature(
    sd: dict[str, Tensor], text: str, proj: str, ids: Tensor, mask: Tensor, heads: int, layers: int
) -> Tensor:
    """models/xbert.py BertModel in mode='text' (layers below fusion_layer), eval mode, then
    F.normalize(text_proj(CLS)) as model_pretrain.py."""
    e = text + "bert.embeddings."
    width = sd[e + "word_embeddings.weight"].shape[1]

    def ln(x: Tensor, p: str) -> Tensor:
        return F.layer_norm(x, (width,), sd[p + "LayerNorm.weight"], sd[p + "LayerNorm.bias"], eps=1e-12)

    def linear(x: Tensor, p: str) -> Tensor:
        return x @ sd[p + "weight"].t() + sd[p + "bias"]

    length = ids.shape[1]
    x = sd[e + "word_embeddings.weight"][ids] + sd[e + "token_type_embeddings.weight"][0]
    x = ln(x + sd[e + "position_embeddings.weight"][:length], e)
    extended = (1.0 - mask[:, None, None, :].float()) * -10000.0  # xbert's get_extended_attention_mask
    b = ids.shape[0]
    for i in range(layers):
        p = f"{text}bert.encoder.layer.{i}."

        def split(t: Tensor) -> Tensor:
            return t.view(b, length, heads, -1).transpose(1, 2)

        q, k, v = (split(linear(x, p + f"attention.self.{n}.")) for n in ("query", "key", "value"))
        probs = (q @ k.transpose(-1, -2) / (width // heads) ** 0.5 + extended).softmax(dim=-1)
        context = (probs @ v).transpose(1, 2).reshape(b, length, width)
        x = ln(linear(context, p + "attention.output.dense.") + x, p + "attention.output.")
        x = ln(linear(F.gelu(linear(x, p + "intermediate.dense.")), p + "output.dense.") + x, p + "output.")
    return F.normalize(x[:, 0] @ sd[proj + "weight"].t() + sd[proj + "bias"], dim=-1)


def official_interpolate_pos_embed(pos_embed: Tensor, new_size: int) -> Tensor:
    """models/vit.py interpolate_pos_embed, step by step as written there (1 extra token: CLS)."""
    embedding_size = pos_embed.shape[-1]
    orig_size = int((pos_embed.shape[-2] - 1) ** 0.5)
    extra_tokens = pos_embed[:, :1]
    pos_tokens = pos_embed[:, 1:].reshape(-1, orig_size, orig_size, embedding_size).permute(0, 3, 1, 2)
    pos_tokens = F.interpolate(pos_tokens, size=(new_size, new_size), mode="bicubic", align_corners=False)
    return torch.cat((extra_tokens, pos_tokens.permute(0, 2, 3, 1).flatten(1, 2)), dim=1)
