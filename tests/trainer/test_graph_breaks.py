"""Dynamo captures the blocks that `engine.compile` compiles, the fused-kernel dispatch and the whole online and
momentum forwards as single graphs: zero graph breaks (pinned), so compiling them never falls back to eager
mid-way. On CPU the dispatch takes the torch references, which are what the GPU path falls back to.

The counter itself is checked on a function with a planted break (a host read of a tensor value)."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo as dynamo
import torch.nn.functional as F

from tests.trainer.model.tcl_testing import build_tiny, mlm_inputs, random_batch, teacher_forward, tiny_model_config
from trainer import kernels


@pytest.fixture(scope="module")
def tiny():
    cfg = tiny_model_config()
    model, teacher, queues = build_tiny(cfg)
    return cfg, model, teacher, queues, random_batch(cfg)


def breaks(fn, *args) -> int:
    dynamo.reset()
    return dynamo.explain(fn)(*args).graph_break_count


def test_the_counter_sees_a_planted_break() -> None:
    def planted(x: torch.Tensor) -> torch.Tensor:
        y = x * 2
        if y.sum().item() > 0:  # a host read: dynamo must split the graph here
            return y + 1
        return y - 1

    assert breaks(planted, torch.ones(3)) >= 1


def test_vit_block_and_bert_layers_have_no_break(tiny) -> None:
    cfg, model, _, _, batch = tiny
    tokens = torch.randn(batch.input_ids.shape[0], 1 + cfg.vision.grid_size**2, cfg.vision.width)
    hidden = torch.randn(*batch.input_ids.shape, cfg.text.hidden_size)
    mask = batch.attention_mask.bool()[:, None, None, :]
    fusion = model.text.fusion_layers[0]
    assert breaks(model.visual_encoder.blocks[0], tokens) == 0
    assert breaks(model.text.text_layers[0], hidden, mask, None) == 0
    assert breaks(fusion, hidden, mask, fusion.crossattention.self.key_value(tokens)) == 0


def test_kernel_dispatch_has_no_break(tiny) -> None:
    cfg, model, teacher, queues, _ = tiny
    g = torch.Generator().manual_seed(0)
    feats = [F.normalize(torch.randn(4, cfg.embed_dim, generator=g), dim=-1) for _ in range(4)]
    temp = model.clamped_temp()
    locals_ = F.normalize(torch.randn(4, 16, cfg.embed_dim, generator=g), dim=-1)
    hidden, weight, bias = torch.randn(6, 8), torch.randn(50, 8), torch.zeros(50)
    labels = torch.tensor([1, 2, 3, -100, 4, 5])

    def contrastive(img, txt, img_m, txt_m):
        q_img, q_txt = queues.image_queue, queues.text_queue
        return kernels.queue_contrastive_losses(img, txt, img_m, txt_m, q_img, q_txt, temp, 0.4)

    assert breaks(contrastive, *feats) == 0
    assert breaks(kernels.local_mutual_information, feats[0], locals_, None, temp) == 0
    assert breaks(lambda h, t: kernels.mlm_head_loss(h, weight, bias, t, labels, 0.4), hidden, torch.randn(6, 50)) == 0
    online = [p.detach().clone() for p in teacher.parameters()][:4]
    assert breaks(lambda m: kernels.ema_update_(list(teacher.parameters())[:4], online, m), 0.995) == 0


def test_online_and_momentum_forwards_have_no_break(tiny) -> None:
    cfg, model, teacher, queues, batch = tiny
    mlm = mlm_inputs(batch, cfg.text.vocab_size)
    teacher_out = teacher_forward(model, teacher, batch, mlm)

    def online(view1, ids, mask):
        return model(view1, ids, mask, teacher_out, queues.image_queue, queues.text_queue, 0.4, **mlm)

    def momentum(view2, ids, mask):
        return teacher(view2, ids, mask, image_locals=True, text_locals=True,
                       mlm_input_ids=mlm["mlm_input_ids"], mlm_positions=mlm["mlm_positions"])

    assert breaks(online, batch.view1, batch.input_ids, batch.attention_mask) == 0
    assert breaks(momentum, batch.view2, batch.input_ids, batch.attention_mask) == 0
