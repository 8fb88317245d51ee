"""The Kubernetes launcher: each attempt is a job rendered by api.k8s (the templates deploy/ uses too).

An attempt is a Secret holding its run token, then the rendered manifests (the config's ConfigMap, a
headless Service for the indexed Job, the job itself: PyTorchJob, TrainJob or batch Job), named
`tcl-<run id>-<attempt>`. Its status comes from the job's conditions; a cancel deletes the job (the
pods get their termination grace), a forced one also deletes its pods at once. Finished jobs are left
for their logs; the attempt's token Secret is deleted when the attempt ends.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from api.k8s import TrainingJobSpec, render_training_job
from api.launchers.base import Launcher, LaunchError, LaunchRequest, ResourceError, Status
from api.schemas import Resources
from api.settings import Settings
from trainer.config import RunConfig, dump
from trainer.control_plane import ENV_TOKEN

log = logging.getLogger(__name__)

CUSTOM_PLURALS = {"PyTorchJob": "pytorchjobs", "TrainJob": "trainjobs"}
SUCCESS_CONDITIONS = {"Complete", "Succeeded"}
"""Condition types meaning success: batch Job and TrainJob say Complete, PyTorchJob says Succeeded."""
FLAVOR_KINDS = {
    "pytorchjob": ("kubeflow.org/v1", "PyTorchJob"),
    "trainjob": ("trainer.kubeflow.org/v1alpha1", "TrainJob"),
    "indexed-job": ("batch/v1", "Job"),
}
"""apiVersion and kind of each flavor's job (as its template in api/k8s/templates/ writes them)."""
RUN_LABEL = "tcl/run-id"
INSTANCE_LABEL = "app.kubernetes.io/instance"


