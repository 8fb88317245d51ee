"""Scoped tokens: the read-only token (TCL_API_READ_TOKEN) reads runs, logs, checkpoints and /metrics and
changes nothing; a run's token reports for its run only; the operator token does everything."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.api.conftest import OPERATOR_TOKEN, ApiServer, _kill_leftover_runs, start_run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

READ_TOKEN = "read-only-token-for-tests-0123456789"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    server = ApiServer(tmp_path_factory.mktemp("api"), {"TCL_API_READ_TOKEN": READ_TOKEN}).start()
    yield server
    server.stop()
    _kill_leftover_runs(server.root / "runs")


def test_the_read_only_token_reads_everything_and_changes_nothing(api: ApiServer) -> None:
    run = start_run(api, api.make_dataset("quick"), steps=3)
    run = api.wait_state(run["id"], {"SUCCEEDED"})
    with api.client(READ_TOKEN) as reader, api.client(OPERATOR_TOKEN) as operator:
        checkpoint = operator.get(f"/v1/runs/{run['id']}/checkpoints").json()["items"][0]["id"]
        reads = ["/v1/runs?state=SUCCEEDED", f"/v1/runs/{run['id']}", f"/v1/runs/{run['id']}/logs?tail=5",
                 f"/v1/runs/{run['id']}/checkpoints", f"/v1/checkpoints/{checkpoint}", "/metrics"]
        for path in reads:
            as_reader, as_operator = reader.get(path), operator.get(path)
            assert as_reader.status_code == 200, (path, as_reader.text)
            if path != "/metrics":  # scrape-time gauges may move between the two reads
                assert as_reader.content == as_operator.content, path

        changes = [("/v1/runs", {"config": {"preset": "tiny"}}), (f"/v1/runs/{run['id']}/cancel", None),
                   (f"/v1/checkpoints/{checkpoint}/best", None)]
        for path, body in changes:
            refused = reader.post(path, json=body)
            assert refused.status_code == 403 and "read-only" in refused.json()["detail"], (path, refused.text)
        assert reader.get("/v1/runs").json()["total"] == 1  # nothing was created
        assert operator.get(f"/v1/runs/{run['id']}").json()["best_checkpoint_id"] is None
        assert reader.post(f"/v1/runs/{run['id']}/heartbeat", json={"step": 1}).status_code == 401  # not a run token


def test_other_tokens_read_nothing(api: ApiServer) -> None:
    for token in ("not-the-read-token-0123456789", READ_TOKEN[:-1], None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        for path in ("/v1/runs", "/metrics"):
            response = httpx.get(f"{api.url}{path}", headers=headers, timeout=10)
            assert response.status_code == 401 and "WWW-Authenticate" in response.headers, (token, path)
