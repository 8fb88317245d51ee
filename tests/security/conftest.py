"""The security suites use the API tests' fixtures: real API servers, a real PostgreSQL, the fake Kubernetes."""

from collections.abc import Iterator

import pytest

from tests.api.conftest import ApiServer, _kill_leftover_runs, api_factory, empty_database, fake, postgres_url  # noqa: F401


@pytest.fixture(scope="module")
def pg_api(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[ApiServer]:  # noqa: F811
    """A real API on its own PostgreSQL database, for one test module."""
    server = ApiServer(tmp_path_factory.mktemp("api"), {"TCL_API_DATABASE_URL": empty_database(postgres_url)}).start()
    yield server
    server.stop()
    _kill_leftover_runs(server.root / "runs")
