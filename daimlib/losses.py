"""Ranking loss and the margin optimisation module (MOM) of DAIM, spec sections 4-5.

- :func:`triplet_loss`: the bidirectional hinge triplet loss of VSE++ (Faghri et al. 2018) on a
  score matrix whose rows are images, columns captions and diagonal the positives; hardest
  negative (DAIM, HAT) or sum over all negatives.
- :class:`AdaptiveMargin`: the MOM exactly as the reference ``compute_SCAN`` implements it: on
  each training step's detached score matrix, fit Gaussians to the positive scores p_i and the
  negative statistics n_i of the rows that rank their own caption first, find the Bayes boundary
  λ with α·N(λ; μ_p, σ_p) = N(λ; μ_n, σ_n) (:func:`gaussian_boundary`) and move the margin toward
  it by an EMA. The margin is a registered buffer, so it is saved in ``state_dict``.
- :class:`MatchingLoss`: the module the training loop calls after the model: it owns the
  AdaptiveMargin, the warm-up schedule and same-image masking (open_clip's ``ClipLoss`` shape),
  so that the model itself never needs the training step. With ``kind="infonce"`` it computes
  the dual encoder's symmetric InfoNCE (:func:`daimlib.dual.info_nce`) instead of the hinge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from .dual import LOSS_KINDS, contrastive_loss

NEG_STATS = ("reference", "mean_offdiag", "hardest")


def triplet_loss(
    scores: torch.Tensor,
    margin: float | torch.Tensor,
    hardest: bool = True,
    reduction: str = "sum",
    neg_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bidirectional hinge triplet loss (spec section 4, step 5).

    ``L = Σ_i agg_{j≠i} [m + S_ij − S_ii]_+  +  Σ_j agg_{i≠j} [m + S_ij − S_jj]_+`` with agg = max
    (``hardest=True``, VSE++) or sum. ``scores [B, B]``: rows images, columns captions, diagonal
    positives. ``neg_mask [B, B]`` bool marks pairs that must not count as negatives (e.g. two
    captions of the same image). ``reduction``: "sum" (the reference) or "mean" (divided by B).
    """
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"triplet_loss expects square scores [B, B]; got shape {tuple(scores.shape)}")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean'; got {reduction!r}")
    B = scores.shape[0]
    pos = scores.diagonal()  # [B]
    cost_cap = (margin + scores - pos[:, None]).clamp_min(0)  # [B, B]: image i vs caption j
    cost_img = (margin + scores - pos[None, :]).clamp_min(0)  # [B, B]: caption j vs image i
    drop = torch.eye(B, dtype=torch.bool, device=scores.device)
    if neg_mask is not None:
        if neg_mask.shape != scores.shape:
            raise ValueError(f"neg_mask must be [B, B] = {tuple(scores.shape)}; got {tuple(neg_mask.shape)}")
        drop = drop | neg_mask.to(device=scores.device, dtype=torch.bool)
    cost_cap = cost_cap.masked_fill(drop, 0)
    cost_img = cost_img.masked_fill(drop, 0)
    if hardest:
        loss = cost_cap.max(1).values.sum() + cost_img.max(0).values.sum()
    else:
        loss = cost_cap.sum() + cost_img.sum()
    return loss / B if reduction == "mean" else loss


