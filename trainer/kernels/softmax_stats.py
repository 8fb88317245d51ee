"""Softmax statistics of queries against a large key set, in one streaming pass (flash style).

For query rows q_r and keys K = [keys_a; keys_b] (keys_b is typically the 65536-entry feature queue,
never concatenated), with logits s_rj = q_r . k_j / temp over the columns that are kept:

    lse_r = log sum_j exp(s_rj)            mean_key_r = sum_j softmax(s_r)_j k_j

The mean key carries the whole gradient: d lse_r / d q_r = mean_key_r / temp and
d lse_r / d temp = -q_r . mean_key_r / temp^2, so the backward is elementwise and the keys are read once
per step. It is also all a soft target needs: sum_j softmax(t)_j s_j = q . mean_key(t) / temp.
Columns can be dropped per column (`column_valid`) and per row group (column j is no candidate of row i
when j // group_size == i: LMI's "locals of the other samples only").

The keys are split across programs (flash-decoding); each writes a partial (max, sum, weighted keys)
and a few torch ops combine them. Bf16 in, fp32 accumulation; the temperature is read on the device.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from trainer.kernels.launch import block_size, check_tensors, dot_precision, is_interpreted, target_programs


@triton.jit
def _softmax_stats_kernel(
    q_ptr, ka_ptr, kb_ptr, valid_ptr, temp_ptr,
    max_ptr, sum_ptr, acc_ptr,
    R, NA, NB, D, cols_per_split,
    stride_q, stride_ka, stride_kb,
    GROUP: tl.constexpr, HAS_VALID: tl.constexpr,
    DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < R
    dim_ok = dims < D
    q = tl.load(q_ptr + rows[:, None] * stride_q + dims[None, :], mask=row_ok[:, None] & dim_ok[None, :], other=0.0)
    q = q.to(DOT_DTYPE)
    inv_temp = 1.0 / tl.load(temp_ptr).to(tl.float32)
    n = NA + NB

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    first = pid_s * cols_per_split
    for start in range(0, cols_per_split, BLOCK_N):
        cols = first + start + tl.arange(0, BLOCK_N)
        in_a = cols < NA
        in_b = (cols >= NA) & (cols < n)
        k_a = tl.load(ka_ptr + cols[:, None] * stride_ka + dims[None, :], mask=in_a[:, None] & dim_ok[None, :], other=0.0)
        k_b = tl.load(kb_ptr + (cols - NA)[:, None] * stride_kb + dims[None, :], mask=in_b[:, None] & dim_ok[None, :], other=0.0)
        k = k_a.to(DOT_DTYPE) + k_b.to(DOT_DTYPE)  # one of the two is zero: exact
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * inv_temp  # (BLOCK_M, BLOCK_N) fp32
        keep = (cols < n)[None, :] & row_ok[:, None]
        if HAS_VALID:
            keep = keep & (tl.load(valid_ptr + cols, mask=cols < n, other=0) != 0)[None, :]
        if GROUP > 0:
            keep = keep & ((cols // GROUP)[None, :] != rows[:, None])
        s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing kept yet stays empty
        scale = tl.exp(m_i - m_safe)
        p = tl.exp(s - m_safe[:, None])
        l_i = l_i * scale + tl.sum(p, axis=1)
        acc = tl.dot(p.to(DOT_DTYPE), k, acc * scale[:, None], input_precision=PRECISION)
        m_i = m_new

    out = pid_s * R + rows
    tl.store(max_ptr + out, m_i, mask=row_ok)
    tl.store(sum_ptr + out, l_i, mask=row_ok)
    tl.store(acc_ptr + out[:, None] * D + dims[None, :], acc, mask=row_ok[:, None] & dim_ok[None, :])


_GPU_CONFIGS = [
    triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=st)
    for m, n, w, st in ((64, 32, 8, 2), (64, 64, 8, 2), (32, 64, 4, 2), (32, 32, 4, 3), (16, 64, 4, 2))
]
"""Tile shapes tried on a GPU, once per head width and dtypes: 64-row query tiles keep the fp32
accumulator (rows x D) in registers; smaller ones fit where 3xTF32 or a wide D exhausts shared memory
(the autotuner skips a configuration that does not compile or fit)."""
_SPLIT_QUANTUM = 64
"""Columns per split are a multiple of this (of every BLOCK_N), so the split count, and with it the
partial buffers, is fixed before the autotuner picks a tile shape."""
_INTERPRETED = is_interpreted(_softmax_stats_kernel)
_launch = _softmax_stats_kernel if _INTERPRETED else triton.autotune(_GPU_CONFIGS, key=["BLOCK_D"])(_softmax_stats_kernel)
_INTERPRETER_TILES = {"BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 1}
"""The interpreter runs each program in numpy: one small tile shape, no autotuning."""


def softmax_stats(
    queries: Tensor, keys_a: Tensor, keys_b: Tensor | None, temp: Tensor,
    *, column_valid: Tensor | None = None, group_size: int = 0, splits: int | None = None,
) -> tuple[Tensor, Tensor]:
    """(lse (R,), mean_key (R, D)) in fp32, without autograd. `splits` fixes how many programs share
    the keys (default: enough to fill the device); the result does not depend on it."""
    name = "softmax_stats"
    keys_b = keys_a[:0] if keys_b is None else keys_b
    device = check_tensors(_softmax_stats_kernel, name, queries, keys_a, keys_b, temp)
    r, d = queries.shape
    n_a, n_b = keys_a.shape[0], keys_b.shape[0]
    if keys_a.shape[1] != d or keys_b.shape[1] != d:
        raise ValueError(f"{name}: queries are {tuple(queries.shape)} but keys {tuple(keys_a.shape)} and {tuple(keys_b.shape)}")
    if temp.numel() != 1:
        raise ValueError(f"{name}: temp must have one element, got shape {tuple(temp.shape)}")
    if column_valid is not None and (column_valid.shape != (n_a + n_b,) or column_valid.dtype != torch.bool):
        raise ValueError(f"{name}: column_valid must be a bool tensor of shape ({n_a + n_b},)")
    if group_size < 0:
        raise ValueError(f"{name}: group_size must be >= 0, got {group_size}")
    queries, keys_a, keys_b = (t if t.stride(-1) == 1 else t.contiguous() for t in (queries, keys_a, keys_b))

    block_d = block_size(d, high=1 << 30)
    quantum = _INTERPRETER_TILES["BLOCK_N"] if _INTERPRETED else _SPLIT_QUANTUM
    chunks = triton.cdiv(n_a + n_b, quantum)
    if splits is None:
        splits = max(1, target_programs(device) // triton.cdiv(r, 64))
    cols_per_split = quantum * triton.cdiv(chunks, max(1, min(splits, chunks)))
    num_splits = triton.cdiv(n_a + n_b, cols_per_split) if chunks else 1

    part_max = torch.empty(num_splits, r, device=device, dtype=torch.float32)
    part_sum = torch.empty_like(part_max)
    part_acc = torch.empty(num_splits, r, d, device=device, dtype=torch.float32)
    if r:
        dot_dtype, precision = dot_precision(_softmax_stats_kernel, queries, keys_a, keys_b)
        valid = column_valid.view(torch.uint8) if column_valid is not None else part_max
        tiles = _INTERPRETER_TILES if _INTERPRETED else {}
        _launch[lambda meta: (triton.cdiv(r, meta["BLOCK_M"]), num_splits)](
            queries, keys_a, keys_b, valid, temp, part_max, part_sum, part_acc,
            r, n_a, n_b, d, cols_per_split,
            queries.stride(0), keys_a.stride(0), keys_b.stride(0),
            GROUP=group_size, HAS_VALID=column_valid is not None, DOT_DTYPE=dot_dtype, PRECISION=precision,
            BLOCK_D=block_d, **tiles,
        )
    return _combine(part_max, part_sum, part_acc)


def _combine(part_max: Tensor, part_sum: Tensor, part_acc: Tensor) -> tuple[Tensor, Tensor]:
    """Merge per-split (max, sum, weighted keys) into lse and mean key; rows with no kept column get
    lse -inf and a zero mean key."""
    top = part_max.max(dim=0).values
    top = torch.where(torch.isinf(top), torch.zeros_like(top), top)
    weight = torch.exp(part_max - top)
    total = (weight * part_sum).sum(dim=0)
    mean_key = (weight[:, :, None] * part_acc).sum(dim=0) / total.clamp(min=torch.finfo(torch.float32).tiny)[:, None]
    return top + total.log(), mean_key


class _LogSumExp(torch.autograd.Function):
    """lse with gradients for the queries and the temperature; the keys and the mean key get none."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, queries: Tensor, keys_a: Tensor, keys_b: Tensor | None,
        temp: Tensor, column_valid: Tensor | None, group_size: int, splits: int | None,
    ) -> tuple[Tensor, Tensor]:
        lse, mean_key = softmax_stats(queries, keys_a, keys_b, temp, column_valid=column_valid, group_size=group_size, splits=splits)
        ctx.mark_non_differentiable(mean_key)
        ctx.save_for_backward(queries, mean_key, temp)
        return lse, mean_key

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_lse: Tensor, _grad_mean: Tensor) -> tuple[Tensor | None, ...]:
        queries, mean_key, temp = ctx.saved_tensors  # type: ignore[attr-defined]
        t = temp.float().reshape(())
        grad_q = grad_lse[:, None] * mean_key / t
        grad_temp = -(grad_q * queries.float()).sum() / t
        return grad_q.to(queries.dtype), None, None, grad_temp.reshape(temp.shape).to(temp.dtype), None, None, None


def query_logsumexp(
    queries: Tensor, keys_a: Tensor, keys_b: Tensor | None, temp: Tensor,
    *, column_valid: Tensor | None = None, group_size: int = 0, splits: int | None = None,
) -> tuple[Tensor, Tensor]:
    """`softmax_stats` with autograd: lse is differentiable in the queries and temp; mean_key is a
    constant (use it for soft targets). The keys must not need a gradient (they are momentum features)."""
    if keys_a.requires_grad or (keys_b is not None and keys_b.requires_grad):
        raise ValueError("query_logsumexp gives no gradient to the keys: detach them or use the torch reference")
    return _LogSumExp.apply(queries, keys_a, keys_b, temp, column_valid, group_size, splits)
