"""/healthz (the process answers) and /readyz (the database answers and the supervisor runs). No auth."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from sqlalchemy.exc import SQLAlchemyError

from api.deps import ServicesDep
from api.schemas import Health

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", responses={503: {"model": Health}})
def readyz(services: ServicesDep, response: Response) -> Health:
    try:
        services.store.ping()
    except SQLAlchemyError as err:
        log.warning("not ready: database: %s", err)
        response.status_code = 503
        return Health(status="unavailable", detail="database unreachable")
    if not services.supervisor.alive:
        response.status_code = 503
        return Health(status="unavailable", detail="supervisor stopped")
    return Health(status="ok")
