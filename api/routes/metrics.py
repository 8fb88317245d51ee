"""/metrics: Prometheus exposition of the runs (bearer token unless metrics_auth is off)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import MetricsReader
from api.schemas import error_responses

router = APIRouter(tags=["metrics"], responses=error_responses(401))


@router.get("/metrics", dependencies=[MetricsReader], response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."}})
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
