"""Settings of the control plane, read from the environment (prefix TCL_API_)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LauncherName = Literal["local", "kubernetes"]


class Settings(BaseSettings):
    """Everything the service needs; paths are made absolute when loaded."""

    model_config = SettingsConfigDict(env_prefix="TCL_API_", extra="ignore", frozen=True)

    token: SecretStr = Field(min_length=16)
    """The operators' bearer token. Required: the service does not start without one."""
    read_token: SecretStr | None = Field(None, min_length=16)
    """A read-only bearer token: lists and reads runs, logs, checkpoints and /metrics, changes nothing
    (what Prometheus and dashboards get)."""
    database_url: str = "sqlite:///tcl-api.db"
    """SQLAlchemy URL: a SQLite file by default, `postgresql+psycopg://...` in production."""
    auto_migrate: bool = True
    """Upgrade the database schema to the latest migration at start-up."""
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    public_url: str | None = None
    """Where local trainers reach the API (TCL_API_URL); default http://<host>:<port>."""
    metrics_auth: bool = True
    """Require the bearer token on /metrics too (Prometheus sends it with `authorization`)."""
    metrics_finished_ttl_seconds: float = Field(3600.0, ge=0)
    """Finished runs stay in /metrics this long, so that their last values get scraped."""
    max_request_bytes: int = Field(1 << 20, ge=1024)
    """Bodies larger than this are refused with 413."""
    log_level: str = "INFO"

    runs_root: Path = Path("runs")
    """Each run gets `<runs_root>/<run id>/`: its config, log and the trainer's output_dir."""
    data_roots: list[Path] = [Path("data")]
    """Local data paths of a run (data.train, data.eval, model init paths) must lie under one of these."""
    config_roots: list[Path] = [Path("configs")]
    """Config files named by a request must lie under one of these (shipped presets are always allowed)."""
    workdir: Path = Path(".")
    """Relative paths in a request are resolved against this folder."""
    allow_s3: bool = True
    """Accept s3:// data locations."""
    s3_buckets: list[str] | None = None
    """Buckets that s3:// locations of a run may name (JSON list); None accepts any bucket."""
    s3_check_index: bool = False
    """Read each s3:// split's index.json (through S3_ENDPOINT_URL) before accepting a run, as local ones are;
    off by default because the API may hold no credentials for the trainers' buckets."""
    run_max_ranks: int | None = Field(None, ge=1)
    """Most ranks (nodes x procs_per_node) one run may ask for; None: the host's cores for the local launcher,
    no cap for Kubernetes."""
    run_max_gpus: int | None = Field(None, ge=0)
    """Most GPUs one run may ask for; None: the host's GPUs for the local launcher, no cap for Kubernetes."""

    launchers: list[LauncherName] = ["local"]
    """Launchers this server offers."""
    max_active_runs: int = Field(4, ge=1)
    """Runs beyond this many launched at once wait in PENDING."""
    max_attempts: int = Field(3, ge=1)
    """Upper bound a request may ask for (a failed attempt is relaunched while attempts remain)."""
    poll_interval_seconds: float = Field(2.0, gt=0)
    """How often the supervisor polls launched runs."""
    cancel_grace_seconds: float = Field(120.0, ge=0)
    """After a cancel, the trainer gets this long to stop on SIGTERM before it is killed: long enough to
    write a checkpoint of the largest model served (also the pods' terminationGracePeriodSeconds)."""
    heartbeat_timeout_seconds: float = Field(900.0, gt=0)
    """A RUNNING attempt silent this long (hung in a collective, node lost) is killed and failed or relaunched.
    Longer than the slowest gap between two heartbeats: an evaluation or a checkpoint save."""
    starting_timeout_seconds: float = Field(1800.0, gt=0)
    """A STARTING attempt without a first heartbeat this long (a pod stuck Pending, an image pull that hangs)
    is stopped and failed or relaunched."""
    supervisor_stale_seconds: float = Field(120.0, gt=0)
    """/readyz fails when the supervisor has not completed a tick for this long."""
    run_users: list[str] = []
    """Local launcher: user names to run trainers as, one per launched run (the API must be root). Each run's
    folder is owned by its user with mode 0700, so a run reads neither another run's files and token nor the
    API's. Empty: trainers run as the API's own user (no isolation between runs)."""

    local_runner: Literal["deepspeed", "python"] = "deepspeed"
    """`deepspeed`: the DeepSpeed launcher starts procs_per_node ranks; `python`: one plain process."""
    trainer_script: Path | None = None
    """The script the local launcher runs; None = the installed trainer/main.py."""

    kube_config: Path | None = None
    """kubeconfig file for the Kubernetes launcher; None = the in-cluster service account."""
    kube_namespace: str = "default"
    kube_image: str = "tcl-trainer:latest"
    kube_flavor: Literal["pytorchjob", "trainjob", "indexed-job"] = "pytorchjob"
    kube_api_url: str | None = None
    """Where pods reach the API (TCL_API_URL); default public_url."""
    kube_output_root: str = "/runs"
    """output_dir of a Kubernetes run is `<kube_output_root>/<run id>` (a volume path or s3://)."""
    kube_output_pvc: str | None = None
    """A ReadWriteMany PersistentVolumeClaim mounted at kube_output_root (multi-node checkpoints need one)."""
    kube_s3_secret: str | None = None
    """Secret with AWS_* keys and S3_ENDPOINT_URL mounted into training pods."""
    kube_cpu_per_node: str = "16"
    """CPU request and limit of each training pod."""
    kube_memory_per_node: str = "128Gi"
    """Memory request and limit of each training pod."""
    kube_cache_size: str = "200Gi"
    """Size limit of each training pod's shard cache volume."""
    kube_request_timeout_seconds: float = Field(30.0, gt=0)
    """Every Kubernetes API call gives up after this long (a hung API server must not stall supervision)."""

    @field_validator("runs_root", "workdir", "trainer_script", "kube_config")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        return None if path is None else path.expanduser().resolve()

    @field_validator("data_roots", "config_roots")
    @classmethod
    def _absolute_all(cls, paths: list[Path]) -> list[Path]:
        return [p.expanduser().resolve() for p in paths]

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if not self.launchers:
            raise ValueError("launchers: enable at least one of local, kubernetes")
        if self.run_users and len(self.run_users) < self.max_active_runs:
            raise ValueError(f"run_users: {len(self.run_users)} users for max_active_runs={self.max_active_runs}:"
                             " every launched run needs a user of its own")
        return self

    @property
    def trainer_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def pod_trainer_url(self) -> str:
        return self.kube_api_url or self.trainer_url


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (a FastAPI dependency that tests override)."""
    return Settings()  # type: ignore[call-arg]  # token comes from the environment
