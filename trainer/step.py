"""One TCL optimizer step: EMA, then per micro-batch masks, momentum forward and online forward/backward,
one optimizer update, then the enqueue of every micro-batch's momentum features.

Gradient accumulation (data.global_batch_size, resolved by trainer.config.resolve_batch). ALBEF and TCL
train at 8 GPUs x 64 = 512 and their official code has no accumulation: the batch of 64 on one GPU
defines every in-batch term, and the queue takes all 512 momentum features after each step. A rank that
accumulates k micro-batches of B therefore stands for k ranks of B without accumulation:
- the momentum EMA runs once per optimizer step, before the first micro-batch (every rank of the
  8-GPU run updates once, then all of them run their momentum forward);
- each micro-batch is a forward/backward of its own B rows: the in-batch columns of CMA/IMC are its
  own B momentum features, the queue is the one from before the step, and the ITM hard negatives,
  the LMI negatives and the MLM masks stay within it;
- the queues take every micro-batch's features of every rank once per optimizer step, micro-major
  (micro 0 of ranks 0..W-1, then micro 1 ...): the order W ranks x k micro-batches holds on W x k
  ranks without accumulation, where the gather is in rank order;
- the randomness of micro-batch j on rank r is seeded by (seed, step, j x W + r): rank j x W + r's seed
  on W x k ranks (without accumulation it is the rank, as before);
- the loader yields micro x accum rows per rank and micro-batch j takes rows j, j + k, j + 2k ...: that
  is what streaming deals to rank j x W + r on W x k ranks (it hands a node's samples to its ranks in
  turn), so 1 rank x k micro-batches sees the same sample ids in the same micro-batches as k ranks.
The optimizer, the LR schedule, the alpha ramp and the checkpoint cadence count optimizer steps.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from trainer.config import BatchPlan, RunConfig
from trainer.engine.schedule import momentum_coefficient
from trainer.model import FeatureQueue, MomentumEncoder, TeacherOutput, mask_tokens, masked_capacity, masked_positions


@dataclass(frozen=True)
class SpecialTokens:
    pad: int
    cls: int
    mask: int

    @classmethod
    def of(cls, tokenizer: Any) -> SpecialTokens:
        return cls(pad=tokenizer.pad_token_id, cls=tokenizer.cls_token_id, mask=tokenizer.mask_token_id)


def step_seed(seed: int, step: int, micro: int) -> int:
    """The seed of everything random inside a micro-batch (MLM masks, dropout, ITM negatives): a function
    of (seed, step, global micro-batch index: BatchPlan.micro_index), so a resumed run replays exactly the
    same draws, and micro-batch j on one rank draws what rank j draws on several."""
    digest = hashlib.blake2b(f"{seed}/{step}/{micro}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def split_micro_batches(batch: dict[str, Tensor], accum: int, widths: list[int]) -> Iterator[dict[str, Tensor]]:
    """A rank's loader batch -> `accum` micro-batches: micro-batch j is rows j, j + accum, ... (streaming's
    order on `accum` times more ranks), its captions cut to `widths[j]` tokens (the loader pads a batch
    to its longest caption: as it would have padded this micro-batch on its own)."""
    if accum == 1:
        yield batch
        return
    for j, width in enumerate(widths):
        rows = slice(j, None, accum)
        yield {
            "image_u8": batch["image_u8"][:, rows].contiguous(),
            "aug_params": batch["aug_params"][:, rows].contiguous(),
            "input_ids": batch["input_ids"][rows, :width].contiguous(),
            "attention_mask": batch["attention_mask"][rows, :width].contiguous(),
        }


def micro_widths(attention_mask: Tensor, accum: int, fixed_length: bool) -> list[int]:
    """The token width of each micro-batch: its longest caption, from the loader's CPU mask (no device
    synchronisation), or the loader's width when it pads every caption to the same length."""
    if accum == 1 or fixed_length:
        return [attention_mask.shape[1]] * accum
    return [int(attention_mask[j::accum].sum(1).max()) for j in range(accum)]


class TrainStep:
    """Runs an optimizer step on a batch from the loader (plan.accum micro-batches per rank). Holds what
    lives outside the DeepSpeed engine: the fp32 momentum encoder, the queues and the batched device-side
    augmentation. Returns the loss terms averaged over every micro-batch of every rank."""

    def __init__(
        self, cfg: RunConfig, engine: Any, teacher: MomentumEncoder, queues: FeatureQueue,
        augment: torch.nn.Module, tokens: SpecialTokens, device: torch.device, rank: int, *, plan: BatchPlan,
    ) -> None:
        self.cfg, self.engine, self.teacher, self.queues = cfg, engine, teacher, queues
        self.augment, self.tokens, self.device, self.rank, self.plan = augment, tokens, device, rank, plan
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.engine.precision == "bf16")

    def __call__(self, batch: dict[str, Tensor], step: int, alpha: float) -> dict[str, Tensor]:
        accum = self.plan.accum
        widths = micro_widths(batch["attention_mask"], accum, self.cfg.data.fixed_length)
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        self.teacher.update(self.engine.module, momentum_coefficient(step, self.cfg.model))
        sums: dict[str, Tensor] = {}
        features: list[tuple[Tensor, Tensor]] = []
        for j, micro in enumerate(split_micro_batches(batch, accum, widths)):
            torch.manual_seed(step_seed(self.cfg.seed, step, self.plan.micro_index(self.rank, j)))
            self.engine.set_gradient_accumulation_boundary(j == accum - 1)
            out, teacher_out = self._forward_backward(micro, alpha)
            features.append((teacher_out.image_feat, teacher_out.text_feat))
            sums = {name: sums.get(name, 0) + value for name, value in out.items()}
        self.engine.step()  # the boundary: one optimizer update (and LR step) per optimizer step
        for image_feat, text_feat in features:  # micro-major: micro j of every rank, then micro j + 1
            self.queues.enqueue(image_feat, text_feat)
        return self._global_mean(sums)

    def _forward_backward(self, micro: dict[str, Tensor], alpha: float) -> tuple[dict[str, Tensor], TeacherOutput]:
        """Masks, momentum forward, online forward and backward of one micro-batch (the engine divides the
        loss by the accumulation steps); returns its detached loss terms and the teacher's output."""
        w = self.cfg.loss
        view1, view2 = self.augment(micro["image_u8"], micro["aug_params"])
        ids, mask = micro["input_ids"], micro["attention_mask"]

        mlm: dict[str, Tensor] = {}
        if w.mlm:
            masked, labels = mask_tokens(
                ids, vocab_size=self.cfg.model.text.vocab_size, probability=w.mlm_probability,
                pad_id=self.tokens.pad, cls_id=self.tokens.cls, mask_id=self.tokens.mask,
            )
            positions, position_labels = masked_positions(labels, masked_capacity(ids.numel(), w.mlm_probability))
            mlm = {"mlm_input_ids": masked, "mlm_positions": positions, "mlm_labels": position_labels}

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
        return {name: value.detach() for name, value in out.items()}, teacher_out

    def _global_mean(self, sums: dict[str, Tensor]) -> dict[str, Tensor]:
        """Each term's mean over the global batch's micro-batches: the loss of the optimizer step, the same
        for any split of the global batch into ranks and micro-batches. One small all-reduce, no host sync."""
        stacked = torch.stack([value.float().reshape(()) for value in sums.values()])
        if dist.is_available() and dist.is_initialized() and self.plan.world > 1:
            dist.all_reduce(stacked)
        return dict(zip(sums, (stacked / (self.plan.accum * self.plan.world)).unbind(), strict=True))
