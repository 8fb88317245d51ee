"""The API's Prometheus metrics, read from the store at each scrape (so every replica serves the same)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from api.store import Store
from api.store.models import utcnow

EVAL_PREFIX = "eval/"
"""Heartbeat metrics named eval/<metric> are retrieval results; every other one is a loss term."""
NAN = float("nan")


class RunCollector(Collector):
    """tcl_runs{state}; per recent run: step, samples/s, loss terms, eval recall, checkpoints."""

    def __init__(self, store: Store, finished_ttl_seconds: float) -> None:
        self.store = store
        self.finished_ttl = timedelta(seconds=finished_ttl_seconds)

    def collect(self) -> Iterator[Metric]:
        runs_by_state = GaugeMetricFamily("tcl_runs", "Runs in each state.", labels=["state"])
        for state, count in self.store.state_counts().items():
            runs_by_state.add_metric([state.value], count)
        yield runs_by_state

        info = GaugeMetricFamily("tcl_run_info", "1 per run, with its name, state and launcher.",
                                 labels=["run_id", "name", "state", "launcher"])
        step = GaugeMetricFamily("tcl_run_step", "Last optimizer step reported by the run.", labels=["run_id"])
        total = GaugeMetricFamily("tcl_run_total_steps", "Steps the run will take.", labels=["run_id"])
        speed = GaugeMetricFamily("tcl_run_samples_per_second", "Training throughput (all ranks).", labels=["run_id"])
        loss = GaugeMetricFamily("tcl_run_loss", "Last reported value of each loss term.", labels=["run_id", "term"])
        recall = GaugeMetricFamily("tcl_run_eval_recall", "Last retrieval evaluation, per recall metric.",
                                   labels=["run_id", "metric"])
        checkpoints = CounterMetricFamily("tcl_checkpoints_registered", "Checkpoints registered by the run.",
                                          labels=["run_id"])
        last_checkpoint = GaugeMetricFamily("tcl_run_last_checkpoint_timestamp_seconds",
                                            "When the run's last checkpoint was registered (Unix time).",
                                            labels=["run_id"])
        runs = self.store.runs_for_metrics(utcnow() - self.finished_ttl)
        summary = self.store.checkpoint_summary([run.id for run in runs])
        for run in runs:
            info.add_metric([run.id, run.name, run.state, run.launcher], 1)
            if run.step is not None:
                step.add_metric([run.id], run.step)
            if run.total_steps is not None:
                total.add_metric([run.id], run.total_steps)
            if run.samples_per_sec is not None:
                speed.add_metric([run.id], run.samples_per_sec)
            for name, value in (run.metrics or {}).items():
                value = NAN if value is None else value
                if name.startswith(EVAL_PREFIX):
                    recall.add_metric([run.id, name.removeprefix(EVAL_PREFIX)], value)
                else:
                    loss.add_metric([run.id, name], value)
            count, last = summary.get(run.id, (0, None))
            checkpoints.add_metric([run.id], count)
            if last is not None:
                last_checkpoint.add_metric([run.id], last.timestamp())
        yield from (info, step, total, speed, loss, recall, checkpoints, last_checkpoint)
