"""/healthz (the process answers) and /readyz (the database answers and the supervisor ticks). No auth."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from sqlalchemy.exc import SQLAlchemyError

from api.deps import ServicesDep, SettingsDep
from api.schemas import Health

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", responses={503: {"model": Health}})
def readyz(services: ServicesDep, settings: SettingsDep, response: Response) -> Health:
    """Ready when the database answers and the supervisor's last tick (a standby's attempt at the leader
    lock counts) completed within supervisor_stale_seconds; says whether this instance supervises."""
    supervisor = services.supervisor
    age = supervisor.tick_age()
    facts = {"leader": supervisor.leader, "supervisor_tick_age_seconds": None if age is None else round(age, 3)}
    try:
        services.store.ping()
    except SQLAlchemyError as err:
        log.warning("not ready: database: %s", err)
        response.status_code = 503
        return Health(status="unavailable", detail="database unreachable", **facts)
    if not supervisor.alive:
        response.status_code = 503
        return Health(status="unavailable", detail="supervisor stopped", **facts)
    if age is None or age > settings.supervisor_stale_seconds:
        response.status_code = 503
        last = "has not completed a tick yet" if age is None else f"last completed a tick {age:.0f} s ago"
        return Health(status="unavailable", detail=f"supervisor {last} (supervisor_stale_seconds="
                                                   f"{settings.supervisor_stale_seconds:g})", **facts)
    return Health(status="ok", **facts)
