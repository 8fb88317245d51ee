"""MDS rows -> samples: the pretraining dataset (two augmented views + one caption per row) and the
retrieval split (eval-resized images, all captions flattened, with the image <-> text mapping)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from streaming import StreamingDataset
from torch.utils.data import DataLoader, Dataset

from dataprep.captions import pre_caption
from dataprep.schema import captions_of, column_problem
from trainer.config import AugmentConfig
from trainer.data.seeding import sample_rng
from trainer.data.transforms import EvalTransform, TwoViewTransform

VIEW_STREAMS = ("view0", "view1")


def check_columns(dataset: StreamingDataset, where: str) -> None:
    """Fail at start-up, naming the split, the shard and the column, unless every shard's columns are exactly
    dataprep's (names and encodings): no row is decoded with a decoder an untrusted index.json chose."""
    for shard in dataset.shards:
        problem = column_problem(shard.raw_data.basename, shard.column_names, shard.column_encodings)
        if problem:
            raise ValueError(f"MDS split {where}: {problem}")


def image_bytes(row: dict[str, Any], index: int, where: str) -> bytes:
    """The row's encoded image; a row without image bytes is an error naming the row."""
    if not isinstance(row["image"], bytes) or not row["image"]:
        raise ValueError(f"MDS split {where}: row {index} (sample_id {row.get('sample_id')!r}) has no image bytes")
    return row["image"]


class PretrainDataset(StreamingDataset):
    """Each row -> {"image_u8": uint8 (2, 3, S, S), "aug_params": float32 (2, P), "caption": str,
    "index": int}.

    Every random draw of a row comes from generators keyed by (seed, epoch, sample_id): the epoch is
    the one streaming itself resolves when an iteration starts, which after `load_state_dict()` is
    the checkpointed epoch, so a run resumed mid-epoch sees the same samples with the same views.
    """

    def __init__(
        self,
        *,
        local: str,
        remote: str | None,
        aug: AugmentConfig,
        img_size: int,
        max_words: int,
        seed: int,
        batch_size: int,
        shuffle: bool,
        num_canonical_nodes: int = 1,
        cache_limit: str | None = None,
    ) -> None:
        super().__init__(
            local=local, remote=remote, batch_size=batch_size, shuffle=shuffle, shuffle_seed=seed % 2**32,
            num_canonical_nodes=num_canonical_nodes, cache_limit=cache_limit,
        )
        self.where = remote or local
        check_columns(self, self.where)
        self.seed = seed
        self.max_words = max_words
        self.transform = TwoViewTransform(aug, img_size)
        self.epoch = 0
        """The epoch of the iteration in progress (0 for random access before any iteration)."""

    def _resume_incr_epoch(self) -> tuple[int, int]:
        # The single place where streaming decides which epoch an iteration is (fresh or resumed).
        epoch, sample_in_epoch = super()._resume_incr_epoch()
        self.epoch = epoch
        return epoch, sample_in_epoch

    def get_item(self, sample_id: int, retry: int = 7) -> dict[str, Any]:
        row = super().get_item(sample_id, retry)
        data = image_bytes(row, sample_id, self.where)
        key = str(row["sample_id"])
        try:
            images, params = self.transform(data, [sample_rng(self.seed, self.epoch, key, s) for s in VIEW_STREAMS])
        except (OSError, ValueError) as err:
            raise ValueError(f"MDS split {self.where}: row {sample_id} (sample_id {key!r}): bad image: {err}") from err
        return {"image_u8": images, "aug_params": params, "caption": self.caption(row, key), "index": sample_id}

    def caption(self, row: dict[str, Any], key: str) -> str:
        """The cleaned caption; a row with several draws one per (seed, epoch, sample)."""
        captions = captions_of(row)
        if not captions:
            raise ValueError(f"MDS split {self.where}: sample_id {key!r} has an empty caption list")
        chosen = captions[int(sample_rng(self.seed, self.epoch, key, "caption").integers(len(captions)))]
        return pre_caption(chosen, self.max_words)


class EvalImages(Dataset):
    """Map-style view of a retrieval split: row i -> its eval-transformed image (3, S, S)."""

    def __init__(self, rows: StreamingDataset, img_size: int, where: str) -> None:
        self.rows = rows
        self.transform = EvalTransform(img_size)
        self.where = where

    def __len__(self) -> int:
        return self.rows.num_samples

    def __getitem__(self, index: int) -> torch.Tensor:
        data = image_bytes(self.rows.get_item(index), index, self.where)
        try:
            return self.transform(data)
        except (OSError, ValueError) as err:
            raise ValueError(f"MDS split {self.where}: row {index}: bad image: {err}") from err


@dataclass
class RetrievalData:
    """A retrieval split: images in row order, every caption flattened, and both directions of
    the ground truth (an image has several captions; each caption has one image)."""

    images: DataLoader
    """Batches of normalised float images (B, 3, S, S), in row order."""
    texts: list[str]
    """Cleaned captions, grouped by row."""
    img2txt: list[list[int]]
    txt2img: list[int]


def flatten_captions(rows: StreamingDataset, max_words: int) -> tuple[list[str], list[list[int]], list[int]]:
    """(texts, img2txt, txt2img) over all rows in order, captions cleaned as for training."""
    texts: list[str] = []
    img2txt: list[list[int]] = []
    txt2img: list[int] = []
    for index in range(rows.num_samples):
        captions = [pre_caption(c, max_words) for c in captions_of(rows.get_item(index))]
        img2txt.append(list(range(len(texts), len(texts) + len(captions))))
        txt2img.extend([index] * len(captions))
        texts.extend(captions)
    return texts, img2txt, txt2img
