"""The training loader end to end over real MDS shards: batch contract, determinism keyed on
(seed, epoch, sample), mid-epoch resume, worker processes, caption draws and token padding."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from tests.trainer.data.data_corpus import CORPUS_ROWS
from trainer.config import RunConfig
from trainer.data.dataset import PretrainDataset
from trainer.data.loader import Collate, build_train_loader, tokenize
from trainer.data.tokenizer import load_tokenizer

Batch = dict[str, torch.Tensor]


def epoch_batches(loader: Iterator[Batch]) -> list[Batch]:
    return [dict(batch) for batch in loader]


def assert_same_batches(got: list[Batch], expected: list[Batch]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key


def same_dataset(cfg: RunConfig) -> PretrainDataset:
    """A second, independent reader of the same shards, for random access."""
    return PretrainDataset(
        local=cfg.data.train, remote=None, aug=cfg.data.augment, img_size=cfg.model.vision.img_size,
        max_words=cfg.data.max_words, seed=cfg.seed, batch_size=cfg.data.batch_size, shuffle=False,
    )


def test_batches_follow_the_contract_and_cover_the_epoch(make_cfg: Callable[..., RunConfig]) -> None:
    loader = build_train_loader(make_cfg(), rank=0, world_size=1)
    batches = epoch_batches(loader)
    assert len(loader) == len(batches) == CORPUS_ROWS // 4
    for batch in batches:
        assert batch["image_u8"].shape == (2, 4, 3, 64, 64) and batch["image_u8"].dtype == torch.uint8
        assert batch["aug_params"].shape == (2, 4, 18) and batch["aug_params"].dtype == torch.float32
        assert batch["input_ids"].dtype == batch["attention_mask"].dtype == batch["index"].dtype == torch.int64
        assert batch["input_ids"].shape == batch["attention_mask"].shape and batch["input_ids"].shape[0] == 4
        assert (batch["input_ids"][:, 0] == 101).all()  # [CLS]
        assert not torch.equal(batch["image_u8"][0], batch["image_u8"][1])  # two independent views
    indices = torch.cat([b["index"] for b in batches])
    assert sorted(indices.tolist()) == list(range(CORPUS_ROWS))
    assert indices.tolist() != list(range(CORPUS_ROWS))  # shuffled


def test_views_depend_on_seed_epoch_and_sample_only(make_cfg: Callable[..., RunConfig]) -> None:
    cfg = make_cfg()
    loader = build_train_loader(cfg, rank=0, world_size=1)
    epochs = [epoch_batches(loader) for _ in range(2)]
    reference = same_dataset(cfg)
    for epoch, batches in enumerate(epochs):
        reference.epoch = epoch
        for batch in batches[:3]:
            for slot, index in enumerate(batch["index"].tolist()):
                sample = reference[index]
                assert torch.equal(batch["image_u8"][:, slot], sample["image_u8"])
                assert torch.equal(batch["aug_params"][:, slot], sample["aug_params"])
    first = reference[3]
    reference.epoch = 0
    again = reference[3]
    assert not torch.equal(first["aug_params"], again["aug_params"])  # epoch 1 vs epoch 0
    reference.seed = cfg.seed + 1
    assert not torch.equal(again["aug_params"], reference[3]["aug_params"])


def test_resume_mid_epoch_yields_the_remaining_batches(make_cfg: Callable[..., RunConfig]) -> None:
    cfg = make_cfg()
    uninterrupted = build_train_loader(cfg, rank=0, world_size=1)
    expected = [epoch_batches(uninterrupted) for _ in range(2)]
    del uninterrupted

    interrupted = build_train_loader(cfg, rank=0, world_size=1)
    epoch_batches(interrupted)
    seen = []
    for batch in interrupted:  # epoch 1, stopped after 3 batches
        seen.append(dict(batch))
        if len(seen) == 3:
            break
    state = interrupted.state_dict()
    assert state["epoch"] == 1 and state["sample_in_epoch"] == 12
    del interrupted
    gc.collect()

    resumed = build_train_loader(cfg, rank=0, world_size=1)
    resumed.load_state_dict(state)
    assert_same_batches(seen + epoch_batches(resumed), expected[1])


def test_two_workers_give_the_same_batches_as_none(make_cfg: Callable[..., RunConfig]) -> None:
    """Worker processes resolve the epoch themselves: epoch 1 must use epoch-1 views there too."""
    in_process_loader = build_train_loader(make_cfg(), rank=0, world_size=1)
    in_process = [epoch_batches(in_process_loader) for _ in range(2)]
    del in_process_loader
    gc.collect()
    workers_loader = build_train_loader(make_cfg("data.num_workers=2"), rank=0, world_size=1)
    for epoch in range(2):
        assert_same_batches(epoch_batches(workers_loader), in_process[epoch])


def test_caption_lists_draw_one_per_epoch(make_cfg: Callable[..., RunConfig]) -> None:
    dataset = same_dataset(make_cfg())
    drawn = {i: [] for i in range(0, CORPUS_ROWS, 3)}  # rows with three captions
    for epoch in range(30):
        dataset.epoch = epoch
        for i, captions in drawn.items():
            captions.append(dataset[i]["caption"])
        assert dataset[1]["caption"] == "a photo of thing 1"  # a single caption, cleaned
    dataset.epoch = 4
    assert all(dataset[i]["caption"] == drawn[i][4] for i in drawn)  # the same draw on a revisit
    counts = np.zeros(3)
    for i, captions in drawn.items():
        assert set(captions) <= {f"caption {k} of image {i}" for k in range(3)}
        for caption in captions:
            counts[int(caption.split()[1])] += 1
    n = counts.sum()  # 420 draws, each caption with p 1/3: within 5 standard deviations
    assert np.all(np.abs(counts - n / 3) <= 5 * np.sqrt(n * (1 / 3) * (2 / 3)))


def test_padding_to_longest_or_fixed_length_with_truncation() -> None:
    tokenizer = load_tokenizer("bert-base-uncased")
    texts = ["hello world", "a photo of a cat", " ".join(["word"] * 40)]
    ids, mask = tokenize(texts[:2], tokenizer, 25)
    assert ids.shape == (2, 7)  # [CLS] a photo of a cat [SEP]
    assert ids[0].tolist() == [101, 7592, 2088, 102, 0, 0, 0] and mask[0].tolist() == [1, 1, 1, 1, 0, 0, 0]
    ids, mask = tokenize(texts, tokenizer, 25)
    assert ids.shape == (3, 25) and ids[2, -1] == 102 and mask[2].all()
    sample = {"image_u8": torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "aug_params": torch.zeros(2, 18), "index": 0}
    batch = Collate(tokenizer, 25, fixed_length=True)([{**sample, "caption": t} for t in texts[:2]])
    assert batch["input_ids"].shape == (2, 25) and batch["attention_mask"].sum(1).tolist() == [4, 7]
    assert (batch["input_ids"][0, 4:] == 0).all()
    assert batch["image_u8"].shape == (2, 2, 3, 8, 8) and batch["aug_params"].shape == (2, 2, 18)


def test_loader_settings_follow_the_config(make_cfg: Callable[..., RunConfig], tmp_path: Path) -> None:
    loader = build_train_loader(make_cfg("data.batch_size=6", "data.shuffle=false"), rank=0, world_size=1)
    batches = epoch_batches(loader)
    assert len(batches) == CORPUS_ROWS // 6  # the last partial batch is dropped
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(36))
