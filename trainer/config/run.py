"""RunConfig: the single config tree, loaded from YAML plus dotted key=value overrides.

The CLI, the API and dataprep all import this module; it must stay free of torch.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from trainer.config.base import Section
from trainer.config.checkpoint import CheckpointConfig, EvalConfig, LogConfig
from trainer.config.data import DataConfig
from trainer.config.engine import EngineConfig
from trainer.config.loss import LossConfig
from trainer.config.model import ModelConfig
from trainer.config.optim import OptimConfig


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads 3e-4 as a float (YAML 1.2), not as the string PyYAML's 1.1 rules give."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


class ConfigError(ValueError):
    """A config that cannot be loaded or validated; the message names the key and the reason."""


class RunConfig(Section):
    name: str = Field("tcl", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    seed: int = 42
    output_dir: str = "runs/tcl"
    """Checkpoints, metrics JSONL and plots of the run."""
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    engine: EngineConfig = EngineConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    eval: EvalConfig = EvalConfig()
    log: LogConfig = LogConfig()

    @model_validator(mode="after")
    def _check(self) -> "RunConfig":
        if self.data.max_tokens > self.model.text.max_position_embeddings:
            raise ValueError(
                f"data.max_tokens {self.data.max_tokens} exceeds model.text.max_position_embeddings"
                f" {self.model.text.max_position_embeddings}"
            )
        return self


def preset_names() -> list[str]:
    """Names of the configs shipped with the package (configs/*.yaml)."""
    return sorted(p.name.removesuffix(".yaml") for p in _presets().iterdir() if p.name.endswith(".yaml"))


def _presets() -> Any:
    return resources.files("trainer.config") / "presets"


def resolve_config_path(name_or_path: str) -> Any:
    """A file path if it exists, else a shipped preset by name ('tiny' or 'tiny.yaml')."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    preset = _presets() / (path.name if path.name.endswith(".yaml") else f"{path.name}.yaml")
    if path.parent == Path(".") and preset.is_file():
        return preset
    raise ConfigError(f"config {name_or_path!r}: no such file and no preset of that name (presets: {', '.join(preset_names())})")


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ['optim.lr=3e-4', 'data.train=s3://b/p'] into a nested dict; values are YAML scalars or flow lists.

    An empty value (`data.eval=`) is null, as `eval:` is in a YAML file: it switches an optional setting off
    (and a required one fails validation by name), the same through the CLI and the API."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} is not of the form dotted.key=value")
        try:
            value = _yaml(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"override {key}: cannot parse value {raw!r}: {err}") from None
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key}: {part} is set both as a value and as a section")
        node[leaf] = value
    return tree


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; update wins."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def from_dict(tree: dict[str, Any]) -> RunConfig:
    """Validate a config tree; errors name every offending dotted key."""
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"]) or "<root>"
            msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
            lines.append(f"  {key}: {msg}")
        raise ConfigError("invalid config:\n" + "\n".join(lines)) from None


def load(config: str | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML file or preset (None = all defaults) and apply dotted overrides."""
    tree: dict[str, Any] = {}
    if config is not None:
        path = resolve_config_path(config)
        try:
            tree = _yaml(path.read_text()) or {}
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"config {config!r} cannot be read: {err}") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"config {config!r} is not valid YAML: {err}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"config {config!r} must be a YAML mapping, not {type(tree).__name__}")
    return from_dict(merge(tree, parse_overrides(overrides or [])))


def dump(cfg: RunConfig) -> str:
    """The config as YAML, loadable by load()."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
