"""schemathesis against the served OpenAPI schema: no 5xx, and answers that match what the schema says.

Launches go to the Kubernetes launcher on a fake API server, so no training process is spawned; the
streaming log endpoint is left out (a followed log only ends with its run).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.api.conftest import OPERATOR_TOKEN, ApiFactory
from tests.api.fake_kubernetes import FakeKubernetes

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def test_generated_requests_get_no_server_error(api_factory: ApiFactory, fake: FakeKubernetes, tmp_path: Path) -> None:
    cli = Path(sys.executable).parent / "st"
    assert cli.exists(), "schemathesis is not installed (pip install schemathesis)"
    api = api_factory(launchers='["kubernetes"]', kube_config=str(fake.kubeconfig(tmp_path / "kubeconfig")))
    result = subprocess.run(
        [str(cli), "run", f"{api.url}/openapi.json", "--header", f"Authorization: Bearer {OPERATOR_TOKEN}",
         "--checks", CHECKS, "--phases", "coverage,fuzzing,stateful", "--max-examples", "15", "--seed", "1",
         "--exclude-path", "/v1/runs/{run_id}/logs", "--workers", "1", "--generation-database", "none",
         "--request-timeout", "20", "--no-color"],
        capture_output=True, text=True, timeout=400, check=False, cwd=tmp_path,  # its caches stay out of the repo
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Traceback" not in api.log_path.read_text()
