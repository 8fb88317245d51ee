"""The training step never waits for the device: the whole TrainStep (augmentation, masks, EMA, momentum and
online forwards, every loss term under bf16 autocast, backward, enqueue) runs at the paper config's shapes
under FakeTensorMode, where tensors have shapes and no values: any host read of a value (`.item()`,
`bool(t)`, `int(t)`, `.tolist()`) or a data-dependent shape (`nonzero`, boolean indexing) raises. (The meta
device would also refuse `.cpu()`, but autocast does not run on it; on the GPU a host read is the only way
a copy to the host can block the step, and that is what raises here.)

The DeepSpeed engine is replaced by a plain engine (forward, autograd backward, a foreach SGD update):
the step's own code is what is checked; DeepSpeed's optimizer step (overflow and norm checks) is not ours.
A planted `.item()` shows that the check can fail.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode

from trainer.config import RunConfig, load, resolve_batch
from trainer.data.augment_params import num_params
from trainer.data.device_augment import DeviceAugment
from trainer.model import build_model
from trainer.step import SpecialTokens, TrainStep

CPU = torch.device("cpu")
MICRO, ACCUM, LENGTH = 2, 2, 25


class PlainEngine:
    """What TrainStep asks of a DeepSpeed engine, in plain torch without host reads."""

    def __init__(self, module: nn.Module, lr: float = 1e-4) -> None:
        self.module, self.lr, self.boundaries = module, lr, []

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        return self.module(*args, **kwargs)

    def set_gradient_accumulation_boundary(self, boundary: bool) -> None:
        self.boundaries.append(boundary)

    def backward(self, loss: Tensor) -> None:
        (loss / ACCUM).backward()

    def step(self) -> None:
        params = [p for p in self.module.parameters() if p.grad is not None]
        with torch.no_grad():
            torch._foreach_add_(params, [p.grad for p in params], alpha=-self.lr)
        self.module.zero_grad(set_to_none=True)


def paper_config() -> RunConfig:
    """The paper config (bf16, no pretrained files), 2 micro-batches of 2 per optimizer step."""
    return load("pretrain_4m", [
        "model.vision.init=null", "model.text.init=null", f"data.batch_size={MICRO}",
        f"data.global_batch_size={MICRO * ACCUM}", "engine.fused_kernels=false",
    ])


def run_fake_step(cfg: RunConfig) -> tuple[TrainStep, dict[str, Tensor]]:
    """Build the modules on the meta device (timm's constructor reads values, so not under fake mode), then
    materialise them, make a loader batch as the workers do and run one optimizer step, all as fake tensors."""
    with torch.device("meta"):
        modules = build_model(cfg)
    with FakeTensorMode(allow_non_fake_inputs=True):  # the meta modules go in; their copies come out fake
        model, teacher, queues = (m.to_empty(device=CPU) for m in modules)
        rows, size = MICRO * ACCUM, cfg.model.vision.img_size
        ids = torch.randint(1000, 2000, (rows, LENGTH))
        ids[:, 0] = 101
        batch = {
            "image_u8": torch.randint(0, 256, (2, rows, 3, size, size), dtype=torch.uint8),
            "aug_params": torch.zeros(2, rows, num_params(cfg.data.augment.randaugment_n)),
            "input_ids": ids,
            "attention_mask": torch.ones(rows, LENGTH, dtype=torch.long),
            "index": torch.arange(rows),
        }
        step = TrainStep(
            cfg, PlainEngine(model), teacher, queues, DeviceAugment(cfg.data.augment),
            SpecialTokens(pad=0, cls=101, mask=103), CPU, rank=0, plan=resolve_batch(cfg, world_size=1),
        )
        return step, step(batch, step=5, alpha=0.4)


def test_paper_train_step_runs_without_a_host_sync() -> None:
    step, out = run_fake_step(paper_config())
    assert {"cma_i2t", "cma_t2i", "imc_i2i", "imc_t2t", "lmi_image", "lmi_text", "itm", "mlm"} <= set(out)
    assert all(v.shape == () for v in out.values())
    assert step.engine.boundaries == [False, True]


def test_a_planted_host_read_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    import trainer.model.tcl as tcl

    real = tcl.itm_loss

    def itm_with_sync(logits: Tensor, labels: Tensor) -> Tensor:
        loss = real(logits, labels)
        if loss.item() > 100:  # a host read of the loss, e.g. for a divergence check
            raise AssertionError("unreachable")
        return loss

    monkeypatch.setattr(tcl, "itm_loss", itm_with_sync)
    with pytest.raises(DataDependentOutputException):
        run_fake_step(paper_config())
