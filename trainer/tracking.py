"""Experiment trackers (TensorBoard, MLflow, Weights & Biases) fed from the records of metrics.jsonl.

One small interface (torchtitan's BaseLogger habit): a `Tracker` per backend behind `Tracking`, the
container rank 0's MetricsLog forwards every record to. Each backend's library is imported only when
its tracker is configured (`log.trackers`), from the extras of the same names.

A relaunched attempt continues the same tracked run: `output_dir/tracking.json` holds the run's key
(the API's TCL_RUN_ID when launched by it, else a key made on the first start), counts the starts
(the attempt) and says where each tracker shows the run (`locations`: the MLflow run URL, the TensorBoard
logdir, the W&B run). TensorBoard writes to the same logdir, MLflow finds its run by the `tcl.run_key` tag,
W&B resumes the run whose id is the key. MetricsLog forwards only steps beyond those already logged,
so a resumed run's replayed steps are not sent twice.

A tracker that fails (server down, disk full) logs one warning and is dropped; training goes on.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any, Protocol

from trainer.config import RunConfig
from trainer.control_plane import ENV_RUN_ID

logger = logging.getLogger(__name__)

STATE_NAME = "tracking.json"


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of a metrics.jsonl record under tracker names: `loss/<term>`, `lr`, `temp`, `alpha`,
    `samples_per_sec`, `data_wait_frac`, `step_time`, `epoch`, `mfu`, `gpu_memory` (train) and
    `eval/<metric>` (eval)."""
    if record["kind"] == "eval":
        return {f"eval/{k}": float(v) for k, v in record["recall"].items()}
    out = {f"loss/{k}": float(v) for k, v in record["losses"].items()}
    for key in ("lr", "temp", "alpha", "samples_per_sec", "data_wait_frac", "step_time", "epoch", "mfu", "gpu_memory"):
        if record.get(key) is not None:
            out[key] = float(record[key])
    return out


