"""Initialising from pretrained weights: tiny HF BERTs saved with save_pretrained, tiny timm ViT
checkpoints saved with torch.save, the reports, and clear errors that leave the model untouched."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from transformers import BertForMaskedLM, BertForPreTraining, BertModel, PreTrainedModel

from tests.trainer.model.tcl_testing import hf_bert_config, tiny_model_config
from tests.trainer.weights.official_files import official_interpolate_pos_embed
from trainer.config import TextConfig, VisionConfig, load
from trainer.model import WeightLoadError, build_model, load_text_weights, load_vision_weights
from trainer.model.bert import TextFusionModel
from trainer.model.vision import build_vision_encoder

SMALL_VOCAB = 512


@pytest.fixture
def text_cfg() -> TextConfig:
    return tiny_model_config().text.model_copy(update={"vocab_size": SMALL_VOCAB})


def save_hf(model_class: type[PreTrainedModel], cfg: TextConfig, directory: Path, **updates: object) -> PreTrainedModel:
    torch.manual_seed(1)
    hf = model_class(hf_bert_config(cfg, layers=cfg.text_layers + cfg.fusion_layers, **updates))
    hf.save_pretrained(directory)
    return hf


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_bert_layers_go_to_text_and_fusion_encoders(text_cfg: TextConfig, tmp_path: Path) -> None:
    """HF layers 0-1 -> text encoder, 2-3 -> fusion encoder (same index), embeddings and MLM head by name;
    our cross-attention is reported missing and stays at its init."""
    hf = save_hf(BertForMaskedLM, text_cfg, tmp_path)
    torch.manual_seed(2)
    ours = TextFusionModel(text_cfg, image_width=64)
    cross_before = {k: v.clone() for k, v in ours.state_dict().items() if ".crossattention." in k}
    report = load_text_weights(ours, str(tmp_path))

    assert sorted(report.missing) == sorted(cross_before)
    assert report.unexpected == []
    assert set(report.loaded) == set(ours.state_dict()) - set(cross_before)
    hf_layers = hf.bert.encoder.layer
    assert torch.equal(ours.fusion_layers[0].attention.self.query.weight, hf_layers[2].attention.self.query.weight)
    assert torch.equal(ours.fusion_layers[1].output.dense.weight, hf_layers[3].output.dense.weight)
    assert torch.equal(ours.text_layers[1].intermediate.dense.bias, hf_layers[1].intermediate.dense.bias)
    assert torch.equal(ours.bert.embeddings.word_embeddings.weight, hf.bert.embeddings.word_embeddings.weight)
    assert torch.equal(ours.cls.predictions.transform.dense.weight, hf.cls.predictions.transform.dense.weight)
    assert torch.equal(ours.cls.predictions.bias, hf.cls.predictions.bias)
    for name, value in cross_before.items():
        assert torch.equal(ours.state_dict()[name], value), name


def test_bert_pretraining_checkpoint_reports_pooler_and_nsp_unexpected(text_cfg: TextConfig, tmp_path: Path) -> None:
    """The layout of bert-base-uncased on the hub: a pooler and an NSP head we have no use for."""
    hf = save_hf(BertForPreTraining, text_cfg, tmp_path)
    ours = TextFusionModel(text_cfg, image_width=64)
    report = load_text_weights(ours, str(tmp_path))
    dropped = {"bert.pooler.dense.weight", "bert.pooler.dense.bias", "cls.seq_relationship.weight"}
    assert dropped <= set(report.unexpected)
    assert all(".crossattention." in k for k in report.missing)
    assert torch.equal(ours.cls.predictions.transform.LayerNorm.bias, hf.cls.predictions.transform.LayerNorm.bias)


def test_bert_without_mlm_head_reports_the_head_missing(text_cfg: TextConfig, tmp_path: Path) -> None:
    """A BertModel checkpoint (e.g. a sentence encoder) has no MLM head: transformers would fill one with
    random values; we report it missing and keep our own init rather than claim it was loaded."""
    hf = save_hf(BertModel, text_cfg, tmp_path)
    ours = TextFusionModel(text_cfg, image_width=64)
    head_before = {k: v.clone() for k, v in ours.state_dict().items() if k.startswith("cls.")}
    report = load_text_weights(ours, str(tmp_path))
    assert set(head_before) <= set(report.missing)
    assert not any(k.startswith("cls.") for k in report.loaded)
    for name, value in head_before.items():
        assert torch.equal(ours.state_dict()[name], value), name
    assert "pooler.dense.weight" in report.unexpected
    assert torch.equal(ours.text_layers[0].attention.self.key.weight, hf.encoder.layer[0].attention.self.key.weight)


def test_bert_shape_mismatch_names_the_key_and_changes_nothing(text_cfg: TextConfig, tmp_path: Path) -> None:
    save_hf(BertForMaskedLM, text_cfg, tmp_path, intermediate_size=96)
    ours = TextFusionModel(text_cfg, image_width=64)
    before = snapshot(ours)
    key = r"bert\.encoder\.layer\.0\.intermediate\.dense\.weight"
    with pytest.raises(WeightLoadError, match=key + r".*\(96, 64\).*\(128, 64\)"):
        load_text_weights(ours, str(tmp_path))
    assert all(torch.equal(ours.state_dict()[k], v) for k, v in before.items())


def test_bert_from_a_directory_without_a_model_is_a_clear_error(text_cfg: TextConfig, tmp_path: Path) -> None:
    with pytest.raises(WeightLoadError, match="cannot load a BERT"):
        load_text_weights(TextFusionModel(text_cfg, image_width=64), str(tmp_path))


def timm_vit(cfg: VisionConfig, img_size: int, width: int | None = None) -> VisionTransformer:
    """A timm ViT as DeiT checkpoints come: with a classifier head."""
    torch.manual_seed(3)
    return VisionTransformer(
        img_size=img_size, patch_size=cfg.patch_size, embed_dim=width or cfg.width, depth=cfg.depth,
        num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6), num_classes=10,
    )


@pytest.fixture
def vision_cfg() -> VisionConfig:
    return tiny_model_config().vision


def test_vit_checkpoint_at_another_resolution_resamples_pos_embed(vision_cfg: VisionConfig, tmp_path: Path) -> None:
    """A 32 px checkpoint (2 x 2 grid) in DeiT's {"model": ...} layout into the 64 px encoder (4 x 4):
    pos_embed is the official interpolate_pos_embed's plain bicubic (not timm's antialiased resample), the rest
    is copied, the classifier head is unexpected."""
    source = timm_vit(vision_cfg, img_size=32)
    path = tmp_path / "deit.pth"
    torch.save({"model": source.state_dict()}, path)
    encoder = build_vision_encoder(vision_cfg)
    report = load_vision_weights(encoder, str(path))

    assert report.missing == [] and sorted(report.unexpected) == ["head.bias", "head.weight"]
    want = official_interpolate_pos_embed(source.pos_embed.detach(), 4)
    assert encoder.pos_embed.shape == (1, 17, 64)
    torch.testing.assert_close(encoder.pos_embed.detach(), want, rtol=0, atol=0)
    antialiased = resample_abs_pos_embed(source.pos_embed.detach(), new_size=[4, 4], num_prefix_tokens=1)
    assert not torch.allclose(antialiased, want, atol=1e-4)
    assert torch.equal(encoder.pos_embed[:, 0], source.pos_embed[:, 0]), "the CLS position must not be resampled"
    for name, value in source.state_dict().items():
        if name != "pos_embed" and not name.startswith("head."):
            assert torch.equal(encoder.state_dict()[name], value), name


def test_vit_checkpoint_at_the_same_resolution_loads_exactly(vision_cfg: VisionConfig, tmp_path: Path) -> None:
    source = timm_vit(vision_cfg, img_size=vision_cfg.img_size)
    path = tmp_path / "vit.pt"
    torch.save(source.state_dict(), path)
    encoder = build_vision_encoder(vision_cfg)
    load_vision_weights(encoder, str(path))
    loaded = encoder.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in source.state_dict().items() if not k.startswith("head."))


def test_vit_errors_name_the_problem_and_change_nothing(vision_cfg: VisionConfig, tmp_path: Path) -> None:
    encoder = build_vision_encoder(vision_cfg)
    before = snapshot(encoder)
    wide = tmp_path / "wide.pt"
    torch.save(timm_vit(vision_cfg, img_size=64, width=96).state_dict(), wide)
    with pytest.raises(WeightLoadError, match=r"shape mismatch for cls_token.*\(1, 1, 96\).*\(1, 1, 64\)"):
        load_vision_weights(encoder, str(wide))
    not_weights = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_weights)
    with pytest.raises(WeightLoadError, match="not a state dict"):
        load_vision_weights(encoder, str(not_weights))
    with pytest.raises(WeightLoadError, match="not a file and not loadable from timm"):
        load_vision_weights(encoder, "no_such_vit_anywhere")
    unrelated = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(8, 3, 7, 7), "fc.weight": torch.zeros(10, 8)}, unrelated)
    with pytest.raises(WeightLoadError, match=r"none of its 2 tensors is a timm ViT weight \(its keys look like conv1"):
        load_vision_weights(encoder, str(unrelated))
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in before.items())


def test_build_model_initialises_both_sides_before_copying_the_teacher(tmp_path: Path) -> None:
    """build_model with both inits: the online model holds the checkpoints' weights and the momentum copy
    starts equal to them (it is made after loading)."""
    cfg = load("tiny")
    vit = timm_vit(cfg.model.vision, img_size=cfg.model.vision.img_size)
    torch.save(vit.state_dict(), tmp_path / "vit.pt")
    hf = save_hf(BertForMaskedLM, cfg.model.text, tmp_path / "bert")
    cfg = load("tiny", [f"model.vision.init={tmp_path / 'vit.pt'}", f"model.text.init={tmp_path / 'bert'}"])
    model, teacher, queues = build_model(cfg)
    assert torch.equal(model.visual_encoder.blocks[1].attn.qkv.weight, vit.blocks[1].attn.qkv.weight)
    fusion_ffn = model.text.fusion_layers[0].intermediate.dense.weight
    assert torch.equal(fusion_ffn, hf.bert.encoder.layer[2].intermediate.dense.weight)
    online = dict(model.named_parameters())
    assert all(torch.equal(p, online[name]) for name, p in teacher.named_parameters())
    assert queues.size == cfg.model.queue_size
