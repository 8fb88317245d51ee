"""api.k8s: the rendered training jobs are valid, wire rendezvous, resources and settings as intended,
equal the reviewed examples, and bad input is refused with an error that names the problem."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from api.k8s import TrainingJobSpec, render_training_job, to_yaml
from api.k8s.render import longest_host_name
from api.k8s.template import TemplateError, fill
from trainer.config import dump, from_dict, load

FLAVORS = ("pytorchjob", "trainjob", "indexed-job")
OVERRIDES = ["log.metrics_port=9400", "output_dir=/runs/r1", "data.train=s3://tcl-data/demo/train"]
CONFIG = dump(load("tiny", OVERRIDES))


def make_spec(**fields: Any) -> TrainingJobSpec:
    base: dict[str, Any] = {"name": "tcl-r1", "namespace": "tcl", "image": "registry.example/tcl-trainer:1", "config_yaml": CONFIG}
    return TrainingJobSpec(**{**base, **fields})


def full_spec(flavor: str, **fields: Any) -> TrainingJobSpec:
    """Every optional part switched on: control plane, S3 secret, shared output volume, extra env."""
    return make_spec(
        flavor=flavor, nodes=3, procs_per_node=4, gpus_per_proc=2, run_id="0123456789abcdef0123456789abcdef",
        api_url="http://tcl-api.tcl.svc:8000", api_token_secret="tcl-run-r1", s3_secret="tcl-s3",
        output_pvc="tcl-runs", shm_size="32Gi", env={"NCCL_DEBUG": "INFO"}, **fields,
    )


def by_kind(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = [m["kind"] for m in manifests]
    assert len(set(kinds)) == len(kinds), kinds
    return {m["kind"]: m for m in manifests}


def pod_of(job: dict[str, Any]) -> dict[str, Any]:
    """The pod metadata, pod spec and trainer container of any flavor (a TrainJob's from its runtime patch)."""
    if job["kind"] == "PyTorchJob":
        template = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    elif job["kind"] == "Job":
        template = job["spec"]["template"]
    else:
        [patch] = job["spec"]["runtimePatches"]
        [node] = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
        template = node["template"]["spec"]["template"]
    [container] = template["spec"]["containers"]
    if job["kind"] == "TrainJob":  # command, env and resources live in spec.trainer
        container = {**container, **{k: v for k, v in job["spec"]["trainer"].items() if k in ("command", "env", "image")}}
    return {"metadata": template["metadata"], "spec": template["spec"], "container": container}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("variant", ["full", "single-cpu"])
def test_rendered_manifests_validate(flavor: str, variant: str, validate) -> None:
    spec = full_spec(flavor) if variant == "full" else make_spec(flavor=flavor, cpu_only=True, gpus_per_proc=0)
    manifests = render_training_job(spec)
    for manifest in manifests:
        validate(manifest)
    assert "${" not in to_yaml(manifests)
    if variant == "single-cpu":
        assert "nvidia.com/gpu" not in to_yaml(manifests)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_every_flavor_runs_the_config_in_the_same_pod(flavor: str) -> None:
    spec = full_spec(flavor)
    kinds = by_kind(render_training_job(spec))
    config_map, job = kinds["ConfigMap"], kinds[{"pytorchjob": "PyTorchJob", "trainjob": "TrainJob", "indexed-job": "Job"}[flavor]]
    pod = pod_of(job)

    # The config arrives unchanged and still loads as the same RunConfig.
    assert config_map["data"] == {"config.yaml": CONFIG}
    assert from_dict(yaml.safe_load(config_map["data"]["config.yaml"])) == load("tiny", OVERRIDES)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in pod["container"]["volumeMounts"]}
    assert volumes[mounts["/etc/tcl"]["name"]]["configMap"]["name"] == config_map["metadata"]["name"]
    assert mounts["/etc/tcl"]["readOnly"] is True
    command = pod["container"]["command"]
    assert command[:3] == ["torchrun", "--module", "trainer.main"]
    assert command[command.index("--config") + 1] == "/etc/tcl/config.yaml"

    # /dev/shm in memory at the asked size, shard cache and checkpoint volume where the config points.
    assert volumes[mounts["/dev/shm"]["name"]]["emptyDir"] == {"medium": "Memory", "sizeLimit": "32Gi"}
    assert "emptyDir" in volumes[mounts["/tmp/tcl-mds-cache"]["name"]]
    assert volumes[mounts["/runs/r1"]["name"]]["persistentVolumeClaim"] == {"claimName": "tcl-runs"}
    assert mounts["/runs/r1"]["subPath"] == "r1"  # the run's own folder of the claim, not the others' 

    # Control plane and S3 settings come from the Secrets, never as literal values.
    env = env_of(pod["container"])
    assert env["TCL_API_URL"] == "http://tcl-api.tcl.svc:8000"
    assert env["TCL_RUN_ID"] == spec.run_id
    assert env["TCL_RUN_TOKEN"] == {"secretKeyRef": {"name": "tcl-run-r1", "key": "TCL_RUN_TOKEN"}}
    assert env["AWS_SECRET_ACCESS_KEY"]["secretKeyRef"] == {"name": "tcl-s3", "key": "AWS_SECRET_ACCESS_KEY", "optional": False}
    assert env["S3_ENDPOINT_URL"]["secretKeyRef"]["optional"] is True
    assert env["NCCL_DEBUG"] == "INFO"

    # Non-root, no privilege escalation; the run id is on every pod for monitors and dashboards.
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["container"]["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["metadata"]["labels"]["tcl/run-id"] == spec.run_id
    for manifest in (config_map, job):
        assert manifest["metadata"]["namespace"] == "tcl"


def test_pytorchjob_has_one_master_and_the_other_nodes_as_workers() -> None:
    job = by_kind(render_training_job(full_spec("pytorchjob")))["PyTorchJob"]
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert (replicas["Master"]["replicas"], replicas["Worker"]["replicas"]) == (1, 2)
    assert job["spec"]["nprocPerNode"] == "4"
    for replica in replicas.values():
        [container] = replica["template"]["spec"]["containers"]
        assert container["name"] == "pytorch"  # the operator injects PET_* only into this container
        sizes = {"cpu": "16", "memory": "128Gi", "nvidia.com/gpu": "8"}  # 4 procs x 2 GPUs
        assert container["resources"] == {"requests": sizes, "limits": sizes}
        assert [p["containerPort"] for p in container["ports"]] == [9400, 9401, 9402, 9403]
        assert [p["name"] for p in container["ports"]] == ["metrics-0", "metrics-1", "metrics-2", "metrics-3"]

    single = by_kind(render_training_job(make_spec(flavor="pytorchjob")))["PyTorchJob"]
    assert list(single["spec"]["pytorchReplicaSpecs"]) == ["Master"]


def test_trainjob_sizes_the_torch_runtime() -> None:
    job = by_kind(render_training_job(full_spec("trainjob")))["TrainJob"]
    trainer = job["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (3, 4)
    sizes = {"cpu": "16", "memory": "128Gi", "nvidia.com/gpu": "8"}
    assert trainer["resourcesPerNode"] == {"requests": sizes, "limits": sizes}
    assert job["spec"]["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime", "name": "torch-distributed"}
    assert pod_of(job)["container"]["name"] == "node"  # the container of Trainer's torch runtime


def test_indexed_job_rendezvous_goes_through_pod_zero_of_the_headless_service() -> None:
    kinds = by_kind(render_training_job(full_spec("indexed-job")))
    job, service = kinds["Job"], kinds["Service"]
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    pod = pod_of(job)
    env = env_of(pod["container"])
    assert env["PET_NNODES"] == "3" and env["PET_NPROC_PER_NODE"] == "4"
    assert env["PET_NODE_RANK"] == {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}
    # Indexed pods are named <job>-<index>; with subdomain = the Service, pod 0 resolves as <job>-0.<service>.
    assert pod["spec"]["subdomain"] == service["metadata"]["name"]
    assert env["PET_MASTER_ADDR"] == f"{job['metadata']['name']}-0.{service['metadata']['name']}"
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["ports"][0]["port"] == int(env["PET_MASTER_PORT"])
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()


def test_without_a_claim_outputs_go_to_a_pod_local_volume() -> None:
    job = render_training_job(make_spec(flavor="indexed-job", nodes=1))[-1]
    pod = pod_of(job)
    [mount] = [m for m in pod["container"]["volumeMounts"] if m["mountPath"] == "/runs"]
    [volume] = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    assert volume == {"name": mount["name"], "emptyDir": {}}  # writable for the non-root trainer, not shared
    with pytest.raises(ValidationError, match="2-node job needs shared or object storage"):
        make_spec(flavor="indexed-job", nodes=2)  # each node would keep its part of every checkpoint


def test_s3_output_mounts_no_output_volume_and_needs_no_claim() -> None:
    s3 = dump(load("tiny", ["output_dir=s3://bucket/runs/r1", "data.cache_dir=/tmp/tcl-mds-cache"]))
    pod = pod_of(render_training_job(make_spec(flavor="pytorchjob", nodes=2, config_yaml=s3))[-1])
    assert {v["name"] for v in pod["spec"]["volumes"]} == {"config", "dshm", "data-cache"}


def test_yaml_output_round_trips() -> None:
    manifests = render_training_job(full_spec("pytorchjob"))
    text = to_yaml(manifests)
    assert list(yaml.safe_load_all(text)) == manifests
    assert "config.yaml: |" in text  # the embedded config stays readable


def test_examples_equal_the_reviewed_golden_files(render_examples) -> None:
    examples = render_examples.render_examples()
    assert sorted(p.name for p in examples) == ["indexed-job.yaml", "pytorchjob-elastic.yaml", "pytorchjob.yaml",
                                                "trainjob.yaml"]
    for path, text in examples.items():
        assert path.read_text() == text, f"{path} is stale: run python deploy/render_examples.py and review the diff"


@pytest.mark.parametrize("name", ["Tcl-run", "1tcl", "tcl_run", "-tcl", "tcl-", "tcl.run", "", "a" * 64])
def test_names_that_are_not_dns_labels_are_rejected(name: str) -> None:
    with pytest.raises(ValidationError, match="DNS-1035 label") as err:
        make_spec(name=name)
    assert err.value.errors()[0]["loc"] == ("name",)


def test_zero_gpus_is_rejected_unless_the_job_is_cpu_only() -> None:
    with pytest.raises(ValidationError, match=r"gpus_per_proc is 0 but the job is not cpu_only.*\(set cpu_only=true"):
        make_spec(gpus_per_proc=0)
    with pytest.raises(ValidationError, match="cpu_only job requests no GPUs"):
        make_spec(cpu_only=True, gpus_per_proc=1)
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        make_spec(nodes=0)
    assert make_spec(cpu_only=True, gpus_per_proc=0).cpu_only


def test_derived_host_names_must_fit_a_dns_label() -> None:
    # "<name>-worker-<index>": with 11 nodes the last worker is worker-9; 49 + 9 = 58 characters fit ...
    assert len(longest_host_name("a" * 49, "pytorchjob", 11)) == 58
    make_spec(name="a" * 55, flavor="indexed-job", nodes=100, output_pvc="tcl-runs")  # "a"*55 + "-99" = 58
    # ... and 62 + "-worker-0" = 71 do not.
    with pytest.raises(ValidationError, match="host name 'a{62}-worker-0' has 71 characters"):
        make_spec(name="a" * 62, flavor="pytorchjob", nodes=2, output_pvc="tcl-runs")
    with pytest.raises(ValidationError, match="-node-0-0"):
        make_spec(name="a" * 60, flavor="trainjob")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"namespace": "Team_A"}, "not a DNS-1123 label"),
        ({"image": "tcl trainer"}, "should match pattern"),
        ({"env": {"PET_NNODES": "2"}}, "PET_NNODES is set by the launcher"),
        ({"env": {"MASTER_ADDR": "x"}}, "MASTER_ADDR is set by the launcher"),
        ({"env": {"BAD-NAME": "x"}}, "not a valid environment variable name"),
        ({"s3_secret": "tcl-s3", "env": {"S3_ENDPOINT_URL": "http://x"}}, "come from s3_secret"),
        ({"run_id": "r1"}, "give all three or none"),
        ({"api_url": "tcl-api:8000", "run_id": "r1", "api_token_secret": "t"}, "should match pattern"),
        ({"run_id": "r" * 64, "api_url": "http://a", "api_token_secret": "t"}, "is not a valid label value"),
        ({"s3_secret": "S3 Secret"}, "not a valid Kubernetes object name"),
        ({"shm_size": "16 GB"}, "not a Kubernetes quantity"),
        ({"output_mount": "runs"}, "must be an absolute path"),
        ({"output_pvc": "tcl-runs", "output_mount": "/checkpoints"}, "output_dir '/runs/r1' is not a folder under output_mount"),
        ({"config_yaml": "optim: {lr: fast}"}, "config_yaml: invalid config:\n  optim.lr"),
        ({"config_yaml": "model: {wings: 2}"}, "model.wings: unknown key"),
        ({"config_yaml": "- not a mapping"}, "must be a YAML mapping"),
        ({"config_yaml": "a: [1"}, "not valid YAML"),
        ({"config_yaml": dump(load("tiny", ["log.metrics_port=65535"])), "procs_per_node": 2}, "runs past port 65535"),
        ({"config_yaml": dump(load("tiny", ["data.cache_dir=cache"]))}, "data.cache_dir 'cache' must be absolute"),
        ({"flavor": "mpijob"}, "'pytorchjob', 'trainjob' or 'indexed-job'"),
        ({"replicas": 2}, "Extra inputs are not permitted"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_error(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        make_spec(**fields)
    assert message in str(err.value), str(err.value)


def test_spec_is_immutable() -> None:
    spec = make_spec()
    with pytest.raises(ValidationError, match="frozen"):
        spec.nodes = 2


def test_placeholders_fill_typed_values_drop_none_and_interpolate_text() -> None:
    template = {"a": "${items}", "b": "${gone}", "c": ["${gone}", "x-${n}-y"], "d": {"e": "$(KEEP)"}}
    filled = fill(template, {"items": [1, {"k": "v"}], "gone": None, "n": 3})
    assert filled == {"a": [1, {"k": "v"}], "c": ["x-3-y"], "d": {"e": "$(KEEP)"}}
    assert template["a"] == "${items}"  # the template itself is untouched
    with pytest.raises(TemplateError, match="missing"):
        fill({"a": "${missing}"}, {})
    with pytest.raises(TemplateError, match="interpolated into text but is list"):
        fill({"a": "x-${items}"}, {"items": []})
