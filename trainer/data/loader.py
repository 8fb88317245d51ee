"""The trainer's data loaders: an MDS split (local folder or s3://) -> batches of CPU tensors.

Workers decode, crop, flip and tokenize; `DeviceAugment` finishes the views on the device. The
loader needs no model, so it can be driven (and timed) on its own.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import torch
from streaming import StreamingDataLoader, StreamingDataset
from torch import Tensor
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from trainer.config import RunConfig, resolve_batch
from trainer.data.dataset import EvalImages, PretrainDataset, RetrievalData, check_columns, flatten_captions
from trainer.data.streaming_env import check_world, prepare_streaming_env
from trainer.data.tokenizer import load_tokenizer
from trainer.stopping import ignore_stop_signals

logger = logging.getLogger(__name__)

__all__ = ["Collate", "TrainLoader", "build_eval_data", "build_train_loader", "prepare_streaming_env", "tokenize"]


def split_location(location: str, cache_dir: str, split: str) -> tuple[str, str | None]:
    """(local, remote) for streaming: a local folder is read in place; a remote one is cached in
    cache_dir/<split>-<hash of the remote>, so two remotes never share a cache."""
    if "://" in location:
        digest = hashlib.sha256(location.encode()).hexdigest()[:16]
        return str(Path(cache_dir) / f"{split}-{digest}"), location
    if not (Path(location) / "index.json").is_file():
        raise ValueError(f"data.{split} = {location!r}: no MDS index.json there")
    return location, None


def tokenize(
    texts: list[str], tokenizer: PreTrainedTokenizerBase, max_tokens: int, *, fixed_length: bool = False
) -> tuple[Tensor, Tensor]:
    """(input_ids, attention_mask), int64 (N, L): truncated at max_tokens, padded to the longest text
    or, with fixed_length, to max_tokens."""
    encoded = tokenizer(
        texts, padding="max_length" if fixed_length else "longest", truncation=True, max_length=max_tokens,
        return_tensors="pt",
    )
    return encoded["input_ids"].long(), encoded["attention_mask"].long()


class Collate:
    """Samples -> one training batch; runs in the loader workers (the fast tokenizer is picklable)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_tokens: int, fixed_length: bool) -> None:
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.fixed_length = fixed_length

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Tensor]:
        input_ids, attention_mask = tokenize(
            [s["caption"] for s in samples], self.tokenizer, self.max_tokens, fixed_length=self.fixed_length
        )
        return {
            "image_u8": torch.stack([s["image_u8"] for s in samples], dim=1),  # (2, B, 3, S, S)
            "aug_params": torch.stack([s["aug_params"] for s in samples], dim=1),  # (2, B, P)
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "index": torch.tensor([s["index"] for s in samples], dtype=torch.int64),
        }


class TrainLoader(StreamingDataLoader):
    """StreamingDataLoader counting samples by `index` (its default reads the first key's first axis,
    which for `image_u8` is the view axis, and would checkpoint the wrong position), and refusing a
    resume that would change the data order."""

    def _get_batch_size(self, batch: dict[str, Tensor]) -> int:
        return len(batch["index"])

    def load_state_dict(self, obj: dict[str, Any]) -> None:
        # streaming would silently keep the checkpoint's canonical node count over the configured one
        saved, configured = obj.get("num_canonical_nodes"), self.dataset.num_canonical_nodes
        if saved != configured:
            raise ValueError(
                f"the checkpoint was trained with data.num_canonical_nodes={saved}, this run has {configured}:"
                f" the data order would change; resume with data.num_canonical_nodes={saved}"
            )
        super().load_state_dict(obj)


def check_canonical_nodes(num_canonical_nodes: int, world_size: int, local_world_size: int) -> None:
    """streaming's rule, checked at start-up: canonical and physical node counts divide one another."""
    nodes = max(1, world_size // max(1, local_world_size))
    if num_canonical_nodes % nodes and nodes % num_canonical_nodes:
        raise ValueError(
            f"data.num_canonical_nodes={num_canonical_nodes} and {nodes} nodes: one must divide the other"
            f" (streaming's rule); 1 works with any node count"
        )


def build_train_loader(
    cfg: RunConfig, *, rank: int, world_size: int, tokenizer: PreTrainedTokenizerBase | None = None
) -> StreamingDataLoader:
    """This rank's loader over cfg.data.train: per-rank batches of all the rank's micro-batches of an
    optimizer step (batch_size x accumulation steps; trainer.step splits them), shuffled with cfg.seed,
    last partial batch dropped; state_dict()/load_state_dict() resume mid-epoch.

    Ranks and the global batch: streaming orders the epoch's samples from cfg.seed, the split and
    data.num_canonical_nodes alone. Optimizer step s trains positions [s*G, (s+1)*G) of that order
    (G = the global batch); position g goes to node g % N (N nodes), and within the node to local rank
    (g // N) % R (R ranks per node), i.e. to global rank node * R + local rank. So 2 nodes x 1 rank and
    1 node x 2 ranks train the same samples on the same ranks; 2 x 2 and 1 x 4 train the same global
    batches, with the samples of a batch spread over the ranks in another order.
    """
    check_world(rank, world_size)
    check_canonical_nodes(cfg.data.num_canonical_nodes, world_size, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    data = cfg.data
    batch_size = resolve_batch(cfg, world_size).loader_batch
    local, remote = split_location(data.train, data.cache_dir, "train")
    dataset = PretrainDataset(
        local=local, remote=remote, aug=data.augment, img_size=cfg.model.vision.img_size, max_words=data.max_words,
        seed=cfg.seed, batch_size=batch_size, shuffle=data.shuffle, num_canonical_nodes=data.num_canonical_nodes,
        cache_limit=data.cache_limit if remote else None,
    )
    collate = Collate(tokenizer or load_tokenizer(cfg.model.text.tokenizer), data.max_tokens, data.fixed_length)
    logger.info("train data %s: %d samples, %d per rank per epoch", data.train, dataset.num_samples, len(dataset))
    return TrainLoader(
        dataset, batch_size=batch_size, num_workers=data.num_workers, collate_fn=collate, drop_last=True,
        pin_memory=torch.cuda.is_available(), prefetch_factor=data.prefetch_factor if data.num_workers else None,
        worker_init_fn=ignore_stop_signals,
    )


def build_eval_data(cfg: RunConfig) -> RetrievalData:
    """The retrieval split cfg.data.eval: every image in row order and every caption, on every rank.

    Call it on all ranks or none: streaming registers each dataset with a barrier when distributed.
    """
    if cfg.data.eval is None:
        raise ValueError("data.eval is not set: there is no retrieval split to evaluate on")
    local, remote = split_location(cfg.data.eval, cfg.data.cache_dir, "eval")
    rows = StreamingDataset(
        local=local, remote=remote, shuffle=False, batch_size=cfg.eval.batch_size,
        cache_limit=cfg.data.cache_limit if remote else None,
    )
    check_columns(rows, cfg.data.eval)
    texts, img2txt, txt2img = flatten_captions(rows, cfg.data.max_words)
    images = DataLoader(
        EvalImages(rows, cfg.model.vision.img_size, cfg.data.eval), batch_size=cfg.eval.batch_size, shuffle=False,
        num_workers=cfg.data.num_workers, pin_memory=torch.cuda.is_available(), worker_init_fn=ignore_stop_signals,
    )
    logger.info("eval data %s: %d images, %d texts", cfg.data.eval, len(img2txt), len(texts))
    return RetrievalData(images=images, texts=texts, img2txt=img2txt, txt2img=txt2img)
