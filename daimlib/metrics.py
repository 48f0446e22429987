"""Separation of positive and negative pairs in a score matrix (notebook 08, evaluation protocol).

A leaf module (numpy only): :func:`positive_and_hardest_negative` gives, per query, the two numbers
the hardest-negative triplet loss compares (spec section 4, step 5); :func:`separation_auc` how
often a positive outscores a negative (ROC AUC). :mod:`daimlib.viz` re-exports both.
"""

from __future__ import annotations

import numpy as np


def to_numpy(x) -> np.ndarray:
    """A float64 numpy copy of an array, tensor or list (tensors are detached and moved to CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().double().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def positive_and_hardest_negative(
    sims, img_of_caption, direction: str = "t2i"
) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the positive score and the hardest negative score of an ``[n_img, n_cap]`` matrix.

    ``direction="t2i"``: one pair per caption j: ``S[img(j), j]`` and ``max_{i != img(j)} S[i, j]``.
    ``direction="i2t"``: one pair per image i: the best of its own captions and the best other
    caption. These are the two numbers the hardest-negative triplet loss compares (spec section 4,
    step 5); the positive wins exactly when the query is ranked first (R@1, evaluation protocol).
    """
    s = to_numpy(sims)
    idx = np.asarray(img_of_caption).reshape(-1).astype(np.int64)
    if s.ndim != 2 or idx.size != s.shape[1]:
        raise ValueError(
            f"expected sims [n_img, n_cap] and one image index per caption; got sims {s.shape} and "
            f"{idx.size} indices"
        )
    own = np.zeros_like(s, dtype=bool)
    own[idx, np.arange(idx.size)] = True  # [n_img, n_cap]: caption j belongs to image i
    if direction == "t2i":
        return s[idx, np.arange(idx.size)], np.where(own, -np.inf, s).max(axis=0)
    if direction == "i2t":
        return np.where(own, s, -np.inf).max(axis=1), np.where(own, -np.inf, s).max(axis=1)
    raise ValueError(f"direction must be 't2i' or 'i2t', got {direction!r}")


def separation_auc(pos, neg) -> float:
    """P(a random positive scores above a random negative), ties counted 1/2 (ROC AUC, Mann-Whitney U).

    0.5 = no separation, 1.0 = every positive above every negative. Computed from ranks in
    O((P + N) log(P + N)).
    """
    p, n = to_numpy(pos).ravel(), to_numpy(neg).ravel()
    if p.size == 0 or n.size == 0:
        raise ValueError(f"need positives and negatives, got {p.size} and {n.size}")
    both = np.concatenate([p, n])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(both.size, dtype=np.float64)
    sorted_vals = both[order]
    # average ranks (1-based) over ties
    _, first, counts = np.unique(sorted_vals, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[: p.size].sum() - p.size * (p.size + 1) / 2.0
    return float(u / (p.size * n.size))
