"""FastAPI dependencies: settings, the services built at start-up, and the callers: operators (who may
change things), readers (the read-only token: lists, logs, checkpoints, metrics) and runs (their own
reports, with the current attempt's token)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.launchers.base import Launcher
from api.security import hash_token, tokens_equal
from api.settings import Settings, get_settings
from api.store import NotFound, Store
from api.supervisor import Supervisor


@dataclass(frozen=True)
class Services:
    """What the app's lifespan builds: the store, the enabled launchers and the supervisor."""

    store: Store
    launchers: dict[str, Launcher]
    supervisor: Supervisor


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_store(services: Annotated[Services, Depends(get_services)]) -> Store:
    return services.store


RunId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="A run id (32 hex digits).")]
CheckpointId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="A checkpoint id (32 hex digits).")]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ServicesDep = Annotated[Services, Depends(get_services)]
StoreDep = Annotated[Store, Depends(get_store)]

# auto_error=False: a missing token must be a 401 with WWW-Authenticate, not FastAPI's 403.
_bearer = HTTPBearer(auto_error=False, description="The operators' token (TCL_API_TOKEN) or, for a run's"
                                                   " own reports, its run token (TCL_RUN_TOKEN).")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _unauthorized(credentials: HTTPAuthorizationCredentials | None) -> HTTPException:
    if credentials is None:
        return HTTPException(status.HTTP_401_UNAUTHORIZED, "a bearer token is required",
                             headers={"WWW-Authenticate": 'Bearer realm="tcl"'})
    return HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid token",
                         headers={"WWW-Authenticate": 'Bearer realm="tcl", error="invalid_token"'})


def _is_operator(credentials: HTTPAuthorizationCredentials | None, settings: Settings) -> bool:
    return credentials is not None and tokens_equal(credentials.credentials, settings.token.get_secret_value())


def _is_reader(credentials: HTTPAuthorizationCredentials | None, settings: Settings) -> bool:
    return (credentials is not None and settings.read_token is not None
            and tokens_equal(credentials.credentials, settings.read_token.get_secret_value()))


def require_operator(credentials: Credentials, settings: SettingsDep) -> None:
    if not _is_operator(credentials, settings):
        if _is_reader(credentials, settings):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "the read-only token cannot change anything")
        raise _unauthorized(credentials)


def require_reader(credentials: Credentials, settings: SettingsDep) -> None:
    """The operator token or the read-only one."""
    if not (_is_operator(credentials, settings) or _is_reader(credentials, settings)):
        raise _unauthorized(credentials)


def require_metrics_access(credentials: Credentials, settings: SettingsDep) -> None:
    if settings.metrics_auth:
        require_reader(credentials, settings)


def require_run_token(run_id: str, credentials: Credentials, store: StoreDep) -> str:
    """The caller holds the current attempt's token of this run; returns its hash. (`run_id` is taken
    unvalidated here so that a caller without a token learns nothing but 401.)"""
    try:
        expected = store.get_run(run_id).token_hash
    except NotFound:
        expected = None  # same answer as a wrong token: a run id alone reveals nothing
    given = None if credentials is None else hash_token(credentials.credentials)
    if given is None or expected is None or not tokens_equal(given, expected):
        raise _unauthorized(credentials)
    return given


def require_run_or_operator(run_id: str, credentials: Credentials, store: StoreDep, settings: SettingsDep) -> None:
    if not _is_operator(credentials, settings):
        require_run_token(run_id, credentials, store)


Operator = Depends(require_operator)
Reader = Depends(require_reader)
RunCaller = Depends(require_run_token)
RunTokenHash = Annotated[str, Depends(require_run_token)]
RunOrOperator = Depends(require_run_or_operator)
MetricsReader = Depends(require_metrics_access)
