"""What every Triton launcher here needs: device checks, the dot dtype and the grid size.

Kernels run on CUDA tensors, or on CPU tensors when they were decorated under the Triton interpreter
(`TRITON_INTERPRET=1` set before their module was imported: Triton reads it at decoration time). The
interpreter computes bf16 arithmetic wrongly, so interpreted kernels convert every load to fp32 first.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.runtime.interpreter import InterpretedFunction

TL_DTYPES: dict[torch.dtype, tl.dtype] = {
    torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16,
}


def is_interpreted(kernel: object) -> bool:
    """True when `kernel` was decorated under TRITON_INTERPRET=1 (runs on CPU tensors)."""
    return isinstance(kernel, InterpretedFunction)


def check_tensors(kernel: object, name: str, *tensors: Tensor) -> torch.device:
    """The one device every tensor is on; a clear error when the kernel cannot run there."""
    devices = {t.device for t in tensors}
    if len(devices) != 1:
        raise ValueError(f"{name}: tensors are on several devices {sorted(map(str, devices))}")
    device = devices.pop()
    if device.type == "cpu" and not is_interpreted(kernel):
        raise ValueError(
            f"{name}: CPU tensors need the Triton interpreter: set TRITON_INTERPRET=1 before importing {kernel.__module__}"
        )
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name}: Triton kernels run on CUDA (or CPU in the interpreter), not on {device}")
    for t in tensors:
        if t.dtype not in TL_DTYPES:
            raise ValueError(f"{name}: unsupported dtype {t.dtype} (fp32, bf16 or fp16)")
    return device


def dot_precision(kernel: object, *tensors: Tensor) -> tuple[tl.dtype, str]:
    """(operand dtype, input_precision) of the kernel's tl.dot, fp32 accumulation always. 16-bit operands
    go straight to the tensor cores when every input has that dtype; fp32 (or mixed) inputs use 3xTF32
    (three tensor-core products, about fp32 accuracy: plain TF32 would put errors of 1e-3 into logits
    scaled by 1 / temp = 1000). The interpreter computes in fp32 (numpy)."""
    dtypes = {t.dtype for t in tensors}
    if is_interpreted(kernel):
        return tl.float32, "ieee"
    if len(dtypes) == 1 and dtypes <= {torch.bfloat16, torch.float16}:
        return TL_DTYPES[dtypes.pop()], "tf32"
    return tl.float32, "tf32x3"


@functools.cache
def _multiprocessors(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def target_programs(device: torch.device) -> int:
    """How many programs fill the device: two per multiprocessor on a GPU, a few in the interpreter."""
    if device.type == "cuda":
        return 2 * _multiprocessors(device.index if device.index is not None else torch.cuda.current_device())
    return 4


def block_size(n: int, low: int = 16, high: int = 128) -> int:
    """A power of two covering n, within [low, high] (tl.dot needs at least 16 per side)."""
    return max(low, min(high, triton.next_power_of_2(n)))