def gaussian_boundary(
    mu_p: float, sigma_p: float, mu_n: float, sigma_n: float, alpha: float
) -> tuple[float, float]:
    """The "+" root λ of α·N(λ; μ_p, σ_p) = N(λ; μ_n, σ_n) as the reference computes it (spec 4.3).

    ``A = σp² − σn²``, ``B = 2(μp σn² − μn σp²)``,
    ``C = (μn σp)² − (μp σn)² + 2 σp² σn² ln(α σn/σp + 1e-8)``, ``E = B² − 4AC``,
    ``λ = (−B + √E) / (2A + 1e-10)``. Returns ``(λ, E)``; λ is nan when E ≤ 0.

    A degenerate spread (σp or σn zero or not finite: e.g. two equal positives) has no boundary:
    the reference's tensor arithmetic gives a nan E there, which its ``E > 0`` test rejects, so
    the margin stays unchanged. Here that case returns ``(nan, nan)`` instead of dividing by zero.
    """
    if not all(math.isfinite(x) for x in (mu_p, sigma_p, mu_n, sigma_n)) or sigma_p <= 0 or sigma_n <= 0:
        return float("nan"), float("nan")
    a = sigma_p**2 - sigma_n**2
    b = 2.0 * (mu_p * sigma_n**2 - mu_n * sigma_p**2)
    c = (
        (mu_n * sigma_p) ** 2
        - (mu_p * sigma_n) ** 2
        + 2.0 * sigma_p**2 * sigma_n**2 * math.log(alpha * sigma_n / sigma_p + 1e-8)
    )
    e = b * b - 4.0 * a * c
    if not e > 0:  # also a nan E
        return float("nan"), e
    return (-b + math.sqrt(e)) / (2.0 * a + 1e-10), e


def _dist_world() -> int:
    from .distributed import world_size

    return world_size()


def _gather_variable(x: torch.Tensor) -> torch.Tensor:
    """Concatenate 1-D tensors of different lengths from all ranks (padded all_gather)."""
    import torch.distributed as dist

    world = dist.get_world_size()
    n = torch.tensor([x.numel()], device=x.device)
    counts = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(counts, n)
    counts = [int(c) for c in counts]
    size = max(counts) if counts else 0
    padded = torch.zeros(size, dtype=x.dtype, device=x.device)
    padded[: x.numel()] = x
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:c] for p, c in zip(parts, counts)])


