"""The config tree: presets, overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.config import ConfigError, RunConfig, dump, load, parse_overrides, preset_names


def test_presets_ship_with_the_package() -> None:
    assert {"tiny", "pretrain_4m"} <= set(preset_names())
    paper = load("pretrain_4m")
    assert (paper.model.vision.img_size, paper.model.vision.patch_size, paper.model.vision.width) == (256, 16, 768)
    assert (paper.model.text.text_layers, paper.model.text.fusion_layers) == (6, 6)
    assert (paper.model.queue_size, paper.model.embed_dim, paper.model.momentum) == (65536, 256, 0.995)
    assert (paper.optim.lr, paper.optim.weight_decay, paper.optim.warmup_steps, paper.optim.epochs) == (1e-4, 0.02, 2000, 30)
    assert paper.data.batch_size == 64 and paper.engine.zero_stage == 2 and paper.engine.precision == "bf16"
    assert sum(paper.loss.weights().values()) == pytest.approx(3.0)  # six terms at 1/6, ITM 1, MLM 1


def test_overrides_are_yaml_scalars_and_flow_lists() -> None:
    tree = parse_overrides(["optim.lr=3e-4", "optim.betas=[0.8, 0.9]", "data.eval=null", "name=run-1", "engine.compile=true"])
    assert tree == {"optim": {"lr": 3e-4, "betas": [0.8, 0.9]}, "data": {"eval": None}, "name": "run-1", "engine": {"compile": True}}
    cfg = load("tiny", ["optim.lr=3e-4", "optim.betas=[0.8, 0.9]", "data.eval=null"])
    assert cfg.optim.lr == 3e-4 and cfg.optim.betas == (0.8, 0.9) and cfg.data.eval is None
    assert cfg.model.vision.width == 64  # untouched keys keep the file's values


def test_dump_round_trips(tmp_path: Path) -> None:
    cfg = load("tiny", ["optim.lr=2e-4"])
    path = tmp_path / "c.yaml"
    path.write_text(dump(cfg))
    assert load(str(path)) == cfg


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["model.vision.bogus=1"], "model.vision.bogus: unknown key"),
        (["optim.lr=-1"], "optim.lr"),
        (["engine.zero_stage=3"], "engine.zero_stage"),
        (["model.vision.img_size=70"], "not a multiple of patch_size"),
        (["model.local_grid=3"], "local_grid 3 does not divide the patch grid 4"),
        (["data.max_tokens=100"], "exceeds model.text.max_position_embeddings"),
        (["optimlr"], "not of the form dotted.key=value"),
        (["optim.lr=[1"], "cannot parse value"),
    ],
)
def test_invalid_configs_name_the_key(overrides: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        load("tiny", overrides)
    assert fragment in str(err.value)


def test_unreadable_or_wrong_configs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file and no preset"):
        load(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(str(bad))
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load(str(listy))


def test_configs_are_frozen() -> None:
    cfg = RunConfig()
    with pytest.raises(Exception):
        cfg.seed = 3  # type: ignore[misc]
