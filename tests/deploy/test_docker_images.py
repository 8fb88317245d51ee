"""docker/: the Dockerfiles pass hadolint and build what the issue asks (multi-stage, non-root, DeepSpeed
ops compiled for sm 8.0 and 9.0), and the slim API image holds everything the control plane imports."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

DOCKERFILES = ("trainer.Dockerfile", "api.Dockerfile")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined.splitlines() if line.strip()]


def stages(path: Path) -> dict[str, list[tuple[str, str]]]:
    """The instructions of each build stage, by stage name."""
    out: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for instruction, args in instructions(path):
        if instruction == "FROM":
            current = []
            out[args.split()[-1]] = current
        current.append((instruction, args))
    return out


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_passes(name: str, repo: Path) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), "--no-color", str(repo / "docker" / name)], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_trainer_image_compiles_deepspeed_ops_for_a100_and_h100(repo: Path) -> None:
    path = repo / "docker" / "trainer.Dockerfile"
    assert "9.0a" not in "".join(args for _, args in instructions(path))
    build, final = stages(path)["build"], stages(path)["final"]
    assert build[0][1].startswith("nvidia/cuda:") and "-cudnn-devel-" in build[0][1]
    env = " ".join(args for instruction, args in build if instruction == "ENV")
    assert 'TORCH_CUDA_ARCH_LIST="8.0;9.0"' in env
    [install] = [args for instruction, args in build if instruction == "RUN" and "deepspeed==" in args]
    assert "DS_BUILD_FUSED_ADAM=1" in install and "--no-build-isolation" in install  # built against the torch above
    assert ("COPY", "--from=build /opt/venv /opt/venv") in final


@pytest.mark.parametrize(("name", "final"), [("trainer.Dockerfile", "final"), ("api.Dockerfile", "api"), ("api.Dockerfile", "cpu")])
def test_images_run_as_a_numeric_non_root_user(name: str, final: str, repo: Path) -> None:
    stage = stages(repo / "docker" / name)[final]
    users = [args for instruction, args in stage if instruction == "USER"]
    assert users and re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", users[-1]), users  # Kubernetes' runAsNonRoot needs a number
    assert any(instruction == "COPY" and args.startswith("--from=") for instruction, args in stage)


def test_api_image_requirements_are_project_dependencies(repo: Path) -> None:
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    declared = {canonicalize_name(Requirement(r).name) for r in requirements}
    listed = {canonicalize_name(r.name) for r in api_requirements(repo)}
    assert listed <= declared, listed - declared
    assert not listed & {"torch", "torchvision", "deepspeed", "mosaicml-streaming"}


def api_requirements(repo: Path) -> list[Requirement]:
    text = (repo / "docker" / "requirements-api.txt").read_text()
    return [Requirement(line) for line in text.splitlines() if line.strip() and not line.startswith("#")]


def installed_closure(requirements: list[Requirement]) -> set[str]:
    """Distributions pip would install for requirements (as installed here), their dependencies included."""
    seen: set[str] = set()
    todo = [(r, frozenset(r.extras)) for r in requirements]
    while todo:
        requirement, extras = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.distribution(name).requires or []:
            dependency = Requirement(line)
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": e}) for e in extras | {""}):
                todo.append((dependency, frozenset(dependency.extras)))
    return seen


def test_control_plane_imports_with_only_the_api_image_contents(repo: Path) -> None:
    """Import the API's app and launchers with the installed modules that the api image lacks blocked."""
    distributions = installed_closure(api_requirements(repo)) | {"tcl-train"}
    absent = sorted(top for top, dists in metadata.packages_distributions().items()
                    if not any(canonicalize_name(d) in distributions for d in dists))
    assert "torch" in absent and "fastapi" not in absent
    script = f"""
import importlib.abc, sys
absent = set({absent!r})
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in absent:
            raise ModuleNotFoundError(f"{{name}} is not in the api image", name=name)
sys.meta_path.insert(0, Blocker())
import importlib, pkgutil
import api.app, api.k8s, api.launchers, trainer.control_plane
for module in pkgutil.walk_packages(api.launchers.__path__, "api.launchers."):
    importlib.import_module(module.name)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=repo, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
