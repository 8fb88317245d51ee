"""The TCL model: encoders and heads, and the forward that computes every objective of TCL.md.

The online model here is what DeepSpeed wraps (its bf16 mode casts every parameter it holds). The
momentum encoders and the queues live outside it (trainer.model.momentum, trainer.model.feature_queue)
and come in as arguments: the teacher's outputs of this step and the queues as they were before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer import kernels
from trainer.config import LossConfig, ModelConfig
from trainer.losses import itm_loss, sample_hard_negatives, weighted_total
from trainer.model.bert import TextFusionModel
from trainer.model.vision import build_vision_encoder


@dataclass
class TeacherOutput:
    """What the momentum encoders give one step (no gradient; features fp32 and L2-normalised)."""

    image_feat: Tensor
    """(B, D) momentum image features of view 2."""
    text_feat: Tensor
    """(B, D) momentum text features of the caption."""
    image_locals: Tensor | None = None
    """(B, G*G, D) patch features pooled to the local grid (not renormalised), for LMI."""
    text_locals: Tensor | None = None
    """(B, L-1, D) token features after CLS, for LMI."""
    text_local_mask: Tensor | None = None
    """(B, L-1) bool: which text locals are real tokens."""
    mlm_logits: Tensor | None = None
    """(capacity, V) teacher logits at the masked positions, for MLM distillation."""


def pool_image(tokens: Tensor, pool: str) -> Tensor:
    """(B, 1 + N, W) ViT tokens -> (B, W): the CLS token ('token') or the mean of the N patch tokens ('avg')."""
    return tokens[:, 0] if pool == "token" else tokens[:, 1:].mean(dim=1)


def pool_text(hidden: Tensor, attention_mask: Tensor, pool: str) -> Tensor:
    """(B, L, H) hidden states -> (B, H): [CLS] ('cls') or the mean over the valid tokens ('mean'; [CLS]
    and [SEP] included, padding excluded)."""
    if pool == "cls":
        return hidden[:, 0]
    weights = attention_mask.to(hidden.dtype)[:, :, None]
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


class DualEncoder(nn.Module):
    """Image encoder + projection and text/fusion BERT + projection: the part that has a momentum copy."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.visual_encoder = build_vision_encoder(cfg.vision)
        self.vision_proj = nn.Linear(cfg.vision.width, cfg.embed_dim)
        self.text = TextFusionModel(cfg.text, image_width=cfg.vision.width)
        self.text_proj = nn.Linear(cfg.text.hidden_size, cfg.embed_dim)

    @property
    def dtype(self) -> torch.dtype:
        return self.vision_proj.weight.dtype

    def encode_image(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, H, W) -> all tokens (B, 1 + N, W) and the L2-normalised image feature (B, D) in fp32
        (pooled as model.vision.pool says)."""
        tokens = self.visual_encoder.forward_features(image.to(self.dtype))
        pooled = pool_image(tokens, self.cfg.vision.pool)
        return tokens, F.normalize(self.vision_proj(pooled).float(), dim=-1)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """(B, L) -> hidden states (B, L, H) and the L2-normalised text feature (B, D) in fp32 (pooled as
        model.text.pool says)."""
        hidden = self.text.encode_text(input_ids, attention_mask)
        pooled = pool_text(hidden, attention_mask, self.cfg.text.pool)
        return hidden, F.normalize(self.text_proj(pooled).float(), dim=-1)

    def compile_blocks(self) -> None:
        """torch.compile every ViT block and BERT layer in place: the parameter names stay, so
        checkpoints and the EMA pairing do not change."""
        for block in [*self.visual_encoder.blocks, *self.text.bert.encoder.layer]:
            block.compile()

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        self.visual_encoder.set_grad_checkpointing(enabled)
        self.text.grad_checkpointing = enabled


class TCL(DualEncoder):
    """The online model: encoders, ITM head and the learnable temperature; forward returns the losses."""

    def __init__(self, cfg: ModelConfig, loss: LossConfig) -> None:
        super().__init__(cfg)
        self.loss_cfg = loss
        self.itm_head = nn.Linear(cfg.text.hidden_size, 2)
        # One element, not 0-d: a 0-d parameter crashes DeepSpeed ZeRO on 2+ ranks.
        self.temp = nn.Parameter(torch.full((1,), cfg.temp_init))

    def clamped_temp(self) -> Tensor:
        """The temperature as every term uses it: clamped in the forward, since an in-place clamp of the
        parameter does not survive ZeRO's fp32 master copy. The clamp is straight-through: outside the
        range the parameter still gets the gradient, so (like the official projection) it can come back
        instead of sticking where a plain clamp's gradient is zero."""
        t = self.temp
        return t + (t.clamp(self.cfg.temp_min, self.cfg.temp_max) - t).detach()

    def itm_logits(self, fused: Tensor, attention_mask: Tensor) -> Tensor:
        """(N, L, H) fusion output of N (text, image) pairs -> (N, 2) ITM logits (no match, match), read
        from the state model.text.fusion_pool names."""
        return self.itm_head(pool_text(fused, attention_mask, self.cfg.text.fusion_pool))

    def forward(
        self,
        image: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor,
        teacher: TeacherOutput,
        image_queue: Tensor,
        text_queue: Tensor,
        alpha: float,
        mlm_input_ids: Tensor | None = None,
        mlm_positions: Tensor | None = None,
        mlm_labels: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """One training forward on view 1 of the images. Returns {'loss': weighted total, term: value}
        with the terms detached (for logging); terms of weight 0 are not computed."""
        w = self.loss_cfg
        temp = self.clamped_temp()
        image_tokens, img = self.encode_image(image)
        text_hidden, txt = self.encode_text(input_ids, attention_mask)

        terms = kernels.queue_contrastive_losses(
            img, txt, teacher.image_feat, teacher.text_feat, image_queue, text_queue, temp, alpha,
            cma=bool(w.cma_i2t or w.cma_t2i), imc=bool(w.imc_i2i or w.imc_t2t),
        )
        if w.lmi_image:
            if teacher.image_locals is None:
                raise ValueError("lmi_image has a non-zero weight but the teacher output has no image locals")
            terms["lmi_image"] = kernels.local_mutual_information(img, teacher.image_locals, None, temp)
        if w.lmi_text:
            if teacher.text_locals is None or teacher.text_local_mask is None:
                raise ValueError("lmi_text has a non-zero weight but the teacher output has no text locals")
            terms["lmi_text"] = kernels.local_mutual_information(txt, teacher.text_locals, teacher.text_local_mask, temp)

        # All fusion passes (ITM positives, ITM negatives, MLM) in one call over shared image keys/values.
        b = image.shape[0]
        hidden, masks, image_index = [], [], []
        rows = torch.arange(b, device=image.device)
        if w.itm:
            with torch.no_grad():
                neg_temp = temp.detach() if w.itm_negative_temp is None else w.itm_negative_temp
                neg_text, neg_image = sample_hard_negatives(
                    img @ teacher.text_feat.t() / neg_temp, txt @ teacher.image_feat.t() / neg_temp
                )
            hidden += [text_hidden, text_hidden, text_hidden.index_select(0, neg_text)]
            masks += [attention_mask, attention_mask, attention_mask.index_select(0, neg_text)]
            image_index += [rows, neg_image, rows]
        if w.mlm:
            if mlm_input_ids is None or mlm_positions is None or mlm_labels is None:
                raise ValueError("MLM has a non-zero weight but no masked inputs were given")
            hidden.append(self.text.encode_text(mlm_input_ids, attention_mask))
            masks.append(attention_mask)
            image_index.append(rows)
        if hidden:
            fused_mask = torch.cat(masks)
            fused = self.text.fuse(torch.cat(hidden), fused_mask, self.text.image_kv(image_tokens), torch.cat(image_index))
            if w.itm:
                labels = torch.cat([torch.ones(b, dtype=torch.long), torch.zeros(2 * b, dtype=torch.long)]).to(image.device)
                terms["itm"] = itm_loss(self.itm_logits(fused[: 3 * b], fused_mask[: 3 * b]), labels)
            if w.mlm:
                mlm_fused = fused[-b:].reshape(-1, fused.shape[-1]).index_select(0, mlm_positions)
                terms["mlm"] = kernels.mlm_head_loss(
                    self.text.mlm_hidden(mlm_fused), self.text.decoder_weight, self.text.cls.predictions.bias,
                    teacher.mlm_logits, mlm_labels, alpha,
                )
        # CMA and IMC come in pairs: drop a direction of weight 0 that was computed with its partner.
        weights = w.weights()
        terms = {name: value for name, value in terms.items() if weights[name]}
        loss = weighted_total(terms, weights)
        return {"loss": loss, **{name: value.detach() for name, value in terms.items()}}
