"""The namespace hosts themselves: isolated as promised, reachable only from each other, torn down."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.trainer.multinode.hosts import Cluster

pytestmark = pytest.mark.timeout(60)

# connect to HOST:PORT once, print "ok" or the error's name
CONNECT = (
    "import socket,sys\n"
    "try:\n"
    "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close(); print('ok')\n"
    "except OSError as e:\n"
    "    print(type(e).__name__)\n"
)
SERVE = "import socket\ns=socket.create_server(('0.0.0.0', 5000))\nwhile True:\n    s.accept()[0].close()\n"


def _links() -> str:
    return subprocess.run(["ip", "-br", "link"], capture_output=True, text=True, check=True).stdout


def _connect(host, address: str, timeout: float = 2) -> str:
    return host.exec([sys.executable, "-c", CONNECT, address, "5000", str(timeout)]).stdout.strip()


def test_hosts_talk_only_on_their_own_subnet(make_cluster, tmp_path: Path) -> None:
    before = _links()
    cluster = make_cluster(2)
    node0, node1 = cluster.hosts
    assert _links() == before, "the machine's own interfaces changed"
    routes = node0.exec(["ip", "route"]).stdout.strip().splitlines()
    assert routes == [f"198.18.0.0/24 dev veth0 proto kernel scope link src {node0.address}"]
    assert node0.exec(["ip", "route", "get", "1.1.1.1"], check=False).returncode != 0  # no default route
    assert node1.exec(["hostname"]).stdout.strip() == "node1"
    assert node1.exec(["getent", "hosts", "node0"]).stdout.split()[0] == node0.address

    server = node0.popen([sys.executable, "-c", SERVE], tmp_path / "serve.log")
    deadline = time.monotonic() + 20
    while _connect(node1, node0.address) != "ok":
        assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
        time.sleep(0.2)
    assert _connect(node1, "127.0.0.1") == "ConnectionRefusedError"  # its own loopback, not node0's

    node1.link_down()
    assert _connect(node1, node0.address, timeout=1) in {"TimeoutError", "OSError"}
    node1.link_up()
    deadline = time.monotonic() + 20
    while _connect(node1, node0.address) != "ok":
        assert time.monotonic() < deadline, "link did not come back"
        time.sleep(0.2)

    node0.kill()
    assert server.wait(timeout=10) == -9
    assert node0.pids() == []


def test_each_host_has_its_own_shared_memory_and_tmpdir(cluster: Cluster) -> None:
    node0, node1 = cluster.hosts
    node0.exec(["sh", "-c", "echo x > /dev/shm/tclmn-probe"])
    assert node0.exec(["ls", "/dev/shm"]).stdout.split() == ["tclmn-probe"]
    assert node1.exec(["ls", "/dev/shm"]).stdout.split() == []
    assert not Path("/dev/shm/tclmn-probe").exists()
    assert node0.env()["TMPDIR"] != node1.env()["TMPDIR"]
    tmp = node1.exec([sys.executable, "-c", "import tempfile; print(tempfile.gettempdir())"]).stdout.strip()
    assert tmp == str(node1.tmpdir)


def test_close_removes_processes_and_namespaces(namespaces, tmp_path: Path) -> None:
    cluster = Cluster.create(2, tmp_path / "c")
    proc = cluster.hosts[1].popen(["sleep", "600"], tmp_path / "sleep.log")
    names = {h.netns for h in (cluster.hub, *cluster.hosts)}
    cluster.close()
    assert proc.poll() == -9
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert not names & {line.split()[0] for line in listed.splitlines() if line}
