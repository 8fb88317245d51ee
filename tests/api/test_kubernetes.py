"""The Kubernetes launcher against a fake API server on loopback; submitted manifests checked against the
real schemas (built-in kinds with kubernetes-validate, the operators' CRDs with their OpenAPI schemas)."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.launchers.base import LaunchRequest, ResourceError
from api.launchers.kubernetes import KubernetesLauncher
from api.schemas import Resources
from api.settings import Settings
from tests.api.conftest import ApiFactory, ApiServer, start_run, wait_for
from tests.api.fake_kubernetes import FakeKubernetes
from tests.deploy.conftest import validate_manifest
from trainer.config import dump, load

RUN_ID = "c" * 32
JOB = f"tcl-{RUN_ID}-1"
COLLECTIONS = {
    "Secret": "/api/v1/namespaces/tcl/secrets",
    "ConfigMap": "/api/v1/namespaces/tcl/configmaps",
    "Service": "/api/v1/namespaces/tcl/services",
    "Job": "/apis/batch/v1/namespaces/tcl/jobs",
    "PyTorchJob": "/apis/kubeflow.org/v1/namespaces/tcl/pytorchjobs",
    "TrainJob": "/apis/trainer.kubeflow.org/v1alpha1/namespaces/tcl/trainjobs",
}
FLAVORS = {  # flavor -> (kinds submitted in order, the condition type that means success)
    "pytorchjob": (["Secret", "ConfigMap", "PyTorchJob"], "Succeeded"),
    "trainjob": (["Secret", "ConfigMap", "TrainJob"], "Complete"),
    "indexed-job": (["Secret", "ConfigMap", "Service", "Job"], "Complete"),
}


def make_launcher(fake: FakeKubernetes, tmp_path: Path, flavor: str) -> KubernetesLauncher:
    settings = Settings(token="t" * 16, launchers=["kubernetes"], kube_config=fake.kubeconfig(tmp_path / "kubeconfig"),
                        kube_namespace="tcl", kube_image="registry.example/tcl-trainer:1", kube_flavor=flavor,
                        kube_api_url="http://tcl-api.tcl:8000", kube_output_root="/shared/runs/",
                        kube_output_pvc="tcl-runs", kube_s3_secret="s3-creds")
    return KubernetesLauncher.from_settings(settings)


def launch_request(launcher: KubernetesLauncher, resources: Resources) -> LaunchRequest:
    cfg = load("tiny", [f"output_dir={launcher.placement(RUN_ID)['output_dir']}"])
    return LaunchRequest(run_id=RUN_ID, attempt=1, config=cfg, config_yaml=dump(cfg), resources=resources,
                         env={"TCL_RUN_TOKEN": "the-run-token", "TCL_RUN_ID": RUN_ID, "TCL_API_URL": "unused"})


def _volumes(manifest: dict) -> list[dict]:
    """The pod volumes of a job manifest, wherever its kind keeps them."""
    found: list[dict] = []
    if isinstance(manifest, dict):
        found += manifest.get("volumes", []) if isinstance(manifest.get("volumes"), list) else []
        for value in manifest.values():
            found += _volumes(value)
    elif isinstance(manifest, list):
        for item in manifest:
            found += _volumes(item)
    return found


@pytest.mark.parametrize("flavor", list(FLAVORS))
def test_an_attempt_is_submitted_as_valid_manifests_and_followed_by_its_conditions(
        fake: FakeKubernetes, tmp_path: Path, flavor: str) -> None:
    kinds, success = FLAVORS[flavor]
    launcher = make_launcher(fake, tmp_path, flavor)
    handle = launcher.launch(launch_request(launcher, Resources(nodes=2, procs_per_node=4, gpus_per_proc=1)))
    posts = [r for r in fake.requests if r.method == "POST"]
    assert [r.body["kind"] for r in posts] == kinds
    assert [r.path for r in posts] == [COLLECTIONS[kind] for kind in kinds]
    for manifest in fake.created():
        validate_manifest(manifest)
    [(_, secret)] = fake.find("Secret")
    assert secret["stringData"] == {"TCL_RUN_TOKEN": "the-run-token"} and secret["metadata"]["name"] == f"{JOB}-token"
    [(_, configmap)] = fake.find("ConfigMap")
    assert f"output_dir: /shared/runs/{RUN_ID}" in configmap["data"]["config.yaml"]
    claims = [v["persistentVolumeClaim"]["claimName"]
              for r in posts for v in _volumes(r.body) if "persistentVolumeClaim" in v]
    assert set(claims) == {"tcl-runs"}  # checkpoints go to the shared claim, mounted at the output root

    assert launcher.status(RUN_ID, handle).running  # no conditions yet
    fake.set_conditions(kinds[-1], {"type": "Running", "status": "True"}, {"type": success, "status": "False"})
    assert launcher.status(RUN_ID, handle).running
    fake.set_conditions(kinds[-1], {"type": "Running", "status": "False"}, {"type": success, "status": "True"})
    assert launcher.status(RUN_ID, handle).exit_code == 0
    fake.set_conditions(kinds[-1], {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                    "message": "pod exited 137"})
    status = launcher.status(RUN_ID, handle)
    assert (status.running, status.exit_code) == (False, 1)
    assert status.detail == f"{kinds[-1]} {JOB} failed (BackoffLimitExceeded: pod exited 137)"

    launcher.release(RUN_ID, handle)
    assert not fake.find("Secret") and fake.find(kinds[-1])  # the job stays for its logs


def test_stop_deletes_the_job_and_force_kills_its_pods(fake: FakeKubernetes, tmp_path: Path) -> None:
    launcher = make_launcher(fake, tmp_path, "pytorchjob")
    handle = launcher.launch(launch_request(launcher, Resources(gpus_per_proc=1)))
    fake.linger_on_delete = True
    launcher.stop(RUN_ID, handle, force=False)
    [graceful] = [r for r in fake.requests if r.method == "DELETE"]
    assert graceful.path == f"{COLLECTIONS['PyTorchJob']}/{JOB}"
    assert graceful.option("propagationPolicy") == "Foreground" and graceful.option("gracePeriodSeconds") is None
    assert launcher.status(RUN_ID, handle).running  # its pods are still terminating
    launcher.stop(RUN_ID, handle, force=True)
    forced_job, forced_pods = [r for r in fake.requests if r.method == "DELETE"][1:]
    assert forced_job.option("gracePeriodSeconds") == "0"
    assert forced_pods.path == "/api/v1/namespaces/tcl/pods"
    assert forced_pods.query["labelSelector"] == [f"app.kubernetes.io/instance={JOB}"]
    status = launcher.status(RUN_ID, handle)
    assert not status.running and "no longer exists" in status.detail
    launcher.stop(RUN_ID, handle, force=True)  # already gone: nothing to do, no error


def test_the_log_is_the_first_pods(fake: FakeKubernetes, tmp_path: Path) -> None:
    launcher = make_launcher(fake, tmp_path, "pytorchjob")
    handle = launcher.launch(launch_request(launcher, Resources(nodes=2, gpus_per_proc=1)))
    labels = {"app.kubernetes.io/instance": JOB}
    fake.add_pod("tcl", f"{JOB}-worker-0", labels, "worker line\n")
    fake.add_pod("tcl", f"{JOB}-master-0", labels, "line 1\nline 2\n")
    fake.add_pod("tcl", "tcl-other-master-0", {"app.kubernetes.io/instance": "tcl-other"}, "not ours\n")
    assert launcher.read_log(RUN_ID, handle, 0) == (b"line 1\nline 2\n", 14)
    assert launcher.read_log(RUN_ID, handle, -7) == (b"line 2\n", 14)
    assert launcher.read_log(RUN_ID, None, 0) == (b"", 0)


def test_a_followed_log_is_read_once_not_downloaded_at_every_poll(fake: FakeKubernetes, tmp_path: Path) -> None:
    launcher = make_launcher(fake, tmp_path, "pytorchjob")
    handle = launcher.launch(launch_request(launcher, Resources(gpus_per_proc=1)))
    pod = f"{JOB}-master-0"
    fake.add_pod("tcl", pod, {"app.kubernetes.io/instance": JOB}, "")
    fake.append_log(pod, "".join(f"old line {i}\n" for i in range(2000)), age_seconds=3600)
    data, offset = launcher.read_log(RUN_ID, handle, 0)
    written, first_read = data, fake.log_bytes_served
    for poll in range(20):  # the API's follow loop: read from the end of what it has, again and again
        fake.append_log(pod, f"new line {poll}\n")
        chunk, offset = launcher.read_log(RUN_ID, handle, offset)
        written += chunk
    expected = "".join(line for _, line in fake.logs[pod]).encode()
    assert written == expected and offset == len(expected)
    # The first read brought the log; the 20 polls together a fraction of it (their last seconds), not 20 logs.
    assert fake.log_bytes_served - first_read < first_read / 4
    assert launcher.read_log(RUN_ID, handle, -14) == (expected[-14:], len(expected))


def test_runs_the_renderer_refuses_are_refused_before_launch(fake: FakeKubernetes, tmp_path: Path) -> None:
    launcher = make_launcher(fake, tmp_path, "indexed-job")
    placed = f"output_dir={launcher.placement(RUN_ID)['output_dir']}"
    launcher.check(RUN_ID, load("tiny", [placed]), Resources(gpus_per_proc=0))  # CPU jobs are fine
    with pytest.raises(ResourceError, match="cache_dir 'cache' must be absolute"):
        launcher.check(RUN_ID, load("tiny", [placed, "data.cache_dir=cache"]), Resources(gpus_per_proc=1))
    with pytest.raises(ResourceError, match="not a folder under output_mount '/shared/runs'"):
        launcher.check(RUN_ID, load("tiny", ["output_dir=/elsewhere"]), Resources(gpus_per_proc=1))
    assert not fake.requests  # nothing was submitted


def test_kubernetes_runs_through_the_api(fake: FakeKubernetes, api_factory: ApiFactory, tmp_path: Path) -> None:
    api: ApiServer = api_factory(launchers='["local", "kubernetes"]', kube_config=str(fake.kubeconfig(tmp_path / "kc")),
                                 kube_namespace="tcl", kube_flavor="pytorchjob", cancel_grace_seconds="1",
                                 kube_output_pvc="tcl-runs")
    run = start_run(api, "s3://bucket/train", steps=10, launcher="kubernetes",
                    resources={"nodes": 2, "procs_per_node": 2, "gpus_per_proc": 1})
    assert run["output_dir"] == f"/runs/{run['id']}"
    api.wait_state(run["id"], {"STARTING"})
    job = f"tcl-{run['id']}-1"
    [(_, secret)] = wait_for(lambda: fake.find("Secret"), 30, "the token Secret")
    with api.client(secret["stringData"]["TCL_RUN_TOKEN"]) as trainer:  # the Secret holds the run's token
        assert trainer.post(f"/v1/runs/{run['id']}/heartbeat", json={"step": 2, "total_steps": 10}).status_code == 200
    api.wait_state(run["id"], {"RUNNING"})
    fake.add_pod("tcl", f"{job}-master-0", {"app.kubernetes.io/instance": job}, "hello from rank 0\n")
    with api.client() as client:
        assert client.get(f"/v1/runs/{run['id']}/logs").text == "hello from rank 0\n"
    fake.set_conditions("PyTorchJob", {"type": "Succeeded", "status": "True"})
    api.wait_state(run["id"], {"SUCCEEDED"})
    wait_for(lambda: not fake.find("Secret"), 30, "the token Secret to be deleted")

    fake.linger_on_delete = True
    doomed = start_run(api, "s3://bucket/train", steps=10, launcher="kubernetes", resources={"gpus_per_proc": 1})
    api.wait_state(doomed["id"], {"STARTING"})
    wait_for(lambda: any(f"tcl-{doomed['id']}-1" in path for path, _ in fake.find("PyTorchJob")), 30, "the job")
    with api.client() as client:
        assert client.post(f"/v1/runs/{doomed['id']}/cancel").json()["state"] == "CANCELLING"
    api.wait_state(doomed["id"], {"CANCELLED"})  # after 1 s of grace the job and its pods are deleted at once
    deletes = [r for r in fake.requests if r.method == "DELETE" and doomed["id"] in r.path + str(r.query)]
    assert [r.option("gracePeriodSeconds") for r in deletes][:2] == [None, "0"]
