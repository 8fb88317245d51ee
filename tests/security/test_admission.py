"""Admission: POST /v1/runs refuses with 422, and the reason, a run that could never start: what the trainer's
own start-up checks refuse (the same function, trainer.preflight), s3:// buckets outside the allow-list, and
what the launcher cannot host. Served for real (uvicorn) with the stand-in trainer behind the local launcher."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.admission import AdmissionError, admit
from api.schemas import Resources
from api.settings import Settings
from tests.api.conftest import OPERATOR_TOKEN, ApiServer, _kill_leftover_runs
from tests.s3_server import start_moto_server
from tests.security.untrusted_datasets import pickle_split
from trainer.config import load
from trainer.main import main as trainer_main

pytestmark = pytest.mark.timeout(120)
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")


def _serve(root: Path, env: dict[str, str] | None = None, **settings: str) -> ApiServer:
    """An API with these TCL_API_* settings and other environment variables."""
    (root / "data").mkdir(parents=True)
    return ApiServer(root, {**{f"TCL_API_{k.upper()}": v for k, v in settings.items()}, **(env or {})}).start()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """The stand-in trainer as one plain process; s3:// only in the bucket `allowed`."""
    server = _serve(tmp_path_factory.mktemp("admission"), s3_buckets='["allowed"]')
    yield server
    server.stop()
    _kill_leftover_runs(server.root / "runs")


def post(api: ApiServer, overrides: list[str], **extra: Any) -> tuple[int, Any]:
    body = {"config": {"preset": "tiny", "overrides": ["optim.max_steps=2", "log.every_steps=1", *overrides]}, **extra}
    with api.client() as client:
        response = client.post("/v1/runs", json=body)
    return response.status_code, response.json()


