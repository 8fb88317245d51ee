"""Each fused kernel against its torch reference at the paper's sizes: parity and time of forward + backward.

    python -m benchmarks.kernel_bench [--size paper|small] [--json out.json]

Inputs have the dtypes the model gives them: fp32 features and queues (CMA/IMC, LMI); under DeepSpeed
bf16 the MLM hidden states and decoder are bf16, the teacher logits fp32; the EMA reads bf16 online
weights into fp32 momentum weights (the shapes of the paper model's dual encoder). Times are medians
of CUDA-event timings (triton.testing.do_bench). Without a GPU the kernels run in the Triton
interpreter at the small size: a smoke run whose times mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the kernel modules below are imported

from pydantic import BaseModel
from torch import Tensor

from trainer import kernels
from trainer.config import load
from trainer.kernels import contrastive, ema, mlm_head
from trainer.losses import cma_loss, imc_loss, lmi_loss, mlm_loss
from trainer.model import TCL

SIZES = {
    "paper": {"batch": 64, "dim": 256, "queue": 65536, "image_locals": 16, "text_locals": 24, "masked": 348,
              "hidden": 768, "vocab": 30522},
    "small": {"batch": 5, "dim": 24, "queue": 37, "image_locals": 4, "text_locals": 3, "masked": 7,
              "hidden": 24, "vocab": 50},
}
"""'masked' is the MLM capacity of a 64 x 25-token batch at 15% (masked_capacity), about 240 of them real."""


class KernelResult(BaseModel):
    kernel: str
    reference_ms: float
    fused_ms: float
    speedup: float
    relative_errors: list[float]
    """||fused - reference|| / ||reference|| of the loss, then of each gradient (or of each updated tensor)."""

    @property
    def max_relative_error(self) -> float:
        return max(self.relative_errors)


def relative_error(a: Tensor, b: Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).norm() / b.norm().clamp(min=1e-30)).item()


def time_ms(fn: Callable[[], object]) -> float:
    if torch.cuda.is_available():
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    start = time.perf_counter()
    fn()
    return 1e3 * (time.perf_counter() - start)


def compare(name: str, reference: Callable[[], list[Tensor]], fused: Callable[[], list[Tensor]]) -> KernelResult:
    """Both callables return [loss, *gradients] (or the updated tensors); times include everything they do."""
    errors = [relative_error(f, r) for f, r in zip(fused(), reference())]
    ref_ms, fused_ms = time_ms(reference), time_ms(fused)
    return KernelResult(kernel=name, reference_ms=ref_ms, fused_ms=fused_ms, speedup=ref_ms / fused_ms, relative_errors=errors)


def features(n: int, dim: int, device: str, grad: bool = False) -> Tensor:
    return torch.nn.functional.normalize(torch.randn(n, dim, device=device), dim=-1).requires_grad_(grad)


def queue_case(s: dict[str, int], device: str) -> KernelResult:
    b, d, q = s["batch"], s["dim"], s["queue"]
    img, txt = features(b, d, device, True), features(b, d, device, True)
    img_m, txt_m, image_queue, text_queue = features(b, d, device), features(b, d, device), features(q, d, device), features(q, d, device)
    temp = torch.tensor([0.07], device=device, requires_grad=True)
    args = (img, txt, img_m, txt_m, image_queue, text_queue, temp)

    def reference() -> list[Tensor]:
        loss = sum(cma_loss(*args, 0.4)) + sum(imc_loss(*args))
        return [loss, *torch.autograd.grad(loss, [img, txt, temp])]

    def fused() -> list[Tensor]:
        loss = sum(contrastive.queue_contrastive_losses(*args, 0.4).values())
        return [loss, *torch.autograd.grad(loss, [img, txt, temp])]

    return compare("cma+imc (queue)", reference, fused)


def lmi_case(s: dict[str, int], device: str) -> KernelResult:
    b, d = s["batch"], s["dim"]
    glob = [features(b, d, device, True), features(b, d, device, True)]
    local = [features(b * s["image_locals"], d, device).view(b, -1, d), features(b * s["text_locals"], d, device).view(b, -1, d)]
    mask = torch.rand(b, s["text_locals"], device=device) > 0.3
    temp = torch.tensor([0.07], device=device, requires_grad=True)

    def run(fn: Callable[..., Tensor]) -> list[Tensor]:
        loss = fn(glob[0], local[0], None, temp) + fn(glob[1], local[1], mask, temp)
        return [loss, *torch.autograd.grad(loss, [*glob, temp])]

    return compare("lmi (image + text)", lambda: run(lmi_loss), lambda: run(contrastive.local_mutual_information))


def mlm_case(s: dict[str, int], device: str) -> KernelResult:
    m, h, v = s["masked"], s["hidden"], s["vocab"]
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    hidden = torch.randn(m, h, device=device, dtype=dtype, requires_grad=True)
    weight = (torch.randn(v, h, device=device) * 0.02).to(dtype).requires_grad_()
    bias = torch.zeros(v, device=device, dtype=dtype, requires_grad=True)
    teacher = torch.randn(m, v, device=device)
    labels = torch.randint(0, v, (m,), device=device).masked_fill(torch.rand(m, device=device) > 0.7, -100)

    def reference() -> list[Tensor]:
        loss = mlm_loss(hidden @ weight.t() + bias, teacher, labels, 0.4)
        return [loss, *torch.autograd.grad(loss, [hidden, weight, bias])]

    def fused() -> list[Tensor]:
        loss = mlm_head.mlm_head_loss(hidden, weight, bias, teacher, labels, 0.4)
        return [loss, *torch.autograd.grad(loss, [hidden, weight, bias])]

    return compare("mlm head + distilled CE", reference, fused)


def momentum_shapes() -> list[torch.Size]:
    """Shapes of the paper model's parameters that have a momentum copy (built on the meta device)."""
    cfg = load("pretrain_4m", ["model.vision.init=null", "model.text.init=null"])
    with torch.device("meta"):
        model = TCL(cfg.model, cfg.loss)
    return [p.shape for name, p in model.named_parameters() if name != "temp" and not name.startswith("itm_head")]


