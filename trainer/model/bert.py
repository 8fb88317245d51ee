"""BERT split into a text encoder and a fusion encoder, written on SDPA with BERT's parameter names.

Layers [0, text_layers) attend to the text only; the following fusion layers add cross-attention to
the image tokens (query = text, key/value = image). Parameter names match transformers'
BertForMaskedLM (`bert.embeddings...`, `bert.encoder.layer.N...`, `cls.predictions...`), so
bert-base-uncased loads by state dict; cross-attention (`crossattention.*`, ALBEF's name) starts random.
Transformers' BertLayer is not used: it only cross-attends as a causal decoder, its internals differ
between 4.x and 5.x, and it cannot reuse the image keys/values across the fusion passes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from trainer.config import TextConfig

ImageKV = list[tuple[Tensor, Tensor]]
"""Per fusion layer, the image tokens projected to keys and values: (B_img, heads, N, head_dim) each."""


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, input_ids: Tensor) -> Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings.weight[0]
        return self.dropout(self.LayerNorm(x))


class PostNormOutput(nn.Module):
    """Projection back to the hidden width, dropout, residual and LayerNorm: BERT's post-norm block after
    an attention (`attention.output`) and after the FFN (`output`), which differ only in input width."""

    def __init__(self, cfg: TextConfig, in_features: int) -> None:
        super().__init__()
        self.dense = nn.Linear(in_features, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class AttentionProjections(nn.Module):
    """query / key / value projections; key and value read `kv_width` features (the image width for
    cross-attention)."""

    def __init__(self, cfg: TextConfig, kv_width: int) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(kv_width, cfg.hidden_size)
        self.value = nn.Linear(kv_width, cfg.hidden_size)

    def split_heads(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, -1).transpose(1, 2)  # (B, heads, N, head_dim)

    def key_value(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.split_heads(self.key(x)), self.split_heads(self.value(x))


class Attention(nn.Module):
    """Multi-head attention on SDPA. `self` holds the projections (BERT's naming)."""

    def __init__(self, cfg: TextConfig, kv_width: int) -> None:
        super().__init__()
        self.self = AttentionProjections(cfg, kv_width)
        self.output = PostNormOutput(cfg, cfg.hidden_size)
        self.dropout_p = cfg.dropout

    def forward(self, x: Tensor, kv: tuple[Tensor, Tensor], mask: Tensor | None) -> Tensor:
        q = self.self.split_heads(self.self.query(x))
        k, v = kv
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0)
        b, _, n, _ = out.shape
        return self.output(out.transpose(1, 2).reshape(b, n, -1), x)


class Intermediate(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.dense(x))


class BertLayer(nn.Module):
    """Self-attention, then (fusion layers only) cross-attention to the image, then the FFN."""

    def __init__(self, cfg: TextConfig, image_width: int | None) -> None:
        super().__init__()
        self.attention = Attention(cfg, cfg.hidden_size)
        self.crossattention = Attention(cfg, image_width) if image_width is not None else None
        self.intermediate = Intermediate(cfg)
        self.output = PostNormOutput(cfg, cfg.intermediate_size)

    def forward(self, x: Tensor, mask: Tensor | None, image_kv: tuple[Tensor, Tensor] | None = None) -> Tensor:
        x = self.attention(x, self.attention.self.key_value(x), mask)
        if self.crossattention is not None:
            assert image_kv is not None, "a fusion layer needs the image keys/values"
            x = self.crossattention(x, image_kv, None)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self, cfg: TextConfig, image_width: int) -> None:
        super().__init__()
        self.layer = nn.ModuleList(
            BertLayer(cfg, image_width if i >= cfg.text_layers else None)
            for i in range(cfg.text_layers + cfg.fusion_layers)
        )


class BertBackbone(nn.Module):
    """Embeddings + layers (transformers' `bert.` prefix)."""

    def __init__(self, cfg: TextConfig, image_width: int) -> None:
        super().__init__()
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoder(cfg, image_width)


class PredictionTransform(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.LayerNorm(F.gelu(self.dense(x)))


class MLMPredictions(nn.Module):
    """BERT's MLM head: transform, then a decoder tied to the word embeddings, plus a bias."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.transform = PredictionTransform(cfg)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))


class MLMHead(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.predictions = MLMPredictions(cfg)


def _attention_mask(mask: Tensor) -> Tensor:
    """(B, L) 1/0 padding mask -> (B, 1, 1, L) boolean SDPA mask (True = attend)."""
    return mask.bool()[:, None, None, :]


class TextFusionModel(nn.Module):
    """The whole text side of TCL: text encoder, fusion encoder and MLM head in one BERT."""

    def __init__(self, cfg: TextConfig, image_width: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.bert = BertBackbone(cfg, image_width)
        self.cls = MLMHead(cfg)
        self.grad_checkpointing = False
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """BERT's initialisation: normal(0, init_std) for weights and embeddings (0.02: BERT's), zero biases."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.cfg.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @property
    def text_layers(self) -> nn.ModuleList:
        return self.bert.encoder.layer[: self.cfg.text_layers]

    @property
    def fusion_layers(self) -> nn.ModuleList:
        return self.bert.encoder.layer[self.cfg.text_layers :]

    def _run(self, layer: BertLayer, x: Tensor, mask: Tensor, kv: tuple[Tensor, Tensor] | None) -> Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(layer, x, mask, kv, use_reentrant=False)
        return layer(x, mask, kv)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Text encoder: (B, L) ids -> (B, L, H) hidden states."""
        x = self.bert.embeddings(input_ids)
        mask = _attention_mask(attention_mask)
        for layer in self.text_layers:
            x = self._run(layer, x, mask, None)
        return x

    def image_kv(self, image_embeds: Tensor) -> ImageKV:
        """Cross-attention keys/values of the image tokens, once per fusion layer, reused by every
        fusion pass over the same images (positives, ITM negatives, MLM)."""
        return [layer.crossattention.self.key_value(image_embeds) for layer in self.fusion_layers]

    def fuse(self, text_hidden: Tensor, attention_mask: Tensor, image_kv: ImageKV, image_index: Tensor | None = None) -> Tensor:
        """Fusion encoder over (text, image) pairs: row r pairs text_hidden[r] with image image_index[r]
        (None = the same row)."""
        mask = _attention_mask(attention_mask)
        x = text_hidden
        for layer, (k, v) in zip(self.fusion_layers, image_kv):
            if image_index is not None:
                k, v = k.index_select(0, image_index), v.index_select(0, image_index)
            x = self._run(layer, x, mask, (k, v))
        return x

    def mlm_hidden(self, hidden: Tensor) -> Tensor:
        """The MLM head's transform; the decoder is applied by `mlm_logits` or a fused loss."""
        return self.cls.predictions.transform(hidden)

    @property
    def decoder_weight(self) -> Tensor:
        return self.bert.embeddings.word_embeddings.weight

    def mlm_logits(self, hidden: Tensor) -> Tensor:
        return self.mlm_hidden(hidden) @ self.decoder_weight.t() + self.cls.predictions.bias