def test_a_split_without_an_mds_index_is_refused_as_the_trainer_refuses_it(api: ApiServer,
                                                                        capsys: pytest.CaptureFixture) -> None:
    empty = api.root / "data" / "no-index"
    empty.mkdir()
    status, body = post(api, [f"data.train={empty}", "data.eval=null"])
    expected = f"data.train: no MDS dataset at {str(empty)!r} (missing {empty / 'index.json'})"
    assert (status, body["detail"]) == (422, expected)
    assert trainer_main(["--config", "tiny", f"data.train={empty}", "data.eval=null"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {expected}"  # the same line: the same function


def test_a_pickle_column_is_refused_before_launch(api: ApiServer) -> None:
    split = pickle_split(api.root / "data" / "pickled", marker := api.root / "pwned")
    with api.client() as client:
        queued = client.get("/v1/runs").json()["total"]
    status, body = post(api, [f"data.train={api.make_dataset('fine')}", f"data.eval={split}"])
    assert status == 422
    assert body["detail"] == "data.eval: shard shard.00000.mds: column 'caption' is encoded as 'pkl', expected 'json'"
    assert not marker.exists()
    with api.client() as client:
        assert client.get("/v1/runs").json()["total"] == queued  # nothing was queued


def test_buckets_outside_the_allow_list_are_refused(api: ApiServer) -> None:
    status, body = post(api, ["data.train=s3://elsewhere/train", "data.eval=null"])
    assert status == 422
    assert body["detail"] == "data.train: bucket 'elsewhere' is not one this server accepts (allowed)"


@pytest.mark.parametrize("switch_off", ["data.eval=", "data.eval=null"])
def test_an_empty_override_switches_a_split_off(api: ApiServer, switch_off: str) -> None:
    """`data.eval=` is null through the API as in the CLI (it was resolved as a path, the working directory)."""
    status, body = post(api, [f"data.train={api.make_dataset('train')}", switch_off])
    assert status == 201, body
    assert body["config"]["data"]["eval"] is None
    assert load("tiny", [switch_off]).data.eval is None  # the CLI reads it the same way
    api.wait_state(body["id"], {"SUCCEEDED"})


def test_an_empty_location_in_a_config_tree_is_refused_with_the_hint(api: ApiServer) -> None:
    with api.client() as client:
        response = client.post("/v1/runs", json={"config": {"data": {"train": api.make_dataset("t2"), "eval": ""}}})
    assert response.status_code == 422
    assert response.json()["detail"] == "data.eval: an empty location; null (`data.eval=` or `data.eval=null`) " \
                                        "switches a split off"


@pytest.fixture(scope="module")
def deepspeed_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """The local launcher as in production: the DeepSpeed launcher starts procs_per_node ranks (none is started
    here: every request is refused)."""
    server = _serve(tmp_path_factory.mktemp("admission-deepspeed"), local_runner="deepspeed")
    yield server
    server.stop()


def test_the_local_launcher_refuses_what_this_host_cannot_run(deepspeed_api: ApiServer) -> None:
    """64 ranks and GPUs that are not there (a host of fewer cores, a host without that many GPUs)."""
    api = deepspeed_api
    data = api.make_dataset("train")
    cores = len(os.sched_getaffinity(0))
    status, body = post(api, [f"data.train={data}", "data.eval=null"], resources={"procs_per_node": 64})
    assert (status, body["detail"]) == (422, "resources: 64 ranks (nodes x procs_per_node), more than the local "
                                             f"launcher hosts per run: {cores} (the cores of this host)")
    gpus = len(list(NVIDIA_GPUS.iterdir())) if NVIDIA_GPUS.is_dir() else 0
    status, body = post(api, [f"data.train={data}", "data.eval=null"],
                        resources={"procs_per_node": gpus + 1, "gpus_per_proc": 1})
    assert status == 422
    assert f"resources: {gpus + 1} GPUs (ranks x gpus_per_proc), more than the local launcher hosts per run: " \
           f"{gpus} (the GPUs of this host)" in body["detail"].splitlines()
    with api.client() as client:
        assert client.get("/v1/runs").json()["total"] == 0


def test_a_global_batch_the_ranks_cannot_compose_is_refused_as_the_trainer_refuses_it(
        deepspeed_api: ApiServer, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = [f"data.train={deepspeed_api.make_dataset('batch')}", "data.eval=null", "data.batch_size=8",
                 "data.global_batch_size=24"]
    status, body = post(deepspeed_api, overrides, resources={"procs_per_node": 2})
    expected = "data.global_batch_size 24 is not data.batch_size 8 x 2 ranks x a whole number of accumulation steps"
    assert status == 422 and body["detail"].startswith(expected), body
    monkeypatch.setenv("WORLD_SIZE", "2")  # what the launcher tells each of the two ranks
    assert trainer_main(["--config", "tiny", *overrides]) == 2
    assert capsys.readouterr().err.strip() == f"error: {body['detail']}"


def test_s3_splits_are_checked_through_the_endpoint_when_asked(tmp_path: Path) -> None:
    """With TCL_API_S3_CHECK_INDEX the API reads an s3:// split's index.json as it reads a local one."""
    split = pickle_split(tmp_path / "pickled", marker := tmp_path / "pwned")
    with start_moto_server() as s3:
        s3.create_bucket("allowed")
        for file in split.rglob("*"):
            s3.client().upload_file(str(file), "allowed", f"pickled/{file.relative_to(split)}")
        api = _serve(tmp_path / "api", env=s3.env, s3_check_index="true")
        try:
            status, body = post(api, ["data.train=s3://allowed/pickled", "data.eval=s3://allowed/nothing"])
        finally:
            api.stop()
    assert status == 422
    assert body["detail"].splitlines() == [
        "data.train: shard shard.00000.mds: column 'caption' is encoded as 'pkl', expected 'json'",
        "data.eval: no MDS dataset at 's3://allowed/nothing' (missing s3://allowed/nothing/index.json)",
    ]
    assert not marker.exists()


def test_kubernetes_runs_are_held_to_the_configured_caps(tmp_path: Path) -> None:
    config = load("tiny", ["data.train=s3://b/train", "data.eval=null"])
    capped = Settings(token=OPERATOR_TOKEN, run_max_ranks=8, run_max_gpus=4)
    admit(config, Resources(nodes=2, procs_per_node=4), "kubernetes", capped)  # 8 ranks on CPU: fits
    with pytest.raises(AdmissionError) as refused:
        admit(config, Resources(nodes=4, procs_per_node=4, gpus_per_proc=1), "kubernetes", capped)
    assert str(refused.value).splitlines() == [
        "resources: 16 ranks (nodes x procs_per_node), more than the kubernetes launcher hosts per run: "
        "8 (TCL_API_RUN_MAX_RANKS)",
        "resources: 16 GPUs (ranks x gpus_per_proc), more than the kubernetes launcher hosts per run: "
        "4 (TCL_API_RUN_MAX_GPUS)",
    ]
    uncapped = Settings(token=OPERATOR_TOKEN)
    admit(config, Resources(nodes=64, procs_per_node=8, gpus_per_proc=8), "kubernetes", uncapped)  # no cap: any
