"""docker/compose.yaml: valid Compose, every file and build stage it names exists, Prometheus and Grafana
are wired to what runs, and the documented REST call is a valid run that reads the shards from MinIO."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml

from api.schemas import RunCreate, PresetConfig
from api.settings import Settings
from trainer.config import load


@pytest.fixture(scope="module")
def docker_dir(repo: Path) -> Path:
    return repo / "docker"


@pytest.fixture(scope="module")
def compose(docker_dir: Path) -> dict[str, Any]:
    return yaml.safe_load((docker_dir / "compose.yaml").read_text())  # merge keys (<<) resolved here


@pytest.fixture(scope="module")
def prometheus_config(docker_dir: Path) -> dict[str, Any]:
    return yaml.safe_load((docker_dir / "prometheus.yml").read_text())


def test_compose_file_matches_the_compose_schema(compose: dict) -> None:
    schema = json.loads((Path(__file__).parent / "schemas" / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)  # its $schema names draft-07 without the trailing "#"
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, errors
    assert set(compose["services"]) == {"minio", "demo-data", "minio-init", "api", "prometheus", "grafana"}


def test_builds_name_existing_dockerfiles_and_stages(compose: dict, docker_dir: Path) -> None:
    builds = [s["build"] for s in compose["services"].values() if "build" in s]
    assert builds
    for build in builds:
        dockerfile = (docker_dir / build["context"] / build["dockerfile"]).resolve()
        stages = re.findall(r"^FROM \S+ AS (\S+)$", dockerfile.read_text(), flags=re.MULTILINE)
        assert build["target"] in stages, (dockerfile, stages)


def test_bind_mounts_exist(compose: dict, docker_dir: Path) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (docker_dir / source).exists(), f"{name}: {source}"
            else:
                assert source in compose["volumes"], f"{name}: named volume {source} is not declared"


def test_prometheus_config_is_valid_and_scrapes_the_stack(prometheus_config: dict, compose: dict, docker_dir: Path) -> None:
    result = subprocess.run(["promtool", "check", "config", "--syntax-only", str(docker_dir / "prometheus.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = {job["job_name"]: job for job in prometheus_config["scrape_configs"]}
    api = compose["services"]["api"]
    published = {int(p.split(":")[1]) for p in api["ports"]}
    [api_target] = jobs["tcl-api"]["static_configs"][0]["targets"]
    assert api_target == f"api:{Settings.model_fields['port'].default}" and int(api_target.split(":")[1]) in published
    # The token Prometheus sends is the compose secret made from the same read-only token the API reads.
    secret = Path(jobs["tcl-api"]["authorization"]["credentials_file"]).name
    assert secret in compose["services"]["prometheus"]["secrets"]
    assert compose["secrets"][secret] == {"environment": "TCL_API_READ_TOKEN"}
    assert "TCL_API_READ_TOKEN" in api["environment"]
    # Trainer ranks run inside the api container (local launcher) on 9400 + local rank.
    trainer_targets = jobs["tcl-trainer"]["static_configs"][0]["targets"]
    assert trainer_targets == [f"api:{9400 + rank}" for rank in range(len(trainer_targets))]


def test_grafana_loads_the_deploy_dashboard(compose: dict, docker_dir: Path) -> None:
    grafana = compose["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    dashboards_in_container = mounts["../deploy/k8s/grafana"]
    provider = yaml.safe_load((docker_dir / "grafana/provisioning/dashboards/tcl.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == dashboards_in_container
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (docker_dir / "../deploy/k8s/grafana" / Path(home).relative_to(dashboards_in_container)).is_file()
    datasource = yaml.safe_load((docker_dir / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    url = urlparse(datasource["datasources"][0]["url"])
    assert url.hostname in compose["services"] and f"{url.port}:{url.port}" in compose["services"]["prometheus"]["ports"]


def test_api_settings_named_in_the_stack_exist(compose: dict, docker_dir: Path) -> None:
    known = {f"TCL_API_{name.upper()}" for name in Settings.model_fields}
    named = {key for key in compose["services"]["api"]["environment"] if key.startswith("TCL_API_")}
    named |= set(re.findall(r"\b(TCL_API_[A-Z_]+)=", (docker_dir / "api.Dockerfile").read_text()))
    assert named and named <= known, named - known


def readme_requests(repo: Path) -> list[dict[str, Any]]:
    text = (repo / "deploy" / "README.md").read_text()
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, flags=re.DOTALL)]


def test_documented_run_requests_are_valid(repo: Path) -> None:
    requests = readme_requests(repo)
    assert [r["launcher"] for r in requests] == ["local", "kubernetes"]
    for request in requests:
        run = RunCreate.model_validate(request)
        assert isinstance(run.config, PresetConfig)
        load(run.config.preset, run.config.overrides)  # the trainer accepts the config


def test_demo_run_reads_the_shards_that_the_stack_puts_in_minio(repo: Path, compose: dict, prometheus_config: dict) -> None:
    local = readme_requests(repo)[0]
    cfg = load(local["config"]["preset"], local["config"]["overrides"])
    # demo-data writes /data/demo/{train,eval}; minio-init mirrors /data/demo to local/tcl-data/demo.
    synth = compose["services"]["demo-data"]["command"]
    assert synth[:3] == ["tcl-dataprep", "synth", "/data/demo"]
    mirror = re.search(r"mc mirror --overwrite (\S+) local/(\S+)", compose["services"]["minio-init"]["command"][0])
    assert mirror is not None and mirror.group(1) == "/data/demo"
    assert (cfg.data.train, cfg.data.eval) == (f"s3://{mirror.group(2)}/train", f"s3://{mirror.group(2)}/eval")
    env = compose["services"]["api"]["environment"]
    assert urlparse(env["S3_ENDPOINT_URL"]).hostname == "minio"
    assert env["AWS_ACCESS_KEY_ID"] == compose["services"]["minio"]["environment"]["MINIO_ROOT_USER"]
    assert env["AWS_SECRET_ACCESS_KEY"] == compose["services"]["minio"]["environment"]["MINIO_ROOT_PASSWORD"]
    # Its ranks serve metrics where Prometheus looks for them.
    trainer_targets = {t for job in prometheus_config["scrape_configs"] if job["job_name"] == "tcl-trainer"
                       for t in job["static_configs"][0]["targets"]}
    ranks = local["resources"]["procs_per_node"]
    assert {f"api:{cfg.log.metrics_port + r}" for r in range(ranks)} <= trainer_targets
