"""CMA, IMC and LMI against the slow float64 references of tcl_references, on values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from tests.trainer.model.tcl_references import cma_reference, imc_reference, lmi_reference
from trainer.losses import cma_loss, imc_loss, lmi_loss

B, D = 4, 32


def unit(*shape: int, g: torch.Generator) -> Tensor:
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def features(queue: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> dict[str, Tensor]:
    """Online and momentum features of B pairs (the momentum ones near the online ones) and Q x D queues."""
    g = torch.Generator().manual_seed(seed)
    img, txt = unit(B, D, g=g), unit(B, D, g=g)
    feats = {
        "img": img, "txt": txt,
        "img_m": F.normalize(img + 0.5 * torch.randn(B, D, generator=g), dim=-1),
        "txt_m": F.normalize(txt + 0.5 * torch.randn(B, D, generator=g), dim=-1),
        "image_queue": unit(queue, D, g=g), "text_queue": unit(queue, D, g=g),
    }
    return {name: x.to(dtype) for name, x in feats.items()}


def online_leaves(tensors: dict[str, Tensor], dtype: torch.dtype) -> dict[str, Tensor]:
    """The features in dtype, the online ones (img, txt) as leaves that require grad."""
    return {name: x.detach().to(dtype).requires_grad_(name in ("img", "txt")) for name, x in tensors.items()}


def assert_matches(got: Tensor, want: Tensor) -> None:
    """fp32 results of the functions against the float64 reference: logits of up to 1/0.001 carry fp32
    rounding of a few 1e-5."""
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want.detach(), rtol=2e-5, atol=2e-4)


# Queue lengths 10 and 13 are not multiples of B * W = 8; 64 is the tiny config's.
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("queue", [10, 13, 64])
@pytest.mark.parametrize("alpha", [0.0, 0.4])
@pytest.mark.parametrize("temp", [0.001, 0.07, 0.5])
def test_cma_and_imc_match_reference(temp: float, alpha: float, queue: int, dtype: torch.dtype) -> None:
    feats = features(queue, dtype)
    t = torch.tensor([temp], dtype=dtype)
    ref_inputs = {name: x.double() for name, x in feats.items()}
    i2t, t2i = cma_loss(**feats, temp=t, alpha=alpha)
    want_i2t, want_t2i = cma_reference(**ref_inputs, temp=t.double(), alpha=alpha)
    assert_matches(i2t, want_i2t)
    assert_matches(t2i, want_t2i)
    i2i, t2t = imc_loss(**feats, temp=t)
    want_i2i, want_t2t = imc_reference(**ref_inputs, temp=t.double())
    assert_matches(i2i, want_i2i)
    assert_matches(t2t, want_t2t)


def test_cma_with_alpha_zero_is_imc_across_modalities() -> None:
    """With alpha 0 the CMA targets are one-hot: i2t is the hard contrast of images against texts."""
    feats = features(10)
    t = torch.tensor([0.07])
    i2t, t2i = cma_loss(**feats, temp=t, alpha=0.0)
    swapped = {**feats, "img_m": feats["txt_m"], "txt_m": feats["img_m"],
               "image_queue": feats["text_queue"], "text_queue": feats["image_queue"]}
    i2i_as_i2t, t2t_as_t2i = imc_loss(**swapped, temp=t)
    torch.testing.assert_close(i2t, i2i_as_i2t)
    torch.testing.assert_close(t2i, t2t_as_t2i)


@pytest.mark.parametrize("alpha", [0.0, 0.4])
@pytest.mark.parametrize("temp", [0.001, 0.5])
def test_contrastive_gradients_match_reference(temp: float, alpha: float) -> None:
    """Gradients of the online features and the temperature equal the float64 reference's autograd.
    (The momentum side comes in without autograd: the model-level test checks that nothing reaches it.)"""
    feats = features(13)
    got, want = online_leaves(feats, torch.float32), online_leaves(feats, torch.float64)
    t_got = torch.tensor([temp], requires_grad=True)
    t_want = torch.tensor([temp], dtype=torch.float64, requires_grad=True)
    # Distinct weights so a swapped pair of terms cannot pass.
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0])
    (weights @ torch.stack([*cma_loss(**got, temp=t_got, alpha=alpha), *imc_loss(**got, temp=t_got)])).backward()
    terms = [*cma_reference(**want, temp=t_want, alpha=alpha), *imc_reference(**want, temp=t_want)]
    (weights.double() @ torch.stack(terms)).backward()
    for name in ("img", "txt"):
        torch.testing.assert_close(got[name].grad.double(), want[name].grad, rtol=1e-4, atol=1e-3 / temp)
    torch.testing.assert_close(t_got.grad.double(), t_want.grad, rtol=1e-4, atol=1e-3 / temp**2)


def lmi_inputs(kind: str, dtype: torch.dtype = torch.float32, seed: int = 1) -> tuple[Tensor, Tensor, Tensor | None]:
    """Image: 16 pooled locals (means of unit vectors, not renormalised), no mask. Text: 11 token locals
    with padding (sample 0 full, the others shorter)."""
    g = torch.Generator().manual_seed(seed)
    global_feat = unit(B, D, g=g)
    if kind == "image":
        local_feat = unit(B, 16, 4, D, g=g).mean(dim=2)
        mask = None
    else:
        local_feat = unit(B, 11, D, g=g)
        lengths = torch.tensor([11, 6, 2, 9])
        mask = torch.arange(11)[None, :] < lengths[:, None]
    return global_feat.to(dtype), local_feat.to(dtype), mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["image", "text"])
@pytest.mark.parametrize("temp", [0.001, 0.07, 0.5])
def test_lmi_matches_official_semantics(temp: float, kind: str, dtype: torch.dtype) -> None:
    global_feat, local_feat, mask = lmi_inputs(kind, dtype)
    t = torch.tensor([temp], dtype=dtype)
    got = lmi_loss(global_feat, local_feat, mask, t)
    assert_matches(got, lmi_reference(global_feat.double(), local_feat.double(), mask, t.double()))


@pytest.mark.parametrize("kind", ["image", "text"])
@pytest.mark.parametrize("temp", [0.001, 0.5])
def test_lmi_gradients_match_reference(temp: float, kind: str) -> None:
    global_feat, local_feat, mask = lmi_inputs(kind)
    g_got = global_feat.clone().requires_grad_(True)
    t_got = torch.tensor([temp], requires_grad=True)
    g_want = global_feat.double().requires_grad_(True)
    t_want = torch.tensor([temp], dtype=torch.float64, requires_grad=True)
    lmi_loss(g_got, local_feat, mask, t_got).backward()
    lmi_reference(g_want, local_feat.double(), mask, t_want).backward()
    torch.testing.assert_close(g_got.grad.double(), g_want.grad, rtol=1e-4, atol=1e-3 / temp)
    torch.testing.assert_close(t_got.grad.double(), t_want.grad, rtol=1e-4, atol=1e-3 / temp**2)


def test_lmi_ignores_padded_locals_entirely() -> None:
    """Padded locals are neither positives nor negatives: their values cannot change the loss."""
    global_feat, local_feat, mask = lmi_inputs("text")
    assert mask is not None
    t = torch.tensor([0.07])
    scrambled = torch.where(mask[..., None], local_feat, 100.0 * torch.randn_like(local_feat))
    torch.testing.assert_close(lmi_loss(global_feat, scrambled, mask, t), lmi_loss(global_feat, local_feat, mask, t))


def test_lmi_all_valid_mask_equals_no_mask() -> None:
    global_feat, local_feat, _ = lmi_inputs("image")
    t = torch.tensor([0.07])
    full = torch.ones(local_feat.shape[:2], dtype=torch.bool)
    torch.testing.assert_close(lmi_loss(global_feat, local_feat, full, t), lmi_loss(global_feat, local_feat, None, t))


def test_lmi_edge_cases_stay_finite() -> None:
    """A sample with no valid local, and a batch of one (no negatives: the loss is 0), give finite
    values and gradients."""
    global_feat, local_feat, mask = lmi_inputs("text")
    assert mask is not None
    mask[2] = False
    g = global_feat.clone().requires_grad_(True)
    t = torch.tensor([0.001], requires_grad=True)
    loss = lmi_loss(g, local_feat, mask, t)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(g.grad).all() and torch.isfinite(t.grad).all()

    g1 = global_feat[:1].clone().requires_grad_(True)
    single = lmi_loss(g1, local_feat[:1], None, torch.tensor([0.07]))
    single.backward()
    assert single.item() == 0.0
    assert torch.isfinite(g1.grad).all()