@dataclass(frozen=True)
class JobRef:
    """What a handle names: the attempt's job and its token Secret."""

    namespace: str
    name: str
    api_version: str
    kind: str
    secret: str

    def dumps(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def loads(cls, handle: str) -> JobRef:
        return cls(**json.loads(handle))


def job_name(run_id: str, attempt: int) -> str:
    return f"tcl-{run_id}-{attempt}"


class KubernetesLauncher(Launcher):
    name = "kubernetes"

    def __init__(self, api_client: client.ApiClient, *, namespace: str, image: str, flavor: str, api_url: str,
                 output_root: str, output_pvc: str | None = None, s3_secret: str | None = None,
                 request_timeout: float = 30.0, pod_sizes: dict[str, Any] | None = None) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.namespace = namespace
        self.image = image
        self.flavor = flavor
        self.api_url = api_url
        self.output_root = output_root.rstrip("/")
        self.output_pvc = output_pvc
        self.s3_secret = s3_secret
        self.pod_sizes = pod_sizes or {}
        """TrainingJobSpec fields of every pod: cpu_per_node, memory_per_node, cache_size, termination_grace_seconds."""
        self.timeout = {"_request_timeout": request_timeout}
        """Given to every call: a Kubernetes API that stops answering must not stall the supervisor."""
        self._logs: dict[tuple[str, str], PodLog] = {}
        """(namespace, pod) -> what has been read of its log."""

    @classmethod
    def from_settings(cls, settings: Settings) -> KubernetesLauncher:
        """A kubeconfig file when one is set, else the pod's service account. Calls are not retried by the
        client (a retried timeout would multiply the request timeout): the supervisor's next tick retries."""
        configuration = client.Configuration()
        try:
            if settings.kube_config is not None:
                config.load_kube_config(config_file=str(settings.kube_config), client_configuration=configuration)
            else:
                config.load_incluster_config(client_configuration=configuration)
        except (config.ConfigException, OSError) as err:
            where = settings.kube_config or "the in-cluster service account (set TCL_API_KUBE_CONFIG outside a cluster)"
            raise RuntimeError(f"kubernetes launcher: cannot configure the client from {where}: {err}") from None
        configuration.retries = 0
        return cls(client.ApiClient(configuration), namespace=settings.kube_namespace, image=settings.kube_image,
                   flavor=settings.kube_flavor, api_url=settings.pod_trainer_url,
                   output_root=settings.kube_output_root, output_pvc=settings.kube_output_pvc,
                   s3_secret=settings.kube_s3_secret, request_timeout=settings.kube_request_timeout_seconds,
                   pod_sizes={"cpu_per_node": settings.kube_cpu_per_node,
                              "memory_per_node": settings.kube_memory_per_node, "cache_size": settings.kube_cache_size,
                              "termination_grace_seconds": max(1, math.ceil(settings.cancel_grace_seconds))})

    def placement(self, run_id: str) -> dict[str, Any]:
        return {"output_dir": f"{self.output_root}/{run_id}"}

    def spec(self, run_id: str, attempt: int, config_yaml: str, resources: Resources) -> TrainingJobSpec:
        name = job_name(run_id, attempt)
        return TrainingJobSpec(
            name=name, namespace=self.namespace, image=self.image, flavor=self.flavor,  # type: ignore[arg-type]
            nodes=resources.nodes, procs_per_node=resources.procs_per_node, gpus_per_proc=resources.gpus_per_proc,
            cpu_only=resources.gpus_per_proc == 0, config_yaml=config_yaml, run_id=run_id, api_url=self.api_url,
            api_token_secret=f"{name}-token", s3_secret=self.s3_secret, output_pvc=self.output_pvc,
            **({"output_mount": self.output_root} if self.output_root.startswith("/") else {}), **self.pod_sizes,
        )

    def check(self, run_id: str, config: RunConfig, resources: Resources) -> None:
        try:
            render_training_job(self.spec(run_id, 1, dump(config), resources))
        except (ValidationError, ValueError) as err:
            raise ResourceError(f"the kubernetes launcher cannot render this run: {err}") from None

    def launch(self, request: LaunchRequest) -> str:
        spec = self.spec(request.run_id, request.attempt, request.config_yaml, request.resources)
        manifests = render_training_job(spec)
        job = manifests[-1]
        ref = JobRef(namespace=spec.namespace, name=spec.name, api_version=job["apiVersion"], kind=job["kind"],
                     secret=spec.api_token_secret or "")
        secret = {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": ref.secret, "namespace": ref.namespace, "labels": {RUN_LABEL: request.run_id}},
            "stringData": {ENV_TOKEN: request.env[ENV_TOKEN]},
        }
        for manifest in [secret, *manifests]:
            what = f"{manifest['kind']} {manifest['metadata']['name']}"
            try:
                self._create(manifest)
            except ApiException as err:
                raise LaunchError(f"Kubernetes refused {what}: {err.status} {err.reason}: {_message(err)}") from None
            except ValueError as err:  # the typed client checks built-in kinds against its models first
                raise LaunchError(f"the Kubernetes client refused {what}: {err}") from None
        log.info("run %s attempt %d submitted as %s %s/%s", request.run_id, request.attempt, ref.kind,
                 ref.namespace, ref.name)
        return ref.dumps()

    def recover(self, run_id: str, attempt: int) -> str | None:
        """The attempt's names are deterministic: its ref, whatever of it was created (status and release
        answer for a job that never came to be as for one that is gone)."""
        api_version, kind = FLAVOR_KINDS[self.flavor]
        name = job_name(run_id, attempt)
        return JobRef(namespace=self.namespace, name=name, api_version=api_version, kind=kind,
                      secret=f"{name}-token").dumps()

    def _create(self, manifest: dict[str, Any]) -> None:
        namespace, kind = manifest["metadata"]["namespace"], manifest["kind"]
        if kind == "Secret":
            self.core.create_namespaced_secret(namespace, manifest, **self.timeout)
        elif kind == "ConfigMap":
            self.core.create_namespaced_config_map(namespace, manifest, **self.timeout)
        elif kind == "Service":
            self.core.create_namespaced_service(namespace, manifest, **self.timeout)
        elif kind == "Job":
            self.batch.create_namespaced_job(namespace, manifest, **self.timeout)
        else:
            group, version = manifest["apiVersion"].split("/")
            self.custom.create_namespaced_custom_object(group, version, namespace, CUSTOM_PLURALS[kind], manifest,
                                                        **self.timeout)

    def _read_job(self, ref: JobRef) -> dict[str, Any] | None:
        try:
            if ref.kind == "Job":
                response = self.batch.read_namespaced_job_status(ref.name, ref.namespace, _preload_content=False,
                                                                 **self.timeout)
                return json.loads(response.data)
            group, version = ref.api_version.split("/")
            return self.custom.get_namespaced_custom_object_status(  # type: ignore[no-any-return]
                group, version, ref.namespace, CUSTOM_PLURALS[ref.kind], ref.name, **self.timeout)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def status(self, run_id: str, handle: str) -> Status:
        ref = JobRef.loads(handle)
        job = self._read_job(ref)
        if job is None:
            return Status(running=False, detail=f"{ref.kind} {ref.name} no longer exists")
        for condition in (job.get("status") or {}).get("conditions") or []:
            if condition.get("status") != "True":
                continue
            if condition.get("type") in SUCCESS_CONDITIONS:
                return Status(running=False, exit_code=0)
            if condition.get("type") == "Failed":
                why = ": ".join(p for p in (condition.get("reason"), condition.get("message")) if p)
                detail = f"{ref.kind} {ref.name} failed" + (f" ({why})" if why else "")
                return Status(running=False, exit_code=1, detail=detail)
        return Status(running=True)

    def stop(self, run_id: str, handle: str, *, force: bool) -> None:
        ref = JobRef.loads(handle)
        # Foreground: the job object stays until its pods are gone, so the run is CANCELLED only then.
        options = {"propagation_policy": "Background" if force else "Foreground",
                   "grace_period_seconds": 0 if force else None, **self.timeout}
        try:
            if ref.kind == "Job":
                self.batch.delete_namespaced_job(ref.name, ref.namespace, **options)
            else:
                group, version = ref.api_version.split("/")
                self.custom.delete_namespaced_custom_object(group, version, ref.namespace, CUSTOM_PLURALS[ref.kind],
                                                            ref.name, **options)
            if force:
                self.core.delete_collection_namespaced_pod(ref.namespace, label_selector=f"{INSTANCE_LABEL}={ref.name}",
                                                           grace_period_seconds=0, **self.timeout)
        except ApiException as err:
            if err.status != 404:
                raise
        log.info("run %s: %s %s deleted%s", run_id, ref.kind, ref.name, " (pods killed)" if force else "")

    def release(self, run_id: str, handle: str) -> None:
        ref = JobRef.loads(handle)
        for key in [k for k in self._logs if k[0] == ref.namespace and k[1].startswith(ref.name + "-")]:
            del self._logs[key]
        try:
            self.core.delete_namespaced_secret(ref.secret, ref.namespace, **self.timeout)
        except ApiException as err:
            if err.status != 404:
                raise

    def read_log(self, run_id: str, handle: str | None, offset: int, limit: int = 1 << 20) -> tuple[bytes, int]:
        """The log of the attempt's first pod (node rank 0 sorts first by name), read incrementally: each
        call downloads only the lines written since the previous one (see PodLog)."""
        if handle is None:
            return b"", max(offset, 0)
        ref = JobRef.loads(handle)
        pods = self.core.list_namespaced_pod(ref.namespace, label_selector=f"{INSTANCE_LABEL}={ref.name}",
                                             **self.timeout).items
        if not pods:
            return b"", max(offset, 0)
        first = min(pods, key=lambda pod: pod.metadata.name)
        log = self._logs.setdefault((ref.namespace, first.metadata.name), PodLog())
        try:
            log.fetch(lambda **query: self.core.read_namespaced_pod_log(  # type: ignore[no-any-return]
                first.metadata.name, ref.namespace, timestamps=True, _preload_content=False, **query,
                **self.timeout).data)
        except ApiException as err:
            if err.status not in (400, 404):  # 400/404: container not started yet, or pod gone
                raise
        return log.read(offset, limit)


_STAMP = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z $")


def _stamp_key(stamp: bytes) -> bytes | None:
    """A kubelet timestamp (RFC3339Nano, trailing zeros dropped) in a form that sorts as time does."""
    match = _STAMP.match(stamp + b" ")
    return None if match is None else match[1] + b"." + (match[2] or b"").ljust(9, b"0")


class PodLog:
    """What this API has read of one pod's log: the last MAX_BYTES of it, its byte offset, and the kubelet's
    timestamp of the last line. A fetch asks only for the lines since the previous fetch (sinceSeconds, from
    the API's own clock, with an overlap that the timestamps de-duplicate), the first one for the last
    FIRST_LINES lines: a followed log is never downloaded again from its start."""

    FIRST_LINES = 10_000
    OVERLAP_SECONDS = 5
    MAX_BYTES = 4 << 20

    def __init__(self) -> None:
        self.data = bytearray()
        self.base = 0
        self.last: bytes | None = None
        self.fetched_at: float | None = None

    def fetch(self, read: Callable[..., bytes]) -> None:
        now = time.monotonic()
        if self.fetched_at is None:
            query = {"tail_lines": self.FIRST_LINES}
        else:
            query = {"since_seconds": math.ceil(now - self.fetched_at) + self.OVERLAP_SECONDS}
        text = read(**query)
        self.fetched_at = now
        previous = self.last  # the overlap with the previous fetch is dropped; this fetch's lines all count
        for line in text.splitlines(keepends=True):
            stamp, _, rest = line.partition(b" ")
            key = _stamp_key(stamp)
            if key is None:  # not a timestamped line: keep it whole
                self.data += line
                continue
            if previous is not None and key <= previous:
                continue
            self.data += rest
            self.last = key
        if len(self.data) > self.MAX_BYTES:
            drop = len(self.data) - self.MAX_BYTES
            del self.data[:drop]
            self.base += drop

    def read(self, offset: int, limit: int) -> tuple[bytes, int]:
        """Up to `limit` bytes from `offset` (negative: from the end), within what is kept."""
        end = self.base + len(self.data)
        start = max(self.base, end + offset) if offset < 0 else min(max(offset, self.base), end)
        data = bytes(self.data[start - self.base:start - self.base + limit])
        return data, start + len(data)


def _message(err: ApiException) -> str:
    try:
        return str(json.loads(err.body).get("message", ""))
    except (TypeError, ValueError):
        return str(err.body or "")
