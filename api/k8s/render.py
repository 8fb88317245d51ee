"""Render a training run as Kubernetes manifests: the one renderer behind the API and deploy/k8s/.

Every flavor starts the same command in the trainer image, `torchrun --module trainer.main --config
/etc/tcl/config.yaml --resume auto` (a resubmitted job continues from its newest complete checkpoint);
torchrun reads its rendezvous settings from PET_* variables, which the Kubeflow operators set and which
this module sets itself for the plain indexed Job.
"""

from __future__ import annotations

import re
from posixpath import isabs, normpath, relpath
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from api.k8s.template import fill, load_template
from trainer.config import ConfigError, RunConfig, from_dict

Flavor = Literal["pytorchjob", "trainjob", "indexed-job"]

CONFIG_DIR = "/etc/tcl"
TRAINER_COMMAND = ["torchrun", "--module", "trainer.main", "--config", f"{CONFIG_DIR}/config.yaml", "--resume", "auto"]
RENDEZVOUS_PORT = 29500
GPU_RESOURCE = "nvidia.com/gpu"
S3_SECRET_KEYS = {  # key -> required; streaming and boto3 read these from the environment
    "AWS_ACCESS_KEY_ID": True,
    "AWS_SECRET_ACCESS_KEY": True,
    "AWS_SESSION_TOKEN": False,
    "AWS_REGION": False,
    "AWS_DEFAULT_REGION": False,
    "S3_ENDPOINT_URL": False,
}
# Set by torchrun, the operators or the trainer's launch: a user value would silently break rendezvous.
RESERVED_ENV = {"MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK"}
RESERVED_ENV_PREFIXES = ("PET_", "TCL_")

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_OBJECT_NAME = (_DNS1123_SUBDOMAIN, 253, "a valid Kubernetes object name (a DNS-1123 subdomain)")
_FORMATS = {  # field -> (pattern, maximum length, what the value must be)
    "name": (_DNS1035, 63, "a DNS-1035 label (lowercase letters, digits and '-', starting with a letter,"
                           " ending with a letter or digit, at most 63 characters)"),
    "namespace": (_DNS1123_LABEL, 63, "a DNS-1123 label (lowercase letters, digits and '-', at most 63 characters)"),
    "api_token_secret": _OBJECT_NAME,
    "s3_secret": _OBJECT_NAME,
    "output_pvc": _OBJECT_NAME,
    "trainjob_runtime": _OBJECT_NAME,
    "run_id": (_LABEL_VALUE, 63, "a valid label value (letters, digits, '-', '_', '.', at most 63 characters)"),
    "shm_size": (_QUANTITY, 64, "a Kubernetes quantity such as '16Gi'"),
    "cpu_per_node": (_QUANTITY, 64, "a Kubernetes quantity such as '16' or '15500m'"),
    "memory_per_node": (_QUANTITY, 64, "a Kubernetes quantity such as '128Gi'"),
    "cache_size": (_QUANTITY, 64, "a Kubernetes quantity such as '200Gi'"),
}


