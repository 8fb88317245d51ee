"""Where the run's numbers go: a JSONL file and the log (rank 0), Prometheus gauges (every rank)."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainer.tracking import Tracking

logger = logging.getLogger(__name__)


class MetricsLog:
    """Append-only JSONL of train and eval records next to the checkpoints; only rank 0 writes.

    With `tracking`, each record also goes to the experiment trackers, unless an earlier attempt of the
    run already logged its step (a resumed run replays the steps after its checkpoint)."""

    def __init__(self, path: Path, enabled: bool, tracking: Tracking | None = None) -> None:
        self.path = path
        self.enabled = enabled
        self.tracking = tracking if enabled else None
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._logged = last_steps(path) if self.tracking is not None else {}

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tracking is not None and record["step"] > self._logged.get(record["kind"], -1):
            self.tracking.log(record)

    def close(self, *artifacts: Path) -> None:
        """Hand the run's files (metrics.png, config.yaml) to the trackers and end their runs."""
        if self.tracking is not None:
            self.tracking.log_artifacts(*artifacts)
            self.tracking.close()


def last_steps(path: Path) -> dict[str, int]:
    """Kind ("train", "eval") -> the highest step already in a metrics.jsonl (empty for a new run)."""
    steps: dict[str, int] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):  # a line cut off by a crash
                record = json.loads(line)
                steps[record["kind"]] = max(steps.get(record["kind"], -1), int(record["step"]))
    return steps


def format_train_line(record: dict[str, Any]) -> str:
    """One log line: step, every loss term, lr, temperature, throughput, data-wait fraction, step time."""
    terms = " ".join(f"{k}={v:.4f}" for k, v in record["losses"].items())
    return (
        f"step {record['step']}/{record['total_steps']} epoch {record['epoch']} {terms} lr={record['lr']:.3e}"
        f" temp={record['temp']:.4f} alpha={record['alpha']:.3f} samples/s={record['samples_per_sec']:.1f}"
        f" data_wait={100 * record['data_wait_frac']:.1f}% step_time={record['step_time']:.3f}s"
        + (f" mfu={100 * record['mfu']:.1f}%" if "mfu" in record else "")
    )


def format_eval_line(step: int, recall: dict[str, float]) -> str:
    keys = ("tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10", "r_mean")
    return f"eval step {step}: " + " ".join(f"{k}={recall[k]:.2f}" for k in keys)


class PrometheusExporter:
    """Per-rank gauges served on metrics_port + local_rank (None: disabled)."""

    def __init__(self, port: int | None, local_rank: int, rank: int) -> None:
        self.enabled = port is not None
        if not self.enabled:
            return
        from prometheus_client import CollectorRegistry, Gauge, start_http_server

        self.registry = CollectorRegistry()
        labels = {"rank": str(rank)}
        self._labels = labels

        def gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, ("rank", *extra), registry=self.registry)

        self.step = gauge("tcl_train_step", "Optimizer steps done")
        self.step_seconds = gauge("tcl_train_step_seconds", "Mean wall time of a training step")
        self.data_wait = gauge("tcl_train_data_wait_seconds", "Mean time per step waiting for the loader")
        self.samples = gauge("tcl_train_samples_per_second", "Training throughput over all ranks")
        self.loss = gauge("tcl_train_loss", "Loss terms at the last log step", ("term",))
        self.gpu_memory = gauge("tcl_gpu_memory_bytes", "Peak GPU memory allocated by this rank")
        self.mfu = gauge("tcl_train_mfu", "Model FLOPs utilisation of this rank's accelerator (0..1)")
        start_http_server(port + local_rank, registry=self.registry)
        logger.info("prometheus metrics on port %d", port + local_rank)

    def update(self, record: dict[str, Any], gpu_memory: int | None) -> None:
        if not self.enabled:
            return
        r = self._labels["rank"]
        self.step.labels(r).set(record["step"])
        self.step_seconds.labels(r).set(record["step_time"])
        self.data_wait.labels(r).set(record["step_time"] * record["data_wait_frac"])
        self.samples.labels(r).set(record["samples_per_sec"])
        for term, value in record["losses"].items():
            self.loss.labels(r, term).set(value)
        if gpu_memory is not None:
            self.gpu_memory.labels(r).set(gpu_memory)
        if "mfu" in record:
            self.mfu.labels(r).set(record["mfu"])
