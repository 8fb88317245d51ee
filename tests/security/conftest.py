"""The security suites use the API tests' fixtures: real API servers, a real PostgreSQL, the fake Kubernetes."""

from tests.api.conftest import api_factory, fake, postgres_url  # noqa: F401