class AdaptiveMargin(nn.Module):
    """The margin optimisation module (MOM), spec section 4, with every constant a parameter.

    Args:
        init: initial margin m₀ (0.2).
        alpha: prior ratio ``belt_alpha`` (0.3).
        activation_fraction: the update runs when more than ``activation_fraction·B`` rows rank
            their own caption first (45/58: more than 45 rows at B = 58).
        ema: m ← (1 − ema)·m + ema·λ (0.1).
        lam_max, lam_reset: λ > lam_max is replaced by lam_reset (1.0 -> 0.2).
        neg_stat: the negative statistic n_i of row i: "reference" = m + mean_j(S_ij − S_ii)/(B−1)
            (the reference's double normalisation), "mean_offdiag" = mean_{j≠i} S_ij,
            "hardest" = max_{j≠i} S_ij.
        enabled: False keeps the margin fixed (HAT); the statistics are still computed.

    Under an initialised ``torch.distributed`` group, p_i and n_i are gathered from all ranks, so
    every rank computes the same margin from the global batch (``update(..., global_batch=True)``:
    the scores already are the global batch's, nothing is gathered).
    """

    def __init__(
        self,
        init: float = 0.2,
        alpha: float = 0.3,
        activation_fraction: float = 45 / 58,
        ema: float = 0.1,
        lam_max: float = 1.0,
        lam_reset: float = 0.2,
        neg_stat: str = "reference",
        enabled: bool = True,
    ):
        super().__init__()
        if neg_stat not in NEG_STATS:
            raise ValueError(f"neg_stat must be one of {NEG_STATS}; got {neg_stat!r}")
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0; got {alpha}")
        self.alpha = float(alpha)
        self.activation_fraction = float(activation_fraction)
        self.ema = float(ema)
        self.lam_max = float(lam_max)
        self.lam_reset = float(lam_reset)
        self.neg_stat = neg_stat
        self.enabled = bool(enabled)
        self.register_buffer("margin", torch.tensor(float(init), dtype=torch.float32))

    @classmethod
    def from_config(cls, loss_cfg) -> AdaptiveMargin:
        """Build from :class:`daimlib.config.LossConfig`."""
        return cls(
            init=loss_cfg.margin,
            alpha=loss_cfg.alpha,
            activation_fraction=loss_cfg.activation_fraction,
            ema=loss_cfg.ema,
            lam_max=loss_cfg.lam_max,
            lam_reset=loss_cfg.lam_reset,
            neg_stat=loss_cfg.neg_stat,
            enabled=loss_cfg.adaptive,
        )

    def extra_repr(self) -> str:
        return (
            f"margin={float(self.margin):.4f}, alpha={self.alpha}, activation_fraction={self.activation_fraction:.4f}, "
            f"ema={self.ema}, neg_stat={self.neg_stat!r}, enabled={self.enabled}"
        )

    def samples(self, scores: torch.Tensor, margin: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(p, n) of the rows whose positive is the row maximum (spec 4.1), float64 on CPU."""
        if scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
            raise ValueError(f"AdaptiveMargin expects square scores [B, B]; got shape {tuple(scores.shape)}")
        m = float(self.margin) if margin is None else float(margin)
        S = scores.detach().to(torch.float64)
        B = S.shape[0]
        pos = S.diagonal()  # [B]
        correct = pos >= S.max(1).values  # [B]: S_ii equals the row maximum
        if self.neg_stat == "reference":
            neg = m + (S - pos[:, None]).mean(1) / (B - 1)
        elif self.neg_stat == "mean_offdiag":
            neg = (S.sum(1) - pos) / (B - 1)
        else:
            neg = S.masked_fill(torch.eye(B, dtype=torch.bool, device=S.device), float("-inf")).max(1).values
        return pos[correct], neg[correct]

    @torch.no_grad()
    def update(self, scores: torch.Tensor, global_batch: bool = False) -> dict:
        """One MOM step on the detached ``[B, B]`` score matrix; returns that step's statistics.

        ``global_batch``: ``scores`` already hold every rank's pairs (identical on every rank), so
        the statistics are not gathered again.

        Keys: ``activated`` (bool), ``n_correct``, ``n_rows``, ``mu_pos``, ``sigma_pos``,
        ``mu_neg``, ``sigma_neg``, ``lam`` (nan when not computed), ``margin`` (after the update),
        ``branch`` ("inactive" | "no_root" | "negative" | "reset" | "ema" | "disabled").
        """
        m = float(self.margin)
        p, n = self.samples(scores, m)
        n_rows = scores.shape[0]
        if _dist_world() > 1 and not global_batch:
            dev = self.margin.device
            p = _gather_variable(p.to(dev)).cpu()
            n = _gather_variable(n.to(dev)).cpu()
            n_rows = n_rows * _dist_world()
        k = int(p.numel())
        nan = float("nan")
        mu_p = float(p.mean()) if k else nan
        mu_n = float(n.mean()) if k else nan
        sd_p = float(p.std(unbiased=True)) if k > 1 else nan
        sd_n = float(n.std(unbiased=True)) if k > 1 else nan
        threshold = round(self.activation_fraction * n_rows, 9)
        activated = k > threshold and k > 1
        lam = nan
        branch = "inactive"
        if activated:
            lam, e = gaussian_boundary(mu_p, sd_p, mu_n, sd_n, self.alpha)
            if not e > 0 or not math.isfinite(lam):
                branch = "no_root"
            elif lam < 0:
                branch = "negative"
            elif lam > self.lam_max:
                branch = "reset"
                m = (1 - self.ema) * m + self.ema * self.lam_reset
            else:
                branch = "ema"
                m = (1 - self.ema) * m + self.ema * lam
            if not self.enabled:
                branch, m = "disabled", float(self.margin)
            self.margin.fill_(m)
        return dict(
            activated=bool(activated),
            n_correct=k,
            n_rows=int(n_rows),
            mu_pos=mu_p,
            sigma_pos=sd_p,
            mu_neg=mu_n,
            sigma_neg=sd_n,
            lam=float(lam),
            margin=float(self.margin),
            branch=branch,
        )


@dataclass
class LossOutput:
    """What :class:`MatchingLoss` returns for one step: the loss and what the history logs."""

    loss: torch.Tensor  # scalar, differentiable
    margin: float  # the margin the hinge used (after this step's MOM update)
    hardest: bool  # hardest negatives (True) or the warm-up's sum over negatives
    stats: dict = field(default_factory=dict)  # the MOM statistics of AdaptiveMargin.update + "hardest"


class MatchingLoss(nn.Module):
    """DAIM's training objective, spec sections 4-5: the MOM, then the triplet loss with its margin.

    Owns the state the model must not know: the adaptive margin (:class:`AdaptiveMargin`, whose
    ``margin`` buffer is this module's ``margin``), the warm-up schedule (sum of hinges for the
    first ``warmup_steps`` steps, hardest negatives after, when ``hardest``) and same-image masking
    (``mask_same_image``: two captions of one image in a batch are not each other's negatives).

    With ``warmup_until > 0`` the warm-up is adaptive: from step ``warmup_steps`` on, each step
    measures its batch's sum of hinges as a fraction of the value it would have if all scores were
    equal (``2B(B-1)m``: nothing learned yet); the first step at or below ``warmup_until`` switches
    to hardest negatives for good (``warmup_end`` records it), and ``warmup_max_steps`` (> 0) caps
    the wait. A model that has not left the flat start by ``warmup_steps`` so keeps the sum, which
    gives every negative a gradient, instead of collapsing under the hardest negatives.
    In training mode each call moves the margin (MOM update on the detached scores) before the
    hinge uses it, as the reference's ``compute_SCAN``; in eval mode the margin is only read.
    """

    def __init__(
        self,
        margin: AdaptiveMargin | None = None,
        hardest: bool = True,
        warmup_steps: int = 0,
        reduction: str = "sum",
        mask_same_image: bool = False,
        warmup_until: float = 0.0,
        warmup_max_steps: int = 0,
        kind: str = "triplet",
        temperature: float = 0.05,
    ):
        super().__init__()
        if kind not in LOSS_KINDS:
            raise ValueError(f"loss.kind must be one of {LOSS_KINDS}; got {kind!r}")
        if not float(temperature) > 0:
            raise ValueError(f"loss.temperature must be > 0; got {temperature!r}")
        if reduction not in ("sum", "mean"):
            raise ValueError(f"loss.reduction must be 'sum' or 'mean'; got {reduction!r}")
        if not 0.0 <= float(warmup_until) < 1.0:
            raise ValueError(
                f"loss.warmup_until must be in [0, 1) (0 = a fixed warm-up); got {warmup_until!r}"
            )
        if warmup_max_steps and int(warmup_max_steps) < int(warmup_steps):
            raise ValueError(
                f"loss.warmup_max_steps ({warmup_max_steps}) must be 0 (no cap) or at least "
                f"loss.warmup_steps ({warmup_steps})"
            )
        self.margin_module = margin if margin is not None else AdaptiveMargin()
        self.hardest = bool(hardest)
        self.warmup_steps = int(warmup_steps)
        self.warmup_until = float(warmup_until)
        self.warmup_max_steps = int(warmup_max_steps)
        self.warmup_end: int | None = None  # the step the adaptive warm-up ended at (train() saves it)
        self.reduction = reduction
        self.mask_same_image = bool(mask_same_image)
        self.kind = kind
        self.temperature = float(temperature)

    @classmethod
    def from_config(cls, loss_cfg) -> MatchingLoss:
        """Build from :class:`daimlib.config.LossConfig` (the ``loss`` section of a DAIMConfig)."""
        return cls(
            AdaptiveMargin.from_config(loss_cfg),
            hardest=loss_cfg.hardest,
            warmup_steps=loss_cfg.warmup_steps,
            reduction=loss_cfg.reduction,
            mask_same_image=loss_cfg.mask_same_image,
            warmup_until=loss_cfg.warmup_until,
            warmup_max_steps=loss_cfg.warmup_max_steps,
            kind=loss_cfg.kind,
            temperature=loss_cfg.temperature,
        )

    @property
    def margin(self) -> torch.Tensor:
        """The current margin (a 0-d float32 buffer; saved with checkpoints)."""
        return self.margin_module.margin

    def uses_hardest(self, step: int | None = None) -> bool:
        """Hardest negatives when ``hardest`` and past the warm-up (sum of hinges before): past
        ``warmup_steps``, or, for an adaptive warm-up, from ``warmup_end`` on (``step=None``: past)."""
        if not self.hardest or step is None:
            return self.hardest
        if self.warmup_until > 0:
            return self.warmup_end is not None and step >= self.warmup_end
        return step >= self.warmup_steps

    def flat_ratio(
        self,
        scores: torch.Tensor,
        margin: float | torch.Tensor,
        neg_mask: torch.Tensor | None = None,
        global_batch: bool = False,
    ) -> float:
        """The batch's sum of hinges over its value when all scores are equal (``2B(B-1)m`` without
        masking): 1 = no better than identical scores, 0 = every negative below its positive by m.
        Summed over the ranks of a distributed run (unless ``global_batch``: the scores are already
        the global batch's), so that all ranks decide alike."""
        with torch.no_grad():
            s = scores.detach().float()
            num = triplet_loss(s, margin, hardest=False, neg_mask=neg_mask)
            den = triplet_loss(torch.zeros_like(s), margin, hardest=False, neg_mask=neg_mask)
            both = torch.stack([num, den])
            if _dist_world() > 1 and not global_batch:
                import torch.distributed as dist

                dist.all_reduce(both)
            return float(both[0] / both[1].clamp_min(1e-12))

    def _update_warmup(self, scores, margin, step, neg_mask, global_batch=False) -> float | None:
        """The adaptive warm-up's check at ``step`` (training only): its ratio, None when not checked."""
        if self.kind != "triplet" or not (
            self.training and self.hardest and self.warmup_until > 0 and self.warmup_end is None
        ):
            return None
        if step is None or step < self.warmup_steps:
            return None
        ratio = self.flat_ratio(scores, margin, neg_mask, global_batch)
        if ratio <= self.warmup_until or (self.warmup_max_steps and step >= self.warmup_max_steps):
            self.warmup_end = int(step)
        return ratio

    def forward(
        self,
        scores: torch.Tensor,
        step: int | None = None,
        img_index: torch.Tensor | None = None,
        global_batch: bool = False,
    ) -> LossOutput:
        """``scores [B, B]`` (rows images, columns captions, diagonal positives) at training ``step``.

        ``img_index [B]``: each pair's image id, for same-image masking. ``step=None`` means past
        the warm-up. ``global_batch``: the scores are the global batch's, the same on every rank
        (``MatchOutput.global_batch``, ``loss.negatives="global"``): the MOM statistics and the
        warm-up ratio are then not gathered or summed over ranks again.
        """
        if self.training:
            stats = self.margin_module.update(scores.detach(), global_batch=global_batch)
        else:
            stats = dict(activated=False, margin=float(self.margin))
        neg_mask = None
        if self.mask_same_image and img_index is not None:
            idx = img_index.to(scores.device)
            neg_mask = idx[:, None] == idx[None, :]  # [B, B]; the diagonal is dropped anyway
        margin = self.margin.detach().clone()
        ratio = self._update_warmup(scores, margin, step, neg_mask, global_batch)
        if self.kind == "infonce":
            hardest = False
            loss = contrastive_loss(scores, self.temperature, neg_mask=neg_mask, reduction=self.reduction)
        else:
            hardest = self.uses_hardest(step)
            loss = triplet_loss(scores, margin, hardest=hardest, reduction=self.reduction, neg_mask=neg_mask)
        stats["hardest"] = hardest
        if (
            self.training and self.warmup_until > 0
        ):  # a column of every row (the CSV's header is the first row's)
            stats["flat_ratio"] = float("nan") if ratio is None else ratio
        return LossOutput(loss=loss, margin=float(margin), hardest=hardest, stats=stats)
