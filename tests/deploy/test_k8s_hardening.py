"""Every flavor's training pods, as the renderer writes them and as the shipped examples hold them, are sized,
confined and valid: CPU/memory requests and limits, size-limited emptyDirs, the runtime's seccomp profile,
no service-account token, the configured termination grace, the run's own subPath of the output claim; and
the namespace enforces Pod Security Admission's restricted level, which the API's own pod meets too."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from api.k8s import TrainingJobSpec, render_training_job
from tests.deploy.conftest import validate_manifest
from trainer.config import dump, load

FLAVORS = ("pytorchjob", "trainjob", "indexed-job")
RUN_ID = "0123456789abcdef0123456789abcdef"


def spec(flavor: str, nodes: int) -> TrainingJobSpec:
    config = dump(load("tiny", [f"output_dir=/runs/{RUN_ID}", "data.cache_dir=/cache"]))
    return TrainingJobSpec(name="tcl-hard", namespace="tcl", image="tcl-trainer:1", flavor=flavor, nodes=nodes,
                           procs_per_node=2, gpus_per_proc=1, config_yaml=config, output_pvc="tcl-runs",
                           cpu_per_node="12", memory_per_node="96Gi", cache_size="50Gi",
                           termination_grace_seconds=180)


def pod_templates(job: dict[str, Any]) -> list[dict[str, Any]]:
    if job["kind"] == "PyTorchJob":
        return [replica["template"] for replica in job["spec"]["pytorchReplicaSpecs"].values()]
    if job["kind"] == "Job":
        return [job["spec"]["template"]]
    [patch] = job["spec"]["runtimePatches"]
    jobs = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    return [node["template"]["spec"]["template"] for node in jobs]


def container_resources(job: dict[str, Any], template: dict[str, Any]) -> dict[str, Any]:
    if job["kind"] == "TrainJob":  # Trainer v2 sizes the node container from spec.trainer
        return job["spec"]["trainer"]["resourcesPerNode"]
    [container] = template["spec"]["containers"]
    return container["resources"]


@pytest.mark.parametrize("nodes", [1, 3])
@pytest.mark.parametrize("flavor", FLAVORS)
def test_training_pods_are_sized_confined_and_valid(flavor: str, nodes: int) -> None:
    manifests = render_training_job(spec(flavor, nodes))
    for manifest in manifests:
        validate_manifest(manifest)
    job = manifests[-1]
    for template in pod_templates(job):
        pod = template["spec"]
        sizes = {"cpu": "12", "memory": "96Gi", "nvidia.com/gpu": "2"}
        assert container_resources(job, template) == {"requests": sizes, "limits": sizes}
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["securityContext"]["runAsNonRoot"] is True
        [container] = pod["containers"]
        assert container["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
        assert pod["terminationGracePeriodSeconds"] == 180
        if flavor != "trainjob":  # a runtime patch cannot set it: the ClusterTrainingRuntime must (deploy/README.md)
            assert pod["automountServiceAccountToken"] is False
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert all("sizeLimit" in v["emptyDir"] for v in volumes.values() if "emptyDir" in v)
        assert volumes["data-cache"]["emptyDir"]["sizeLimit"] == "50Gi"
        [output] = [m for m in container["volumeMounts"] if m["name"] == "output"]
        assert output == {"name": "output", "mountPath": f"/runs/{RUN_ID}", "subPath": RUN_ID}
        assert volumes["output"]["persistentVolumeClaim"] == {"claimName": "tcl-runs"}


def test_the_namespace_enforces_restricted_pods_and_the_api_pod_meets_it(objects: dict) -> None:
    labels = objects[("Namespace", "tcl")]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = objects[("Deployment", "tcl-api")]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False and context["capabilities"]["drop"] == ["ALL"]
    # Durable outputs: the API's launcher puts runs on the claim the API itself reads (digest verification).
    config = objects[("ConfigMap", "tcl-api")]["data"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert config["TCL_API_KUBE_OUTPUT_PVC"] in claims and ("PersistentVolumeClaim", "tcl-runs") in objects


def test_the_shipped_examples_set_the_network_interfaces_and_the_collective_timeout(repo) -> None:
    for flavor in FLAVORS:
        text = (repo / "deploy" / "k8s" / "jobs" / f"{flavor}.yaml").read_text()
        job = list(yaml.safe_load_all(text))
        config = yaml.safe_load(job[0]["data"]["config.yaml"])
        assert config["engine"]["collective_timeout_s"] == 600
        env = {e["name"]: e.get("value") for t in pod_templates(job[-1]) for c in t["spec"]["containers"]
               for e in c.get("env", [])} | {e["name"]: e.get("value") for e in
                                              job[-1]["spec"].get("trainer", {}).get("env", [])}
        assert env["GLOO_SOCKET_IFNAME"] == env["NCCL_SOCKET_IFNAME"] == "eth0"


def test_the_elastic_variant_is_a_valid_pytorchjob_that_carries_on_with_fewer_nodes(render_examples) -> None:
    """deploy/k8s/jobs/pytorchjob-elastic.yaml: every node a Worker, c10d rendezvous between 1 and 2 nodes."""
    manifests = render_training_job(render_examples.sample_spec(render_examples.ELASTIC))
    for manifest in manifests:
        validate_manifest(manifest)
    job = manifests[-1]
    assert job["spec"]["elasticPolicy"] == {"rdzvBackend": "c10d", "minReplicas": 1, "maxReplicas": 2,
                                            "maxRestarts": 3, "nProcPerNode": 8}
    [(role, worker)] = job["spec"]["pytorchReplicaSpecs"].items()
    assert (role, worker["replicas"], worker["restartPolicy"]) == ("Worker", 2, "OnFailure")
    [container] = worker["template"]["spec"]["containers"]
    assert "--resume" in container["command"]  # a restart resumes on the world size it finds
    for flavor in ("trainjob", "indexed-job"):
        with pytest.raises(ValueError, match="min_nodes 1 needs flavor pytorchjob"):
            TrainingJobSpec(**{**spec(flavor, 2).model_dump(), "min_nodes": 1})
