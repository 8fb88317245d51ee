"""The Grafana dashboard: it covers the agreed metrics, and every panel's query, run by a real Prometheus
against exporters of those metrics on loopback, returns the series and values it is meant to show."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

API_METRICS = {  # name -> labels, as the control plane exposes them
    "tcl_runs": ("state",),
    "tcl_run_step": ("run_id",),
    "tcl_run_samples_per_second": ("run_id",),
    "tcl_run_loss": ("run_id", "term"),
    "tcl_run_eval_recall": ("run_id", "metric"),
    "tcl_checkpoints_registered_total": ("run_id",),
    "tcl_run_last_checkpoint_timestamp_seconds": ("run_id",),
}
TRAINER_METRICS = {  # per rank, on log.metrics_port + local rank
    "tcl_train_step": ("rank",),
    "tcl_train_step_seconds": ("rank",),
    "tcl_train_data_wait_seconds": ("rank",),
    "tcl_train_samples_per_second": ("rank",),
    "tcl_train_mfu": ("rank",),
    "tcl_train_loss": ("rank", "term"),
    "tcl_gpu_memory_bytes": ("rank",),
}
RUN_LABEL = "tcl_run_id"
"""The pod label tcl/run-id on the trainer's series (PodMonitor podTargetLabels), not a metric."""
RUN_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def dashboard(repo: Path) -> dict[str, Any]:
    return json.loads((repo / "deploy" / "k8s" / "grafana" / "tcl-training.json").read_text())


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target."""
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_dashboard_shows_every_agreed_metric_and_nothing_else(dashboard: dict) -> None:
    used = {name for _, expr in queries(dashboard) for name in re.findall(r"\btcl_[a-z_]+", expr)}
    used |= {name for var in dashboard["templating"]["list"] for name in re.findall(r"\btcl_[a-z_]+", var.get("definition", ""))}
    assert used - {RUN_LABEL} == set(API_METRICS) | set(TRAINER_METRICS)
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("loss", "samples/s", "mfu", "data wait", "gpu memory", "recall", "checkpoint"):
        assert topic in titles, topic
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(metrics: dict[str, tuple[str, ...]], values: dict[str, list[tuple[tuple[str, ...], float]]]) -> tuple[Any, int]:
    registry = CollectorRegistry()
    for name, labels in metrics.items():
        kind = Counter if name.endswith("_total") else Gauge
        metric = kind(name.removesuffix("_total"), name, labels, registry=registry)
        for label_values, value in values[name]:
            (metric.labels(*label_values).inc if kind is Counter else metric.labels(*label_values).set)(value)
    port = free_port()
    server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    return server, port


def query(base: str, promql: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus scraping an API-like and a trainer-like exporter every second."""
    now = time.time()
    api_server, api_port = serve(API_METRICS, {
        "tcl_runs": [(("RUNNING",), 1), (("SUCCEEDED",), 2)],
        "tcl_run_step": [((RUN_ID,), 120)],
        "tcl_run_samples_per_second": [((RUN_ID,), 1234.0)],
        "tcl_run_loss": [((RUN_ID, "itc"), 2.5), ((RUN_ID, "mlm"), 4.0)],
        "tcl_run_eval_recall": [((RUN_ID, "r_mean"), 55.5)],
        "tcl_checkpoints_registered_total": [((RUN_ID,), 3)],
        "tcl_run_last_checkpoint_timestamp_seconds": [((RUN_ID,), now - 60)],
    })
    trainer_server, trainer_port = serve(TRAINER_METRICS, {
        "tcl_train_step": [(("0",), 120)],
        "tcl_train_step_seconds": [(("0",), 0.5)],
        "tcl_train_data_wait_seconds": [(("0",), 0.05)],
        "tcl_train_samples_per_second": [(("0",), 1234.0)],
        "tcl_train_mfu": [(("0",), 0.4)],
        "tcl_train_loss": [(("0", "itc"), 2.5)],
        "tcl_gpu_memory_bytes": [(("0",), 2**34)],
    })
    workdir = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [
            {"job_name": "tcl-api", "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}]},
            # The PodMonitor's podTargetLabels put the pod's tcl/run-id label on the trainer's series.
            {"job_name": "tcl-trainer", "static_configs": [{"targets": [f"127.0.0.1:{trainer_port}"],
                                                            "labels": {RUN_LABEL: RUN_ID, "pod": "tcl-r1-master-0"}}]},
        ],
    }
    (workdir / "prometheus.yml").write_text(json.dumps(config))
    process = subprocess.Popen(
        ["prometheus", f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(workdir / "prometheus.log").open("w"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # until both targets have been scraped once
            try:
                if len(query(base, "up == 1")) == 2:
                    break
            except OSError:
                pass
            assert process.poll() is None, (workdir / "prometheus.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "Prometheus did not scrape both exporters within 60 s"
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        api_server.shutdown()
        trainer_server.shutdown()


def test_every_panel_query_returns_series(dashboard: dict, prometheus: str) -> None:
    for title, expr in queries(dashboard):
        promql = expr.replace("$run_id", RUN_ID)  # what Grafana sends for one selected run
        assert query(prometheus, promql), f"panel {title!r}: no series for {promql}"


def test_panel_values_are_what_the_exporters_serve(dashboard: dict, prometheus: str) -> None:
    exprs = {title: expr.replace("$run_id", RUN_ID) for title, expr in queries(dashboard)}

    def value(title: str) -> float:
        [series] = query(prometheus, exprs[title])
        return float(series["value"][1])

    assert value("Data wait share of the step") == pytest.approx(0.05 / 0.5)
    assert value("Samples/s (all ranks)") == pytest.approx(1234.0)
    assert value("MFU") == pytest.approx(0.4)
    assert value("GPU memory (peak allocated)") == 2**34
    assert 60 <= value("Time since the last checkpoint") < 600
    states = {s["metric"]["state"]: float(s["value"][1]) for s in query(prometheus, exprs["Runs by state"])}
    assert states == {"RUNNING": 1.0, "SUCCEEDED": 2.0}
    terms = {s["metric"]["term"] for s in query(prometheus, exprs["Loss terms"])}
    assert terms == {"itc", "mlm"}


def test_run_variable_lists_the_runs(dashboard: dict, prometheus: str) -> None:
    [variable] = [v for v in dashboard["templating"]["list"] if v["name"] == "run_id"]
    metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["definition"]).groups()
    url = f"{prometheus}/api/v1/label/{label}/values?" + urllib.parse.urlencode({"match[]": metric})
    with urllib.request.urlopen(url, timeout=10) as response:
        assert json.load(response)["data"] == [RUN_ID]
