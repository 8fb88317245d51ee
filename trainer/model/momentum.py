"""The momentum (EMA) encoders: an fp32 copy of the dual encoder, updated with multi-tensor ops.

It lives outside the DeepSpeed-wrapped module because DeepSpeed's bf16 mode casts every parameter it
holds, and a bf16 EMA with m = 0.995 rounds the update away. It runs in train mode (dropout active in the
momentum text pass, as the official code) under autocast, without autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from trainer import kernels
from trainer.model.tcl import TCL, DualEncoder, TeacherOutput


class MomentumEncoder(DualEncoder):
    """fp32 EMA copy of the online model's image encoder, vision_proj, whole BERT and text_proj."""

    def __init__(self, online: TCL) -> None:
        super().__init__(online.cfg)
        self.load_state_dict(self._shared_state(online))
        self.float().requires_grad_(False)

    @staticmethod
    def _shared_state(online: TCL) -> dict[str, Tensor]:
        names = ("visual_encoder.", "vision_proj.", "text.", "text_proj.")
        return {k: v for k, v in online.state_dict().items() if k.startswith(names)}

    @torch.no_grad()
    def update(self, online: TCL, momentum: float) -> None:
        """p_m = m * p_m + (1 - m) * p for every shared parameter, p being the online working weight
        (bf16 under DeepSpeed) upcast to fp32: one fused multi-tensor launch on GPU, foreach ops on CPU."""
        online_params = dict(online.named_parameters())
        names = [name for name, _ in self.named_parameters()]
        kernels.ema_update_(
            [p for _, p in self.named_parameters()], [online_params[name].detach() for name in names], momentum
        )

    def pooled_image_locals(self, tokens: Tensor) -> Tensor:
        """Patch tokens -> vision_proj -> L2-normalise -> average-pool the grid to local_grid^2 locals."""
        feats = F.normalize(self.vision_proj(tokens[:, 1:]).float(), dim=-1)
        b, n, d = feats.shape
        grid = self.cfg.vision.grid_size
        pooled = F.adaptive_avg_pool2d(feats.transpose(1, 2).reshape(b, d, grid, grid), self.cfg.local_grid)
        return pooled.flatten(2).transpose(1, 2)

    @torch.no_grad()
    def forward(
        self,
        image: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor,
        *,
        image_locals: bool,
        text_locals: bool,
        mlm_input_ids: Tensor | None = None,
        mlm_positions: Tensor | None = None,
    ) -> TeacherOutput:
        """Momentum features of view 2 and the caption; LMI locals and MLM teacher logits when asked
        (the MLM teacher runs on the masked caption with the momentum image tokens of view 2)."""
        image_tokens, image_feat = self.encode_image(image)
        text_hidden, text_feat = self.encode_text(input_ids, attention_mask)
        out = TeacherOutput(image_feat=image_feat, text_feat=text_feat)
        if image_locals:
            out.image_locals = self.pooled_image_locals(image_tokens)
        if text_locals:
            out.text_locals = F.normalize(self.text_proj(text_hidden[:, 1:]).float(), dim=-1)
            out.text_local_mask = attention_mask[:, 1:].bool()
        if mlm_input_ids is not None and mlm_positions is not None:
            masked_hidden = self.text.encode_text(mlm_input_ids, attention_mask)
            fused = self.text.fuse(masked_hidden, attention_mask, self.text.image_kv(image_tokens))
            out.mlm_logits = self.text.mlm_logits(fused.reshape(-1, fused.shape[-1]).index_select(0, mlm_positions))
        return out
