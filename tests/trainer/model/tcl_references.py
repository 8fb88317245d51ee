"""Slow references of the TCL objectives, written from TCL.md's formulas rather than from the code.

Explicit Python loops over rows, keys and locals, in float64, with a hand-written log-softmax. Each
takes float64 tensors and is differentiable, so the functions under test can be compared on values and
on gradients. Targets that TCL.md computes without gradient are detached here too.
"""

from __future__ import annotations

import torch
from torch import Tensor

IGNORE = -100


def log_softmax(row: Tensor) -> Tensor:
    """log(exp(x_j) / sum_k exp(x_k)) for a 1-D row, shifted by its max."""
    top = row.max().detach()
    return row - top - torch.log(torch.exp(row - top).sum())


def _scalar(temp: Tensor | float) -> Tensor:
    return temp.reshape(()) if isinstance(temp, Tensor) else torch.tensor(temp, dtype=torch.float64)


def _similarities(query: Tensor, keys: list[Tensor], temp: Tensor) -> Tensor:
    return torch.stack([torch.dot(query, key) for key in keys]) / temp


def _rows(x: Tensor) -> list[Tensor]:
    return [x[j] for j in range(x.shape[0])]


def distilled_contrast(
    query: Tensor, query_m: Tensor, batch_keys: Tensor, queue: Tensor, temp: Tensor | float, alpha: float,
) -> Tensor:
    """One CMA direction: row i against [batch_keys; queue]; target alpha * softmax(query_m[i] . keys / t)
    + (1 - alpha) * onehot(i); mean over rows of -sum(target * log_softmax)."""
    t = _scalar(temp)
    keys = _rows(batch_keys) + _rows(queue)
    losses = []
    for i in range(query.shape[0]):
        logits = _similarities(query[i], keys, t)
        with torch.no_grad():
            teacher = torch.exp(log_softmax(_similarities(query_m[i], keys, t)))
            target = alpha * teacher
            target[i] += 1.0 - alpha
        losses.append(-(target * log_softmax(logits)).sum())
    return torch.stack(losses).mean()


def cma_reference(
    img: Tensor, txt: Tensor, img_m: Tensor, txt_m: Tensor, image_queue: Tensor, text_queue: Tensor,
    temp: Tensor | float, alpha: float,
) -> tuple[Tensor, Tensor]:
    """(i2t, t2i): images against [txt_m; text_queue], texts against [img_m; image_queue]."""
    return (
        distilled_contrast(img, img_m, txt_m, text_queue, temp, alpha),
        distilled_contrast(txt, txt_m, img_m, image_queue, temp, alpha),
    )


def hard_contrast(query: Tensor, batch_keys: Tensor, queue: Tensor, temp: Tensor | float) -> Tensor:
    """Row i against [batch_keys; queue] with the positive at column i: mean of -log_softmax[i]."""
    t = _scalar(temp)
    keys = _rows(batch_keys) + _rows(queue)
    return torch.stack([-log_softmax(_similarities(query[i], keys, t))[i] for i in range(query.shape[0])]).mean()


def imc_reference(
    img: Tensor, txt: Tensor, img_m: Tensor, txt_m: Tensor, image_queue: Tensor, text_queue: Tensor,
    temp: Tensor | float,
) -> tuple[Tensor, Tensor]:
    """(i2i, t2t): images against [img_m; image_queue], texts against [txt_m; text_queue]."""
    return hard_contrast(img, img_m, image_queue, temp), hard_contrast(txt, txt_m, text_queue, temp)


def lmi_reference(global_feat: Tensor, local_feat: Tensor, local_mask: Tensor | None, temp: Tensor | float) -> Tensor:
    """The official in-batch global-to-local loss, literally: for sample i and valid local k, logits
    [g_i . l_ik, g_i . l_jk' for every other sample j and valid k'] / t, loss -log_softmax at index 0.
    No mask (image): mean over B x K. Mask (text): per sample sum over valid locals / their count, then mean."""
    t = _scalar(temp)
    b, k_count, _ = local_feat.shape
    valid = torch.ones(b, k_count, dtype=torch.bool) if local_mask is None else local_mask.bool()
    per_sample: list[Tensor] = []
    per_local: list[Tensor] = []
    for i in range(b):
        negatives = [
            torch.dot(global_feat[i], local_feat[j, k]) / t
            for j in range(b) if j != i
            for k in range(k_count) if valid[j, k]
        ]
        terms = []
        for k in range(k_count):
            if not valid[i, k]:
                continue
            positive = torch.dot(global_feat[i], local_feat[i, k]) / t
            terms.append(-log_softmax(torch.stack([positive, *negatives]))[0])
        per_local += terms
        per_sample.append(torch.stack(terms).sum() / len(terms))
    if local_mask is None:
        return torch.stack(per_local).mean()
    return torch.stack(per_sample).mean()


def itm_reference(logits: Tensor, labels: Tensor) -> Tensor:
    return torch.stack([-log_softmax(logits[r])[labels[r]] for r in range(logits.shape[0])]).mean()


def mlm_reference(student: Tensor, teacher: Tensor | None, labels: Tensor, alpha: float) -> Tensor:
    """(1 - alpha) * mean CE + alpha * mean(-sum_v softmax(teacher_r)_v log_softmax(student_r)_v), over the
    rows whose label is not IGNORE; each softmax over the vocabulary of one row."""
    ce, distill = [], []
    for r in range(student.shape[0]):
        if labels[r] == IGNORE:
            continue
        log_p = log_softmax(student[r])
        ce.append(-log_p[labels[r]])
        if teacher is not None:
            q = torch.exp(log_softmax(teacher[r])).detach()
            distill.append(-(q * log_p).sum())
    loss = (1 - alpha) * torch.stack(ce).mean()
    if alpha:
        loss = loss + alpha * torch.stack(distill).mean()
    return loss


def enqueue_reference(queue: list[Tensor], ptr: int, entries: list[Tensor]) -> int:
    """Write entries into the queue one by one at the pointer, wrapping; returns the new pointer."""
    for entry in entries:
        queue[ptr] = entry
        ptr = (ptr + 1) % len(queue)
    return ptr
