"""The official TCL/ALBEF layout: key names and shapes against the official model's (data/, facts), a file
of random values loaded into every tensor and checked against the official forward by hand, the round
trip official -> ours -> official, the official pos_embed interpolation, and the errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from timm.layers import resample_abs_pos_embed

from tests.trainer.weights.official_files import (
    bert_text_feature,
    official_interpolate_pos_embed,
    official_keys,
    random_official_state,
    vit_image_feature,
)
from trainer.config import load
from trainer.model import FeatureQueue, MomentumEncoder, WeightLoadError, build_model, load_vision_weights
from trainer.model.tcl import TCL
from trainer.weights.load import init_from, read_checkpoint
from trainer.weights.official import to_official
from trainer.weights.state import full_state

TINY = ["model.text.dropout=0"]


def _our_official_keys(preset: str, overrides: list[str]) -> dict[str, list]:
    """Our model for the preset, built on the meta device, written in the official layout: name -> [shape, dtype]."""
    cfg = load(preset, overrides)
    with torch.device("meta"):
        model = TCL(cfg.model, cfg.loss)
        teacher = MomentumEncoder(model)
        queues = FeatureQueue(cfg.model.queue_size, cfg.model.embed_dim, seed=0)
    state = to_official(full_state(model, teacher, queues), cfg.model.text.max_position_embeddings)
    return {k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in state.items()}


@pytest.mark.parametrize(("data", "preset", "overrides"), [
    ("pretrain_paper", "pretrain_4m", ["model.vision.init=null", "model.text.init=null"]),
    ("pretrain_tiny", "tiny", []),
])
def test_key_names_and_shapes_are_the_official_models(data: str, preset: str, overrides: list[str]) -> None:
    want = official_keys(data)["keys"]
    got = _our_official_keys(preset, overrides)
    assert sorted(set(want) - set(got)) == [] and sorted(set(got) - set(want)) == []
    assert {k: v for k, v in got.items() if v != want[k]} == {}


@pytest.fixture(scope="module")
def official_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    state = random_official_state("pretrain_tiny")
    path = tmp_path_factory.mktemp("official") / "TCL_tiny.pth"
    torch.save({"model": state, "config": {"image_res": 64}, "epoch": 29}, path)
    return path, state


def test_random_official_file_loads_every_tensor_and_computes_the_official_features(official_file) -> None:
    path, sd = official_file
    cfg = load("tiny", [*TINY, f"model.init={path}"])
    model, teacher, queues = build_model(cfg)
    report = init_from(str(path), model, teacher, queues)  # build_model ran it too: it is idempotent
    derived = sorted(f"{root}{k}" for root in ("text_encoder.", "text_encoder_m.") for k in (
        "bert.embeddings.position_ids", "cls.predictions.decoder.bias", "cls.predictions.decoder.weight"))
    assert report.missing == [] and report.unexpected == []
    assert sorted(report.derived) == derived
    assert len(report.loaded) + len(report.derived) == len(sd)

    assert model.temp.shape == (1,) and float(model.temp.detach()) == pytest.approx(0.05)
    assert torch.equal(queues.image_queue, sd["image_queue"].t())
    assert torch.equal(queues.text_queue, sd["text_queue"].t())
    assert int(queues.ptr) == 7
    assert torch.equal(teacher.text.fusion_layers[1].crossattention.self.key.weight,
                       sd["text_encoder_m.bert.encoder.layer.3.crossattention.self.key.weight"])
    assert torch.equal(model.itm_head.weight, sd["itm_head.weight"])

    torch.manual_seed(0)
    image = torch.randn(3, 3, 64, 64)
    ids = torch.randint(1000, 3000, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    vit, bert = cfg.model.vision, cfg.model.text
    model.eval()
    teacher.eval()
    with torch.no_grad():
        for encoder, suffix in ((model, ""), (teacher, "_m")):
            want = vit_image_feature(
                sd, f"visual_encoder{suffix}.", f"vision_proj{suffix}.", image, vit.num_heads, vit.depth
            )
            torch.testing.assert_close(encoder.encode_image(image)[1], want)
            want = bert_text_feature(
                sd, f"text_encoder{suffix}.", f"text_proj{suffix}.", ids, mask, bert.num_heads, bert.text_layers
            )
            torch.testing.assert_close(encoder.encode_text(ids, mask)[1], want)


def test_official_to_ours_to_official_is_identical(official_file) -> None:
    path, sd = official_file
    checkpoint = read_checkpoint(path)
    assert checkpoint.layout == "official"
    back = to_official(checkpoint.state, max_position_embeddings=64)
    assert sorted(back) == sorted(sd)
    for key, value in sd.items():
        assert back[key].dtype == value.dtype and torch.equal(back[key], value), key
    assert back["text_encoder.cls.predictions.decoder.weight"].data_ptr() == \
        back["text_encoder.bert.embeddings.word_embeddings.weight"].data_ptr(), "tied as in the official model"


def test_pos_embed_is_resampled_as_the_official_code_does(official_file) -> None:
    """A 64 px (4 x 4) file into a 96 px (6 x 6) model: plain bicubic, which differs from timm's antialiased one."""
    path, sd = official_file
    cfg = load("tiny", ["model.vision.img_size=96", "model.local_grid=2"])
    model, teacher, queues = build_model(cfg)
    init_from(str(path), model, teacher, queues)
    want = official_interpolate_pos_embed(sd["visual_encoder.pos_embed"], 6)
    torch.testing.assert_close(model.visual_encoder.pos_embed.detach(), want, rtol=0, atol=0)
    want_m = official_interpolate_pos_embed(sd["visual_encoder_m.pos_embed"], 6)
    torch.testing.assert_close(teacher.visual_encoder.pos_embed, want_m, rtol=0, atol=0)
    timm_aa = resample_abs_pos_embed(sd["visual_encoder.pos_embed"], new_size=[6, 6], num_prefix_tokens=1)
    assert not torch.allclose(timm_aa, want, atol=1e-4)