def ema_case(size: str, device: str) -> KernelResult:
    """bf16 online weights into fp32 momentum weights, every parameter of the dual encoder."""
    shapes = momentum_shapes() if size == "paper" else [torch.Size(s) for s in ((37,), (5, 7), (130,))]
    online_dtype = torch.bfloat16 if device == "cuda" else torch.float32
    online = [torch.randn(shape, device=device).to(online_dtype) for shape in shapes]
    start = [torch.randn(shape, device=device) for shape in shapes]
    ref_params, fused_params = [p.clone() for p in start], [p.clone() for p in start]

    def reference() -> list[Tensor]:  # the dispatch's torch path (fusion off): _foreach_mul_ + _foreach_add_
        kernels.ema_update_(ref_params, online, 0.995)
        return ref_params

    def fused() -> list[Tensor]:
        ema.ema_update_(fused_params, online, 0.995)
        return fused_params

    reference()
    fused()
    error = max(relative_error(f, r) for f, r in zip(fused_params, ref_params))
    ref_ms, fused_ms = time_ms(reference), time_ms(fused)
    count = sum(p.numel() for p in start)
    return KernelResult(kernel=f"ema ({count / 1e6:.0f}M params)", reference_ms=ref_ms, fused_ms=fused_ms,
                        speedup=ref_ms / fused_ms, relative_errors=[error])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="paper" if torch.cuda.is_available() else "small")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.size == "paper" and not torch.cuda.is_available():
        parser.error("--size paper needs a CUDA GPU (the interpreter would take hours); use --size small")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    sizes = SIZES[args.size]
    results = [queue_case(sizes, device), lmi_case(sizes, device), mlm_case(sizes, device), ema_case(args.size, device)]
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu (Triton interpreter)"
    print(f"{name}, size {args.size}")
    print(f"{'kernel':28} {'reference ms':>12} {'fused ms':>9} {'speed-up':>8} {'max rel err':>11}")
    for r in results:
        print(f"{r.kernel:28} {r.reference_ms:12.3f} {r.fused_ms:9.3f} {r.speedup:7.2f}x {r.max_relative_error:11.2e}")
    if args.json:
        args.json.write_text(json.dumps([{**r.model_dump(), "max_relative_error": r.max_relative_error} for r in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
