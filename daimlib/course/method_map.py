"""The map of the method: one architecture figure of DAIM drawn from a config, and the table
notebook -> part of the figure -> claim of the paper (issue 10, item 1).

The figure is drawn from what a :class:`daimlib.config.DAIMConfig` builds, so it cannot drift
from the code: the Swin stage count, depths, heads, token grids and widths are read from the timm
backbone the config creates (on PyTorch's ``meta`` device: no memory, no download), the BERT
layers from its config, and every switch (FDM placement, SCAN direction and λ, level weights, MOM
or fixed margin, warm-up) from the config fields. Paper scale (``daim_f30k``) and the demo
(``demo``) give two different, true pictures of the same method (spec sections 1-5).

    >>> fig = draw_method_map(load_preset("demo"))      # doctest: +SKIP
    >>> method_table().loc["02", "part of the figure"]  # doctest: +SKIP

``python -m daimlib.course.method_map`` rewrites ``figures/method_map.png`` (paper preset) and
``figures/method_map_demo.png`` (demo preset).
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch

from daimlib.config import LEVELS, DAIMConfig, load_preset
from daimlib.course.viz import save_figure
from daimlib.encoders import ImageEncoder

# Okabe-Ito colours (safe for the common colour-vision deficiencies): edge colour, light fill
PALETTE = {
    "image": ("#0072B2", "#D6EAF8"),  # blue
    "text": ("#E69F00", "#FCEBC4"),  # orange
    "fdm": ("#D55E00", "#F9D9C4"),  # vermillion
    "scan": ("#009E73", "#CDEFE3"),  # bluish green
    "loss": ("#CC79A7", "#F3DDEA"),  # reddish purple
    "off": ("#7F7F7F", "#EEEEEE"),  # grey: computed but unused / switched off
}
STAR = "\u2605"  # marks every place ContraNorm (the FDM) acts


@dataclass(frozen=True)
class MethodFacts:
    """The numbers and switches the figure draws, read from one config (spec sections 1-5)."""

    name: str
    img_size: int
    patch: int
    window: int
    depths: tuple[int, ...]  # Swin blocks per stage
    heads: tuple[int, ...]  # attention heads per stage
    stage_dims: tuple[int, ...]  # channels per stage
    stage_grid: tuple[int, ...]  # token grid side per stage (tokens = side²)
    stages: tuple[int, ...]  # 0-based stages used as levels
    text_name: str
    text_layers: int | None  # BERT layers (None: not known without the hub)
    text_width: int | None
    hidden_states: tuple[int, ...]  # HF indices, 0 = embeddings
    max_len: int
    embed_dim: int
    direction: str
    lambda_softmax: float
    level_weights: tuple[float, ...]
    fdm_blocks: bool
    fdm_stage_out: bool
    fdm_text_layers: tuple[int, ...]
    fdm_scale: float
    adaptive: bool
    margin: float
    alpha: float
    activation_fraction: float
    batch_size: int
    ema: float
    hardest: bool
    warmup_steps: int

    @property
    def levels(self) -> tuple[str, ...]:
        """Level names: low, mid, high for three levels, else level 1, 2, ..."""
        n = len(self.stages)
        return LEVELS if n == len(LEVELS) else tuple(f"level {k + 1}" for k in range(n))

    @property
    def tokens(self) -> tuple[int, ...]:
        """Image tokens R_ℓ per level (784 / 196 / 49 for Swin-B at 224 px)."""
        return tuple(self.stage_grid[s] ** 2 for s in self.stages)


def _text_arch(text_cfg) -> tuple[int | None, int | None]:
    """(layers, width) of the text encoder without building it or asking the hub."""
    from transformers import AutoConfig, BertConfig  # noqa: PLC0415 - heavy optional import

    if text_cfg.model_kwargs:
        c = BertConfig(**text_cfg.model_kwargs)
    elif text_cfg.weights:
        c = AutoConfig.from_pretrained(text_cfg.weights)
    elif "bert-base" in text_cfg.name:
        c = BertConfig()  # BertConfig's defaults are bert-base: 12 layers, width 768
    else:
        return None, None
    return int(c.num_hidden_layers), int(c.hidden_size)


def method_facts(cfg: DAIMConfig) -> MethodFacts:
    """Read the figure's numbers from the model ``cfg`` builds (image backbone on the meta device)."""
    with torch.device("meta"):
        enc = ImageEncoder(cfg.image, cfg.fdm, pretrained=False)
    bb = enc.backbone
    patch = bb.patch_embed.patch_size
    window = bb.layers[0].blocks[0].window_size
    red = [info["reduction"] for info in bb.feature_info]
    n_layers, width = _text_arch(cfg.text)
    lc = cfg.loss
    return MethodFacts(
        name=cfg.name,
        img_size=int(cfg.image.img_size),
        patch=int(patch[0] if isinstance(patch, tuple) else patch),
        window=int(window[0] if isinstance(window, tuple) else window),
        depths=tuple(len(layer.blocks) for layer in bb.layers),
        heads=tuple(int(layer.blocks[0].attn.num_heads) for layer in bb.layers),
        stage_dims=tuple(int(info["num_chs"]) for info in bb.feature_info),
        stage_grid=tuple(int(cfg.image.img_size) // r for r in red),
        stages=tuple(enc.stages),
        text_name=cfg.text.name if not cfg.text.model_kwargs else "BERT (random init)",
        text_layers=n_layers,
        text_width=width,
        hidden_states=tuple(cfg.text.hidden_states),
        max_len=int(cfg.text.max_len),
        embed_dim=int(cfg.similarity.embed_dim),
        direction=cfg.similarity.direction,
        lambda_softmax=float(cfg.similarity.lambda_softmax),
        level_weights=tuple(float(w) for w in cfg.similarity.level_weights),
        fdm_blocks=bool(cfg.fdm.image_blocks) and cfg.fdm.scale != 0,
        fdm_stage_out=bool(cfg.fdm.image_stage_out) and cfg.fdm.scale != 0,
        fdm_text_layers=tuple(cfg.fdm.text_layers) if cfg.fdm.scale != 0 else (),
        fdm_scale=float(cfg.fdm.scale),
        adaptive=bool(lc.adaptive),
        margin=float(lc.margin),
        alpha=float(lc.alpha),
        activation_fraction=float(lc.activation_fraction),
        batch_size=int(cfg.train.batch_size),
        ema=float(lc.ema),
        hardest=bool(lc.hardest),
        warmup_steps=int(lc.warmup_steps),
    )


# --- drawing ----------------------------------------------------------------------------------


def _box(ax, x, y, w, h, text, kind, fontsize=7.5, weight="normal", dashed=False, linespacing=1.3):
    """A rounded box centred at (x, y) with centred text; ``kind`` picks its colours."""
    edge, fill = PALETTE[kind]
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0.02,rounding_size=0.12",
            fc=fill,
            ec=edge,
            lw=1.4,
            ls="--" if dashed else "-",
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, weight=weight, linespacing=linespacing)


