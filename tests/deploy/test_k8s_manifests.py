"""deploy/k8s/: what users apply validates, and its pieces refer to each other correctly (selectors,
ports, RBAC for what the renderer emits, settings the API reads)."""

from __future__ import annotations

from pathlib import Path

import yaml

from api.k8s import render_training_job
from api.settings import Settings

FLAVORS = ("pytorchjob", "trainjob", "indexed-job")


def test_every_manifest_validates(k8s_dir: Path, docs_of, validate) -> None:
    files = sorted(k8s_dir.rglob("*.yaml"))
    assert len(files) == 10, files  # 6 files here + 4 rendered jobs
    for path in files:
        if path.name == "kustomization.yaml":
            continue
        for doc in docs_of(path):
            validate(doc)


def test_kustomization_applies_everything_but_the_example_secrets(k8s_dir: Path) -> None:
    kustomization = yaml.safe_load((k8s_dir / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == ["api.yaml", "monitoring.yaml", "namespace.yaml", "storage.yaml"]
    [dashboard] = kustomization["configMapGenerator"]
    for path in dashboard["files"]:
        assert (k8s_dir / path).is_file()
    assert dashboard["options"]["labels"] == {"grafana_dashboard": "1"}  # what Grafana's sidecar looks for
    namespace = yaml.safe_load((k8s_dir / "namespace.yaml").read_text())["metadata"]["name"]
    assert kustomization["namespace"] == namespace


def test_api_deployment_wiring(objects: dict) -> None:
    deployment = objects[("Deployment", "tcl-api")]
    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert ("ServiceAccount", pod["spec"]["serviceAccountName"]) in objects
    sources = {next(iter(s)): next(iter(s.values()))["name"] for s in container["envFrom"]}
    assert ("ConfigMap", sources["configMapRef"]) in objects and ("Secret", sources["secretRef"]) in objects
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": Settings.model_fields["port"].default}
    assert {container["readinessProbe"]["httpGet"]["path"], container["livenessProbe"]["httpGet"]["path"]} == {"/readyz", "/healthz"}

    service = objects[("Service", "tcl-api")]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] in ports

    binding = objects[("RoleBinding", "tcl-api-launcher")]
    assert ("Role", binding["roleRef"]["name"]) in objects
    assert [("ServiceAccount", s["name"]) for s in binding["subjects"]] == [("ServiceAccount", pod["spec"]["serviceAccountName"])]


def test_settings_in_manifests_are_settings_the_api_reads(objects: dict) -> None:
    known = {f"TCL_API_{name.upper()}" for name in Settings.model_fields}
    configured = set(objects[("ConfigMap", "tcl-api")]["data"]) | set(objects[("Secret", "tcl-api")]["stringData"])
    assert configured <= known, configured - known
    assert {"TCL_API_TOKEN", "TCL_API_DATABASE_URL", "TCL_API_LAUNCHERS"} <= configured
    settings = Settings(**{k.removeprefix("TCL_API_").lower(): yaml.safe_load(v) if k == "TCL_API_LAUNCHERS" else v
                           for k, v in objects[("ConfigMap", "tcl-api")]["data"].items()} | {"token": "x" * 16})
    assert settings.launchers == ["kubernetes"]
    assert settings.kube_s3_secret in {name for kind, name in objects if kind == "Secret"}


def test_rbac_lets_the_launcher_manage_everything_it_renders(objects: dict, render_examples) -> None:
    allowed = {(group, resource): set(rule["verbs"]) for rule in objects[("Role", "tcl-api-launcher")]["rules"]
               for group in rule["apiGroups"] for resource in rule["resources"]}
    needed: set[tuple[str, str]] = set()
    for flavor in FLAVORS:
        for manifest in render_training_job(render_examples.sample_spec(flavor)):
            group = manifest["apiVersion"].rpartition("/")[0]
            needed.add((group, manifest["kind"].lower() + "s"))
    for key in needed:
        assert {"create", "get", "delete"} <= allowed.get(key, set()), f"{key} is not allowed"
    # The run token the launcher stores for the pods: written and deleted, never read (no Secret is readable).
    assert allowed[("", "secrets")] == {"create", "delete"}


def test_monitors_select_what_exists(objects: dict, render_examples) -> None:
    service = objects[("Service", "tcl-api")]
    service_monitor = objects[("ServiceMonitor", "tcl-api")]
    assert service_monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    [endpoint] = service_monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    credentials = endpoint["authorization"]["credentials"]
    assert credentials["key"] in objects[("Secret", credentials["name"])]["stringData"]
    assert credentials["key"] == "TCL_API_READ_TOKEN"  # Prometheus reads; it cannot start or cancel runs

    # The trainer's pods (of any flavor) carry the PodMonitor's labels and declare the ports it scrapes.
    pod_monitor = objects[("PodMonitor", "tcl-trainer")]
    scraped = [e["port"] for e in pod_monitor["spec"]["podMetricsEndpoints"]]
    job = render_training_job(render_examples.sample_spec("pytorchjob"))[-1]
    pod = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    [container] = pod["spec"]["containers"]
    assert [p["name"] for p in container["ports"]] == scraped  # 8 ranks per node, 8 endpoints
    assert set(pod_monitor["spec"]["podTargetLabels"]) <= set(pod["metadata"]["labels"]) | {"tcl/run-id"}


def test_example_jobs_use_the_shared_pieces(repo: Path, objects: dict, docs_of, values_in) -> None:
    """The rendered examples mount the PVC of storage.yaml and read the S3 Secret of secrets.example.yaml."""
    for flavor in FLAVORS:
        docs = docs_of(repo / "deploy" / "k8s" / "jobs" / f"{flavor}.yaml")
        claims = {v["claimName"] for doc in docs for v in values_in(doc) if isinstance(v, dict) and "claimName" in v}
        secrets = {v["secretKeyRef"]["name"] for doc in docs for v in values_in(doc) if isinstance(v, dict) and "secretKeyRef" in v}
        assert claims and all(("PersistentVolumeClaim", c) in objects for c in claims)
        assert secrets and all(("Secret", s) in objects for s in secrets)
        assert {doc["metadata"]["namespace"] for doc in docs} == {"tcl"}

