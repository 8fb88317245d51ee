"""A picture of a run: loss curves, learning rate and temperature, and retrieval recall, from its JSONL."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_records(path: Path) -> tuple[list[dict], list[dict]]:
    """(train records, eval records); a step logged twice (a resumed run) keeps its last record."""
    train: dict[int, dict] = {}
    evals: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        (train if record["kind"] == "train" else evals)[record["step"]] = record
    return [train[k] for k in sorted(train)], [evals[k] for k in sorted(evals)]


def plot_run(metrics_path: Path, out_path: Path, title: str = "") -> Path:
    train, evals = read_records(metrics_path)
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    ax_loss, ax_sched, ax_eval = axes
    steps = [r["step"] for r in train]
    if train:
        for term in train[-1]["losses"]:
            ax_loss.plot(steps, [r["losses"].get(term, float("nan")) for r in train], label=term)
        ax_loss.set_yscale("log")
        ax_sched.plot(steps, [r["lr"] for r in train], label="lr", color="tab:blue")
        ax_temp = ax_sched.twinx()
        ax_temp.plot(steps, [r["temp"] for r in train], label="temperature", color="tab:red")
        ax_temp.set_ylabel("temperature")
        ax_sched.set_ylabel("learning rate")
    ax_loss.set(title="loss terms", xlabel="step")
    ax_loss.legend(fontsize=7, ncol=2)
    ax_sched.set(title="schedule", xlabel="step")
    if evals:
        eval_steps = [r["step"] for r in evals]
        for key in ("tr_r1", "ir_r1", "tr_r5", "ir_r5", "r_mean"):
            ax_eval.plot(eval_steps, [r["recall"][key] for r in evals], marker="o", label=key)
        last = evals[-1]["recall"]
        ax_eval.set_title(f"retrieval (last: TR@1 {last['tr_r1']:.1f}, IR@1 {last['ir_r1']:.1f})")
        ax_eval.legend(fontsize=8)
    else:
        ax_eval.set_title("retrieval (no eval split)")
    ax_eval.set(xlabel="step", ylabel="recall %")
    fig.suptitle(title)
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path
