"""Several "hosts" on one Linux machine, for multi-node tests: network namespaces joined by a switch.

Topology (everything lives in namespaces; the machine's own interfaces, routes and firewall are never
touched, and no namespace has a default route or any route beyond 198.18.0.0/24):

    hub namespace: bridge br0 198.18.0.254/24, ports port0 .. portN-1
        port<i>  <-- veth pair -->  veth0 198.18.0.<i+1>/24 in host i's namespace

Each host also has its own mount namespace (a private tmpfs on /dev/shm, so streaming and DeepSpeed
shared memory is per host as on real machines; /etc/hosts naming every host), its own UTS namespace
(hostname `node<i>`, resolving to its veth address) and its own TMPDIR (streaming's file locks).
The filesystem is otherwise shared: a folder under the test's tmp_path is a "shared filesystem".

API (fixtures in conftest.py: `cluster` = 2 hosts, `make_cluster(n)` for other sizes):

    cluster = Cluster.create(2, workdir)      # or the fixtures; Cluster is also a context manager
    h0, h1 = cluster.hosts                    # Host: .name ("node0"), .address ("198.18.0.1"),
                                              #       .iface ("veth0"), .netns, .tmpdir, .shm_size
    proc = h1.popen(cmd, log_path, env={...}) # a subprocess.Popen in its own process group on host 1,
                                              # stdout+stderr to log_path; env is added to h1.env()
    h1.env()                                  # the base environment: os.environ minus launcher
                                              # variables, + TMPDIR, GLOO/NCCL_SOCKET_IFNAME=veth0,
                                              # OMP_NUM_THREADS=1, PYTHONUNBUFFERED=1
    h1.exec(cmd, timeout=10)                  # run to completion on host 1 -> CompletedProcess (text)
    h1.kill()                                 # SIGKILL every process on host 1 (a power loss of
                                              # its processes; /dev/shm contents survive)
    h1.link_down(); h1.link_up()              # unplug / replug host 1's cable (its switch port)
    cluster.hub                               # a Host too (address 198.18.0.254): run services
                                              # every host reaches (e.g. an S3 server) there
    wait(proc, timeout)                       # proc's exit code; SIGKILLs its group past timeout
    cluster.close()                           # kills every process, deletes the namespaces

Names: every namespace is `tclmn-<pytest pid>-<random>-<cluster>-<host>`, so parallel pytest
processes never collide; `sweep()` (run once per session by the fixtures) deletes the namespaces of
pytest processes that no longer exist. `namespaces_unavailable()` says why namespaces cannot be made
(not root, no `ip`/`unshare`/`nsenter`, a sandbox refusing them), or None.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

PREFIX = "tclmn"
SUBNET = "198.18.0"
HUB_ADDRESS = f"{SUBNET}.254"
IFACE = "veth0"
HOLDER_LIFETIME_S = 3600
"""Each host's namespace-holding process exits by itself after this long, whatever happens to pytest."""
LAUNCHER_ENV = (
    "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "LOCAL_SIZE", "GROUP_RANK", "ROLE_RANK",
    "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "CROSS_RANK", "CROSS_SIZE",
)
_SESSION = f"{PREFIX}-{os.getpid()}-{secrets.token_hex(2)}"
_clusters = itertools.count()


def _ip(*args: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=timeout)


def _netns_pids(netns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, timeout=10).stdout
    return [int(p) for p in out.split()]


def _kill_netns(netns: str, spare: int | None = None, timeout: float = 10) -> None:
    """SIGKILL every process in netns (but `spare`) until none is left (processes may still fork)."""
    deadline = time.monotonic() + timeout
    while pids := [p for p in _netns_pids(netns) if p != spare]:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {pids} in {netns} survive SIGKILL")
        time.sleep(0.05)


def _delete_netns(netns: str) -> None:
    _kill_netns(netns)
    subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=10)


