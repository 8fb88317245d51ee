"""The global batches streaming hands the ranks, for node layouts too costly to run for real here (2 x 2,
1 x 4, 4 x 1, 8 x 1): with data.num_canonical_nodes fixed they are the same step by step; with streaming's
own default (canonical = physical nodes) they are not. The partition is streaming's own `generate_work`,
over the dataset exactly as build_train_loader configures it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streaming.base.batching import generate_work
from streaming.base.world import World

from tests.trainer.multinode.trainers import CORPUS_ROWS
from trainer.config import load
from trainer.data.loader import build_train_loader

pytestmark = pytest.mark.timeout(120)
BATCH = 2  # the loader's per-rank batch; each layout below splits GLOBAL among its own ranks
GLOBAL = 8


def global_batches(dataset, nodes: int, ranks: int, epoch: int = 0) -> list[set[int]]:
    """Step -> the sample ids of that step's global batch over every rank of the layout."""
    world = World(num_nodes=nodes, ranks_per_node=ranks, workers_per_rank=1, worker=0)
    dataset.batch_size = GLOBAL // (nodes * ranks)
    work = generate_work(dataset.batching_method, dataset, world, epoch, 0)  # (nodes, ranks, workers, batches, batch)
    per_rank = work.reshape(nodes * ranks, -1, dataset.batch_size)  # rank = node * ranks + local rank
    return [set(np.concatenate(per_rank[:, step]).tolist()) for step in range(per_rank.shape[1])]


@pytest.fixture
def dataset(corpus: Path, tmp_path: Path):
    cfg = load("tiny", [f"data.train={corpus / 'train'}", "data.eval=null", "data.num_workers=0",
                        f"data.batch_size={BATCH}", f"output_dir={tmp_path}"])
    loader = build_train_loader(cfg, rank=0, world_size=1)
    next(iter(loader))  # streaming resolves its shuffle block size when an epoch starts
    return loader.dataset


def test_every_layout_trains_the_same_global_batches(dataset) -> None:
    assert dataset.num_canonical_nodes == 1  # the configured default reached streaming
    reference = global_batches(dataset, 1, 2)
    assert len(reference) == CORPUS_ROWS // GLOBAL
    assert sorted(i for batch in reference for i in batch) == list(range(CORPUS_ROWS))
    for nodes, ranks in ((2, 1), (2, 2), (1, 4), (4, 1), (4, 2), (8, 1)):
        assert global_batches(dataset, nodes, ranks) == reference, (nodes, ranks)
    assert global_batches(dataset, 2, 2, epoch=1) == global_batches(dataset, 1, 4, epoch=1) != reference


def test_streaming_default_would_tie_the_order_to_the_node_count(dataset) -> None:
    dataset.num_canonical_nodes = 2  # what streaming picks for 2 physical nodes when left unset
    two_nodes = global_batches(dataset, 2, 2)
    dataset.num_canonical_nodes = 1  # ... and for one
    assert two_nodes != global_batches(dataset, 1, 4)
