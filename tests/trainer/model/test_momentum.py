"""The momentum encoder: what it copies, the EMA in fp32, and its no-grad forward and locals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.trainer.model.tcl_testing import TinyModels, random_batch, tiny_model_config
from trainer.config import LossConfig
from trainer.model import TCL, MomentumEncoder


def test_momentum_copies_encoders_and_projections_only(tiny: TinyModels) -> None:
    """Image encoder, vision_proj, the whole BERT (text, fusion, MLM head) and text_proj; no itm_head, no
    temperature. Starts equal to the online model, fp32, frozen, in train mode (dropout active as in the
    official momentum pass)."""
    model, teacher, _ = tiny
    online = dict(model.named_parameters())
    names = {name for name, _ in teacher.named_parameters()}
    assert names == {n for n in online if not n.startswith("itm_head.") and n != "temp"}
    assert any(n.startswith("text.cls.predictions.") for n in names) and any(".crossattention." in n for n in names)
    for name, p in teacher.named_parameters():
        assert p.dtype == torch.float32 and not p.requires_grad
        assert torch.equal(p, online[name]), name
    assert teacher.training


def test_ema_after_n_updates_equals_closed_form(tiny: TinyModels) -> None:
    """With online weights p_t = p0 + t * d at update t, p_m after N updates is
    m^N p0 + (1 - m) sum_t m^(N - t) p_t, for every parameter."""
    model, teacher, _ = tiny
    m, steps = 0.9, 6
    g = torch.Generator().manual_seed(0)
    p0 = {name: p.detach().double().clone() for name, p in teacher.named_parameters()}
    online = dict(model.named_parameters())
    drift = {name: torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.01 for name, p in p0.items()}
    for t in range(1, steps + 1):
        with torch.no_grad():
            for name in p0:
                online[name].copy_(p0[name] + t * drift[name])
        teacher.update(model, m)
    for name, p in teacher.named_parameters():
        want = m**steps * p0[name] + sum((1 - m) * m ** (steps - t) * (p0[name] + t * drift[name])
                                          for t in range(1, steps + 1))
        torch.testing.assert_close(p.double(), want, rtol=1e-5, atol=1e-6, msg=name)


def test_ema_by_hand(tiny: TinyModels) -> None:
    """p_m = 0, p = 1, m = 0.5: 0.5, 0.75, 0.875."""
    model, teacher, _ = tiny
    with torch.no_grad():
        teacher.vision_proj.bias.zero_()
        model.vision_proj.bias.fill_(1.0)
    for want in (0.5, 0.75, 0.875):
        teacher.update(model, 0.5)
        assert torch.equal(teacher.vision_proj.bias, torch.full_like(teacher.vision_proj.bias, want))


def test_ema_stays_fp32_when_the_online_model_is_bf16(tiny: TinyModels) -> None:
    """A bf16 online model (as DeepSpeed's bf16 mode makes it): the momentum weights stay fp32 and take
    (1 - m) of the upcast difference, an update bf16 would round away at m = 0.995."""
    model, teacher, _ = tiny
    model.to(torch.bfloat16)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.002)
    before = {name: p.clone() for name, p in teacher.named_parameters()}
    online = dict(model.named_parameters())
    teacher.update(model, 0.995)
    for name, p in teacher.named_parameters():
        assert p.dtype == torch.float32
        want = 0.995 * before[name].double() + 0.005 * online[name].double()
        torch.testing.assert_close(p.double(), want, rtol=1e-6, atol=1e-7, msg=name)
    moved = sum(int((p != before[n]).sum()) for n, p in teacher.named_parameters())
    rounded_in_bf16 = sum(int((p.bfloat16() != before[n].bfloat16()).sum()) for n, p in teacher.named_parameters())
    assert moved > 0.99 * sum(p.numel() for p in teacher.parameters())
    assert rounded_in_bf16 < 0.5 * moved, f"bf16 would keep {rounded_in_bf16} of {moved} updates: a weak case"


def test_momentum_state_dict_round_trip(tiny: TinyModels) -> None:
    model, teacher, _ = tiny
    teacher.update(model, 0.5)
    torch.manual_seed(1)
    other = MomentumEncoder(TCL(model.cfg, LossConfig()))
    other.load_state_dict(teacher.state_dict())
    for (name, p), q in zip(teacher.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("autocast", [False, True])
def test_momentum_forward_has_no_autograd(tiny: TinyModels, autocast: bool) -> None:
    """Even with grad enabled and under bf16 autocast: no graph, fp32 L2-normalised features."""
    model, teacher, _ = tiny
    batch = random_batch(model.cfg)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = teacher(batch.view2, batch.input_ids, batch.attention_mask, image_locals=True, text_locals=True)
    for name in ("image_feat", "text_feat", "image_locals", "text_locals"):
        value = getattr(out, name)
        assert value.dtype == torch.float32 and not value.requires_grad, name
    torch.testing.assert_close(out.image_feat.norm(dim=1), torch.ones(len(out.image_feat)))
    torch.testing.assert_close(out.text_feat.norm(dim=1), torch.ones(len(out.text_feat)))


def test_momentum_text_pass_runs_with_dropout() -> None:
    torch.manual_seed(0)
    teacher = MomentumEncoder(TCL(tiny_model_config(dropout=0.1), LossConfig()))
    batch = random_batch(teacher.cfg)
    first, second = (teacher(batch.view2, batch.input_ids, batch.attention_mask, image_locals=False, text_locals=False)
                     for _ in range(2))
    assert not torch.equal(first.text_feat, second.text_feat)
    assert torch.equal(first.image_feat, second.image_feat)


def test_image_locals_are_pooled_4x4_from_normalised_patches() -> None:
    """At 128 px the patch grid is 8 x 8: local (a, b) is the mean of the four unit patch features of
    rows 2a, 2a+1 and columns 2b, 2b+1 (row-major patches), not renormalised. Text locals are the unit
    projections of every token after CLS, masked where padded."""
    torch.manual_seed(0)
    teacher = MomentumEncoder(TCL(tiny_model_config(img_size=128), LossConfig()))
    batch = random_batch(teacher.cfg)
    out = teacher(batch.view2, batch.input_ids, batch.attention_mask, image_locals=True, text_locals=True)
    tokens, _ = teacher.encode_image(batch.view2)
    patches = F.normalize(teacher.vision_proj(tokens[:, 1:]), dim=-1)
    assert out.image_locals.shape == (4, 16, 32)
    for a in range(4):
        for b in range(4):
            cells = [patches[:, r * 8 + c] for r in (2 * a, 2 * a + 1) for c in (2 * b, 2 * b + 1)]
            torch.testing.assert_close(out.image_locals[:, a * 4 + b], sum(cells) / 4, msg=f"local {a},{b}")
    assert (out.image_locals.norm(dim=-1) < 1 - 1e-3).any()

    hidden, _ = teacher.encode_text(batch.input_ids, batch.attention_mask)
    torch.testing.assert_close(out.text_locals, F.normalize(teacher.text_proj(hidden[:, 1:]), dim=-1))
    assert torch.equal(out.text_local_mask, batch.attention_mask[:, 1:].bool())
