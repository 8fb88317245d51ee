"""Zero-shot image-text retrieval: rank by ITC similarity, re-rank the top k by the ITM head.

Queries are split across ranks (row r goes to rank r % W) and the score matrices summed, so every rank
ends with the full result. Fusion re-ranking is batched: many (query, candidate) pairs per call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from trainer.model import TCL
from trainer.model.bert import ImageKV


@dataclass
class EncodedCorpus:
    image_tokens: Tensor   # (N_img, 1 + P, W)
    image_feat: Tensor     # (N_img, D)
    text_hidden: Tensor    # (N_txt, L, H)
    text_mask: Tensor      # (N_txt, L)
    text_feat: Tensor      # (N_txt, D)


def _itm_scores(model: TCL, text_hidden: Tensor, text_mask: Tensor, image_kv: ImageKV, image_index: Tensor) -> Tensor:
    fused = model.text.fuse(text_hidden, text_mask, image_kv, image_index)
    return model.itm_head(fused[:, 0]).float()[:, 1]


def _rerank(
    model: TCL, sims: Tensor, k: int, pair_batch: int, corpus: EncodedCorpus, *, queries_are_images: bool,
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
    if world > 1:
        # -inf + finite is -inf, so sum the finite parts and keep -inf where no rank scored.
        finite = torch.where(torch.isfinite(scores), scores, torch.zeros_like(scores))
        scored = torch.isfinite(scores).float()
        dist.all_reduce(finite)
        dist.all_reduce(scored)
        scores = torch.where(scored > 0, finite, torch.full_like(finite, -torch.inf))
    return scores


def recall_at_k(score_i2t: np.ndarray, score_t2i: np.ndarray, img2txt: list[list[int]], txt2img: list[int]) -> dict[str, float]:
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
    batch_size: int, device: torch.device, autocast: torch.autocast,
) -> EncodedCorpus:
    tokens, image_feat = [], []
    with autocast:
        for batch in images:
            t, f = model.encode_image(batch.to(device))
            tokens.append(t)
            image_feat.append(f)
        hidden, text_feat = [], []
        for ids, mask in zip(text_ids.split(batch_size), text_mask.split(batch_size)):
            h, f = model.encode_text(ids.to(device), mask.to(device))
            hidden.append(h)
            text_feat.append(f)
    return EncodedCorpus(
        image_tokens=torch.cat(tokens), image_feat=torch.cat(image_feat),
        text_hidden=torch.cat(hidden), text_mask=text_mask.to(device), text_feat=torch.cat(text_feat),
    )


@torch.no_grad()
def evaluate_retrieval(
    model: TCL, images: torch.utils.data.DataLoader, text_ids: Tensor, text_mask: Tensor,
    img2txt: list[list[int]], txt2img: list[int], *, k_test: int, batch_size: int, device: torch.device,
    autocast: torch.autocast,
) -> dict[str, float]:
    """ITC top-k then ITM re-rank; recall@1/5/10 both ways plus the ITC-only recalls (keys itc_*)."""
    was_training = model.training
    model.eval()
    try:
        corpus = encode_corpus(model, images, text_ids, text_mask, batch_size, device, autocast)
        sims = corpus.image_feat @ corpus.text_feat.t()
        with autocast:
            i2t = _rerank(model, sims, k_test, batch_size, corpus, queries_are_images=True)
            t2i = _rerank(model, sims.t().contiguous(), k_test, batch_size, corpus, queries_are_images=False)
    finally:
        model.train(was_training)
    result = recall_at_k(i2t.cpu().numpy(), t2i.cpu().numpy(), img2txt, txt2img)
    itc = recall_at_k(sims.cpu().numpy(), sims.t().cpu().numpy(), img2txt, txt2img)
    return result | {f"itc_{k}": v for k, v in itc.items()}
