"""The feature queues: shared initialisation, wrap-around writes, checkpoints, and two gloo ranks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from tests.trainer.model import queue_worker
from tests.trainer.model.tcl_references import enqueue_reference
from trainer.model import FeatureQueue

WORKER = Path(queue_worker.__file__)


def reference_history(step_entries: list[Tensor], start: Tensor) -> list[Tensor]:
    """The queue after each step, from writing the entries one by one from pointer 0."""
    rows, ptr = list(start.clone()), 0
    out = [torch.stack(rows)]
    for entries in step_entries:
        ptr = enqueue_reference(rows, ptr, list(entries))
        out.append(torch.stack(rows))
    return out


def test_initial_queues_are_unit_rows_from_a_shared_seed() -> None:
    a, b, c = FeatureQueue(20, 8, seed=3), FeatureQueue(20, 8, seed=3), FeatureQueue(20, 8, seed=4)
    for name in ("image_queue", "text_queue"):
        torch.testing.assert_close(getattr(a, name).norm(dim=1), torch.ones(20))
        assert torch.equal(getattr(a, name), getattr(b, name))
        assert not torch.equal(getattr(a, name), getattr(c, name))
    assert not torch.equal(a.image_queue, a.text_queue)
    assert a.ptr.tolist() == [0] and a.size == 20
    assert {name for name, _ in a.named_buffers()} == {"image_queue", "text_queue", "ptr"}
    assert not any(t.requires_grad for t in a.state_dict().values())


@pytest.mark.parametrize("size", [16, 10, 3])
def test_enqueue_matches_one_by_one_writes(size: int) -> None:
    """Any number of entries per step: 8 per step into 16 (divides), 10 (wraps mid-step), 3 (more entries
    than slots: only the last 3 remain). bf16 features are stored in fp32."""
    queues = FeatureQueue(size, 8, seed=0)
    start_image, start_text = queues.image_queue.clone(), queues.text_queue.clone()
    g = torch.Generator().manual_seed(0)
    steps = [(F.normalize(torch.randn(8, 8, generator=g), dim=1), F.normalize(torch.randn(8, 8, generator=g), dim=1))
             for _ in range(4)]
    want_image = reference_history([s[0].bfloat16().float() for s in steps], start_image)
    want_text = reference_history([s[1].bfloat16().float() for s in steps], start_text)
    for n, (image, text) in enumerate(steps, start=1):
        queues.enqueue(image.bfloat16(), text.bfloat16())
        assert queues.image_queue.dtype == torch.float32
        assert torch.equal(queues.image_queue, want_image[n]) and torch.equal(queues.text_queue, want_text[n])
        assert queues.ptr.item() == (8 * n) % size


def test_queue_state_dict_round_trip() -> None:
    queues = FeatureQueue(10, 8, seed=0)
    queues.enqueue(torch.randn(7, 8), torch.randn(7, 8))
    restored = FeatureQueue(10, 8, seed=99)
    restored.load_state_dict(queues.state_dict())
    for name, value in queues.state_dict().items():
        assert torch.equal(restored.state_dict()[name], value), name
    assert restored.ptr.item() == 7


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_ranks_end_with_identical_queues_in_rank_order(tmp_path: Path) -> None:
    """Two processes, each enqueuing its own features every step: both hold the same queues at every step,
    equal to writing rank 0's then rank 1's entries one by one, for queue sizes 16, 10 and 6 (8 entries a
    step: divides, wraps, overflows)."""
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2",
           "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    procs = [
        subprocess.Popen([sys.executable, str(WORKER), str(tmp_path)], env={**env, "RANK": str(rank)},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in range(2)
    ]
    for proc in procs:
        try:
            output, _ = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("a gloo rank did not finish in 180 s")
        assert proc.returncode == 0, output
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    for size in queue_worker.SIZES:
        history0, history1 = ranks[0][size], ranks[1][size]
        for state0, state1 in zip(history0, history1, strict=True):
            for name in state0:
                assert torch.equal(state0[name], state1[name]), f"ranks differ on {name} (queue size {size})"
        gathered = [[queue_worker.rank_features(r, step) for r in range(2)] for step in range(queue_worker.STEPS)]
        for index, name in enumerate(("image_queue", "text_queue")):
            entries = [torch.cat([per_rank[0][index], per_rank[1][index]]) for per_rank in gathered]
            want = reference_history(entries, history0[0][name])
            got = [state[name] for state in history0]
            in_order = all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
            assert in_order, f"{name} of size {size} is not the rank-order concatenation"
        assert history0[-1]["ptr"].item() == (2 * queue_worker.BATCH * queue_worker.STEPS) % size
