"""Zero-shot image-text retrieval: rank by ITC similarity, re-rank the top k by the ITM head.

The one implementation: the trainer's in-loop evaluation and `tcl-eval` both call `evaluate_split`.
Score semantics are the official Retrieval.py's: the ITM head's match logit at each query's top-k ITC
candidates (not added to the ITC similarity), every other candidate below them. Queries are split across
ranks (row r goes to rank r % W) and the score matrices summed, so every rank ends with the full result.
Fusion re-ranking is batched: many (query, candidate) pairs per call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from trainer.config import RunConfig
from trainer.data.dataset import RetrievalData
from trainer.data.loader import tokenize
from trainer.model import TCL
from trainer.model.bert import ImageKV
from trainer.weights.official import interpolate_pos_embed

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total): called as the work of a stage ("images", "texts", "i2t", "t2i") advances."""


@dataclass
class EncodedCorpus:
    image_tokens: Tensor   # (N_img, 1 + P, W)
    image_feat: Tensor     # (N_img, D)
    text_hidden: Tensor    # (N_txt, L, H)
    text_mask: Tensor      # (N_txt, L)
    text_feat: Tensor      # (N_txt, D)


def _itm_scores(model: TCL, text_hidden: Tensor, text_mask: Tensor, image_kv: ImageKV, image_index: Tensor) -> Tensor:
    fused = model.text.fuse(text_hidden, text_mask, image_kv, image_index)
    return model.itm_logits(fused, text_mask).float()[:, 1]


