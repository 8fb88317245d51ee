"""Failure handling of the process group with real gloo ranks: the collective timeout reaches groups made
later without one (as DeepSpeed makes its own), a rank blocked in a collective leaves on SIGTERM within
the grace period, and lost peers are told apart from crashes and named."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from trainer.control_plane import ControlPlane
from trainer.distributed import Peer, is_peer_lost, vanished_peers
from trainer.exit_codes import ExitCode

REPO = Path(__file__).resolve().parents[2]

# Two ranks on loopback. Rank 0 enters an all-reduce on a group made with new_group() and no timeout,
# after set_collective_timeout(); rank 1 never joins it (it sleeps, its process alive: nothing but the
# timeout can end rank 0's wait). MODE "timeout": rank 0 reports how long the wait took and how the error
# reads. MODE "sigterm": rank 0 has the trainer's StopRequest installed and is sent SIGTERM while blocked.
RANK_SCRIPT = r"""
import datetime, json, os, sys, time
import torch, torch.distributed as dist
from trainer.distributed import is_peer_lost, set_collective_timeout, set_default_group_timeout
from trainer.stopping import StopRequest
rank, mode = int(sys.argv[1]), sys.argv[2]
set_default_group_timeout(datetime.timedelta(seconds=120))  # as init_distributed does before the first step
dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=120))
early = dist.new_group()  # made during set-up, as DeepSpeed's copy of the world group is
set_collective_timeout(float(sys.argv[3]))
late = dist.new_group()  # made afterwards: gets the new default
dist.barrier()
if rank == 1:
    time.sleep(60)
    sys.exit(0)
if mode == "sigterm":
    StopRequest(grace_s=float(sys.argv[4])).install()
    print("blocked", flush=True)
group = early if mode == "timeout" else late
start = time.monotonic()
try:
    dist.all_reduce(torch.ones(1), group=group)
except Exception as err:
    print(json.dumps({"waited": time.monotonic() - start, "peer_lost": is_peer_lost(err), "error": str(err)}))
    os._exit(0)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ranks(mode: str, *args: str) -> list[subprocess.Popen]:
    env = os.environ | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "OMP_NUM_THREADS": "1",
                        "PYTHONPATH": str(REPO)}
    return [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(rank), mode, *args], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
            for rank in (0, 1)]


def _end(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_collective_timeout_reaches_groups_made_without_one() -> None:
    procs = _ranks("timeout", "3")
    try:
        out, err = procs[0].communicate(timeout=90)
    finally:
        _end(procs)
    assert out.strip(), err[-2000:]
    report = json.loads(out.strip().splitlines()[-1])
    assert 2.5 < report["waited"] < 30, report  # 3 s, not the 120 s the group was made with
    assert report["peer_lost"], report["error"]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigterm_ends_a_rank_blocked_in_a_collective_within_the_grace_period() -> None:
    procs = _ranks("sigterm", "300", "1.5")
    try:
        assert procs[0].stdout.readline().strip() == "blocked", procs[0].stderr.read()[-2000:]
        time.sleep(0.5)  # inside the all-reduce by now (nothing else is left to do)
        sent = time.monotonic()
        os.kill(procs[0].pid, signal.SIGTERM)
        code = procs[0].wait(timeout=60)
        took = time.monotonic() - sent
    finally:
        _end(procs)
    stderr = procs[0].stderr.read()
    assert code == ExitCode.STOP_UNCLEAN, stderr[-2000:]
    assert 1.4 < took < 10, took  # the grace period, far below the 300 s collective timeout
    assert "without a checkpoint" in stderr


GLOO_CLOSED = ("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer "
               "[198.18.0.2]:41327")
PEERS = (Peer(0, "node0", "198.18.0.1"), Peer(1, "node1", "198.18.0.2"), Peer(2, "node1", "198.18.0.2"))


def test_lost_peers_are_told_from_crashes_and_named() -> None:
    closed = RuntimeError(GLOO_CLOSED)
    assert is_peer_lost(closed)
    assert vanished_peers(closed, PEERS) == "host node1 (198.18.0.2), ranks 1,2"
    timed_out = RuntimeError("[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 5000ms"
                             " for recv operation to complete")
    assert is_peer_lost(timed_out)
    assert vanished_peers(timed_out, PEERS).startswith("unknown")
    wrapped = ValueError("step failed")
    wrapped.__cause__ = RuntimeError("Connection reset by peer")
    assert is_peer_lost(wrapped)
    for crash in (RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x6)"), KeyError("loss"),
                  ValueError("Connection closed by peer")):  # a ValueError is ours, whatever it says
        assert not is_peer_lost(crash), crash


def test_heartbeat_reply_carries_the_cancel_request() -> None:
    replies = iter([{"state": "RUNNING", "cancel_requested": False}, {"state": "CANCELLING", "cancel_requested": True},
                    "not an object"])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps(next(replies)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = ControlPlane(f"http://127.0.0.1:{server.server_port}", "run1", "token", timeout=5)
        assert [client.heartbeat(step, 10, 0.1, 1.0, {"loss": 1.0}) for step in (1, 2, 3)] == [False, True, False]
    finally:
        server.shutdown()
        server.server_close()
    unreachable = ControlPlane(f"http://127.0.0.1:{server.server_port}", "run1", "token", timeout=1)
    assert unreachable.heartbeat(4, 10, 0.1, 1.0, {}) is False
