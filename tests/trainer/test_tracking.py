"""Experiment tracking against the real backends: TensorBoard event files read back with EventAccumulator,
a real `mlflow server` on loopback (SQLite store, artifacts served through it) read back with its client,
W&B in offline mode with its run directory read back. Each test runs two attempts of one run: the second
resumes from a checkpoint at step 10, so it replays step 20 (with other numbers) before reaching step 30."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from trainer.config import load
from trainer.metrics import MetricsLog
from trainer.plots import plot_run
from trainer.tracking import Tracking

RUN_ID = "run-0123abcd"


def _train(step: int, loss: float) -> dict:
    return {"kind": "train", "step": step, "total_steps": 30, "epoch": 0, "losses": {"loss": loss, "itm": loss / 4},
            "lr": 1e-4 * step, "temp": 0.07, "alpha": 0.4, "samples_per_sec": 32.0, "data_wait_frac": 0.25,
            "step_time": 0.5, "time": time.time()}


def _eval(step: int, r_mean: float) -> dict:
    recall = {k: r_mean / 2 for k in ("tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10")}
    return {"kind": "eval", "step": step, "recall": {**recall, "r_mean": r_mean}, "time": time.time()}


def _attempt(out: Path, trackers: str, records: list[dict], environ: dict[str, str], **overrides: str) -> dict:
    """One launch of the trainer on `out`, as loop.py wires it: trackers -> MetricsLog -> records -> close.
    Returns where the trackers showed the run."""
    extra = [f"log.{k}={v}" for k, v in overrides.items()]
    cfg = load("tiny", [f"output_dir={out}", f"log.trackers=[{trackers}]", *extra])
    tracking = Tracking.open(cfg, out, environ)
    log = MetricsLog(out / "metrics.jsonl", enabled=True, tracking=tracking)
    (out / "config.yaml").write_text(f"name: {cfg.name}\n")
    for record in records:
        log.write(record)
    plot_run(log.path, out / "metrics.png")
    locations = tracking.locations
    log.close(out / "metrics.png", out / "config.yaml")
    return locations


FIRST = [_train(10, 3.0), _train(20, 2.0), _eval(20, 12.0)]
SECOND = [_train(20, 2.5), _eval(20, 99.0), _train(30, 1.0), _eval(30, 20.0)]  # step 20 replayed after resume
EXPECTED_LOSS = [(10, 3.0), (20, 2.0), (30, 1.0)]  # the replayed step is not logged again
EXPECTED_R_MEAN = [(20, 12.0), (30, 20.0)]


def test_tensorboard_event_files(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    out = tmp_path / "run"
    first = _attempt(out, "tensorboard", FIRST, {})
    _attempt(out, "tensorboard", SECOND, {})
    assert first == {"tensorboard": str((out / "tensorboard").resolve())}
    state = json.loads((out / "tracking.json").read_text())
    assert state["attempt"] == 2 and state["locations"] == first

    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss/loss")] == EXPECTED_LOSS
    assert [(e.step, e.value) for e in events.Scalars("eval/r_mean")] == EXPECTED_R_MEAN
    assert [round(e.value, 9) for e in events.Scalars("lr")] == [1e-3, 2e-3, 3e-3]
    for tag in ("loss/itm", "temp", "alpha", "samples_per_sec", "data_wait_frac", "step_time", "eval/tr_r1"):
        assert tag in events.Tags()["scalars"]
    assert [image.step for image in events.Images("metrics.png")] == [20, 30]  # one per attempt, at its last step
    assert len(events.Tensors("config.yaml/text_summary")) == 2
    start = plugin_data_pb2.HParamsPluginData.FromString(
        events.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["optim.lr"].string_value == "0.0005"  # the config, flattened (logged once)
    assert hparams["log.trackers"].string_value == '["tensorboard"]'


def test_no_tracker_imports_nothing(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from trainer.config import load; from trainer.tracking import Tracking;"
        f"t = Tracking.open(load('tiny'), Path({str(tmp_path)!r})); assert t.trackers == [];"
        "bad = [m for m in ('torch.utils.tensorboard', 'mlflow', 'wandb') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=Path(__file__).parents[2])
    assert not (tmp_path / "tracking.json").exists()


def _wandb_records(path: Path) -> Iterator:
    """Records of a .wandb transaction log (LevelDB log framing: 32 KiB blocks of crc/length/type chunks)."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending, block = 7, b"", 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7 or data[pos + 6] == 0:  # block trailer or zero padding
            pos += block - pos % block
            continue
        length = int.from_bytes(data[pos + 4:pos + 6], "little")
        pending += data[pos + 7:pos + 7 + length]
        if data[pos + 6] in (1, 4):  # FULL or LAST
            yield Record.FromString(pending)
            pending = b""
        pos += 7 + length