def namespaces_unavailable() -> str | None:
    """Why network + mount namespaces cannot be created here, or None when they can."""
    if os.geteuid() != 0:
        return "multi-host tests need root (they create network and mount namespaces)"
    missing = [tool for tool in ("ip", "unshare", "nsenter") if shutil.which(tool) is None]
    if missing:
        return f"multi-host tests need {', '.join(missing)} (iproute2, util-linux)"
    probe = f"{_SESSION}-probe"
    try:
        _ip("netns", "add", probe)
        subprocess.run(
            ["ip", "netns", "exec", probe, "unshare", "--mount", "--propagation", "private", "true"],
            check=True, capture_output=True, text=True, timeout=10,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        return f"cannot create namespaces here: {(getattr(err, 'stderr', '') or str(err)).strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    return None


def _session_gone(name: str) -> bool:
    """Whether `name` (a namespace or a host's TMPDIR) belongs to a pytest process that is gone."""
    match = re.fullmatch(rf"{PREFIX}-(\d+)-.*", name)
    if match is None or int(match.group(1)) == os.getpid():
        return False
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        pass
    return False


def sweep() -> list[str]:
    """Delete the namespaces (and their processes) and the hosts' TMPDIRs left by pytest processes that are gone."""
    names = [line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line.strip()]
    gone = [name for name in names if _session_gone(name)]
    for name in gone:
        _delete_netns(name)
    for folder in Path(tempfile.gettempdir()).glob(f"{PREFIX}-*-tmp-*"):
        if _session_gone(folder.name):
            shutil.rmtree(folder, ignore_errors=True)
    return gone


def wait(proc: subprocess.Popen, timeout: float) -> int:
    """proc's exit code; its whole process group is SIGKILLed if it runs past `timeout` (then raises)."""
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


class Host:
    """One namespace "host": a holder process keeps its network, mount and UTS namespaces alive;
    commands join them with nsenter."""

    def __init__(self, name: str, netns: str, address: str, iface: str, port: str | None,
                 hub_netns: str | None, shm_size: str) -> None:
        self.name, self.netns, self.address, self.iface = name, netns, address, iface
        self.port, self.hub_netns = port, hub_netns
        self.tmpdir: Path | None = None
        self.shm_size = shm_size
        self.holder: subprocess.Popen | None = None
        self.procs: list[subprocess.Popen] = []

    def start(self, hosts_file: Path) -> None:
        """Start the holder: a private /dev/shm tmpfs, /etc/hosts naming the cluster, the hostname; and the
        host's TMPDIR (made here, inside the cluster's set-up, so that a failed set-up removes it too)."""
        # Short on purpose: multiprocessing binds AF_UNIX sockets under TMPDIR (at most 107 bytes), which a
        # folder deep in a test's tmp_path overflows ("AF_UNIX path too long" in the loader workers).
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"{self.netns}-tmp-"))
        script = (
            f"mount -t tmpfs -o size={self.shm_size},mode=1777 tclmn-shm /dev/shm"
            f" && mount --bind {hosts_file} /etc/hosts && hostname {self.name}"
            f" && echo ready && exec sleep {HOLDER_LIFETIME_S}"
        )
        self.holder = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--uts", "--propagation", "private",
             "sh", "-c", script],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        assert self.holder.stdout is not None
        line = self.holder.stdout.readline()  # `sleep` keeps the pipe open: readline returns at "ready"
        if line.strip() != "ready":
            self.holder.kill()
            raise RuntimeError(f"host {self.name}: namespace set-up failed: {self.holder.stderr.read()}")
        # the holder became `sleep` by exec; `ip netns exec` and `unshare` exec too: same pid throughout

    def env(self) -> dict[str, str]:
        """The base environment of a command on this host."""
        assert self.tmpdir is not None, "host not started"
        env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_ENV}
        return env | {
            "TMPDIR": str(self.tmpdir), "GLOO_SOCKET_IFNAME": self.iface, "NCCL_SOCKET_IFNAME": self.iface,
            "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
        }

    def _argv(self, cmd: Sequence[str], cwd: str | Path | None) -> list[str]:
        assert self.holder is not None, "host not started"
        where = f"--wd={Path(cwd or os.getcwd()).resolve()}"
        return ["nsenter", "-t", str(self.holder.pid), "--net", "--mount", "--uts", where, "--", *map(str, cmd)]

    def popen(self, cmd: Sequence[str], log: Path | IO[str], env: Mapping[str, str] | None = None,
              cwd: str | Path | None = None) -> subprocess.Popen:
        """Start cmd on this host in its own process group, stdout and stderr to `log`."""
        out = Path(log).open("w") if isinstance(log, str | Path) else log
        proc = subprocess.Popen(
            self._argv(cmd, cwd), env=self.env() | dict(env or {}), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def exec(self, cmd: Sequence[str], timeout: float = 10, env: Mapping[str, str] | None = None,
             cwd: str | Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run cmd to completion on this host (bounded by timeout), output captured as text."""
        return subprocess.run(
            self._argv(cmd, cwd), env=self.env() | dict(env or {}), capture_output=True, text=True,
            timeout=timeout, check=check,
        )

    def pids(self) -> list[int]:
        """Processes running on this host (its holder excluded)."""
        return [p for p in _netns_pids(self.netns) if self.holder is None or p != self.holder.pid]

    def kill(self) -> None:
        """SIGKILL every process on this host, as a node failure would; the host stays usable."""
        _kill_netns(self.netns, spare=self.holder.pid if self.holder else None)
        for proc in self.procs:
            proc.wait(timeout=10)

    def _set_port(self, state: str) -> None:
        if self.port is None:
            raise ValueError(f"{self.name} has no switch port")
        _ip("-n", self.hub_netns, "link", "set", self.port, state)

    def link_down(self) -> None:
        """Unplug this host's cable: its switch port goes down (its own veth loses carrier)."""
        self._set_port("down")

    def link_up(self) -> None:
        self._set_port("up")

    def close(self) -> None:
        try:
            _kill_netns(self.netns)
            for proc in [*self.procs, *([self.holder] if self.holder else [])]:
                proc.wait(timeout=10)
                for stream in (proc.stdout, proc.stderr):
                    if stream is not None:
                        stream.close()
        finally:  # a process that outlived its wait must not keep the folder
            if self.tmpdir is not None:
                shutil.rmtree(self.tmpdir, ignore_errors=True)


class Cluster:
    """N hosts on one switch, plus the hub (the switch's own namespace, also a Host)."""

    def __init__(self, hosts: list[Host], hub: Host) -> None:
        self.hosts, self.hub = hosts, hub

    @classmethod
    def create(cls, n_hosts: int, workdir: Path, shm_size: str = "1g") -> Cluster:
        if not 1 <= n_hosts <= 200:
            raise ValueError("1..200 hosts")
        tag = f"{_SESSION}-c{next(_clusters)}"
        workdir.mkdir(parents=True, exist_ok=True)
        hub = Host("hub", f"{tag}-hub", HUB_ADDRESS, "br0", None, None, shm_size)
        hosts = [
            Host(f"node{i}", f"{tag}-n{i}", f"{SUBNET}.{i + 1}", IFACE, f"port{i}", hub.netns, shm_size)
            for i in range(n_hosts)
        ]
        cluster = cls(hosts, hub)
        try:
            cluster._wire(workdir)
        except BaseException:
            cluster.close()
            raise
        return cluster

    def _wire(self, workdir: Path) -> None:
        hub = self.hub.netns
        for host in (self.hub, *self.hosts):
            _ip("netns", "add", host.netns)
            _ip("-n", host.netns, "link", "set", "lo", "up")
        _ip("-n", hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", hub, "addr", "add", f"{HUB_ADDRESS}/24", "dev", "br0")
        _ip("-n", hub, "link", "set", "br0", "up")
        for host in self.hosts:  # both ends are created inside namespaces: nothing appears on the machine's own
            _ip("-n", hub, "link", "add", host.port, "type", "veth", "peer", "name", IFACE, "netns", host.netns)
            _ip("-n", hub, "link", "set", host.port, "master", "br0", "up")
            _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", IFACE)
            _ip("-n", host.netns, "link", "set", IFACE, "up")
        hosts_file = workdir / "etc-hosts"
        hosts_file.write_text(
            "127.0.0.1 localhost\n" + "".join(f"{h.address} {h.name}\n" for h in (self.hub, *self.hosts))
        )
        for host in (self.hub, *self.hosts):
            host.start(hosts_file)

    def close(self) -> None:
        """Kill every process on every host, then delete the namespaces (the veths and bridge go with them)."""
        errors = []
        for host in (*self.hosts, self.hub):
            try:
                host.close()
            except Exception as err:  # noqa: BLE001 - tear down the rest, report after
                errors.append(err)
            subprocess.run(["ip", "netns", "del", host.netns], capture_output=True, timeout=10)
        if errors:
            raise errors[0]

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
