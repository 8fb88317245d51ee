"""Typed placeholders in YAML manifests: the templates stay valid YAML and values never need escaping.

A string that is exactly `${key}` is replaced by the parameter's value as is (a list, a mapping, a
number, a multi-line string); when that value is None the key (or list item) is dropped. `${key}`
inside a longer string is interpolated as text. Kubernetes' own `$(VAR)` syntax is left alone.
"""

from __future__ import annotations

import copy
import re
from importlib import resources
from typing import Any

import yaml

_WHOLE = re.compile(r"^\$\{([a-z_]+)\}$")
_PART = re.compile(r"\$\{([a-z_]+)\}")
_DROP = object()


class TemplateError(KeyError):
    """A template names a parameter the renderer did not provide (a bug, not bad user input)."""


def load_template(name: str) -> Any:
    """A template shipped in api/k8s/templates/, parsed but not yet filled."""
    text = (resources.files("api.k8s") / "templates" / name).read_text()
    return yaml.safe_load(text)


def fill(node: Any, params: dict[str, Any]) -> Any:
    """A deep copy of node with every placeholder replaced from params."""
    out = _fill(node, params)
    return None if out is _DROP else out


def _fill(node: Any, params: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        filled = {key: _fill(value, params) for key, value in node.items()}
        return {key: value for key, value in filled.items() if value is not _DROP}
    if isinstance(node, list):
        return [item for item in (_fill(value, params) for value in node) if item is not _DROP]
    if isinstance(node, str):
        whole = _WHOLE.match(node)
        if whole:
            value = _lookup(whole.group(1), params)
            return _DROP if value is None else copy.deepcopy(value)
        return _PART.sub(lambda m: _text(m.group(1), params), node)
    return node


def _lookup(key: str, params: dict[str, Any]) -> Any:
    if key not in params:
        raise TemplateError(f"template parameter ${{{key}}} is not provided")
    return params[key]


def _text(key: str, params: dict[str, Any]) -> str:
    value = _lookup(key, params)
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise TemplateError(f"template parameter ${{{key}}} is interpolated into text but is {type(value).__name__}")
    return str(value)