def test_wandb_offline_run_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    env = {"TCL_RUN_ID": RUN_ID}
    _attempt(out, "wandb", FIRST, env)
    _attempt(out, "wandb", SECOND, env)
    import wandb

    wandb.teardown()  # the end of the trainer process: W&B's service flushes its run files

    runs = sorted((out / "wandb").glob(f"offline-run-*-{RUN_ID}"))
    assert len(runs) == 2  # one directory per attempt, one W&B run id: `wandb sync` merges them
    history: dict[str, list[tuple[int, float]]] = {}
    artifacts, run_records = [], []
    for run in runs:
        for record in _wandb_records(run / f"run-{RUN_ID}.wandb"):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                for item in record.history.item:
                    key = item.key or "/".join(item.nested_key)
                    history.setdefault(key, []).append((record.history.step.num, json.loads(item.value_json)))
            elif kind == "artifact":
                artifacts.append((record.artifact.name, [e.path for e in record.artifact.manifest.contents]))
            elif kind == "run":
                run_records.append(record.run)
    assert history["loss/loss"] == EXPECTED_LOSS
    assert history["eval/r_mean"] == EXPECTED_R_MEAN
    assert {"lr", "temp", "alpha", "samples_per_sec", "data_wait_frac", "step_time"} <= history.keys()
    assert sorted(artifacts) == sorted([(f"{RUN_ID}-metrics", ["metrics.png"]), (f"{RUN_ID}-config", ["config.yaml"])]
                                       * 2)
    assert [r.run_id for r in run_records] == [RUN_ID, RUN_ID]
    assert [list(r.tags) for r in run_records] == [["attempt=1"], ["attempt=2"]]
    config = {u.key: json.loads(u.value_json) for u in run_records[0].config.update}
    assert config["optim"]["lr"] == pytest.approx(5e-4) and config["log"]["trackers"] == ["wandb"]


# --- MLflow: one real server for the module (its start is most of these tests' time) ------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen]]:
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no background job runner
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")],
        stdout=(root / "server.log").open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log = (root / "server.log").read_text()[-3000:]
                    raise RuntimeError(f"mlflow server did not start:\n{log}") from None
                time.sleep(0.3)
        yield url, server
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=20)


@pytest.mark.timeout(180)
def test_mlflow_server_run_params_history_artifacts(tmp_path: Path, mlflow_server) -> None:
    from mlflow.tracking import MlflowClient

    url, _ = mlflow_server
    out = tmp_path / "run"
    env = {"TCL_RUN_ID": RUN_ID}
    first = _attempt(out, "mlflow", FIRST, env, mlflow_uri=url, experiment="tcl-test")
    _attempt(out, "mlflow", SECOND, env, mlflow_uri=url, experiment="tcl-test")

    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("tcl-test")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1  # the relaunch continued the same run
    run = runs[0]
    assert first == {
        "mlflow": f"{url}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}"}
    assert json.loads((out / "tracking.json").read_text())["locations"] == first
    assert run.data.tags["tcl.run_key"] == RUN_ID and run.data.tags["tcl.attempt"] == "2"
    assert run.data.tags["tcl.output_dir"] == str(out)
    assert run.info.status == "FINISHED"
    assert run.data.params["optim.lr"] == "0.0005" and run.data.params["model.vision.img_size"] == "64"
    assert run.data.params["log.trackers"] == '["mlflow"]'

    def history(key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))

    assert history("loss/loss") == EXPECTED_LOSS
    assert history("eval/r_mean") == EXPECTED_R_MEAN
    assert history("loss/itm") == [(s, v / 4) for s, v in EXPECTED_LOSS]
    for key in ("lr", "temp", "alpha", "samples_per_sec", "data_wait_frac", "step_time", "eval/tr_r1"):
        assert key in run.data.metrics
    assert sorted(a.path for a in client.list_artifacts(run.info.run_id)) == ["config.yaml", "metrics.png"]
    local = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
    assert Path(local).read_text() == "name: tiny\n"


@pytest.mark.timeout(180)
def test_mlflow_server_killed_mid_run_warns_once_and_training_goes_on(
    tmp_path: Path, mlflow_server, caplog: pytest.LogCaptureFixture,
) -> None:
    """Runs last in this module: it kills the module's server."""
    url, server = mlflow_server
    out = tmp_path / "run"
    cfg = load("tiny", [f"output_dir={out}", "log.trackers=[mlflow,tensorboard]", f"log.mlflow_uri={url}"])
    tracking = Tracking.open(cfg, out, {})
    log = MetricsLog(out / "metrics.jsonl", enabled=True, tracking=tracking)
    log.write(_train(10, 3.0))
    assert [t.name for t in tracking.trackers] == ["mlflow", "tensorboard"]
    os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=20)
    with caplog.at_level(logging.WARNING, logger="trainer.tracking"):
        for step in (20, 30, 40):
            log.write(_train(step, 1.0))
        log.close(out / "metrics.jsonl")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "trainer.tracking"]
    assert len(warnings) == 1 and "tracker mlflow failed" in warnings[0].getMessage()
    assert [t.name for t in tracking.trackers] == []  # closed; mlflow was dropped before
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [10, 20, 30, 40]  # metrics.jsonl lost nothing

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss/loss")] == [10, 20, 30, 40]  # the other tracker went on


def test_a_tracker_that_cannot_start_is_left_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    port = _free_port()  # nothing listens there
    cfg = load("tiny", [f"output_dir={tmp_path}", "log.trackers=[mlflow,tensorboard]",
                        f"log.mlflow_uri=http://127.0.0.1:{port}"])
    with caplog.at_level(logging.WARNING, logger="trainer.tracking"):
        tracking = Tracking.open(cfg, tmp_path, {})
    assert [t.name for t in tracking.trackers] == ["tensorboard"]
    assert [r.getMessage().split(",")[0] for r in caplog.records if r.name == "trainer.tracking"] == [
        "tracker mlflow could not start"]
    tracking.close()
