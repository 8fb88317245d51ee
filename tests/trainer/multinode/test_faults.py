"""Faults on namespace hosts: a cut link ends the run within the collective timeout with the "peer lost"
exit code (deepspeed launcher, --hostfile --no_ssh); SIGTERM to a run's process group (what the API's
local launcher sends) stops both ranks at the next step with a checkpoint and exit 143, without killing
a DataLoader worker, and the run resumes from that checkpoint; shared memory left by crashed runs is
removed at start, what a live process maps is kept."""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.trainer.multinode.hosts import wait
from tests.trainer.multinode.trainers import MAIN, PORT, deepspeed_nodes, logged_steps, train_args, wait_for
from trainer.exit_codes import ExitCode

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TIMEOUT_S = 5


def test_cut_link_ends_the_run_within_the_collective_timeout(make_cluster, corpus: Path, tmp_path: Path) -> None:
    cluster = make_cluster(2)
    out = tmp_path / "run"
    args = train_args(corpus, out, "optim.max_steps=400", f"engine.collective_timeout_s={TIMEOUT_S}")
    logs = [tmp_path / f"node{i}.log" for i in (0, 1)]
    procs = [host.popen(deepspeed_nodes(cluster, i, args, tmp_path / "hostfile"), logs[i])
             for i, host in enumerate(cluster.hosts)]
    wait_for(lambda: logged_steps(out) >= 3, 300, "three steps", logs[0])  # past the start-up timeout
    cut = time.monotonic()
    cluster.hosts[1].link_down()
    codes, took = [], []
    for proc in procs:
        codes.append(wait(proc, 120))
        took.append(time.monotonic() - cut)
    print(f"link cut: node0 exited after {took[0]:.1f} s, node1 after {took[1]:.1f} s (timeout {TIMEOUT_S} s)")
    assert codes == [ExitCode.PEER_LOST, ExitCode.PEER_LOST], [log.read_text()[-3000:] for log in logs]
    assert max(took) < TIMEOUT_S + 20  # the timeout, plus a step and the exit on a loaded 2-core machine
    assert "peer lost" in logs[0].read_text() and "peer lost" in logs[1].read_text()


def _shm(host, *names: str) -> set[str]:
    return set(host.exec(["ls", "/dev/shm"]).stdout.split()) & set(names)


def test_sigterm_checkpoints_and_stops_every_rank_then_resumes(make_cluster, corpus: Path, tmp_path: Path) -> None:
    host = make_cluster(1).hosts[0]
    stale = ["deepspeed_allreduce_buffer_0_10.9.9.9_1_0", "000099_locals"]
    live, unrelated = "deepspeed_allreduce_buffer_0_10.9.9.9_2_0", "not_a_segment"
    names = " ".join([*stale, live, unrelated])
    host.exec(["sh", "-c", f"for f in {names}; do head -c 4096 /dev/zero > /dev/shm/$f; done"])
    holder = host.popen([sys.executable, "-c", f"import mmap,time; f=open('/dev/shm/{live}','r+b');"
                         " m=mmap.mmap(f.fileno(), 4096); print('mapped', flush=True); time.sleep(600)"],
                        tmp_path / "holder.log")
    wait_for(lambda: "mapped" in (tmp_path / "holder.log").read_text(), 30, "the live segment mapped")

    # two ranks as plain processes in one process group, the group signalled as a whole (as the API does);
    # the shell only reports the ranks' own exit codes. log.every_steps is past the run's end: the stop must
    # not wait for a log step.
    out, log = tmp_path / "run", tmp_path / "run.log"
    args = shlex.join(train_args(corpus, out, "optim.max_steps=400", "log.every_steps=1000"))
    rank = ("RANK={r} LOCAL_RANK={r} WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1"
            f" MASTER_PORT={PORT} {shlex.quote(sys.executable)} {MAIN} {args} & r{{r}}=$!;")
    # (a trapped signal interrupts `wait`: wait again until the rank is reaped for its own exit code)
    reap = "wait $r{r}; c{r}=$?; while kill -0 $r{r} 2>/dev/null; do wait $r{r}; c{r}=$?; done;"
    script = ("trap 'true' TERM; " + rank.format(r=0) + rank.format(r=1) + reap.format(r=0) + reap.format(r=1)
              + " echo exit codes $c0 $c1")
    group = host.popen(["sh", "-c", script], log)
    sample_ids = out / "sample_ids" / "rank1.jsonl"
    wait_for(lambda: sample_ids.is_file() and len(sample_ids.read_text().splitlines()) >= 3, 300, "three steps", log)
    steps_at_signal = len(sample_ids.read_text().splitlines())
    sent = time.monotonic()
    os.killpg(group.pid, signal.SIGTERM)
    assert wait(group, 120) == 0, log.read_text()[-3000:]
    took = time.monotonic() - sent
    text = log.read_text()
    assert f"exit codes {ExitCode.STOPPED} {ExitCode.STOPPED}" in text, text[-3000:]
    assert "killed by signal" not in text  # the DataLoader workers ignored it; their parent ended them
    stopped_at = int((out / "checkpoints" / "latest").read_text().removeprefix("step_"))
    assert steps_at_signal <= stopped_at <= steps_at_signal + 2  # the next step (or the one in flight), not step 1000
    print(f"SIGTERM at step {steps_at_signal}: checkpoint at step {stopped_at}, both ranks out after {took:.1f} s")

    assert _shm(host, *stale, live, unrelated) == {live, unrelated}  # what crashed runs left went at start
    holder.kill()

    resumed = host.popen([sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port",
                          str(PORT), MAIN, *train_args(corpus, out, f"optim.max_steps={stopped_at + 1}")],
                         tmp_path / "resumed.log")
    assert wait(resumed, 300) == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    assert f"resumed at step {stopped_at}" in (tmp_path / "resumed.log").read_text()
    assert (out / "checkpoints" / "latest").read_text() == f"step_{stopped_at + 1:08d}"
