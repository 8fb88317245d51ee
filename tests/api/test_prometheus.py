"""A real Prometheus scrapes the API's /metrics (with the bearer token) and answers PromQL about a run."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from tests.api.conftest import OPERATOR_TOKEN, ApiFactory, ApiServer, free_port, start_run, wait_for


@pytest.fixture(scope="session")
def prometheus(api: ApiServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    assert binary, "the prometheus binary is missing: apt-get install -y prometheus"
    root = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{
            "job_name": "tcl-api", "authorization": {"credentials": OPERATOR_TOKEN},
            "static_configs": [{"targets": [api.url.removeprefix("http://")]}],
        }],
    }
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{free_port()}"
    with (root / "prometheus.log").open("wb") as log:
        command = [binary, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
                   f"--web.listen-address={url.removeprefix('http://')}"]
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _ready(url), 60, "Prometheus to be ready")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=10).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def test_promql_returns_the_runs_step(api: ApiServer, prometheus: str) -> None:
    run = start_run(api, api.make_dataset("scraped", stall_at_step=4), steps=100)
    wait_for(lambda: api.wait_state(run["id"], {"RUNNING"})["progress"]["step"] == 4, 60, "step 4")

    def scraped_step() -> list[dict[str, Any]]:
        return query(prometheus, f'tcl_run_step{{run_id="{run["id"]}"}}')

    [series] = wait_for(scraped_step, 60, "Prometheus to scrape the run's step", interval=0.5)
    assert series["metric"] == {"__name__": "tcl_run_step", "run_id": run["id"], "instance": api.url[7:],
                                "job": "tcl-api"}
    assert float(series["value"][1]) == 4
    [loss] = query(prometheus, f'tcl_run_loss{{run_id="{run["id"]}", term="itm"}}')
    assert float(loss["value"][1]) == pytest.approx(1 / 4)
    [checkpoints] = query(prometheus, f'tcl_checkpoints_registered_total{{run_id="{run["id"]}"}}')
    assert float(checkpoints["value"][1]) == 1  # the one at step 3
    [running] = query(prometheus, 'tcl_runs{state="RUNNING"}')
    assert float(running["value"][1]) >= 1
    with api.client() as client:
        client.post(f"/v1/runs/{run['id']}/cancel")
    api.wait_state(run["id"], {"CANCELLED"})


def test_metrics_need_the_token_unless_switched_off(api: ApiServer, api_factory: ApiFactory) -> None:
    assert httpx.get(f"{api.url}/metrics").status_code == 401
    open_metrics = api_factory(metrics_auth="false")
    response = httpx.get(f"{open_metrics.url}/metrics")
    assert response.status_code == 200 and 'tcl_runs{state="PENDING"} 0.0' in response.text
    assert httpx.get(f"{open_metrics.url}/v1/runs").status_code == 401  # only /metrics is opened
