"""The control-plane app: create_app() wires store, launchers and supervisor; main() serves it (tcl-api)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from api.deps import Services
from api.launchers import Launcher, build_launchers
from api.leader import leader_lock
from api.limits import BodySizeLimit
from api.metrics import RunCollector
from api.routes import checkpoints, health, metrics, runs
from api.security import RedactSecrets
from api.settings import Settings, get_settings
from api.store import NotFound, Store, make_engine, migrate
from api.supervisor import Supervisor
from api.verifier import CheckpointVerifier

log = logging.getLogger(__name__)


async def _not_found(_request: Request, err: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(err.args[0] if err.args else err)}, status_code=404)


def create_app(settings: Settings | None = None, launchers: dict[str, Launcher] | None = None) -> FastAPI:
    """The app. `settings` default to the environment's; `launchers` default to those the settings enable."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        if settings.auto_migrate:
            migrate(engine)
        store = Store(engine)
        enabled = launchers if launchers is not None else build_launchers(settings)
        supervisor = Supervisor(store, enabled, settings, leader_lock(engine))
        app.state.services = Services(store, enabled, supervisor)
        app.state.metrics_registry = CollectorRegistry(auto_describe=False)
        app.state.metrics_registry.register(RunCollector(store, settings.metrics_finished_ttl_seconds))
        supervisor.start()
        verifier = CheckpointVerifier(store, settings.poll_interval_seconds, lambda: supervisor.leader)
        verifier.start()
        log.info("control plane ready: launchers %s, database %s", ", ".join(enabled), engine.url.render_as_string())
        try:
            yield
        finally:
            verifier.stop()
            supervisor.stop()
            engine.dispose()

    app = FastAPI(
        title="TCL control plane", version="1", lifespan=lifespan,
        description="Launch and watch TCL training runs; a registry of their checkpoints.",
    )
    app.dependency_overrides[get_settings] = lambda: settings
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_exception_handler(NotFound, _not_found)
    for module in (runs, checkpoints, metrics, health):
        app.include_router(module.router)
    return app


def configure_logging(settings: Settings) -> None:
    """Log lines on stderr, with every token hidden."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets([settings.token.get_secret_value()]))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)


def main(argv: list[str] | None = None) -> int:
    """`tcl-api`: serve the control plane with uvicorn, configured by TCL_API_* variables."""
    parser = argparse.ArgumentParser(prog="tcl-api", description=__doc__)
    parser.add_argument("--migrate-only", action="store_true", help="upgrade the database schema and exit")
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as err:
        sys.stderr.write(f"tcl-api: invalid settings (environment variables TCL_API_*):\n{err}\n")
        return 2
    configure_logging(settings)
    if args.migrate_only:
        migrate(make_engine(settings.database_url))
        return 0
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                timeout_graceful_shutdown=5)
    return 0
