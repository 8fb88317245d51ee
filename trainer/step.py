"""One TCL training step: masks, EMA, momentum forward, online forward/backward/step, enqueue."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from trainer.config import RunConfig
from trainer.model import FeatureQueue, MomentumEncoder, mask_tokens, masked_capacity, masked_positions


@dataclass(frozen=True)
class SpecialTokens:
    pad: int
    cls: int
    mask: int

    @classmethod
    def of(cls, tokenizer: Any) -> "SpecialTokens":
        return cls(pad=tokenizer.pad_token_id, cls=tokenizer.cls_token_id, mask=tokenizer.mask_token_id)


def step_seed(seed: int, step: int, rank: int) -> int:
    """The seed of everything random inside a step (MLM masks, dropout, ITM negatives): a function of
    (seed, step, rank), so a resumed run replays exactly the same draws."""
    digest = hashlib.blake2b(f"{seed}/{step}/{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class TrainStep:
    """Runs a step on a batch from the loader. Holds what lives outside the DeepSpeed engine: the fp32
    momentum encoder, the queues and the batched device-side augmentation."""

    def __init__(
        self, cfg: RunConfig, engine: Any, teacher: MomentumEncoder, queues: FeatureQueue,
        augment: torch.nn.Module, tokens: SpecialTokens, device: torch.device, rank: int,
    ) -> None:
        self.cfg, self.engine, self.teacher, self.queues = cfg, engine, teacher, queues
        self.augment, self.tokens, self.device, self.rank = augment, tokens, device, rank
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.engine.precision == "bf16")

    def __call__(self, batch: dict[str, Tensor], step: int, alpha: float) -> dict[str, Tensor]:
        w = self.cfg.loss
        torch.manual_seed(step_seed(self.cfg.seed, step, self.rank))
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        view1, view2 = self.augment(batch["image_u8"], batch["aug_params"])
        ids, mask = batch["input_ids"], batch["attention_mask"]

        mlm: dict[str, Tensor] = {}
        if w.mlm:
            masked, labels = mask_tokens(
                ids, vocab_size=self.cfg.model.text.vocab_size, probability=w.mlm_probability,
                pad_id=self.tokens.pad, cls_id=self.tokens.cls, mask_id=self.tokens.mask,
            )
            positions, position_labels = masked_positions(labels, masked_capacity(ids.numel(), w.mlm_probability))
            mlm = {"mlm_input_ids": masked, "mlm_positions": positions, "mlm_labels": position_labels}

        self.teacher.update(self.engine.module, self.cfg.model.momentum)
        distill_mlm = bool(w.mlm) and alpha > 0
        with self.autocast:
            teacher_out = self.teacher(
                view2, ids, mask, image_locals=bool(w.lmi_image), text_locals=bool(w.lmi_text),
                mlm_input_ids=mlm.get("mlm_input_ids") if distill_mlm else None,
                mlm_positions=mlm.get("mlm_positions") if distill_mlm else None,
            )
        out = self.engine(
            view1, ids, mask, teacher_out, self.queues.image_queue, self.queues.text_queue, alpha, **mlm
        )
        self.engine.backward(out["loss"])
        self.engine.step()
        self.queues.enqueue(teacher_out.image_feat, teacher_out.text_feat)
        return {name: value.detach() for name, value in out.items()}