def _arrow(ax, start, end, kind="off", label=None, label_xy=None):
    edge = PALETTE[kind][0]
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=11, color=edge, lw=1.2))
    if label:
        lx, ly = label_xy or ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
        ax.text(
            lx,
            ly,
            label,
            fontsize=7,
            color=edge,
            ha="center",
            va="center",
            bbox=dict(fc="white", ec="none", pad=0.5),
        )


def _badge(ax, x, y, notebooks: str):
    """The notebooks that teach this part (see :func:`method_table`)."""
    ax.text(
        x,
        y,
        f"nb {notebooks}",
        fontsize=6.5,
        ha="center",
        va="center",
        color="#333333",
        bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="#333333", lw=0.8),
    )


def _stage_x(n: int) -> list[float]:
    lo, hi = 3.4, 10.0
    return [lo + (hi - lo) * k / max(n - 1, 1) for k in range(n)]


def _draw_image_stream(ax, f: MethodFacts, xs: list[float], y: float) -> None:
    g0 = f.img_size // f.patch
    _box(
        ax,
        1.3,
        y,
        1.9,
        1.5,
        f"Image $I$\n{f.img_size}×{f.img_size} px\npatch embed {f.patch}×{f.patch}\n→ {g0}×{g0} tokens",
        "image",
        weight="bold",
    )
    _arrow(ax, (2.25, y), (xs[0] - 0.95, y), "image")
    for s, x in enumerate(xs):
        used = s in f.stages
        after_last = s > max(f.stages)
        role = (
            f"{f.levels[f.stages.index(s)]} level" if used else ("not run" if after_last else "not a level")
        )
        lines = [
            f"Swin stage {s + 1}",
            f"{f.depths[s]} block{'s' if f.depths[s] > 1 else ''}, {f.heads[s]} head{'s' if f.heads[s] > 1 else ''}",
            f"{f.stage_grid[s]}×{f.stage_grid[s]} tok, C={f.stage_dims[s]}",
            f"({role})",
        ]
        if f.fdm_blocks and not after_last:
            lines.append(
                f"{STAR} CN = identity (1 token)" if f.stage_grid[s] == 1 else f"{STAR} CN in each block"
            )
        _box(ax, x, y, 1.95, 1.55, "\n".join(lines), "image" if used else "off", fontsize=7)
        if s + 1 < len(xs):
            _arrow(ax, (x + 0.98, y), (xs[s + 1] - 0.98, y), "image")
    ax.text(
        xs[0] - 1.0,
        y + 1.0,
        f"window attention, window {f.window}×{f.window}; "
        f"stage = blocks of W-MSA → residual"
        + (f" → {STAR} ContraNorm" if f.fdm_blocks else "")
        + " → MLP → residual",
        fontsize=7,
        color=PALETTE["image"][0],
        ha="left",
    )
    _badge(ax, xs[-1] + 0.75, y + 0.95, "01, 03")