def flat_params(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A config tree as dotted keys -> strings (what every tracker accepts as hyper-parameters)."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if not isinstance(value, str) else value
    return out


class Identity:
    """Which tracked run this process belongs to: a stable key and the number of this start."""

    def __init__(self, key: str, attempt: int, first: bool) -> None:
        self.key, self.attempt, self.first = key, attempt, first

    @classmethod
    def claim(cls, out: Path, environ: dict[str, str] | None = None) -> Identity:
        """Read and bump output_dir/tracking.json (written atomically); the first start creates it."""
        env = os.environ if environ is None else environ
        path = out / STATE_NAME
        state = json.loads(path.read_text()) if path.is_file() else {}
        first = not state
        key = state.get("run_key") or env.get(ENV_RUN_ID) or uuid.uuid4().hex
        state = {"run_key": key, "attempt": int(state.get("attempt", 0)) + 1, "locations": state.get("locations", {})}
        out.mkdir(parents=True, exist_ok=True)
        _write_json(path, state)
        return cls(key, state["attempt"], first)

    def record_locations(self, out: Path, locations: dict[str, str]) -> None:
        """Where this attempt's trackers show the run (for people and tools reading output_dir)."""
        path = out / STATE_NAME
        _write_json(path, {**json.loads(path.read_text()), "locations": locations})


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


class Tracker(Protocol):
    """One backend. `location` says where a person finds the run (a URL or a folder)."""

    name: str
    location: str

    def log_params(self, params: dict[str, str]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_artifact(self, path: Path) -> None: ...

    def close(self) -> None: ...


class TensorBoardTracker:
    """Event files in output_dir/tensorboard (torch.utils.tensorboard); the config as hparams and text,
    metrics.png as an image, config.yaml as text."""

    name = "tensorboard"

    def __init__(self, logdir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(logdir))
        self.location = str(logdir.resolve())
        self._step = 0

    def log_params(self, params: dict[str, str]) -> None:
        from torch.utils.tensorboard.summary import hparams

        for summary in hparams(params, {}):
            self.writer.file_writer.add_summary(summary)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self._step = step
        self.writer.flush()

    def log_artifact(self, path: Path) -> None:
        if path.suffix == ".png":
            import numpy as np
            from PIL import Image

            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            self.writer.add_image(path.name, pixels, self._step, dataformats="HWC")
        else:
            self.writer.add_text(path.name, "```\n" + path.read_text() + "\n```", self._step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MLflowTracker:
    """A run in an MLflow tracking server or store, found again by its `tcl.run_key` tag."""

    name = "mlflow"

    def __init__(self, uri: str | None, experiment: str, identity: Identity, tags: dict[str, str]) -> None:
        # The client retries a refused request for minutes by default; a run must not stall that long.
        for var, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                           ("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")):
            os.environ.setdefault(var, value)
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        runs = self.client.search_runs([experiment_id], f"tags.`tcl.run_key` = '{identity.key}'", max_results=1)
        if runs:
            self.run_id = runs[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            self.run_id = self.client.create_run(experiment_id, tags={"tcl.run_key": identity.key}).info.run_id
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)
        base = self.client.tracking_uri.rstrip("/")
        self.location = (f"{base}/#/experiments/{experiment_id}/runs/{self.run_id}" if base.startswith("http")
                         else f"{base} run {self.run_id}")

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(key, value[:6000]) for key, value in params.items()]
        for start in range(0, len(items), 100):  # the server's limit per batch
            self.client.log_batch(self.run_id, params=items[start:start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def close(self) -> None:
        self.client.set_terminated(self.run_id, "FINISHED")


class WandbTracker:
    """A W&B run whose id is the run key, resumed by every attempt (WANDB_MODE=offline needs no server)."""

    name = "wandb"

    def __init__(self, project: str, out: Path, identity: Identity, config: dict[str, Any]) -> None:
        import wandb

        self.run = wandb.init(
            project=project, id=identity.key, resume="allow", dir=str(out), config=config,
            tags=[f"attempt={identity.attempt}"], settings=wandb.Settings(console="off", silent=True),
        )
        self.location = self.run.url or self.run.dir

    def log_params(self, params: dict[str, str]) -> None:
        pass  # the config was given to wandb.init (W&B's own place for hyper-parameters)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_artifact(self, path: Path) -> None:
        import wandb

        artifact = wandb.Artifact(f"{self.run.id}-{path.stem}", type="run-file")
        artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def close(self) -> None:
        self.run.finish()


class Tracking:
    """The configured trackers; every call reaches each live one, and a failing one is dropped with a warning."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = trackers

    @classmethod
    def open(cls, cfg: RunConfig, out: Path, environ: dict[str, str] | None = None) -> Tracking:
        """Start (or continue) the tracked run of cfg; a tracker that cannot start is left out."""
        if not cfg.log.trackers:
            return cls([])
        identity = Identity.claim(out, environ)
        experiment = cfg.log.experiment or cfg.name
        tags = {"tcl.run_key": identity.key, "tcl.attempt": str(identity.attempt), "tcl.output_dir": str(out)}
        config = cfg.model_dump(mode="json")
        builders = {
            "tensorboard": lambda: TensorBoardTracker(out / "tensorboard"),
            "mlflow": lambda: MLflowTracker(cfg.log.mlflow_uri, experiment, identity, tags),
            "wandb": lambda: WandbTracker(experiment, out, identity, config),
        }
        tracking = cls([])
        for name in cfg.log.trackers:
            try:
                tracker = builders[name]()
            except Exception as error:  # a tracker must never stop a run
                logger.warning("tracker %s could not start, training goes on without it: %s", name, error)
                continue
            logger.info("tracking with %s: %s", name, tracker.location)
            tracking.trackers.append(tracker)
        if identity.first:
            tracking._each("log_params", flat_params(config))
        identity.record_locations(out, tracking.locations)
        return tracking

    @property
    def locations(self) -> dict[str, str]:
        """Where each live tracker shows the run."""
        return {t.name: t.location for t in self.trackers}

    def log(self, record: dict[str, Any]) -> None:
        """One metrics.jsonl record (train or eval) at its step."""
        self._each("log_metrics", scalars(record), record["step"])

    def log_artifacts(self, *paths: Path) -> None:
        for path in paths:
            if path.is_file():
                self._each("log_artifact", path)

    def close(self) -> None:
        self._each("close")
        self.trackers = []

    def _each(self, method: str, *args: Any) -> None:
        for tracker in list(self.trackers):
            try:
                getattr(tracker, method)(*args)
            except Exception as error:  # one warning, then the run goes on without this tracker
                logger.warning("tracker %s failed (%s); training goes on without it: %s", tracker.name, method, error)
                self.trackers.remove(tracker)