def test_vision_init_with_an_official_checkpoint_says_use_model_init(official_file) -> None:
    path, _ = official_file
    cfg = load("tiny")
    model = TCL(cfg.model, cfg.loss)
    with pytest.raises(WeightLoadError, match="this is an official TCL/ALBEF checkpoint: use model.init"):
        load_vision_weights(model.visual_encoder, str(path))


def test_unknown_layouts_and_partial_files_are_errors_naming_the_known_layouts(official_file, tmp_path: Path) -> None:
    path, sd = official_file
    cfg = load("tiny")
    model, teacher, queues = build_model(cfg)
    before = {k: v.clone() for k, v in full_state(model, teacher, queues).items()}
    other = tmp_path / "other.pth"
    torch.save({"model": {"backbone.weight": torch.zeros(3)}}, other)
    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    no_text = tmp_path / "vision_only.pth"
    torch.save({"model": {k: v for k, v in sd.items() if k.startswith("visual_encoder.")}}, no_text)
    untied = tmp_path / "untied.pth"
    key = "text_encoder.cls.predictions"
    torch.save({"model": {**sd, f"{key}.decoder.bias": sd[f"{key}.bias"] + 1}}, untied)
    for bad, message in [
        (other, "not a checkpoint layout this trainer knows. Known layouts: an official"),
        (text, "neither a torch file nor safetensors. Known layouts"),
        (tmp_path, "a directory without mp_rank_00_model_states.pt.*Known layouts"),
        (no_text, r"it has no online.vision_proj.\*, online.text.bert.\*, online.text_proj.\* tensors.*Known layouts"),
        (untied, "decoder.bias differs from text_encoder.cls.predictions.bias"),
    ]:
        with pytest.raises(WeightLoadError, match=message):
            init_from(str(bad), model, teacher, queues)
    assert all(torch.equal(v, before[k]) for k, v in full_state(model, teacher, queues).items()), "nothing written"