def _text_groups(f: MethodFacts) -> list[tuple[int, int]]:
    """BERT layers (1-based, inclusive) whose last one is each level's hidden state."""
    out, prev = [], 0
    for h in f.hidden_states:
        out.append((prev + 1, h))
        prev = h
    return out


def _draw_text_stream(ax, f: MethodFacts, xl: list[float], y: float) -> None:
    _box(
        ax,
        1.3,
        y,
        1.9,
        1.5,
        f"Caption $T$\n[CLS] words [SEP]\npadded to {f.max_len}\n+ BERT embeddings",
        "text",
        weight="bold",
    )
    prev_x = 2.25
    groups = _text_groups(f)
    for k, ((a, b), x) in enumerate(zip(groups, xl)):
        span = "embeddings" if b == 0 else (f"layer {b}" if a == b else f"layers {a}-{b}")
        lines = [f"BERT {span}", f"hidden_states[{b}]", f"{f.max_len} tok × {f.text_width or '?'}"]
        if k == len(groups) - 1 and f.text_layers and b < f.text_layers:
            lines.append(f"(layers {b + 1}-{f.text_layers} unused)")
        cn = [layer for layer in f.fdm_text_layers if a <= layer <= b]
        if cn:
            lines.append(f"{STAR} CN after layer {', '.join(map(str, cn))}")
        _box(ax, x, y, 1.95, 1.55, "\n".join(lines), "text", fontsize=7)
        _arrow(ax, (prev_x, y), (x - 0.98, y), "text")
        prev_x = x + 0.98
    total = f"{f.text_layers} layers, width {f.text_width}" if f.text_layers else "layers: see its config"
    ax.text(
        xl[0] - 1.0,
        y - 1.05,
        f"text stream: {f.text_name}, {total}"
        + ("; no ContraNorm in the text stream" if not f.fdm_text_layers else ""),
        fontsize=7,
        color=PALETTE["text"][0],
        ha="left",
    )
    _badge(ax, xl[-1] + 0.75, y + 0.95, "00, 01")


def _draw_levels(ax, f: MethodFacts, xl: list[float], ys: tuple[float, ...]) -> None:
    """Per level: image projection, text projection, SCAN between them (spec 1.3, 2.1)."""
    y_stream, y_img, y_scan, y_txt, y_stream_txt = ys
    D = f.embed_dim
    for k, (name, x, s) in enumerate(zip(f.levels, xl, f.stages)):
        cn = ""
        if f.fdm_stage_out:
            cn = f"{STAR} CN = identity → " if f.tokens[k] == 1 else f"{STAR} CN → "
        tok = "token" if f.tokens[k] == 1 else "tokens"
        _box(
            ax,
            x,
            y_img,
            1.95,
            0.95,
            f"{name}: {f.tokens[k]} {tok} × {f.stage_dims[s]}\n{cn}LN\n→ Linear → {D}",
            "image",
            fontsize=7,
        )
        _arrow(ax, (x, y_stream - 0.78), (x, y_img + 0.48), "image")
        _box(
            ax,
            x,
            y_txt,
            1.95,
            0.95,
            f"{name}: {f.max_len} × {f.text_width or '?'}\nLinear → {D}",
            "text",
            fontsize=7,
        )
        _arrow(ax, (x, y_stream_txt + 0.78), (x, y_txt - 0.48), "text")
        w = f.level_weights[k]
        wtxt = "" if w == 1 else f", weight {w:g}"
        _box(
            ax,
            x,
            y_scan,
            1.95,
            0.95,
            f"SCAN {f.direction}, $\\lambda_{{\\mathrm{{SCAN}}}}$={f.lambda_softmax:g}\n$S^{{\\mathrm{{{name.replace(' ', '')}}}}}$"
            f" [images × captions]{wtxt}",
            "scan" if w != 0 else "off",
            fontsize=7,
        )
        _arrow(ax, (x, y_img - 0.48), (x, y_scan + 0.48), "image")
        _arrow(ax, (x, y_txt + 0.48), (x, y_scan - 0.48), "text")
    how = (
        "words attend\nto image regions"
        if f.direction == "t2i"
        else ("image regions\nattend to words" if f.direction == "i2t" else "mean of both\ndirections (HAT*)")
    )
    ax.text(
        1.3,
        y_scan,
        f"cross-attention\nper level\n({f.direction}: {how})",
        fontsize=7,
        color=PALETTE["scan"][0],
        ha="center",
        va="center",
    )
    _badge(ax, xl[-1] + 0.75, y_scan + 0.62, "02")


