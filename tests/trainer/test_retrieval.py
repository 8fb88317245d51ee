"""Retrieval evaluation: recall@k by hand, and the batched ITC top-k + ITM re-rank against a one-pair-at-a-time reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.config import load
from trainer.eval.retrieval import _rerank, encode_corpus, evaluate_retrieval, recall_at_k
from trainer.model import TCL


def test_recall_at_k_by_hand() -> None:
    # 2 images, 4 texts: image 0 owns texts 0, 1; image 1 owns texts 2, 3.
    img2txt, txt2img = [[0, 1], [2, 3]], [0, 0, 1, 1]
    s_i2t = np.array([[0.1, 0.9, 0.5, 0.2],    # best text 1 (gt): rank 0
                      [0.9, 0.8, 0.1, 0.7]])   # texts ranked 0,1,3,2: best gt (3) at rank 2
    s_t2i = np.array([[0.2, 0.1], [0.1, 0.9], [0.3, 0.4], [0.6, 0.5]])  # gt ranks: 0, 1, 0, 1
    r = recall_at_k(s_i2t, s_t2i, img2txt, txt2img)
    assert r["tr_r1"] == 50.0 and r["tr_r5"] == 100.0 and r["tr_r10"] == 100.0
    assert r["ir_r1"] == 50.0 and r["ir_r5"] == 100.0
    assert r["r_mean"] == pytest.approx((50 + 100 + 100 + 50 + 100 + 100) / 6)


def _reference(model: TCL, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (query, candidate) pair fused on its own, loops everywhere."""
    tokens, img_feat = zip(*(model.encode_image(images[i : i + 1]) for i in range(len(images))))
    hidden, txt_feat = zip(*(model.encode_text(ids[t : t + 1], mask[t : t + 1]) for t in range(len(ids))))
    sims = torch.cat(img_feat) @ torch.cat(txt_feat).t()

    def itm(i: int, t: int) -> float:
        fused = model.text.fuse(hidden[t], mask[t : t + 1], model.text.image_kv(tokens[i]))
        return float(model.itm_head(fused[:, 0])[0, 1])

    s_i2t = np.full(sims.shape, -np.inf)
    for i in range(sims.shape[0]):
        for t in sims[i].topk(k).indices.tolist():
            s_i2t[i, t] = itm(i, t)
    s_t2i = np.full(sims.t().shape, -np.inf)
    for t in range(sims.shape[1]):
        for i in sims[:, t].topk(k).indices.tolist():
            s_t2i[t, i] = itm(i, t)
    return s_i2t, s_t2i


@torch.no_grad()
def test_batched_rerank_matches_pairwise_reference() -> None:
    torch.manual_seed(0)
    cfg = load("tiny", ["model.text.dropout=0"])
    model = TCL(cfg.model, cfg.loss).eval()
    n_img, per_img, length = 6, 3, 9
    images = torch.randn(n_img, 3, 64, 64)
    ids = torch.randint(1000, 3000, (n_img * per_img, length))
    ids[:, 0] = 101
    mask = torch.ones_like(ids)
    mask[::4, 6:] = 0  # some padded captions
    img2txt = [list(range(i * per_img, (i + 1) * per_img)) for i in range(n_img)]
    txt2img = [t // per_img for t in range(n_img * per_img)]
    loader = torch.utils.data.DataLoader(images, batch_size=4)
    autocast = torch.autocast("cpu", enabled=False)
    cpu = torch.device("cpu")
    corpus = encode_corpus(model, loader, ids, mask, 5, cpu, autocast)
    sims = corpus.image_feat @ corpus.text_feat.t()
    for k in (2, 4):
        want_i2t, want_t2i = _reference(model, images, ids, mask, k)
        got_i2t = _rerank(model, sims, k, 5, corpus, queries_are_images=True).numpy()
        got_t2i = _rerank(model, sims.t().contiguous(), k, 5, corpus, queries_are_images=False).numpy()
        assert np.isfinite(got_i2t).sum(axis=1).tolist() == [k] * n_img
        np.testing.assert_allclose(got_i2t, want_i2t, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got_t2i, want_t2i, rtol=1e-4, atol=1e-5)
        got = evaluate_retrieval(model, loader, ids, mask, img2txt, txt2img, k_test=k, batch_size=5, device=cpu, autocast=autocast)
        assert {key: got[key] for key in ("tr_r1", "ir_r1", "r_mean")} == pytest.approx(
            {key: v for key, v in recall_at_k(want_i2t, want_t2i, img2txt, txt2img).items() if key in ("tr_r1", "ir_r1", "r_mean")}
        )
