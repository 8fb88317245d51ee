"""From a request's config to the RunConfig a trainer gets: validated, paths confined, placed by the server.

The trainer's own models validate it (trainer.config); every local path it names must lie under the
configured roots, and output_dir / data.cache_dir are chosen by the launcher, never by the caller.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from api.schemas import PresetConfig
from api.security import confine
from api.settings import Settings
from api.store.models import RunRow
from trainer.config import ConfigError, RunConfig, from_dict, load, preset_names
from trainer.config.run import merge

NAME_LENGTH = RunRow.__table__.c.name.type.length
"""The longest run name the store's column holds."""
DATA_LOCATIONS = (("data", "train"), ("data", "eval"))
"""Always local paths or URIs."""
NAME_OR_PATH = (("model", "vision", "init"), ("model", "text", "init"), ("model", "text", "tokenizer"))
"""Model hub names or local paths: confined when they look like a path or exist as one."""


def _get(tree: dict[str, Any], keys: tuple[str, ...]) -> Any:
    node: Any = tree
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _set(tree: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    *parents, leaf = keys
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def _looks_local(value: str, workdir: Path) -> bool:
    return value.startswith(("/", ".", "~")) or "://" in value or (workdir / value).exists()


def _requested(config: PresetConfig | dict[str, Any], settings: Settings) -> RunConfig:
    if isinstance(config, dict):
        return from_dict(config)
    if config.preset in preset_names():
        return load(config.preset, config.overrides)
    if "/" not in config.preset and not config.preset.endswith((".yaml", ".yml")):
        raise ConfigError(f"preset {config.preset!r}: no such preset (presets: {', '.join(preset_names())})")
    path = confine(config.preset, settings.config_roots, workdir=settings.workdir, allow_s3=False, what="preset")
    if not Path(path).is_file():
        raise ConfigError(f"preset {config.preset!r}: no such config file")
    return load(path, config.overrides)


def build_run_config(config: PresetConfig | dict[str, Any], settings: Settings, placement: dict[str, Any]) -> RunConfig:
    """Validate the requested config, confine its paths and apply the launcher's placement.

    Raises ConfigError (invalid config) or PathNotAllowed (a path outside the roots).
    """
    tree = _requested(config, settings).model_dump(mode="json")
    for keys in DATA_LOCATIONS + NAME_OR_PATH:
        value = _get(tree, keys)
        if keys in DATA_LOCATIONS and value == "":
            continue  # not a path: trainer.preflight refuses it, saying that null switches a split off
        if isinstance(value, str) and (keys in DATA_LOCATIONS or _looks_local(value, settings.workdir)):
            confined = confine(value, settings.data_roots, workdir=settings.workdir, allow_s3=settings.allow_s3,
                               what=".".join(keys))
            _set(tree, keys, confined)
    if len(tree["name"]) > NAME_LENGTH:
        raise ConfigError(f"name: {len(tree['name'])} characters; the registry keeps at most {NAME_LENGTH}")
    return from_dict(merge(tree, placement))
