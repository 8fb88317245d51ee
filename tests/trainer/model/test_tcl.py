"""The TCL model end to end on CPU: every term, where gradients go, switches, precision, sizes."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from tests.trainer.model.tcl_references import cma_reference, imc_reference, itm_reference, lmi_reference, mlm_reference
from tests.trainer.model.tcl_testing import (
    TinyModels,
    build_tiny,
    forward_step,
    mlm_inputs,
    random_batch,
    teacher_forward,
    tiny_model_config,
)
from trainer.config import LossConfig, ModelConfig, RunConfig, load
from trainer.losses import itm_loss
from trainer.model import TCL, build_model, count_parameters

TERMS = ("cma_i2t", "cma_t2i", "imc_i2i", "imc_t2t", "lmi_image", "lmi_text", "itm", "mlm")


def test_forward_backward_reaches_exactly_what_the_spec_says() -> None:
    """Tiny model with dropout, alpha 0.4: every term is finite and the total is sum(weight x term) with the
    official weights; every trainable online parameter (the temperature included) gets a non-zero finite
    gradient; the momentum encoder, the queues and the teacher's features and LMI locals get none."""
    model, teacher, queues = build_tiny(tiny_model_config(dropout=0.1))
    batch = random_batch(model.cfg)
    teacher.update(model, model.cfg.momentum)
    out, teacher_out, _ = forward_step(model, teacher, queues, batch, alpha=0.4)

    assert set(out) == {"loss", *TERMS}
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in out.values())
    contrastive = sum(out[name] for name in TERMS[:6]) / 6
    torch.testing.assert_close(out["loss"].detach(), contrastive + out["itm"] + out["mlm"])

    out["loss"].backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == [], f"online parameters without gradient: {no_grad}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.temp.shape == (1,) and model.temp.grad.shape == (1,)
    assert all(p.grad is None for p in teacher.parameters())
    for name, value in vars(teacher_out).items():
        assert value is None or not value.requires_grad, f"teacher output {name} carries autograd"
    assert not any(buffer.requires_grad for buffer in queues.buffers())


