"""Process-group setup, the rank/device facts every component takes explicitly, and how a run ends.

Timeouts: once training runs, `engine.collective_timeout_s` bounds every collective of every process
group, so a vanished peer (power, network) is noticed within it instead of torch's 30 minutes. Before
that (rendezvous, set-up, a resume's load, the first step) nodes may start minutes apart, and
`engine.startup_timeout_s` applies. DeepSpeed 0.19.8 makes its groups with `dist.new_group(ranks)` and
no timeout (`deepspeed.utils.groups._clone_world_group()`: the copy of the world group that ZeRO
reduces and gathers over; its expert and sequence groups alike), so they get torch's default group
timeout (`distributed_c10d.default_pg_timeout`, `default_pg_nccl_timeout` for NCCL, the defaults of
`new_group`'s `timeout`), not the one given to `init_process_group`. Hence: those defaults are set
before any group exists (`init_distributed`), and after the first step `set_collective_timeout` applies
`torch.distributed.set_timeout` to every group that exists and makes the new value the default for any
group made later.

A collective that fails because a peer vanished is told apart from a crash in our code (`is_peer_lost`)
and named where the error says who (`vanished_peers`): the run then exits ExitCode.PEER_LOST.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import socket
import sys
from dataclasses import dataclass
from typing import NoReturn

import torch

from trainer.exit_codes import ExitCode
from trainer.shared_memory import remove_unmapped

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Peer:
    """Where a rank runs: the host name and the address it reaches the master with (the address other
    ranks connect to, and the one a collective's error names)."""

    rank: int
    host: str
    address: str


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    device: torch.device
    peers: tuple[Peer, ...] = ()
    """Every rank's host and address, in rank order (empty for a world of one)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0


DEEPSPEED_SHM_BUFFER = re.compile(r"deepspeed_allreduce_buffer_\d+_.+_\d+_\d+")
"""DeepSpeed's CPU all-reduce segments: <uid>_<master addr>_<master port>_<rank>."""

_control_group: object | None = None
"""A gloo group over all ranks for control decisions (stop agreement): CPU tensors, so agreeing never
waits for the accelerator's queue."""


def set_default_group_timeout(timeout: datetime.timedelta) -> None:
    """Make `timeout` the timeout of every process group created without one (DeepSpeed's among them)."""
    c10d = torch.distributed.distributed_c10d
    c10d.default_pg_timeout = timeout
    if c10d.default_pg_nccl_timeout is not None:
        c10d.default_pg_nccl_timeout = timeout


def local_address() -> str:
    """This host's address towards MASTER_ADDR (the interface the process group uses); no packet is sent."""
    master = os.environ.get("MASTER_ADDR", "127.0.0.1")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((master, int(os.environ.get("MASTER_PORT", "29500"))))
            return probe.getsockname()[0]
    except OSError:
        return "unknown"


def set_collective_timeout(seconds: float) -> None:
    """Every collective of every process group, existing or made later, fails after `seconds`."""
    timeout = datetime.timedelta(seconds=seconds)
    set_default_group_timeout(timeout)
    if torch.distributed.is_initialized():
        # torch lists a process's groups only in its private registry; set_timeout itself is public
        for group in list(torch.distributed.distributed_c10d._world.pg_map):
            torch.distributed.set_timeout(timeout, group)


def init_distributed(local_rank: int | None = None, startup_timeout_s: float = 1800) -> DistInfo:
    """Initialise DeepSpeed's process group from the launcher's environment (deepspeed, torchrun or a
    plain process with RANK/WORLD_SIZE/MASTER_* set; a single process needs none of them): NCCL on GPUs,
    gloo on CPU, chosen by DeepSpeed's accelerator. Every group made until `set_collective_timeout`
    times out after `startup_timeout_s`."""
    global _control_group
    import deepspeed

    env = os.environ
    if "RANK" not in env:  # a plain `python trainer/main.py`: a world of one
        env.setdefault("MASTER_ADDR", "127.0.0.1")
        env.setdefault("MASTER_PORT", "29500")
        env.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK=str(local_rank or 0))
    local_rank = int(env.get("LOCAL_RANK", local_rank or 0))
    timeout = datetime.timedelta(seconds=startup_timeout_s)
    set_default_group_timeout(timeout)
    deepspeed.init_distributed(timeout=timeout)
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    world_size = torch.distributed.get_world_size()
    peers: tuple[Peer, ...] = ()
    if world_size > 1:
        _control_group = torch.distributed.new_group(backend="gloo")
        gathered: list[Peer | None] = [None] * world_size
        me = Peer(torch.distributed.get_rank(), socket.gethostname(), local_address())
        torch.distributed.all_gather_object(gathered, me, group=_control_group)  # also: every rank is past init
        peers = tuple(p for p in gathered if p is not None)
    if local_rank == 0:  # every rank of this run maps its buffers by now: what no process maps is stale
        removed = remove_unmapped(DEEPSPEED_SHM_BUFFER)
        if removed:
            logger.warning("removed %d DeepSpeed shared-memory buffers left by crashed runs", len(removed))
    return DistInfo(
        rank=torch.distributed.get_rank(),
        local_rank=local_rank,
        world_size=world_size,
        local_world_size=int(env.get("LOCAL_WORLD_SIZE", env.get("LOCAL_SIZE", env["WORLD_SIZE"]))),
        device=device,
        peers=peers,
    )


def barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True if `flag` is set on any rank (one tiny all-reduce), so that every rank takes the same branch.
    Runs on the gloo control group where there is one (no wait for the accelerator), else on `device`."""
    if not torch.distributed.is_initialized():
        return flag
    group = _control_group
    t = torch.tensor([int(flag)], device="cpu" if group is not None else device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX, group=group)
    return bool(t.item())


# --- how a failed collective reads -----------------------------------------------------------------
_PEER_LOST = re.compile(
    r"Connection (?:closed|reset) by peer|Timed out waiting|timed out after|Socket Timeout|Broken pipe"
    r"|NCCL communicator was aborted|remote process exited|ProcessGroupNCCL.*(?:Watchdog|timeout)",
    re.IGNORECASE,
)
_ADDRESS = re.compile(r"\[([0-9A-Fa-f.:]+)\]:\d+")


def is_peer_lost(err: BaseException) -> bool:
    """Whether `err` (from a collective, or a store operation) means another rank vanished."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:  # the message may sit on a chained cause
        seen.add(id(err))
        if isinstance(err, RuntimeError | OSError) and _PEER_LOST.search(str(err)):
            return True
        err = err.__cause__ or err.__context__
    return False


def vanished_peers(err: BaseException, peers: tuple[Peer, ...]) -> str:
    """A readable 'who' for a lost-peer error: the hosts and ranks at the addresses the error names, or
    an honest 'unknown' when it names none (a timeout names no peer)."""
    addresses = set(_ADDRESS.findall(str(err)))
    named = [p for p in peers if p.address in addresses]
    if named:
        hosts: dict[tuple[str, str], list[int]] = {}
        for p in named:
            hosts.setdefault((p.host, p.address), []).append(p.rank)
        return "; ".join(f"host {h} ({a}), ranks {','.join(map(str, r))}" for (h, a), r in sorted(hosts.items()))
    if addresses:
        return "address " + ", ".join(sorted(addresses))
    return "unknown (the collective timed out: the rank whose log stops first vanished)"


def exit_peer_lost(err: BaseException, peers: tuple[Peer, ...]) -> NoReturn:
    """Log one line naming who vanished, then leave at once with ExitCode.PEER_LOST: the teardown of a
    process group with a dead member can hang, and the loader workers end when they see their parent go."""
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    logger.error("peer lost: %s; %s", vanished_peers(err, peers), first_line)
    logging.shutdown()
    sys.stderr.flush()
    os._exit(ExitCode.PEER_LOST)