def _draw_loss(ax, f: MethodFacts, xl: list[float], y_scan: float) -> None:
    """Sum of the levels, the triplet loss and the margin (spec 2.2, 4, 5)."""
    xs, xr = 12.3, 14.85
    n = len(f.levels)
    _box(
        ax,
        xs,
        y_scan,
        2.15,
        1.3,
        f"$S = \\sum_\\ell w_\\ell S^\\ell$\nrows images, cols captions\nrange [-{n}, {n}]\n(train: B×B; eval: all pairs)",
        "scan",
        fontsize=7,
        linespacing=1.5,
    )
    _arrow(ax, (xl[-1] + 0.98, y_scan), (xs - 1.08, y_scan), "scan")
    _badge(ax, xs, y_scan - 0.95, "02, 06, 08")
    neg = "hardest negative (VSE++)" if f.hardest else "sum over negatives"
    warm = (
        f"\nwarm-up: sum over negatives\nfor the first {f.warmup_steps} steps"
        if f.warmup_steps and f.hardest
        else ""
    )
    _box(
        ax,
        xr,
        2.5,
        2.45,
        1.85,
        f"Triplet ranking loss\n$[m + S_{{ij}} - S_{{ii}}]_+$, both directions\n{neg}\nsummed over the batch{warm}\n"
        "→ backprop into both streams",
        "loss",
        fontsize=7,
    )
    _arrow(ax, (xs + 0.5, y_scan - 0.66), (xr - 0.6, 2.5 + 0.93), "scan")
    _badge(ax, xr, 1.35, "05")
    if f.adaptive:
        trig = f"{f.activation_fraction * f.batch_size:.3g} of {f.batch_size}"
        mom = (
            f"MOM: adaptive margin $m$\nfit $N(\\mu_p,\\sigma_p)$, $N(\\mu_n,\\sigma_n)$\n"
            f"boundary $\\lambda_{{\\mathrm{{MOM}}}}$: $\\alpha N_p = N_n$, α={f.alpha:g}\nacts if > {trig} rows right\n"
            f"$m \\leftarrow {1 - f.ema:g}\\,m + {f.ema:g}\\,\\lambda_{{\\mathrm{{MOM}}}}$, $m_0$={f.margin:g}"
        )
        _box(ax, xr, 7.2, 2.45, 1.9, mom, "loss", fontsize=7)
        _arrow(ax, (xs + 0.5, y_scan + 0.66), (xr - 0.6, 7.2 - 0.96), "loss", "S (detached)", (xs + 0.9, 6.0))
        _badge(ax, xr, 8.45, "04, 07")
    else:
        _box(ax, xr, 7.2, 2.45, 1.0, f"fixed margin $m$ = {f.margin:g}\n(no MOM)", "off", fontsize=7.5)
    _arrow(
        ax,
        (xr, 7.2 - (0.96 if f.adaptive else 0.5)),
        (xr, 2.5 + 0.93),
        "loss",
        "margin $m$",
        (xr + 0.45, 5.0),
    )