def test_terms_equal_the_objectives_on_the_models_features(tiny: TinyModels, monkeypatch: pytest.MonkeyPatch) -> None:
    """Recompute every term from the encoders' outputs with the float64 references: which features, locals,
    queues, masks and temperature each term receives; the ITM pairs (positive, text + hard-negative image,
    hard-negative text + image) and the similarities the negatives are drawn from; the MLM student on the
    masked text with view-1 image tokens and the teacher on it with momentum view-2 tokens."""
    model, teacher, queues = tiny
    drawn: list[tuple[Tensor, Tensor]] = []
    neg_text, neg_image = torch.tensor([2, 0, 3, 1]), torch.tensor([1, 3, 0, 2])

    def fixed_negatives(sim_i2t: Tensor, sim_t2i: Tensor) -> tuple[Tensor, Tensor]:
        drawn.append((sim_i2t, sim_t2i))
        return neg_text, neg_image

    monkeypatch.setattr("trainer.model.tcl.sample_hard_negatives", fixed_negatives)
    itm_inputs: list[tuple[Tensor, Tensor]] = []
    monkeypatch.setattr("trainer.model.tcl.itm_loss", lambda logits, labels: itm_inputs.append((logits, labels))
                        or itm_loss(logits, labels))
    with torch.no_grad():
        model.temp.fill_(0.05)
        for layer in model.text.fusion_layers:  # at init the image barely moves the fused text: make it count
            layer.crossattention.self.value.weight.mul_(30)
    batch, alpha = random_batch(model.cfg), 0.4
    out, t, mlm = forward_step(model, teacher, queues, batch, alpha=alpha)

    with torch.no_grad():
        tokens, img = model.encode_image(batch.view1)
        hidden, txt = model.encode_text(batch.input_ids, batch.attention_mask)
        f64 = {"img": img.double(), "txt": txt.double(), "img_m": t.image_feat.double(), "txt_m": t.text_feat.double(),
               "image_queue": queues.image_queue.double(), "text_queue": queues.text_queue.double()}
        contrastive = (*cma_reference(**f64, temp=0.05, alpha=alpha), *imc_reference(**f64, temp=0.05))
        want = dict(zip(TERMS[:4], contrastive, strict=True))
        want["lmi_image"] = lmi_reference(f64["img"], t.image_locals.double(), None, 0.05)
        want["lmi_text"] = lmi_reference(f64["txt"], t.text_locals.double(), batch.attention_mask[:, 1:].bool(), 0.05)

        (sim_i2t, sim_t2i), = drawn
        torch.testing.assert_close(sim_i2t, img @ t.text_feat.t() / 0.05)
        torch.testing.assert_close(sim_t2i, txt @ t.image_feat.t() / 0.05)
        mask, rows = batch.attention_mask, torch.arange(4)
        pairs = [(hidden, mask, rows), (hidden, mask, neg_image), (hidden[neg_text], mask[neg_text], rows)]
        cls = [model.text.fuse(h, m, model.text.image_kv(tokens[i]))[:, 0] for h, m, i in pairs]
        assert (cls[0] - cls[1]).abs().max() > 0.01 and (cls[0] - cls[2]).abs().max() > 0.01, "pairs indistinguishable"
        itm_labels = torch.tensor([1] * 4 + [0] * 8)
        (logits, labels), = itm_inputs
        assert torch.equal(labels, itm_labels)
        torch.testing.assert_close(logits, model.itm_head(torch.cat(cls)), rtol=1e-5, atol=1e-5)
        want["itm"] = itm_reference(logits.double(), itm_labels)

        positions = mlm["mlm_positions"]
        student = model.text.fuse(model.text.encode_text(mlm["mlm_input_ids"], mask), mask, model.text.image_kv(tokens))
        tokens_m, _ = teacher.encode_image(batch.view2)
        teacher_fused = teacher.text.fuse(teacher.text.encode_text(mlm["mlm_input_ids"], mask), mask,
                                          teacher.text.image_kv(tokens_m))
        teacher_logits = teacher.text.mlm_logits(teacher_fused.flatten(0, 1)[positions])
        torch.testing.assert_close(t.mlm_logits, teacher_logits)
        student_logits = model.text.mlm_logits(student.flatten(0, 1)[positions])
        want["mlm"] = mlm_reference(student_logits.double(), teacher_logits.double(), mlm["mlm_labels"], alpha)

    for name in TERMS:
        torch.testing.assert_close(out[name].double(), want[name], rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize("zeroed, absent, frozen", [
    ({"itm": 0.0}, {"itm"}, ("itm_head.",)),
    ({"mlm": 0.0}, {"mlm"}, ("text.cls.",)),
    ({"lmi_image": 0.0, "lmi_text": 0.0}, {"lmi_image", "lmi_text"}, ()),
    ({"imc_i2i": 0.0, "imc_t2t": 0.0}, {"imc_i2i", "imc_t2t"}, ()),
    ({"cma_i2t": 0.0}, {"cma_i2t"}, ()),
])
def test_weight_zero_skips_a_term(zeroed: dict[str, float], absent: set[str], frozen: tuple[str, ...]) -> None:
    """A term of weight 0 is absent from the output and out of the total; the parameters only it uses get
    no gradient; the inputs only it needs (MLM masks, LMI locals) may be left out."""
    loss = LossConfig(**zeroed)
    model, teacher, queues = build_tiny(tiny_model_config(), loss)
    out, _, _ = forward_step(model, teacher, queues, random_batch(model.cfg))
    assert set(out) == {"loss", *TERMS} - absent
    weights = loss.weights()
    torch.testing.assert_close(out["loss"].detach(), sum(weights[name] * out[name] for name in set(TERMS) - absent))
    out["loss"].backward()
    without_grad = {name for name, p in model.named_parameters() if p.grad is None}
    assert without_grad == {name for name, _ in model.named_parameters() if name.startswith(frozen)}


def test_forward_rejects_missing_inputs_with_clear_errors(tiny: TinyModels) -> None:
    model, teacher, queues = tiny
    batch = random_batch(model.cfg)
    t = teacher_forward(model, teacher, batch, mlm_inputs(batch, model.cfg.text.vocab_size))
    with pytest.raises(ValueError, match="MLM has a non-zero weight"):
        model(batch.view1, batch.input_ids, batch.attention_mask, t, queues.image_queue, queues.text_queue, 0.0)
    no_locals = teacher(batch.view2, batch.input_ids, batch.attention_mask, image_locals=False, text_locals=True)
    with pytest.raises(ValueError, match="lmi_image.*image locals"):
        model(batch.view1, batch.input_ids, batch.attention_mask, no_locals, queues.image_queue, queues.text_queue,
              0.0, **mlm_inputs(batch, model.cfg.text.vocab_size))
    with pytest.raises(ValueError, match="every loss weight is 0"):
        zero = {name: 0.0 for name in TERMS}
        model, teacher, queues = build_tiny(model.cfg, LossConfig(**zero))
        forward_step(model, teacher, queues, batch)


def _at_temperatures(tiny: TinyModels, values: tuple[float, ...]) -> dict[float, tuple[dict, torch.Tensor]]:
    """Forward + backward with the temperature parameter set to each value: (outputs, temp gradient)."""
    model, teacher, queues = tiny
    batch = random_batch(model.cfg)
    results = {}
    for value in values:
        with torch.no_grad():
            model.temp.fill_(value)
        model.zero_grad()
        torch.manual_seed(0)
        out, _, _ = forward_step(model, teacher, queues, batch)
        out["loss"].backward()
        results[value] = (out, model.temp.grad.clone())
    return results


def test_temperature_is_clamped_in_the_forward(tiny: TinyModels) -> None:
    """The parameter may leave [0.001, 0.5] (an optimizer step on ZeRO's master copy); every term uses the
    clamped value. Inside the range the temperature gets a gradient."""
    runs = _at_temperatures(tiny, (5.0, 0.5, 1e-5, 0.001, 0.07))
    results = {value: out for value, (out, _) in runs.items()}
    for outside, boundary in ((5.0, 0.5), (1e-5, 0.001)):
        for name in TERMS:
            torch.testing.assert_close(results[outside][name], results[boundary][name], msg=name)
    assert not torch.isclose(results[0.5]["imc_i2i"], results[0.001]["imc_i2i"])
    assert runs[0.07][1].abs().item() > 0


def test_temperature_outside_the_range_still_gets_the_gradient(tiny: TinyModels) -> None:
    """Straight-through clamp: a parameter pushed past a bound gets the gradient it would get at the bound,
    so it can come back (a plain clamp would give 0 and leave it stuck)."""
    grads = {value: grad for value, (_, grad) in _at_temperatures(tiny, (0.5, 5.0, 0.001, 1e-5)).items()}
    torch.testing.assert_close(grads[5.0], grads[0.5])
    torch.testing.assert_close(grads[1e-5], grads[0.001])
    assert grads[5.0].abs().item() > 0 and grads[1e-5].abs().item() > 0


def test_gradient_checkpointing_changes_nothing(tiny: TinyModels) -> None:
    model, teacher, queues = tiny
    batch = random_batch(model.cfg)
    grads = []
    for enabled in (False, True):
        model.set_grad_checkpointing(enabled)
        model.zero_grad()
        torch.manual_seed(0)
        out, _, _ = forward_step(model, teacher, queues, batch)
        out["loss"].backward()
        grads.append((out["loss"].detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for name, grad in grads[0][1].items():
        torch.testing.assert_close(grads[1][1][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_bf16_online_model_gives_fp32_terms_close_to_fp32(tiny: TinyModels) -> None:
    """The online model cast to bf16 (DeepSpeed's bf16 mode): terms are computed in fp32 and stay within
    bf16 rounding of the fp32 model's; the momentum side stays fp32."""
    model, teacher, queues = tiny
    batch = random_batch(model.cfg)
    torch.manual_seed(0)
    want, _, _ = forward_step(model, teacher, queues, batch)
    model.to(torch.bfloat16)
    torch.manual_seed(0)
    got, _, _ = forward_step(model, teacher, queues, batch)
    got["loss"].backward()
    for name in TERMS:
        assert got[name].dtype == torch.float32 and torch.isfinite(got[name])
        torch.testing.assert_close(got[name], want[name], rtol=0.05, atol=0.05, msg=name)
    assert all(p.grad is not None and p.grad.dtype == torch.bfloat16 for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in teacher.parameters())


def expected_parameters(cfg: ModelConfig) -> int:
    """Trainable parameters of the online model, counted layer by layer from the config."""
    v, t = cfg.vision, cfg.text
    w, h = v.width, t.hidden_size

    def linear(n_in: int, n_out: int) -> int:
        return n_in * n_out + n_out

    norm = 2 * w
    mlp = int(w * v.mlp_ratio)
    vit_block = norm + linear(w, 3 * w) + linear(w, w) + norm + linear(w, mlp) + linear(mlp, w)
    vit = 3 * v.patch_size**2 * w + w + w + (v.grid_size**2 + 1) * w + v.depth * vit_block + norm
    self_attention = 4 * linear(h, h) + 2 * h
    cross_attention = 2 * linear(h, h) + 2 * linear(w, h) + 2 * h
    ffn = linear(h, t.intermediate_size) + linear(t.intermediate_size, h) + 2 * h
    embeddings = (t.vocab_size + t.max_position_embeddings + t.type_vocab_size) * h + 2 * h
    layers = t.text_layers + t.fusion_layers
    bert = embeddings + layers * (self_attention + ffn) + t.fusion_layers * cross_attention
    mlm_head = linear(h, h) + 2 * h + t.vocab_size
    heads = linear(w, cfg.embed_dim) + linear(h, cfg.embed_dim) + linear(h, 2) + 1
    return vit + bert + mlm_head + heads


def test_parameter_counts_follow_the_architecture() -> None:
    """The tiny model built for real and the paper config (ViT-B/16 at 256, BERT-base split 6 + 6 with
    cross-attention) built on the meta device: about 210M trainable parameters (209,937,725)."""
    tiny_cfg = tiny_model_config()
    assert count_parameters(TCL(tiny_cfg, LossConfig())) == expected_parameters(tiny_cfg)
    paper = RunConfig().model
    with torch.device("meta"):
        big = TCL(paper, LossConfig())
    assert count_parameters(big) == expected_parameters(paper)
    assert 205e6 < count_parameters(big) < 215e6
    assert all(isinstance(m, nn.Dropout) and m.p == 0.1 for m in big.text.modules() if isinstance(m, nn.Dropout))


def test_build_model_gives_every_rank_the_same_queues() -> None:
    """Queues come from cfg.seed alone (DeepSpeed broadcasts parameters, not buffers)."""
    cfg = load("tiny")
    queues = [build_model(cfg)[2] for _ in range(2)]
    first, second = (q.state_dict().values() for q in queues)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    other = build_model(load("tiny", ["seed=1"]))[2]
    assert not torch.equal(other.image_queue, queues[0].image_queue)
