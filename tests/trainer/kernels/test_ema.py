"""The multi-tensor EMA kernel against a per-tensor loop, and that it writes nothing else."""

from __future__ import annotations

import pytest
import torch

from trainer import kernels
from trainer.kernels import ema

SHAPES = [(1,), (37,), (5, 7), (2100,), (3, 4, 11), (9, 300)]  # 2100 and 2700 elements span several 1024-element chunks


def momentum_views(flat: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Momentum tensors as views into one buffer with untouched gaps between them; the mask marks the gaps."""
    views, gap = [], torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
    offset = 3
    for shape in SHAPES:
        n = torch.Size(shape).numel()
        views.append(flat[offset:offset + n].view(shape))
        gap[offset:offset + n] = False
        offset += n + 5
    return views, gap


@pytest.mark.parametrize("online_dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("m", [0.995, 0.0, 1.0])
def test_matches_per_tensor_update_and_writes_nothing_else(gen, device, online_dtype, m):
    flat = torch.randn(5300, generator=gen).to(device)
    before = flat.clone()
    momentum, gap = momentum_views(flat)
    online = [torch.randn(shape, generator=gen).to(device, online_dtype) for shape in SHAPES]
    expected = [m * p.clone() + (1 - m) * o.float() for p, o in zip(momentum, online)]
    ema.ema_update_(momentum, online, m)
    for got, want in zip(momentum, expected):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert torch.equal(flat[gap], before[gap])


def test_repeated_updates_converge_to_the_online_weights(gen, device):
    """A bf16 online weight pulled into fp32 momentum: after n steps the gap shrinks by m^n exactly as in fp32."""
    momentum = [torch.zeros(50, device=device)]
    online = [torch.randn(50, generator=gen).to(device, torch.bfloat16)]
    for _ in range(20):
        ema.ema_update_(momentum, online, 0.9)
    torch.testing.assert_close(momentum[0], (1 - 0.9**20) * online[0].float(), rtol=1e-5, atol=1e-6)


def test_new_tensors_get_their_own_table(gen, device):
    first = [torch.zeros(1100, device=device)]
    ema.ema_update_(first, [torch.ones(1100, device=device)], 0.5)
    second = [torch.zeros(9, device=device), torch.zeros(1100, device=device)]
    ema.ema_update_(second, [torch.ones(9, device=device), torch.full((1100,), 2.0, device=device)], 0.5)
    assert torch.equal(first[0], torch.full((1100,), 0.5, device=device))
    assert torch.equal(second[0], torch.full((9,), 0.5, device=device))
    assert torch.equal(second[1], torch.ones(1100, device=device))


def test_bad_inputs_are_named(device):
    with pytest.raises(ValueError, match="2 momentum tensors but 1"):
        ema.ema_update_([torch.zeros(2, device=device)] * 2, [torch.zeros(2, device=device)], 0.9)
    with pytest.raises(ValueError, match="pair 0 has shapes"):
        ema.ema_update_([torch.zeros(2, device=device)], [torch.zeros(3, device=device)], 0.9)
    with pytest.raises(ValueError, match="not contiguous"):
        ema.ema_update_([torch.zeros(4, 4, device=device).t()], [torch.zeros(4, 4, device=device)], 0.9)


def test_dispatch_reference_matches_the_kernel(gen, device):
    """The torch fallback of trainer.kernels.ema_update_ (used without a GPU) computes the same update."""
    momentum = [torch.randn(shape, generator=gen).to(device) for shape in SHAPES]
    online = [torch.randn(shape, generator=gen).to(device, torch.bfloat16) for shape in SHAPES]
    fused = [p.clone() for p in momentum]
    ema.ema_update_(fused, online, 0.995)
    kernels.ema_update_(momentum, online, 0.995)  # the reference path: fusion is off
    for got, want in zip(momentum, fused):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
