"""Request and response models of the REST API (the OpenAPI schema is generated from these)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.settings import LauncherName
from api.states import RunState

BIG = 2**62
"""Upper bound of integer fields: SQL BIGINT holds it on every backend."""
MetricName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_./-]{1,64}$")]
Metrics = Annotated[dict[MetricName, float | None], Field(max_length=256)]
"""Scalar metrics by name; null stands for a non-finite value (a diverged loss)."""
Tracking = Annotated[
    dict[Annotated[str, Field(pattern=r"^[a-z]{1,32}$")], Annotated[str, Field(max_length=2048)]], Field(max_length=8)
]
"""Tracker -> where it shows the run: `{"mlflow": "http://mlflow:5000/#/experiments/1/runs/ab12",
"tensorboard": "/runs/x/tensorboard"}` (trainer.tracking)."""


class Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Resources(Schema):
    nodes: int = Field(1, ge=1, le=1024)
    procs_per_node: int = Field(1, ge=1, le=64)
    """Ranks per node."""
    gpus_per_proc: int = Field(0, ge=0, le=8)
    """GPUs per rank; 0 trains on CPU."""


class PresetConfig(Schema):
    preset: str = Field(min_length=1, max_length=255)
    """A shipped preset name (`tiny`) or a YAML file under one of the configured config roots."""
    overrides: list[Annotated[str, Field(max_length=1024)]] = Field(default_factory=list, max_length=256)
    """Dotted `key=value` overrides, e.g. `optim.lr=1e-4`."""


class RunCreate(Schema):
    config: Annotated[PresetConfig | dict[str, Any], Field(union_mode="left_to_right")]
    """The trainer's config tree, or a preset plus overrides. `output_dir` is set by the server."""
    resources: Resources = Resources()
    launcher: LauncherName = "local"
    max_attempts: int = Field(1, ge=1, le=100)
    """Attempts before the run is FAILED; a relaunched trainer resumes from its latest checkpoint."""


class Progress(Schema):
    step: int | None = None
    total_steps: int | None = None
    epoch: float | None = None
    samples_per_sec: float | None = None
    eta_seconds: float | None = None
    """Remaining steps at the step rate observed since the attempt's first heartbeat."""
    metrics: dict[str, float | None] = {}
    last_heartbeat_at: datetime | None = None


class CheckpointCreate(Schema):
    uri: str = Field(min_length=1, max_length=2048)
    step: int = Field(ge=0, le=BIG)
    metrics: Metrics = {}
    size_bytes: int = Field(ge=0, le=BIG)
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    """sha256 of the checkpoint's manifest of per-file sha256s (trainer.control_plane.checkpoint_digest)."""


class CheckpointPublic(Schema):
    id: str
    run_id: str
    uri: str
    step: int
    metrics: dict[str, float | None]
    size_bytes: int
    digest: str
    created_at: datetime
    is_best: bool
    pinned: bool
    """Kept by the trainer's pruning whatever keep_last says (the best is kept too)."""
    deleted_at: datetime | None
    """When the trainer reported it pruned (listed only with include_deleted=true)."""
    verification: Literal["pending", "verified", "mismatch", "missing", "remote"]
    """The API's own check of a file:// checkpoint's digest against its files; `remote` (s3://) is not checked."""


class CheckpointList(Schema):
    items: list[CheckpointPublic]
    total: int
    limit: int
    offset: int


CheckpointUris = Annotated[list[Annotated[str, Field(min_length=1, max_length=2048)]], Field(max_length=1000)]


class KeptCheckpoints(Schema):
    """What the trainer's keep_last pruning must not delete: the run's best and its pinned checkpoints."""

    uris: CheckpointUris


class DeletedCheckpoints(Schema):
    """Checkpoints the trainer pruned (their URIs as registered)."""

    uris: CheckpointUris

class RunPublic(Schema):
    id: str
    name: str
    state: RunState
    reason: str | None
    """Why the run failed or was cancelled."""
    launcher: LauncherName
    resources: Resources
    attempt: int
    """Launches so far (0 while PENDING)."""
    max_attempts: int
    output_dir: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    progress: Progress
    latest_checkpoint: CheckpointPublic | None
    best_checkpoint_id: str | None
    config: dict[str, Any]
    tracking: dict[str, str] = {}
    """Where the run is tracked (log.trackers): the MLflow run URL, the TensorBoard logdir, the W&B run."""


class RunList(Schema):
    items: list[RunPublic]
    total: int
    limit: int
    offset: int


class Heartbeat(Schema):
    step: int = Field(ge=0, le=BIG)
    total_steps: int | None = Field(None, ge=0, le=BIG)
    epoch: float | None = Field(None, ge=0)
    samples_per_sec: float | None = Field(None, ge=0)
    metrics: Metrics = {}
    tracking: Tracking | None = None
    """Where the run is tracked; sent once per attempt, kept until an attempt sends another."""


class HeartbeatReply(Schema):
    state: RunState
    cancel_requested: bool
    """True once the run is CANCELLING: the trainer may save and stop before it is signalled."""


class ErrorDetail(Schema):
    """Every error answer: a readable message (or, for a malformed request, FastAPI's list of problems)."""

    detail: str | list[dict[str, Any]]


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route answers with."""
    descriptions = {
        400: "The body cannot be parsed (not JSON, or a malformed Content-Length).",
        401: "Missing or invalid bearer token (with a WWW-Authenticate challenge).",
        404: "No such run or checkpoint.",
        409: "The run is not in a state that allows this.",
        413: "The request body is over the server's limit.",
        422: "The request, its config or its paths are not valid; the message says which.",
    }
    return {code: {"model": ErrorDetail, "description": descriptions[code]} for code in codes}


class Health(Schema):
    status: Literal["ok", "unavailable"]
    detail: str | None = None
    leader: bool | None = None
    """/readyz: whether this instance holds the leader lock and supervises runs (the others serve reads)."""
    supervisor_tick_age_seconds: float | None = None
    """/readyz: seconds since the supervisor last completed a tick."""
