"""Run outputs: the JSONL + PNG pair, the log line, and the per-rank Prometheus gauges over real HTTP."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

from trainer.metrics import MetricsLog, PrometheusExporter, format_train_line
from trainer.plots import plot_run, read_records


def _record(step: int, loss: float, **extra: float) -> dict:
    return {"kind": "train", "step": step, "total_steps": 4, "epoch": 0, "losses": {"loss": loss, "itm": 0.6},
            "lr": 1e-4, "temp": 0.07, "alpha": 0.4, "samples_per_sec": 32.0, "data_wait_frac": 0.25,
            "step_time": 0.5, **extra}


def test_jsonl_keeps_the_last_record_of_a_step_and_plots(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "run" / "metrics.jsonl", enabled=True)
    for step, loss in ((1, 3.0), (2, 2.5), (2, 2.4), (3, 2.0)):  # step 2 logged again after a resume
        log.write(_record(step, loss))
    log.write({"kind": "eval", "step": 3, "recall": {k: 10.0 for k in ("tr_r1", "tr_r5", "ir_r1", "ir_r5", "r_mean")}})
    MetricsLog(tmp_path / "other" / "metrics.jsonl", enabled=False).write(_record(1, 1.0))
    assert not (tmp_path / "other").exists()  # ranks other than 0 write nothing

    train, evals = read_records(log.path)
    assert [(r["step"], r["losses"]["loss"]) for r in train] == [(1, 3.0), (2, 2.4), (3, 2.0)]
    assert [e["step"] for e in evals] == [3]
    png = plot_run(log.path, tmp_path / "run" / "metrics.png", title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_log_line_names_every_number() -> None:
    line = format_train_line(_record(2, 2.5, mfu=0.41))
    for fragment in ("step 2/4", "loss=2.5000", "itm=0.6000", "lr=1.000e-04", "temp=0.0700", "samples/s=32.0",
                     "data_wait=25.0%", "step_time=0.500s", "mfu=41.0%"):
        assert fragment in line
    assert "mfu" not in format_train_line(_record(2, 2.5))


def test_prometheus_gauges_over_http() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exporter = PrometheusExporter(port - 1, local_rank=1, rank=3)  # serves on port + local_rank
    exporter.update(_record(7, 1.25, mfu=0.5), gpu_memory=123)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'tcl_train_step{rank="3"} 7.0' in text
    assert 'tcl_train_loss{rank="3",term="loss"} 1.25' in text
    assert 'tcl_train_data_wait_seconds{rank="3"} 0.125' in text  # 0.5 s x 25%
    assert 'tcl_train_mfu{rank="3"} 0.5' in text and 'tcl_gpu_memory_bytes{rank="3"} 123.0' in text
    assert not PrometheusExporter(None, 0, 0).enabled