def draw_method_map(cfg: DAIMConfig, facts: MethodFacts | None = None) -> Figure:
    """The architecture figure of DAIM for ``cfg`` (issue 10 item 1): Swin stream with the FDM, BERT
    stream, the levels, SCAN per level, their sum, and the triplet loss with the MOM margin."""
    f = facts or method_facts(cfg)
    fig, ax = plt.subplots(figsize=(14, 8.6))
    ax.set_xlim(0.2, 16.1)
    ax.set_ylim(0.0, 10.4)
    ax.axis("off")
    xs = _stage_x(len(f.depths))
    xl = [xs[s] for s in f.stages]
    y_stream_img, y_img, y_scan, y_txt, y_stream_txt = 8.6, 6.55, 4.75, 2.95, 1.2
    _draw_image_stream(ax, f, xs, y_stream_img)
    _draw_text_stream(ax, f, xl, y_stream_txt)
    _draw_levels(ax, f, xl, (y_stream_img, y_img, y_scan, y_txt, y_stream_txt))
    _draw_loss(ax, f, xl, y_scan)
    fdm = []
    if f.fdm_blocks:
        fdm.append("every Swin block")
    if f.fdm_stage_out:
        fdm.append("each used stage output")
    if f.fdm_text_layers:
        fdm.append("BERT layers " + ", ".join(map(str, f.fdm_text_layers)))
    fdm_txt = f"FDM ({STAR} ContraNorm, s={f.fdm_scale:g}) in " + " and ".join(fdm) if fdm else "FDM off"
    margin_txt = "MOM on" if f.adaptive else f"fixed margin {f.margin:g}"
    ax.set_title(
        f"Method map · preset '{f.name}' · {fdm_txt} · SCAN {f.direction} · {margin_txt}",
        fontsize=10.5,
        loc="left",
    )
    handles = [
        Patch(fc=PALETTE[k][1], ec=PALETTE[k][0], label=lab)
        for k, lab in (
            ("image", "image stream (Swin)"),
            ("text", "text stream (BERT)"),
            ("scan", "similarity (SCAN)"),
            ("loss", "loss and margin"),
            ("off", "computed but not a level / off"),
        )
    ]
    handles.append(Patch(fc="white", ec="white", label=f"{STAR} CN = ContraNorm (the FDM);  nb = notebook"))
    ax.legend(
        handles=handles, loc="lower center", bbox_to_anchor=(0.5, -0.06), ncol=6, fontsize=7.5, frameon=False
    )
    return fig


# --- the table notebook -> figure -> paper ---------------------------------------------------

