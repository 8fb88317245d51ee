"""The trainer under the three real launchers on namespace hosts, and what a run leaves behind.

    torchrun_static(cluster, node, nproc, args)   torchrun --nnodes N --node_rank n --master_addr node0
    torchrun_c10d(cluster, node, nproc, args)     torchrun --rdzv_backend c10d --rdzv_conf is_host=0|1 --local-addr
    deepspeed_nodes(cluster, node, args)          deepspeed --hostfile H --no_ssh --node_rank n --master_addr node0
    deepspeed_local(nproc, args)                  deepspeed --num_gpus nproc (one host)

Each returns the argv to give `Host.popen`; GLOO_SOCKET_IFNAME comes from the host's environment.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tests.trainer.e2e.conftest import train_records
from tests.trainer.multinode.hosts import Cluster

__all__ = [
    "CORPUS_ROWS", "deepspeed_local", "deepspeed_nodes", "logged_steps", "torchrun_c10d", "torchrun_static",
    "train_args", "train_records", "wait_for",
]

REPO = Path(__file__).resolve().parents[3]
MAIN = str(REPO / "trainer" / "main.py")
PORT = 29500
CORPUS_ROWS = 64
"""Divisible by every world size used here: no sample is repeated to fill an epoch."""


def train_args(corpus: Path, out: Path, *overrides: str) -> list[str]:
    """The tiny preset in fp32 on CPU (bit-exact across layouts and resumes), 2 epochs of 8 steps of
    2 ranks x 4, a checkpoint every 5 steps, sample ids logged; `--resume auto` from the start, as a
    relaunching supervisor runs it."""
    return [
        "--config", "tiny", f"output_dir={out}", f"data.train={corpus / 'train'}", "data.eval=null",
        "data.batch_size=4", "data.num_workers=1", "model.queue_size=12", "engine.precision=fp32",
        "optim.epochs=2", "optim.warmup_steps=2", "checkpoint.every_steps=5", "checkpoint.keep_last=2",
        "log.every_steps=1", "log.sample_ids=true", "log.progress_bar=false", *overrides, "--resume", "auto",
    ]


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def torchrun_static(cluster: Cluster, node: int, nproc: int, args: list[str]) -> list[str]:
    return _python(
        "-m", "torch.distributed.run", "--nnodes", str(len(cluster.hosts)), "--nproc_per_node", str(nproc),
        "--node_rank", str(node), "--master_addr", cluster.hosts[0].address, "--master_port", str(PORT), MAIN, *args,
    )


def torchrun_c10d(cluster: Cluster, node: int, nproc: int, args: list[str], max_restarts: int = 0) -> list[str]:
    host = cluster.hosts[node]
    return _python(
        "-m", "torch.distributed.run", "--nnodes", str(len(cluster.hosts)), "--nproc_per_node", str(nproc),
        "--rdzv_backend", "c10d", "--rdzv_endpoint", f"{cluster.hosts[0].address}:{PORT}", "--rdzv_id", "tcl",
        "--rdzv_conf", f"is_host={int(node == 0)}", "--local-addr", host.address,
        "--max-restarts", str(max_restarts), "--monitor-interval", "0.5", MAIN, *args,
    )


def deepspeed_nodes(cluster: Cluster, node: int, args: list[str], hostfile: Path) -> list[str]:
    hostfile.write_text("".join(f"{h.name} slots=1\n" for h in cluster.hosts))
    return _python(
        "-m", "deepspeed.launcher.runner", "--hostfile", str(hostfile), "--no_ssh", "--node_rank", str(node),
        "--master_addr", cluster.hosts[0].address, "--master_port", str(PORT), MAIN, *args,
    )


def deepspeed_local(nproc: int, args: list[str]) -> list[str]:
    return _python("-m", "deepspeed.launcher.runner", "--num_gpus", str(nproc), "--master_port", str(PORT), MAIN, *args)


def wait_for(predicate, timeout: float, what: str, log: Path | None = None, interval: float = 0.1) -> float:
    """Poll until predicate() is true; the time.monotonic() it became true. Fails naming `what`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log is not None and log.is_file() else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")
        time.sleep(interval)
    return time.monotonic()


def logged_steps(run_dir: Path) -> int:
    """The newest step in metrics.jsonl (0 before the first)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    steps = [0]
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line being written
            continue
        if record["kind"] == "train":
            steps.append(record["step"])
    return max(steps)
