"""ITM loss, hard-negative sampling and distilled MLM against slow references and hand-made cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from tests.trainer.model.tcl_references import IGNORE, itm_reference, log_softmax, mlm_reference
from trainer.losses import IGNORE_INDEX, itm_loss, mlm_loss, sample_hard_negatives

# Chi-square critical value at p = 0.001 for 3 degrees of freedom (4 categories).
CHI2_3DOF_P001 = 16.266


def test_ignore_index_is_torch_convention() -> None:
    assert IGNORE_INDEX == IGNORE == -100


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_itm_loss_matches_reference(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(12, 2, generator=g)).to(dtype)
    labels = torch.cat([torch.ones(4, dtype=torch.long), torch.zeros(8, dtype=torch.long)])
    got = itm_loss(logits, labels)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), itm_reference(logits.double(), labels), rtol=1e-6, atol=1e-6)


def mlm_case(rows: int = 10, vocab: int = 50, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Student and teacher logits at gathered positions; rows 3 and 7 are capacity padding."""
    g = torch.Generator().manual_seed(seed)
    student = 2 * torch.randn(rows, vocab, generator=g)
    teacher = student + torch.randn(rows, vocab, generator=g)
    labels = torch.randint(vocab, (rows,), generator=g)
    labels[[3, 7]] = IGNORE
    return student, teacher, labels


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("alpha", [0.0, 0.4, 1.0])
def test_mlm_loss_matches_reference(alpha: float, dtype: torch.dtype) -> None:
    student, teacher, labels = mlm_case()
    student, teacher = student.to(dtype), teacher.to(dtype)
    got = mlm_loss(student, teacher, labels, alpha)
    assert got.dtype == torch.float32
    want = mlm_reference(student.double(), teacher.double(), labels, alpha)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_mlm_gradient_matches_reference_and_spares_teacher() -> None:
    student, teacher, labels = mlm_case()
    s_got, t_got = student.clone().requires_grad_(True), teacher.clone().requires_grad_(True)
    s_want = student.double().requires_grad_(True)
    mlm_loss(s_got, t_got, labels, 0.4).backward()
    mlm_reference(s_want, teacher.double(), labels, 0.4).backward()
    torch.testing.assert_close(s_got.grad.double(), s_want.grad, rtol=1e-5, atol=1e-6)
    assert t_got.grad is None, "the MLM teacher got a gradient"
    assert s_got.grad[[3, 7]].abs().max() == 0, "padding rows of the capacity got a gradient"


def test_mlm_distillation_is_over_the_vocabulary() -> None:
    """A teacher equal to the student plus a different constant per row has, over the vocabulary, the
    student's own distribution: with alpha 1 the loss is the mean entropy of the student rows. A softmax
    over the positions axis would weigh the rows by their constants instead."""
    student, _, labels = mlm_case()
    teacher = student + 10.0 * torch.arange(student.shape[0], dtype=torch.float32)[:, None]
    valid = labels != IGNORE
    entropies = [-(torch.exp(log_softmax(row)) * log_softmax(row)).sum() for row in student.double()[valid]]
    want = torch.stack(entropies).mean()
    torch.testing.assert_close(mlm_loss(student, teacher, labels, 1.0).double(), want, rtol=1e-5, atol=1e-6)
    over_positions = (-(F.softmax(teacher, dim=0) * F.log_softmax(student, dim=-1)).sum(-1))[valid].mean()
    assert not torch.isclose(over_positions.double(), want, rtol=1e-2), "the case cannot tell the two axes apart"


def test_mlm_without_teacher() -> None:
    student, _, labels = mlm_case()
    want = mlm_reference(student.double(), None, labels, 0.0)
    torch.testing.assert_close(mlm_loss(student, None, labels, 0.0).double(), want)
    with pytest.raises(ValueError, match="teacher"):
        mlm_loss(student, None, labels, 0.4)


def test_mlm_with_nothing_masked_is_zero_and_finite() -> None:
    student, teacher, labels = mlm_case()
    s = student.clone().requires_grad_(True)
    loss = mlm_loss(s, teacher, torch.full_like(labels, IGNORE), 0.4)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(s.grad).all()


def saturated_similarities(b: int = 8, seed: int = 0) -> Tensor:
    """Logits as sim / temp at temp 0.001 (within [-1000, 1000]): the positive at 1000, the negatives
    distinct and at least 20 apart, up to 360. A softmax over a row puts all its mass on the positive and
    exactly nothing on the negatives in fp32."""
    g = torch.Generator().manual_seed(seed)
    sim = torch.randperm(b * b, generator=g).view(b, b).float() * 20 - 900
    return sim.fill_diagonal_(1000.0)


