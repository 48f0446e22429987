"""The capstone's checker (check_info_nce): it accepts the library's loss and an independent naive loop,
and rejects the usual mistakes by name (one direction, no temperature, no average, no gradient, overflow)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from daimlib.course.exercises import check_info_nce
from daimlib.dual import info_nce


def _naive(scores, temperature):
    """Per pair, with Python floats for the softmaxes (max-shifted), then back to a tensor with a graph."""
    B = scores.shape[0]
    logits = scores / temperature
    total = 0
    for i in range(B):
        row, col = logits[i], logits[:, i]
        total = total - (row[i] - row.max() - torch.log(torch.exp(row - row.max()).sum()))
        total = total - (col[i] - col.max() - torch.log(torch.exp(col - col.max()).sum()))
    return total / (2 * B)


def test_the_checker_accepts_the_library_and_a_naive_loop():
    for fn in (lambda s, t: info_nce(s, t), _naive):
        fb = check_info_nce(fn)
        assert fb and fb.status == "right", fb


def test_the_naive_loop_is_the_library_on_a_hand_worked_case():
    # logits [[2, 0], [0, 2]] (scores [[1, 0], [0, 1]], temperature 0.5): each of the four
    # cross-entropies is log(1 + e^-2)
    S = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert float(_naive(S, 0.5)) == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-6)
    assert float(info_nce(S, 0.5)) == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-6)


def _ce(logits):
    return F.cross_entropy(logits, torch.arange(logits.shape[0]))


WRONG = [
    (lambda s, t: _ce(s / t), "only one direction"),
    (lambda s, t: _ce(s.T / t), "only one direction"),
    (lambda s, t: 0.5 * (_ce(s) + _ce(s.T)), "temperature is ignored"),
    (lambda s, t: 0.5 * (_ce(s * t) + _ce(s.T * t)), "multiplied by the temperature"),
    (lambda s, t: _ce(s / t) + _ce(s.T / t), "not averaged"),
    (lambda s, t: 0.5 * s.shape[0] * (_ce(s / t) + _ce(s.T / t)), "summed over the batch"),
    (lambda s, t: torch.tensor(float(info_nce(s, t).detach())), "no gradient"),
]


@pytest.mark.parametrize("wrong, reason", WRONG)
def test_the_checker_names_the_mistake(wrong, reason):
    fb = check_info_nce(wrong)
    assert not fb and fb.status == "wrong" and reason in fb.message, fb


def test_the_checker_catches_an_overflowing_softmax_and_a_left_out_positive():
    def unstable(s, t):  # exp of the raw logits: inf at temperature 0.01 in float32
        e = torch.exp(s / t)
        d = torch.diagonal(e)
        return 0.5 * (-torch.log(d / e.sum(1)).mean() - torch.log(d / e.sum(0)).mean())

    fb = check_info_nce(unstable)
    assert fb.status == "wrong" and "overflows" in fb.message, fb

    def left_out(s, t):
        logits = s / t
        off = logits.masked_fill(torch.eye(len(s), dtype=torch.bool), float("-inf"))
        d = logits.diagonal()
        return 0.5 * ((off.logsumexp(1) - d).mean() + (off.logsumexp(0) - d).mean())

    fb = check_info_nce(left_out)
    assert fb.status == "wrong" and "denominator" in fb.message, fb


def test_the_checker_says_not_attempted_and_reports_a_crash():
    def stub(scores, temperature): ...

    assert check_info_nce(None).status == "not attempted"
    assert check_info_nce(stub).status == "not attempted"
    fb = check_info_nce(lambda s, t: s.matmul(torch.ones(3)))
    assert fb.status == "wrong" and "raised" in fb.message
    fb = check_info_nce(lambda s, t: s.diagonal())  # a vector, not the batch's loss
    assert fb.status == "wrong" and "one number" in fb.message
