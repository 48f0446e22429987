"""Collectives for a batch that spans several processes (``loss.negatives = "global"``).

Under ``torchrun`` each rank holds its own ``train.batch_size`` pairs. With local negatives (the
default) the hinge of spec section 4 takes each row's hardest negative inside the rank's batch;
with global negatives every rank sees the *global* batch, as one process at ``world x batch``
would:

1. each rank encodes its own images and captions (the expensive part, split W ways);
2. the caption token features of every level are gathered from all ranks (:func:`gather_rows`),
   and each rank scores its own images against all captions: a ``[B, N]`` block of the global
   score matrix (``N = W B``), the SCAN work of one process at batch N divided by W;
3. the blocks are gathered into the full ``[N, N]`` matrix, identical on every rank, on which the
   MOM statistics and the triplet loss are computed (the global-batch loss, on every rank).

Gradients: :func:`gather_rows` is differentiable. Its backward sums the incoming gradient over
the ranks and returns this rank's rows (a caption of rank q is scored by the blocks of all ranks,
so its gradient is the sum of their contributions). Every rank computes the same loss, so the
score block of rank r receives W times the gradient of the global loss; DistributedDataParallel
then *averages* the parameter gradients over the W ranks, which cancels the factor: the update is
the one a single process computes at the global batch (``tests/test_global_negatives.py`` checks
loss and gradients against a 1-process run at the doubled batch).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    """The size of the initialised default process group (1 when there is none)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


class _GatherRows(torch.autograd.Function):
    """all_gather along dim 0 (equal shapes on every rank) with a gradient (see the module doc)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # a sum: the rows of rank r are used by the graphs of every rank
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def _check_same_shape(x: torch.Tensor) -> None:
    shape = torch.tensor(list(x.shape), device=x.device, dtype=torch.long)
    shapes = [torch.empty_like(shape) for _ in range(dist.get_world_size())]
    dist.all_gather(shapes, shape)
    if any(not torch.equal(s, shape) for s in shapes):
        raise ValueError(
            f"loss.negatives='global' gathers equal blocks from every rank; the shapes differ: "
            f"{[tuple(s.tolist()) for s in shapes]}. Every rank needs the same train.batch_size and "
            "a drop_last loader (the training loop's), and captions padded to text.max_len"
        )


def gather_rows(x: torch.Tensor, check: bool = False) -> torch.Tensor:
    """``x [B, ...]`` of every rank concatenated in rank order, ``[W B, ...]``, differentiable.

    The gradient of the result is summed over the ranks and this rank's rows are returned (the
    module doc says why). Without a process group (or with one rank) ``x`` itself. ``check``:
    first compare the shapes of all ranks (one small collective) and raise a clear error.
    """
    if world_size() == 1:
        return x
    if check:
        _check_same_shape(x)
    if not x.requires_grad:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        return torch.cat(parts)
    return _GatherRows.apply(x)


def global_scores(model, img_levels, txt_levels, txt_lens, img_index=None):
    """The ``[N, N]`` score matrix of the global batch and its ``img_index [N]`` (see the module doc).

    ``model.similarity`` scores this rank's images (``img_levels``, each ``[B, R, D]``) against
    the captions of all ranks; the ``[B, N]`` blocks are then gathered. Rows and columns follow
    rank order, so the diagonal holds the positives (rank r's pair k sits at ``r B + k``).
    """
    txt_all = [gather_rows(t, check=i == 0) for i, t in enumerate(txt_levels)]  # each [N, L, D]
    lens_all = gather_rows(txt_lens.detach())  # [N]
    block = model.similarity(img_levels, txt_all, lens_all)  # [B, N]
    scores = gather_rows(block)  # [N, N]
    index = gather_rows(img_index.detach()) if img_index is not None else None
    return scores, index