def assert_never_positive(neg_text: Tensor, neg_image: Tensor) -> None:
    rows = torch.arange(neg_text.shape[0])
    assert (neg_text != rows).all() and (neg_image != rows).all()


def test_hard_negatives_under_saturation_pick_the_hardest() -> None:
    """Off-diagonal softmax mass underflows to 0 in fp32 here (the official multinomial crash); we still
    draw, and with gaps of many units in the logits the draw is the hardest off-diagonal entry."""
    sim = saturated_similarities()
    off = sim.masked_fill(torch.eye(8, dtype=torch.bool), float("-inf"))
    assert (F.softmax(sim, dim=1).masked_fill(torch.eye(8, dtype=torch.bool), 0) == 0).all()
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        neg_text, neg_image = sample_hard_negatives(sim, sim.t(), generator=g)
        assert torch.equal(neg_text, off.argmax(1)) and torch.equal(neg_image, off.t().argmax(1))


@pytest.mark.parametrize("scale", [1e3, 1e30, 3e38])
def test_hard_negatives_with_huge_logits_never_raise_or_pick_positive(scale: float) -> None:
    g = torch.Generator().manual_seed(1)
    sim = torch.randn(6, 6, generator=g).clamp(-1, 1) * scale
    sim.fill_diagonal_(scale)
    for _ in range(50):
        assert_never_positive(*sample_hard_negatives(sim, sim.t(), generator=g))


def test_hard_negatives_with_non_finite_rows_fall_back_to_uniform() -> None:
    """Rows with a NaN or an infinity off the diagonal draw uniformly among the other indices; a bad
    diagonal alone does not matter (it is never drawn); nothing raises."""
    g = torch.Generator().manual_seed(2)
    b, draws = 5, 2000
    sim = 3 * torch.randn(b, b, generator=g)
    sim[0, 2] = float("nan")
    sim[1, 4] = float("inf")
    sim[2, 0] = float("-inf")
    sim[3, 3] = float("nan")
    counts = torch.zeros(b, b)
    for _ in range(draws):
        neg, _ = sample_hard_negatives(sim, sim, generator=g)
        assert_never_positive(neg, neg)
        counts[torch.arange(b), neg] += 1
    for row in (0, 1, 2):
        others = counts[row][torch.arange(b) != row]
        chi2 = ((others - draws / (b - 1)) ** 2 / (draws / (b - 1))).sum()
        assert chi2 < CHI2_3DOF_P001, f"row {row} is not uniform over the others: {counts[row].tolist()}"
    assert_follows_softmax(counts[3], sim[3], row=3, draws=draws)
    all_nan = torch.full((b, b), float("nan"))
    assert_never_positive(*sample_hard_negatives(all_nan, all_nan, generator=g))


def assert_follows_softmax(counts: Tensor, logits: Tensor, row: int, draws: int) -> None:
    """Chi-square of the counts of one row against softmax over its off-diagonal logits."""
    others = torch.arange(logits.shape[0]) != row
    expected = draws * F.softmax(logits[others].double(), dim=0)
    chi2 = ((counts[others].double() - expected) ** 2 / expected).sum()
    assert counts[row] == 0
    assert chi2 < CHI2_3DOF_P001, f"row {row}: counts {counts.tolist()}, expected {expected.tolist()}"


def test_hard_negatives_follow_softmax_of_off_diagonal_logits() -> None:
    """Many draws with a fixed generator: each row's counts fit softmax over its other entries (chi-square,
    p = 0.001), for both directions; the official weights (softmax, diagonal zeroed) give the same law."""
    g = torch.Generator().manual_seed(3)
    b, draws = 5, 4000
    sim_i2t = 1.5 * torch.randn(b, b, generator=g)
    sim_t2i = 1.5 * torch.randn(b, b, generator=g)
    counts_text, counts_image = torch.zeros(b, b), torch.zeros(b, b)
    rows = torch.arange(b)
    for _ in range(draws):
        neg_text, neg_image = sample_hard_negatives(sim_i2t, sim_t2i, generator=g)
        counts_text[rows, neg_text] += 1
        counts_image[rows, neg_image] += 1
    for row in range(b):
        assert_follows_softmax(counts_text[row], sim_i2t[row], row, draws)
        assert_follows_softmax(counts_image[row], sim_t2i[row], row, draws)


def test_hard_negatives_reproducible_and_validated() -> None:
    sim = torch.randn(6, 6)
    first = sample_hard_negatives(sim, sim, generator=torch.Generator().manual_seed(5))
    second = sample_hard_negatives(sim, sim, generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    with pytest.raises(ValueError, match="square"):
        sample_hard_negatives(torch.randn(4, 6), torch.randn(4, 6))
    with pytest.raises(ValueError, match="B >= 2"):
        sample_hard_negatives(torch.randn(1, 1), torch.randn(1, 1))
