"""Validation of Kubernetes manifests without a cluster: built-in kinds against the Kubernetes schemas
(kubernetes-validate), custom resources against the operators' CRD schemas copied into schemas/.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = Path(__file__).parent / "schemas"
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
"""The oldest Kubernetes release we support and the newest the validator knows."""


def _strict(schema: Any) -> Any:
    """The CRD schema with unknown fields rejected (the API server would prune them silently)."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: ({n: _strict(s) for n, s in value.items()} if key == "properties" else _strict(value))
           for key, value in schema.items()}
    if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@cache
def _crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator | None:
    group, _, version = api_version.rpartition("/")
    path = SCHEMAS / f"{group}_{version}_{kind}.json"
    if not group or not path.is_file():
        return None
    return jsonschema.Draft7Validator(_strict(json.loads(path.read_text())))


def validate_manifest(doc: dict[str, Any]) -> None:
    """Raise AssertionError naming the field when doc is not a valid object of its kind."""
    crd = _crd_validator(doc["apiVersion"], doc["kind"])
    if crd is not None:
        errors = sorted(crd.iter_errors(doc), key=lambda e: list(e.absolute_path))
        assert not errors, "\n".join(f"{doc['kind']} {'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
        return
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            raise AssertionError(f"{doc['kind']} {doc['metadata'].get('name')} (Kubernetes {version}): {err}") from None


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def walk(node: Any) -> Iterator[Any]:
    """Every value in a nested manifest, depth first."""
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for child in children:
        yield from walk(child)


@pytest.fixture(scope="session")
def validate() -> Callable[[dict[str, Any]], None]:
    return validate_manifest


@pytest.fixture(scope="session")
def docs_of() -> Callable[[Path], list[dict[str, Any]]]:
    return load_docs


@pytest.fixture(scope="session")
def values_in() -> Callable[[Any], Iterator[Any]]:
    return walk


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def render_examples() -> ModuleType:
    """deploy/render_examples.py (a script, not a package module), loaded by path."""
    spec = importlib.util.spec_from_file_location("render_examples", REPO / "deploy" / "render_examples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def k8s_dir(repo: Path) -> Path:
    return repo / "deploy" / "k8s"


@pytest.fixture(scope="session")
def objects(k8s_dir: Path, docs_of) -> dict[tuple[str, str], dict[str, Any]]:
    """Every object of the control-plane files, by (kind, name)."""
    out = {}
    for name in ("namespace.yaml", "api.yaml", "storage.yaml", "monitoring.yaml", "secrets.example.yaml"):
        for doc in docs_of(k8s_dir / name):
            out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out
