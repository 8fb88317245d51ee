"""The momentum (EMA) update of every parameter in one launch: p_m = m * p_m + (1 - m) * p.

A multi-tensor kernel in the manner of apex's multi_tensor_apply: the parameters are cut into chunks,
a table on the device holds (momentum address, online address, length) per chunk, and one program
updates one chunk. The online weights are read in their working dtype (bf16) and upcast in registers,
so an update moves 2 + 4 + 4 bytes per parameter, against 2 + 4 (upcast copy) + 4 + 4 + 4 for an
upcast followed by torch._foreach ops. The table is built once per set of parameter addresses and cached.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

from trainer.kernels.launch import TL_DTYPES, check_tensors, is_interpreted


@triton.jit
def _ema_kernel(table_ptr, m, CHUNK: tl.constexpr, BLOCK: tl.constexpr, DST: tl.constexpr, SRC: tl.constexpr):
    chunk = tl.program_id(0).to(tl.int64) * 3
    dst = tl.load(table_ptr + chunk).to(tl.pointer_type(DST))
    src = tl.load(table_ptr + chunk + 1).to(tl.pointer_type(SRC))
    n = tl.load(table_ptr + chunk + 2)
    for start in range(0, CHUNK, BLOCK):
        idx = start + tl.arange(0, BLOCK)
        ok = idx < n
        old = tl.load(dst + idx, mask=ok).to(tl.float32)
        new = tl.load(src + idx, mask=ok).to(tl.float32)
        tl.store(dst + idx, (m * old + (1.0 - m) * new).to(DST), mask=ok)


def _sizes(interpreted: bool) -> tuple[int, int]:
    """(CHUNK, BLOCK) in elements: 64K-element chunks on a GPU (a few thousand programs for a
    200M-parameter model); small ones in the interpreter, where tests cross chunk boundaries."""
    return (1024, 512) if interpreted else (65536, 2048)


@functools.lru_cache(maxsize=16)
def _chunk_table(device: torch.device, pairs: tuple[tuple[int, int, int], ...], dst_size: int, src_size: int, chunk: int) -> Tensor:
    """(num_chunks x 3) int64 on the device: momentum address, online address, elements in the chunk."""
    rows = [
        (dst + start * dst_size, src + start * src_size, min(chunk, numel - start))
        for dst, src, numel in pairs
        for start in range(0, numel, chunk)
    ]
    return torch.tensor(rows, dtype=torch.int64).reshape(-1, 3).to(device)


def ema_update_(momentum_params: Sequence[Tensor], online_params: Sequence[Tensor], m: float) -> None:
    """In place, for every pair: p_m = m * p_m + (1 - m) * p. One launch per (momentum, online) dtype pair."""
    name = "ema_update_"
    if len(momentum_params) != len(online_params):
        raise ValueError(f"{name}: {len(momentum_params)} momentum tensors but {len(online_params)} online tensors")
    if not momentum_params:
        return
    device = check_tensors(_ema_kernel, name, *momentum_params, *online_params)
    groups: dict[tuple[torch.dtype, torch.dtype], list[tuple[int, int, int]]] = {}
    for i, (dst, src) in enumerate(zip(momentum_params, online_params)):
        if dst.shape != src.shape:
            raise ValueError(f"{name}: pair {i} has shapes {tuple(dst.shape)} and {tuple(src.shape)}")
        if not (dst.is_contiguous() and src.is_contiguous()):
            raise ValueError(f"{name}: pair {i} is not contiguous")
        if dst.numel():
            groups.setdefault((dst.dtype, src.dtype), []).append((dst.data_ptr(), src.data_ptr(), dst.numel()))
    chunk, block = _sizes(is_interpreted(_ema_kernel))
    for (dst_dtype, src_dtype), pairs in groups.items():
        table = _chunk_table(device, tuple(pairs), dst_dtype.itemsize, src_dtype.itemsize, chunk)
        _ema_kernel[(table.shape[0],)](table, float(m), CHUNK=chunk, BLOCK=block, DST=TL_DTYPES[dst_dtype], SRC=TL_DTYPES[src_dtype])