def _rerank(
    model: TCL, sims: Tensor, k: int, pair_batch: int, corpus: EncodedCorpus, *, queries_are_images: bool,
    progress: Progress | None = None,
) -> Tensor:
    """Score matrix (queries x candidates) holding the ITM match logit at each query's top-k ITC
    candidates and -inf elsewhere; this rank handles queries rank, rank + W, ..."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    n_query, n_cand = sims.shape
    k = min(k, n_cand)
    scores = torch.full((n_query, n_cand), -torch.inf, device=sims.device)
    mine = torch.arange(rank, n_query, world, device=sims.device)
    per_call = max(1, pair_batch // k)
    for chunk in mine.split(per_call):
        top = sims[chunk].topk(k, dim=1).indices  # (n, k)
        flat = top.reshape(-1)
        if queries_are_images:
            kv = model.text.image_kv(corpus.image_tokens[chunk])
            image_index = torch.arange(len(chunk), device=sims.device).repeat_interleave(k)
            s = _itm_scores(model, corpus.text_hidden[flat], corpus.text_mask[flat], kv, image_index)
        else:
            kv = model.text.image_kv(corpus.image_tokens[flat])
            queries = chunk.repeat_interleave(k)
            s = _itm_scores(model, corpus.text_hidden[queries], corpus.text_mask[queries], kv, None)
        scores[chunk[:, None], top] = s.view(len(chunk), k)
        if progress is not None:
            progress("i2t" if queries_are_images else "t2i", len(chunk), len(mine))
    if world > 1:
        # -inf + finite is -inf, so sum the finite parts and keep -inf where no rank scored.
        finite = torch.where(torch.isfinite(scores), scores, torch.zeros_like(scores))
        scored = torch.isfinite(scores).float()
        dist.all_reduce(finite)
        dist.all_reduce(scored)
        scores = torch.where(scored > 0, finite, torch.full_like(finite, -torch.inf))
    return scores


def recall_at_k(
    score_i2t: np.ndarray, score_t2i: np.ndarray, img2txt: list[list[int]], txt2img: list[int]
) -> dict[str, float]:
    """TR@1/5/10 (an image's rank is that of its best ground-truth caption), IR@1/5/10 and their mean, in %."""
    tr_ranks = np.empty(len(img2txt))
    for i, row in enumerate(score_i2t):
        order = np.argsort(-row, kind="stable")
        tr_ranks[i] = min(np.where(order == t)[0][0] for t in img2txt[i])
    ir_ranks = np.empty(len(txt2img))
    for t, row in enumerate(score_t2i):
        order = np.argsort(-row, kind="stable")
        ir_ranks[t] = np.where(order == txt2img[t])[0][0]
    out = {f"tr_r{k}": 100.0 * float(np.mean(tr_ranks < k)) for k in (1, 5, 10)}
    out |= {f"ir_r{k}": 100.0 * float(np.mean(ir_ranks < k)) for k in (1, 5, 10)}
    out["r_mean"] = float(np.mean(list(out.values())))
    return out


@torch.no_grad()
def encode_corpus(
    model: TCL, images: torch.utils.data.DataLoader, text_ids: Tensor, text_mask: Tensor,
    batch_size: int, device: torch.device, autocast: torch.autocast, progress: Progress | None = None,
) -> EncodedCorpus:
    tokens, image_feat = [], []
    with autocast:
        for batch in images:
            t, f = model.encode_image(batch.to(device))
            tokens.append(t)
            image_feat.append(f)
            if progress is not None:
                progress("images", len(batch), len(images.dataset))
        hidden, text_feat = [], []
        for ids, mask in zip(text_ids.split(batch_size), text_mask.split(batch_size), strict=True):
            h, f = model.encode_text(ids.to(device), mask.to(device))
            hidden.append(h)
            text_feat.append(f)
            if progress is not None:
                progress("texts", len(ids), len(text_ids))
    return EncodedCorpus(
        image_tokens=torch.cat(tokens), image_feat=torch.cat(image_feat),
        text_hidden=torch.cat(hidden), text_mask=text_mask.to(device), text_feat=torch.cat(text_feat),
    )


@torch.no_grad()
def evaluate_retrieval(
    model: TCL, images: torch.utils.data.DataLoader, text_ids: Tensor, text_mask: Tensor,
    img2txt: list[list[int]], txt2img: list[int], *, k_test: int, batch_size: int, device: torch.device,
    autocast: torch.autocast, progress: Progress | None = None,
) -> dict[str, float]:
    """ITC top-k then ITM re-rank; recall@1/5/10 both ways plus the ITC-only recalls (keys itc_*)."""
    was_training = model.training
    model.eval()
    try:
        corpus = encode_corpus(model, images, text_ids, text_mask, batch_size, device, autocast, progress)
        sims = corpus.image_feat @ corpus.text_feat.t()
        with autocast:
            i2t = _rerank(model, sims, k_test, batch_size, corpus, queries_are_images=True, progress=progress)
            t2i = _rerank(
                model, sims.t().contiguous(), k_test, batch_size, corpus, queries_are_images=False, progress=progress
            )
    finally:
        model.train(was_training)
    result = recall_at_k(i2t.cpu().numpy(), t2i.cpu().numpy(), img2txt, txt2img)
    itc = recall_at_k(sims.cpu().numpy(), sims.t().cpu().numpy(), img2txt, txt2img)
    return result | {f"itc_{k}": v for k, v in itc.items()}


def split_config(
    cfg: RunConfig, *, split: str | None = None, batch_size: int | None = None, num_workers: int | None = None
) -> RunConfig:
    """cfg as build_eval_data reads it for a retrieval split at the evaluation resolution (it resizes to
    model.vision.img_size): eval.image_size or else the training one; optionally another split and batch."""
    image_size = cfg.eval.image_size or cfg.model.vision.img_size
    data = {"eval": split or cfg.data.eval, "num_workers": cfg.data.num_workers if num_workers is None else num_workers}
    return cfg.model_copy(update={
        "data": cfg.data.model_copy(update=data),
        "model": cfg.model.model_copy(update={"vision": cfg.model.vision.model_copy(update={"img_size": image_size})}),
        "eval": cfg.eval.model_copy(update={"batch_size": batch_size or cfg.eval.batch_size}),
    })


def at_image_size(model: TCL, image_size: int) -> TCL:
    """The model as it evaluates at `image_size`: itself at its own resolution, else a new eval copy (same
    device and dtype) whose position embeddings are interpolated as the official code does (plain bicubic)."""
    vision = model.cfg.vision
    if image_size == vision.img_size:
        return model
    if image_size % vision.patch_size:
        raise ValueError(f"image size {image_size} is not a multiple of the patch size {vision.patch_size}")
    cfg = model.cfg.model_copy(update={"vision": vision.model_copy(update={"img_size": image_size})})
    state = model.state_dict()
    key = "visual_encoder.pos_embed"
    state[key] = interpolate_pos_embed(state[key], image_size // vision.patch_size)
    resized = TCL(cfg, model.loss_cfg).to(device=model.temp.device, dtype=model.dtype).eval()
    resized.load_state_dict(state)
    return resized


@torch.no_grad()
def evaluate_split(
    model: TCL, data: RetrievalData, tokenizer: PreTrainedTokenizerBase, *, image_size: int, max_tokens: int,
    k_test: int, batch_size: int, device: torch.device, autocast: torch.autocast, progress: Progress | None = None,
) -> dict[str, float]:
    """Retrieval on a split whose images are already at `image_size`: captions tokenized (padded to the
    longest, truncated at max_tokens), the model taken to that resolution, ITC top-k then ITM re-rank."""
    ids, mask = tokenize(data.texts, tokenizer, max_tokens)
    return evaluate_retrieval(
        at_image_size(model, image_size), data.images, ids, mask, data.img2txt, data.txt2img,
        k_test=k_test, batch_size=batch_size, device=device, autocast=autocast, progress=progress,
    )