class TrainingJobSpec(BaseModel):
    """Everything that varies between training jobs; the templates hold the rest."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    name: str
    """The job's name, a DNS-1035 label; pods, services and the ConfigMap derive their names from it."""
    namespace: str = "default"
    image: str = Field(pattern=r"^\S+$")
    """The trainer image (docker/trainer.Dockerfile)."""
    flavor: Flavor = "pytorchjob"
    """Kubeflow PyTorchJob, Kubeflow Trainer v2 TrainJob, or a plain indexed Job + headless Service."""
    nodes: int = Field(1, ge=1)
    procs_per_node: int = Field(1, ge=1)
    gpus_per_proc: int = Field(1, ge=0)
    """GPUs per training process; 0 only together with cpu_only."""
    cpu_only: bool = False
    """Run on CPUs: no GPU resources are requested (gpus_per_proc must be 0)."""
    config_yaml: str
    """The trainer's RunConfig as YAML, mounted from a ConfigMap."""
    run_id: str | None = None
    """The API's run id; with api_url and api_token_secret the trainer reports to the control plane."""
    api_url: str | None = Field(None, pattern=r"^https?://\S+$")
    """Where the pods reach the API (TCL_API_URL)."""
    api_token_secret: str | None = None
    """Name of a Secret whose key TCL_RUN_TOKEN holds the run's token."""
    s3_secret: str | None = None
    """Name of a Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optionally S3_ENDPOINT_URL, AWS_REGION."""
    env: dict[str, str] = {}
    """Extra environment for the trainer (e.g. NCCL_* settings)."""
    shm_size: str = "16Gi"
    """Size of the in-memory /dev/shm (loader workers and NCCL need more than the container default 64Mi)."""
    cpu_per_node: str = "16"
    """CPU request and limit of each training pod (one pod per node)."""
    memory_per_node: str = "128Gi"
    """Memory request and limit of each training pod."""
    cache_size: str = "200Gi"
    """Size limit of the shard cache volume (data.cache_dir); the kubelet evicts a pod that writes more."""
    termination_grace_seconds: int = Field(120, ge=1)
    """The pods' terminationGracePeriodSeconds: time to checkpoint after SIGTERM (a cancel, a deletion)."""
    output_pvc: str | None = None
    """A ReadWriteMany PersistentVolumeClaim for the outputs: the pods mount only the run's own folder of it
    (a subPath: output_dir relative to output_mount). Multi-node checkpoints need it or s3:// output.
    Without one, a local output_dir is an emptyDir: writable, but gone with the pod."""
    output_mount: str = "/runs"
    """Where the claim's root would be; the config's output_dir lies under it (an s3:// output_dir mounts nothing)."""
    min_nodes: int | None = Field(None, ge=1)
    """Elastic PyTorchJob: torchrun's rendezvous (c10d) carries on with as few as min_nodes of the `nodes`
    workers after a node loss, restarting the ranks (at most max_restarts times); `--resume auto` then resumes
    the checkpoint on the new world size. None: a fixed-size job."""
    max_restarts: int = Field(3, ge=0)
    """Elastic restarts before the job fails (elasticPolicy.maxRestarts)."""
    trainjob_runtime: str = "torch-distributed"
    """The ClusterTrainingRuntime a TrainJob uses (Kubeflow Trainer's stock torch runtime)."""

    @field_validator(*_FORMATS)
    @classmethod
    def _kubernetes_format(cls, value: str | None, info: ValidationInfo) -> str | None:
        pattern, limit, what = _FORMATS[info.field_name]
        if value is not None and (len(value) > limit or not pattern.match(value)):
            raise ValueError(f"{value!r} is not {what}")
        return value

    @field_validator("output_mount")
    @classmethod
    def _mount_is_absolute(cls, path: str) -> str:
        if not isabs(path) or normpath(path) in ("/", "/dev/shm", CONFIG_DIR):
            raise ValueError(f"{path!r} must be an absolute path other than /, /dev/shm and {CONFIG_DIR}")
        return normpath(path)

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for key in env:
            if not _ENV_NAME.match(key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
            if key in RESERVED_ENV or key.startswith(RESERVED_ENV_PREFIXES):
                raise ValueError(f"{key} is set by the launcher (torchrun, the operator or the API); remove it")
        return env

    @model_validator(mode="after")
    def _check(self) -> TrainingJobSpec:
        if not self.cpu_only and self.gpus_per_proc == 0:
            raise ValueError(
                "gpus_per_proc is 0 but the job is not cpu_only: a GPU job needs at least 1 GPU per process"
                " (set cpu_only=true for a CPU job)"
            )
        if self.cpu_only and self.gpus_per_proc > 0:
            raise ValueError(f"a cpu_only job requests no GPUs, but gpus_per_proc is {self.gpus_per_proc}; set it to 0")
        control_plane = (self.run_id, self.api_url, self.api_token_secret)
        if any(v is not None for v in control_plane) and any(v is None for v in control_plane):
            raise ValueError("run_id, api_url and api_token_secret go together: give all three or none")
        if self.s3_secret is not None and (clash := sorted(set(self.env) & set(S3_SECRET_KEYS))):
            raise ValueError(f"env sets {', '.join(clash)}, which come from s3_secret {self.s3_secret!r}; remove them")
        if self.min_nodes is not None and (self.flavor != "pytorchjob" or self.min_nodes > self.nodes):
            raise ValueError(f"min_nodes {self.min_nodes} needs flavor pytorchjob and at most nodes={self.nodes}"
                             " (the elastic variant is a PyTorchJob with an elasticPolicy)")
        host = longest_host_name(self.name, self.flavor, self.nodes, elastic=self.min_nodes is not None)
        if len(host) > 63:
            raise ValueError(
                f"name {self.name!r} is too long for {self.nodes} nodes as a {self.flavor}: the pod host name"
                f" {host!r} has {len(host)} characters, DNS labels at most 63"
            )
        cfg = run_config(self.config_yaml)
        if not isabs(cfg.data.cache_dir):
            raise ValueError(f"config data.cache_dir {cfg.data.cache_dir!r} must be absolute: it is mounted"
                             " as a volume")
        port = cfg.log.metrics_port
        if port is not None and port + self.procs_per_node - 1 > 65535:
            raise ValueError(f"config log.metrics_port {port} + {self.procs_per_node} ranks runs past port 65535")
        if self.output_pvc is not None and not _is_s3(cfg.output_dir) and not (
                _is_under(cfg.output_dir, self.output_mount) and normpath(cfg.output_dir) != self.output_mount):
            raise ValueError(
                f"config output_dir {cfg.output_dir!r} is not a folder under output_mount {self.output_mount!r},"
                f" the root of output_pvc {self.output_pvc!r}: a run mounts only its own folder of the claim"
            )
        if self.nodes > 1 and self.output_pvc is None and not _is_s3(cfg.output_dir):
            raise ValueError(
                f"a {self.nodes}-node job needs shared or object storage for its checkpoints: set output_pvc"
                f" (a ReadWriteMany claim) or an s3:// output_dir; {cfg.output_dir!r} would be each pod's own emptyDir"
            )
        return self


def longest_host_name(name: str, flavor: Flavor, nodes: int, elastic: bool = False) -> str:
    """The longest pod host name the operator (or the Job controller) derives from the job's name."""
    last = nodes - 1
    if flavor == "pytorchjob" and elastic:  # workers only
        return f"{name}-worker-{last}"
    if flavor == "pytorchjob":
        return f"{name}-worker-{last - 1}" if nodes > 1 else f"{name}-master-0"
    if flavor == "trainjob":
        return f"{name}-node-0-{last}"
    return f"{name}-{last}"


def run_config(config_yaml: str) -> RunConfig:
    """The RunConfig in config_yaml, validated by the trainer's own models."""
    try:
        tree = yaml.safe_load(config_yaml)
    except yaml.YAMLError as err:
        raise ValueError(f"config_yaml is not valid YAML: {err}") from None
    if not isinstance(tree, dict):
        raise ValueError(f"config_yaml must be a YAML mapping, not {type(tree).__name__}")
    try:
        return from_dict(tree)
    except ConfigError as err:
        raise ValueError(f"config_yaml: {err}") from None


def render_training_job(spec: TrainingJobSpec) -> list[dict[str, Any]]:
    """All manifests of the job, in apply order: the config's ConfigMap, the Service (indexed Job), the job."""
    params = _params(spec, run_config(spec.config_yaml))
    manifests = [fill(load_template("configmap.yaml"), params)]
    if spec.flavor == "indexed-job":
        manifests.append(fill(load_template("headless-service.yaml"), params))
    job = fill(load_template(f"{spec.flavor}.yaml"), params)
    if spec.flavor == "pytorchjob" and spec.min_nodes is not None:
        _make_elastic(job, spec)
    elif spec.flavor == "pytorchjob" and spec.nodes == 1:
        del job["spec"]["pytorchReplicaSpecs"]["Worker"]
    manifests.append(job)
    return manifests


def _make_elastic(job: dict[str, Any], spec: TrainingJobSpec) -> None:
    """The elastic PyTorchJob: all nodes are Workers (rendezvous through c10d, no Master), restarted in place."""
    replicas = job["spec"]["pytorchReplicaSpecs"]
    worker = {**replicas["Master"], "replicas": spec.nodes, "restartPolicy": "OnFailure"}
    job["spec"]["pytorchReplicaSpecs"] = {"Worker": worker}
    job["spec"]["runPolicy"]["backoffLimit"] = spec.max_restarts
    job["spec"]["elasticPolicy"] = {"rdzvBackend": "c10d", "minReplicas": spec.min_nodes, "maxReplicas": spec.nodes,
                                    "maxRestarts": spec.max_restarts, "nProcPerNode": spec.procs_per_node}


def _params(spec: TrainingJobSpec, cfg: RunConfig) -> dict[str, Any]:
    security = load_template("security.yaml")
    labels = {
        "app.kubernetes.io/name": "tcl-trainer",
        "app.kubernetes.io/instance": spec.name,
        "app.kubernetes.io/part-of": "tcl",
    }
    if spec.run_id is not None:
        labels["tcl/run-id"] = spec.run_id
    volumes, mounts = _volumes(spec, cfg)
    params: dict[str, Any] = {
        "name": spec.name,
        "namespace": spec.namespace,
        "labels": labels,
        "selector": {k: labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance")},
        "config_yaml": spec.config_yaml,
        "image": spec.image,
        "command": TRAINER_COMMAND,
        "env": _env(spec),
        "ports": _metrics_ports(cfg.log.metrics_port, spec.procs_per_node),
        "resources": _resources(spec),
        "termination_grace": spec.termination_grace_seconds,
        "volumes": volumes,
        "volume_mounts": mounts,
        "pod_security": security["pod"],
        "container_security": security["container"],
        "nodes": spec.nodes,
        "procs_per_node": spec.procs_per_node,
        "procs_per_node_text": str(spec.procs_per_node),  # PyTorchJob's nprocPerNode is a string
        "worker_replicas": spec.nodes - 1,
        "master_port": RENDEZVOUS_PORT,
        "trainjob_runtime": spec.trainjob_runtime,
        "subdomain": spec.name if spec.flavor == "indexed-job" else None,
        "container_name": "pytorch" if spec.flavor == "pytorchjob" else "trainer",
    }
    params["pod"] = fill(load_template("pod.yaml"), params)
    return params


def _env(spec: TrainingJobSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = []
    if spec.flavor == "indexed-job":  # what the operators would set for torchrun
        env += [
            {"name": "PET_NNODES", "value": str(spec.nodes)},
            {"name": "PET_NPROC_PER_NODE", "value": str(spec.procs_per_node)},
            {"name": "PET_NODE_RANK", "valueFrom": {"fieldRef": {
                "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}},
            {"name": "PET_MASTER_ADDR", "value": f"{spec.name}-0.{spec.name}"},
            {"name": "PET_MASTER_PORT", "value": str(RENDEZVOUS_PORT)},
        ]
    if spec.run_id is not None:
        env += [
            {"name": "TCL_API_URL", "value": spec.api_url},
            {"name": "TCL_RUN_ID", "value": spec.run_id},
            {"name": "TCL_RUN_TOKEN",
             "valueFrom": {"secretKeyRef": {"name": spec.api_token_secret, "key": "TCL_RUN_TOKEN"}}},
        ]
    if spec.s3_secret is not None:
        env += [
            {"name": key, "valueFrom": {"secretKeyRef": {"name": spec.s3_secret, "key": key, "optional": not required}}}
            for key, required in S3_SECRET_KEYS.items()
        ]
    env += [{"name": key, "value": value} for key, value in sorted(spec.env.items())]
    return env


def _resources(spec: TrainingJobSpec) -> dict[str, Any]:
    """Requests equal to limits: the scheduler places the pod where all of it fits, and it is not evicted
    first under memory pressure."""
    amounts = {"cpu": spec.cpu_per_node, "memory": spec.memory_per_node}
    if not spec.cpu_only:
        amounts[GPU_RESOURCE] = str(spec.procs_per_node * spec.gpus_per_proc)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _volumes(spec: TrainingJobSpec, cfg: RunConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pod's volumes and the container's mounts: config, in-memory /dev/shm, shard cache (both size-limited),
    and the run's own folder of the output claim (or an emptyDir; nothing for s3:// output)."""
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": f"{spec.name}-config"}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}},
        {"name": "data-cache", "emptyDir": {"sizeLimit": spec.cache_size}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "data-cache", "mountPath": normpath(cfg.data.cache_dir)},
    ]
    if _is_s3(cfg.output_dir):
        return volumes, mounts
    if spec.output_pvc is not None:
        volumes.append({"name": "output", "persistentVolumeClaim": {"claimName": spec.output_pvc}})
        run_dir = normpath(cfg.output_dir)
        mounts.append({"name": "output", "mountPath": run_dir, "subPath": relpath(run_dir, spec.output_mount)})
    else:
        volumes.append({"name": "output", "emptyDir": {}})
        mounts.append({"name": "output", "mountPath": spec.output_mount})
    return volumes, mounts


def _metrics_ports(base: int | None, ranks: int) -> list[dict[str, Any]] | None:
    """One named port per local rank (the trainer serves on log.metrics_port + local rank)."""
    if base is None:
        return None
    return [{"name": f"metrics-{rank}", "containerPort": base + rank, "protocol": "TCP"} for rank in range(ranks)]


def _is_s3(path: str) -> bool:
    return path.startswith("s3://")


def _is_under(path: str, root: str) -> bool:
    path = normpath(path)
    return isabs(path) and (path == root or path.startswith(root.rstrip("/") + "/"))


class _ManifestDumper(yaml.SafeDumper):
    """Block style for multi-line strings, so that an embedded config reads as YAML, not as one escaped line."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ManifestDumper.add_representer(str, _represent_str)


def to_yaml(manifests: list[dict[str, Any]]) -> str:
    """The manifests as one multi-document YAML stream, as `kubectl apply -f` takes it."""
    return yaml.dump_all(manifests, Dumper=_ManifestDumper, sort_keys=False, width=120)