_ABSTRACT = "DAIM abstract"
# (notebook, title, part of the figure, what the paper claims (source), what the code does (spec section))
METHOD_TABLE: tuple[tuple[str, str, str, str, str], ...] = (
    (
        "00",
        "setup and the data",
        "inputs: image I, caption T (tokens padded to 32)",
        "image-text matching: retrieve images for a caption and captions for an image (title, abstract)",
        "Karpathy splits from raw JPEGs, 5 captions per image (spec 8)",
    ),
    (
        "01",
        "dual-stream encoders",
        "Swin stream, BERT stream, the three levels",
        "dual-stream transformers with multi-level features (title, figures)",
        "Swin stages 2/3/4 + BERT layers 4/10/12, six projections to 768 (spec 1)",
    ),
    (
        "02",
        "cross-attention similarity",
        "SCAN per level, the sum S",
        "multi-level cross-attention matching, similarity matrices aggregated (paper, figures)",
        "SCAN t2i, λ = 9, unweighted sum of the three levels (spec 2, B4)",
    ),
    (
        "03",
        "feature discriminability (FDM)",
        f"{STAR} ContraNorm in the Swin blocks and stage outputs",
        "the FDM brings features 'closer together but with a certain degree of distinction' (paper); "
        "the figures draw it in the text encoder",
        "parameter-free ContraNorm s = 0.1 in the image stream only, no pull term (spec 3, B1, B2)",
    ),
    (
        "04",
        "adaptive margin (MOM)",
        "the MOM box: Gaussian boundary λ, EMA of m",
        "the MOM adjusts the margin adaptively 'in real time' (" + _ABSTRACT + ")",
        "per-batch Gaussians, boundary λ, m ← 0.9 m + 0.1 λ, gated by a trigger (spec 4, A7, B3)",
    ),
    (
        "05",
        "training",
        "triplet loss with margin m, backprop into both streams",
        "no claim of its own: the paper's results come from this training",
        "VSE++ hardest-negative triplet loss, summed, Adam 1e-4, frozen backbones 11 epochs (spec 5, 6)",
    ),
    (
        "06",
        "evaluation and tables",
        "the sum S over all test pairs -> ranks",
        "'4.7% RSUM gain on MSCOCO' over the state of the art (" + _ABSTRACT + ")",
        "R@1/5/10 both ways, RSUM; F30K 1K, COCO 1K 5-fold, COCO 5K (spec 7, 9); SCAN beside a dual "
        "encoder (daimlib.dual): accuracy and scoring cost",
    ),
    (
        "07",
        "margin evolution",
        "the MOM box over a training run",
        "the margin is adjusted 'in real time' during training (" + _ABSTRACT + ")",
        "the reference rule drifts upward; logged every step (spec 4)",
    ),
    (
        "08",
        "feature separation",
        "the level features and S: positives vs hardest negatives",
        "high feature distinguishability (title)",
        "measured as the AUC of positives against hardest negatives (kit)",
    ),
    (
        "09",
        "ablation",
        "the switches: FDM on/off, MOM on/off, the levels",
        "the two modules, FDM and MOM, are the paper's contributions (title, " + _ABSTRACT + ")",
        "variants of one preset, several seeds, mean ± interval (spec 0, B1)",
    ),
    (
        "10",
        "real data on GPUs",
        "the same figure at paper scale (Swin-B, BERT-base, 224 px)",
        "'4.7% RSUM gain on MSCOCO' (" + _ABSTRACT + "); the reference code also trains on Flickr30K",
        "the paper presets daim_f30k / daim_coco, torchrun, the three protocols (spec 6, 7)",
    ),
    (
        "11",
        "the authors' checkpoints",
        "the whole figure, with the weights of a reference-code checkpoint",
        "the released HAT checkpoints are what the DAIM README tells its users to test with",
        "import-reference: safe weights-only loading, key mapping, architecture from the tensor shapes",
    ),
    (
        "12",
        "interactive search",
        "the trained model used as a search engine: SCAN attention of each word",
        "fine-grained word-region alignment (title: 'image-text matching'; SCAN cross-attention)",
        "daimlib.course.widgets: caption -> images with word attention, image -> captions",
    ),
    (
        "13",
        "real photos and real data",
        "the figure's two encoders replaced by real pretrained ones, frozen",
        "the reference freezes both backbones for its first epochs (spec 1.5)",
        "get-data, the wheel encoders (daimlib.pretrained), the frozen-feature cache, the laptop preset",
    ),
    (
        "14",
        "capstone",
        "the similarity and the loss replaced: global embeddings, cosine, InfoNCE",
        "cross-attention matches fine-grained words and regions better than one vector per side",
        "the student's InfoNCE checked by check_info_nce, then trained in daimlib.dual and compared with SCAN",
    ),
)
METHOD_COLUMNS = ("notebook", "title", "part of the figure", "claim of the paper", "what the code does")


def method_table() -> pd.DataFrame:
    """:data:`METHOD_TABLE` as a DataFrame indexed by notebook number ("00" ... "14")."""
    return pd.DataFrame(list(METHOD_TABLE), columns=list(METHOD_COLUMNS)).set_index("notebook")


def markdown_table(table: pd.DataFrame) -> str:
    """``table`` as a Markdown table with every cell whole (pandas' own display cuts long cells to
    "…"): the index as the first column, ``|`` in a cell escaped, line breaks turned into spaces.

    >>> from IPython.display import Markdown                # doctest: +SKIP
    >>> Markdown(markdown_table(method_table()))            # doctest: +SKIP
    """

    def cell(value) -> str:
        return " ".join(str(value).split()).replace("|", "\\|")

    head = [table.index.name or ""] + [str(c) for c in table.columns]
    lines = ["| " + " | ".join(cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    for key, row in table.iterrows():
        lines.append("| " + " | ".join(cell(v) for v in [key, *row.tolist()]) + " |")
    return "\n".join(lines)


def save_method_maps(root=None) -> list[str]:
    """Write ``figures/method_map.png`` (paper preset ``daim_f30k``) and ``figures/method_map_demo.png``
    (``demo``); return their repo-relative paths."""
    out = []
    for preset, stem in (("daim_f30k", "method_map"), ("demo", "method_map_demo")):
        fig = draw_method_map(load_preset(preset))
        out.append(save_figure(fig, stem, dpi=110, root=root))
        plt.close(fig)
    return out


if __name__ == "__main__":
    plt.switch_backend("Agg")
    for path in save_method_maps():
        print("wrote", path)
