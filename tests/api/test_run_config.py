"""From a request's config to the trainer's RunConfig: validation, confined paths, server placement."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.run_config import build_run_config
from api.schemas import PresetConfig, RunCreate
from api.security import PathNotAllowed
from api.settings import Settings
from trainer.config import ConfigError

PLACEMENT = {"output_dir": "/srv/runs/abc/output", "data": {"cache_dir": "/srv/runs/abc/cache"}}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    for folder in ("data/demo/train", "data/demo/eval", "configs", "outside"):
        (tmp_path / folder).mkdir(parents=True)
    return Settings(token="t" * 16, data_roots=[tmp_path / "data"], config_roots=[tmp_path / "configs"],
                    workdir=tmp_path, allow_s3=True)


def test_preset_with_overrides_gets_absolute_data_paths_and_the_servers_placement(settings: Settings) -> None:
    request = PresetConfig(preset="tiny", overrides=["optim.max_steps=6", "data.train=data/demo/train",
                                                     "data.eval=./data/demo/eval", "output_dir=/anywhere"])
    cfg = build_run_config(request, settings, PLACEMENT)
    assert cfg.optim.max_steps == 6 and cfg.name == "tiny"
    assert cfg.data.train == str(settings.workdir / "data/demo/train")
    assert cfg.data.eval == str(settings.workdir / "data/demo/eval")
    assert (cfg.output_dir, cfg.data.cache_dir) == ("/srv/runs/abc/output", "/srv/runs/abc/cache")
    assert cfg.model.text.tokenizer == "bert-base-uncased"  # a name, not a path: left alone


def test_a_full_config_tree_is_validated_by_the_trainer_models(settings: Settings) -> None:
    tree = {"name": "mine", "data": {"train": "s3://bucket/train", "eval": None}, "optim": {"lr": 3e-4}}
    cfg = build_run_config(tree, settings, PLACEMENT)
    assert (cfg.name, cfg.data.train, cfg.optim.lr) == ("mine", "s3://bucket/train", 3e-4)
    with pytest.raises(ConfigError, match=r"optim\.lrr: unknown key"):
        build_run_config({"optim": {"lrr": 1}}, settings, PLACEMENT)
    with pytest.raises(ConfigError, match=r"optim\.override"):
        build_run_config(PresetConfig(preset="tiny", overrides=["optim.override"]), settings, PLACEMENT)


@pytest.mark.parametrize("train", ["/etc", "../outside", "data/../outside", "~/somewhere"])
def test_data_outside_the_roots_is_refused(settings: Settings, train: str) -> None:
    with pytest.raises(PathNotAllowed, match=r"data\.train: .* outside the allowed roots"):
        build_run_config({"data": {"train": train}}, settings, PLACEMENT)


def test_a_symlink_out_of_the_root_is_refused(settings: Settings) -> None:
    (settings.workdir / "data" / "escape").symlink_to(settings.workdir / "outside")
    with pytest.raises(PathNotAllowed, match="outside the allowed roots"):
        build_run_config({"data": {"train": "data/escape"}}, settings, PLACEMENT)


@pytest.mark.parametrize("location", ["http://host/shards", "file:///etc", "gs://bucket/x"])
def test_only_s3_uris_are_accepted(settings: Settings, location: str) -> None:
    with pytest.raises(PathNotAllowed, match=r"data\.eval: .* is not accepted \(only local paths and s3://"):
        build_run_config({"data": {"eval": location}}, settings, PLACEMENT)


def test_s3_can_be_switched_off(settings: Settings) -> None:
    no_s3 = settings.model_copy(update={"allow_s3": False})
    with pytest.raises(PathNotAllowed, match=r"only local paths\)"):
        build_run_config({"data": {"train": "s3://bucket/train"}}, no_s3, PLACEMENT)


def test_model_paths_are_confined_but_hub_names_pass(settings: Settings) -> None:
    vocab = settings.workdir / "data" / "vocab.txt"
    vocab.write_text("[PAD]\n")
    cfg = build_run_config({"model": {"text": {"tokenizer": "data/vocab.txt"}, "vision": {"init": "deit_base"}}},
                           settings, PLACEMENT)
    assert cfg.model.text.tokenizer == str(vocab) and cfg.model.vision.init == "deit_base"
    with pytest.raises(PathNotAllowed, match=r"model\.text\.init"):
        build_run_config({"model": {"text": {"init": "/etc/passwd"}}}, settings, PLACEMENT)


def test_config_files_come_from_the_config_roots_only(settings: Settings) -> None:
    mine = settings.workdir / "configs" / "mine.yaml"
    mine.write_text("name: from-file\noptim: {lr: 2.0e-4}\n")
    cfg = build_run_config(PresetConfig(preset=str(mine), overrides=["seed=3"]), settings, PLACEMENT)
    assert (cfg.name, cfg.optim.lr, cfg.seed) == ("from-file", 2e-4, 3)
    (settings.workdir / "outside" / "x.yaml").write_text("name: x\n")
    with pytest.raises(PathNotAllowed, match="preset"):
        build_run_config(PresetConfig(preset="outside/x.yaml"), settings, PLACEMENT)
    with pytest.raises(ConfigError, match="no such config file"):
        build_run_config(PresetConfig(preset="configs/missing.yaml"), settings, PLACEMENT)
    with pytest.raises(ConfigError, match="no such preset"):
        build_run_config(PresetConfig(preset="tiniest"), settings, PLACEMENT)


def test_the_request_tells_a_preset_from_a_tree() -> None:
    assert isinstance(RunCreate.model_validate({"config": {"preset": "tiny"}}).config, PresetConfig)
    tree = RunCreate.model_validate({"config": {"name": "x", "optim": {"lr": 1e-4}}}).config
    assert tree == {"name": "x", "optim": {"lr": 1e-4}}
