"""The batch plan and how a global batch is split: resolution and its refusals, the micro-batch order
against streaming's own partition, and the split of a loader batch against the loader's own collation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from streaming.base.partition import get_partitions

from trainer.config import BatchPlan, ConfigError, load, resolve_batch
from trainer.data.loader import Collate
from trainer.data.tokenizer import load_tokenizer
from trainer.step import micro_widths, split_micro_batches, step_seed


@pytest.mark.parametrize(("gpus", "accum"), [(1, 8), (2, 4), (4, 2), (8, 1)])
def test_paper_global_batch_resolves_on_1_2_4_8_gpus(gpus: int, accum: int) -> None:
    plan = resolve_batch(load("pretrain_4m"), gpus)
    assert plan == BatchPlan(micro=64, world=gpus, accum=accum, global_batch=512)
    assert plan.loader_batch == 512 // gpus


@pytest.mark.parametrize(
    ("gpus", "says"),
    [
        (3, ["512", "data.batch_size 64 x 3 ranks", "2.67", "a multiple of 192 (384 or 576)", "1, 2, 4, 8 ranks"]),
        (16, ["512 / 1024 = 0.5", "a multiple of 1024 (1024)", "data.batch_size to a divisor of 32"]),
        (6, ["512 / 384 = 1.33", "a multiple of 384 (384 or 768)", "1, 2, 4, 8 ranks"]),
    ],
)
def test_paper_global_batch_is_refused_where_it_cannot_be_composed(gpus: int, says: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_batch(load("pretrain_4m"), gpus)
    for part in ["data.global_batch_size", *says]:
        assert part in str(err.value)
    assert "divisor" not in str(err.value) or gpus == 16  # 512 / 3 and 512 / 6 ranks are not whole: no such advice


def test_without_a_global_batch_there_is_no_accumulation() -> None:
    cfg = load("tiny", ["data.batch_size=6"])
    assert cfg.data.global_batch_size is None
    for world in (1, 3, 7):
        assert resolve_batch(cfg, world) == BatchPlan(micro=6, world=world, accum=1, global_batch=6 * world)


def test_config_refuses_a_global_batch_no_world_size_can_make() -> None:
    with pytest.raises(ConfigError, match=r"data: .*global_batch_size 100 is not a multiple of batch_size 64"):
        load("pretrain_4m", ["data.global_batch_size=100"])


def test_micro_index_is_micro_major_and_seeds_differ_per_micro_batch() -> None:
    plan = resolve_batch(load("tiny", ["data.batch_size=4", "data.global_batch_size=24"]), 2)
    assert plan.accum == 3
    indices = {(r, j): plan.micro_index(r, j) for r in range(2) for j in range(3)}
    assert indices == {(0, 0): 0, (1, 0): 1, (0, 1): 2, (1, 1): 3, (0, 2): 4, (1, 2): 5}
    # without accumulation the index is the rank: the seeds of earlier runs (and their checkpoints) stay
    assert resolve_batch(load("tiny"), 2).micro_index(1, 0) == 1
    assert len({step_seed(0, 5, i) for i in range(6)}) == 6


def rank_batches(num_samples: int, ranks: int, workers: int, batch: int) -> list[list[np.ndarray]]:
    """Per rank, the full batches its DataLoader yields, from streaming's own partition: the loader takes
    its workers' batches in turn and drops a batch that streaming padded (with -1)."""
    parts = get_partitions("relaxed", num_samples, 1, 1, ranks, workers, batch)[0]  # one node
    out = []
    for rank in range(ranks):
        per_worker = parts[rank]  # (workers, batches per worker, batch)
        order = [per_worker[t % workers, t // workers] for t in range(per_worker.shape[0] * per_worker.shape[1])]
        out.append([b for b in order if (b >= 0).all()])
    return out


@pytest.mark.parametrize("num_samples", [96, 101])
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(("world", "accum"), [(1, 2), (1, 4), (2, 2), (2, 3)])
def test_micro_batch_j_of_rank_r_holds_what_rank_micro_index_holds_without_accumulation(
    num_samples: int, workers: int, world: int, accum: int
) -> None:
    """Streaming deals a node's samples to its ranks in turn, so rows j, j + k, ... of a rank's batch of
    k x B are exactly the batch of rank j x W + r on W x k ranks: the same sample ids in every micro-batch
    of every optimizer step, hence the same global batches."""
    micro = 4
    plan = BatchPlan(micro=micro, world=world, accum=accum, global_batch=micro * world * accum)
    accumulated = rank_batches(num_samples, world, workers, plan.loader_batch)
    reference = rank_batches(num_samples, world * accum, workers, micro)
    steps = len(accumulated[0])
    assert steps > 0 and all(len(r) == steps for r in accumulated + reference)
    for step in range(steps):
        for rank in range(world):
            for j in range(accum):
                got = accumulated[rank][step][j::accum]
                np.testing.assert_array_equal(got, reference[plan.micro_index(rank, j)][step])
        union = np.concatenate([accumulated[r][step] for r in range(world)])
        assert len(set(union.tolist())) == plan.global_batch  # no sample twice within a global batch


@pytest.mark.parametrize("fixed_length", [False, True])
def test_split_equals_the_loader_collating_each_micro_batch_on_its_own(fixed_length: bool) -> None:
    """A micro-batch's captions are cut to its own longest one (or kept at max_tokens with fixed_length):
    what the loader gives a rank that collates those rows alone (so the MLM masks and the text padding
    match)."""
    collate = Collate(load_tokenizer("bert-base-uncased"), max_tokens=25, fixed_length=fixed_length)
    captions = ["a dog", "a very long caption about a cat sitting on a red mat in the sun", "two birds",
                "the sea", "a man riding a horse along a beach", "snow"]
    samples = [
        {"image_u8": torch.full((2, 3, 4, 4), i, dtype=torch.uint8), "aug_params": torch.full((2, 5), float(i)),
         "caption": c, "index": i}
        for i, c in enumerate(captions)
    ]
    batch = collate(samples)
    accum = 3
    micros = list(split_micro_batches(batch, accum, micro_widths(batch["attention_mask"], accum, fixed_length)))
    assert len(micros) == accum
    for j, micro in enumerate(micros):
        alone = collate(samples[j::accum])
        assert micro.keys() == {"image_u8", "aug_params", "input_ids", "attention_mask"}
        for key in micro:
            assert torch.equal(micro[key], alone[key]), (j, key)
    widths = {micro["input_ids"].shape[1] for micro in micros}
    assert (widths == {25}) if fixed_length else (len(widths) > 1)  # the long caption is in micro-batch 1 only
    assert next(split_micro_batches(batch, 1, micro_widths(batch["attention_mask"], 1, fixed_length))) is batch
