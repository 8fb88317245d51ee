"""The image encoder: timm's VisionTransformer returning all tokens (CLS + patches)."""

from __future__ import annotations

from functools import partial

from timm.models.vision_transformer import VisionTransformer
from torch import nn

from trainer.config import VisionConfig


def build_vision_encoder(cfg: VisionConfig) -> VisionTransformer:
    """ViT with no classifier and no pooling: `forward_features` gives (B, 1 + N, width), final-normed.
    LayerNorm eps 1e-6 and no dropout / drop-path, as TCL's ViT-B/16."""
    return VisionTransformer(
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.width,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        num_classes=0,
        global_pool="",
        drop_rate=0.0,
        drop_path_rate=0.0,
    )
