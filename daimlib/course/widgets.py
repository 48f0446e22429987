"""Interactive search for the classroom (notebook 12): type a caption, see the top images with each
word's SCAN attention drawn on them; pick an image, see its top captions; switch between the
shipped trained models under ``models/`` and the finished runs under ``runs/``.

The pieces work without a widget front end (nbval, a plain kernel, a script)::

    choices = available_models("runs", data_root)   # shipped models, then runs; else random weights
    index = build_index(choices[0], split, data_root, n_images=100)  # encode a subset once
    text_to_image(index, "a big red circle", k=5)                     # table of the top images
    fig = plot_text_query(index, "a big red circle", k=3)             # + each word's attention (spec 2.1)
    image_to_text(index, 0, k=5); plot_image_query(index, 0)          # the other direction
    app = SearchApp(choices, split, data_root); app.compare("a big red circle")  # two models side by side
    app.show()                                                        # the ipywidgets app

Scores are the model's own ``DAIM.similarity`` (SCAN over the levels, spec section 2.2, the
configured direction); the attention drawn is SCAN's text-to-image weights α (spec 2.1) of one
level, for the image and caption tokens as the model encodes them (``evaluate.encode_split``).
"""

from __future__ import annotations

import json
import math
import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
import torch.nn.functional as F

from daimlib import runs
from daimlib.checkpoint import load_model, scoring_tokenizer
from daimlib.config import DAIMConfig, load_preset
from daimlib.course import demo_models, viz
from daimlib.course.nb import rel, search_images
from daimlib.data import first_images, load_image, tokenize
from daimlib.evaluate import encode_split
from daimlib.model import DAIM

try:  # optional (the `notebook` extra): without it everything but SearchApp works
    import ipywidgets
    from IPython.display import display
except ImportError:  # pragma: no cover - exercised only where ipywidgets is absent
    ipywidgets = None
    display = print

RANDOM_LABEL = "random weights (untrained {preset} preset; NOT a trained model)"
RANDOM_SEED = 0  # the random-weight fallback is always the same model
_SKIP_DIRS = {"executed", "browser"}  # run-output folders under runs/ that hold no models
_SPECIAL_TOKENS = {"[CLS]", "[SEP]", "[PAD]", "<s>", "</s>", "<pad>"}


# --- which models there are -------------------------------------------------------------------


@dataclass(frozen=True)
class ModelChoice:
    """One model the app can switch to: a shipped model (``models/<arm>/best``), a finished run's
    ``best/`` checkpoint, or random weights (``checkpoint`` None)."""

    label: str
    checkpoint: Path | None  # None: random initial weights of ``preset``
    preset: str = "demo"

    @property
    def trained(self) -> bool:
        return self.checkpoint is not None


def _checkpoint_of(run: Path) -> Path | None:
    """A run's ``best/`` checkpoint: the one selected on the validation split. A run with only
    ``last/`` was never validated (notebook 05's deliberately collapsed runs are such runs) and is
    not offered."""
    best = run / "best"
    if (best / "meta.json").is_file() and (best / "model.safetensors").is_file():
        return best
    return None


def _recorded_data_sha(run: Path) -> str | None:
    """The sha256 of the data a run was trained on: ``run.json`` (written by ``train``), else the
    notebooks' older ``data.json``; None when the run records none."""
    data = (runs.read_record(run) or {}).get("data") or {}
    sha = data.get("sha256", data.get("json_sha256"))  # the run record's key, then the older name
    if sha is None and (run / "data.json").is_file():
        sha = json.loads((run / "data.json").read_text()).get("json_sha256")
    return sha


def _same_data(sha: str | None, config_json: Path, data_root: Path) -> bool:
    """False only when ``sha`` (the recorded sha256 of a model's data) is given and ``data_root``'s
    differs (or ``data_root`` holds no dataset the model's config can read)."""
    if sha is None:
        return True
    try:
        current = runs.data_identity(data_root, DAIMConfig.from_json(config_json))
    except (OSError, ValueError):
        return False
    return current["sha256"] == sha


def _data_matches(run: Path, data_root: Path) -> bool:
    return _same_data(_recorded_data_sha(run), run / "config.json", data_root)


def shipped_models(
    data_root: str | os.PathLike, models_root: str | os.PathLike | None = None
) -> list[ModelChoice]:
    """The trained models shipped in ``models/`` (``demo_models.models_dir()``) whose recorded data
    (``metrics.json``) is ``data_root``'s: DAIM first, then its baselines (``demo_models.ARMS``
    order), then any other exported folder by name."""
    root = Path(models_root) if models_root is not None else demo_models.models_dir()
    if not root.is_dir():
        return []
    order = {arm: k for k, arm in enumerate(demo_models.ARMS)}
    folders = sorted(
        (p for p in root.iterdir() if p.is_dir()), key=lambda p: (order.get(p.name, len(order)), p.name)
    )
    found = []
    for d in folders:
        best, metrics = d / "best", d / demo_models.METRICS_JSON
        if not (
            (best / "model.safetensors").is_file() and (best / "config.json").is_file() and metrics.is_file()
        ):
            continue
        rec = json.loads(metrics.read_text())
        if not _same_data((rec.get("data") or {}).get("sha256"), best / "config.json", Path(data_root)):
            continue
        what = rec.get("description") or demo_models.ARMS.get(d.name, d.name)
        steps = f", {rec['steps']} steps" if rec.get("steps") is not None else ""
        found.append(ModelChoice(f"{rel(d)} (shipped{steps}): {what}", best, d.name))
    return found


def available_models(
    runs_root: str | os.PathLike,
    data_root: str | os.PathLike,
    preset: str = "demo",
    max_depth: int = 1,
    models_root: str | os.PathLike | None = None,
) -> list[ModelChoice]:
    """The models the search offers, trained on ``data_root``'s data: first the shipped ones
    (:func:`shipped_models`), then the finished runs under ``runs_root`` (folders with
    ``config.json`` and a validated ``best/`` checkpoint, up to ``max_depth`` levels down: 1 =
    ``runs/<name>`` as notebook 05 and the CLI write them, 3 also finds ablation runs), sorted by
    path. A run with only ``last/`` is never offered (notebook 05's collapse runs). When nothing
    trained exists: one clearly labelled random-weight model of ``preset``."""
    runs_root, data_root = Path(runs_root), Path(data_root)
    found: list[ModelChoice] = []
    if runs_root.is_dir():
        stack = [(runs_root, 0)]
        while stack:
            folder, depth = stack.pop()
            ckpt = _checkpoint_of(folder) if (folder / "config.json").is_file() else None
            if ckpt is not None:
                if _data_matches(folder, data_root):
                    meta = json.loads((ckpt / "meta.json").read_text())
                    steps = meta.get("step")
                    label = f"{rel(folder)} ({ckpt.name}" + (
                        f", {steps} steps)" if steps is not None else ")"
                    )
                    found.append(ModelChoice(label, ckpt, preset))
                continue
            if depth < max_depth:
                stack.extend(
                    (p, depth + 1)
                    for p in folder.iterdir()
                    if p.is_dir() and p.name not in _SKIP_DIRS and not p.name.startswith(".")
                )
    trained = shipped_models(data_root, models_root) + sorted(found, key=lambda c: c.label)
    if not trained:
        return [ModelChoice(RANDOM_LABEL.format(preset=preset), None, preset)]
    return trained


def load_choice(choice: ModelChoice, device: str = "cpu") -> tuple[DAIM, DAIMConfig]:
    """The model of a :class:`ModelChoice` in eval mode on ``device``, with its config."""
    if choice.checkpoint is None:
        cfg = load_preset(choice.preset)
        with torch.random.fork_rng(devices=[]):  # the same random model every time, global RNG untouched
            torch.manual_seed(RANDOM_SEED)
            model = DAIM.from_config(cfg, pretrained=False)
        return model.to(device).eval(), cfg
    model = load_model(choice.checkpoint, device=device)
    return model.eval(), model.cfg


# --- an encoded subset ------------------------------------------------------------------------


@dataclass
class SearchIndex:
    """The first ``n_images`` images of a split and all their captions, encoded once by one model."""

    label: str
    model: DAIM
    cfg: DAIMConfig
    tokenizer: object
    images: list  # PIL images, for drawing
    captions: list[str]
    img_of_caption: np.ndarray  # [n_cap] index of each caption's image
    img_levels: list[torch.Tensor]  # levels x [n_img, R_l, D]
    txt_levels: list[torch.Tensor] = field(repr=False, default_factory=list)  # levels x [n_cap, L, D]
    txt_lens: torch.Tensor | None = field(repr=False, default=None)  # [n_cap]

    @property
    def n_images(self) -> int:
        return len(self.images)

    @property
    def trained(self) -> bool:
        return not self.label.startswith("random weights")


@torch.no_grad()
def build_index(
    choice: ModelChoice,
    split,
    data_root: str | os.PathLike,
    n_images: int = 100,
    device: str = "cpu",
    batch_size: int = 64,
) -> SearchIndex:
    """Load ``choice`` and encode the first ``n_images`` images of ``split`` and their captions
    (the evaluation transform, each image once, spec section 7)."""
    if n_images < 1:
        raise ValueError(f"n_images must be at least 1, got {n_images}")
    model, cfg = load_choice(choice, device=device)
    tokenizer = scoring_tokenizer(
        choice.checkpoint, cfg, data_root
    )  # the checkpoint's vocabulary, not the data's
    subset = first_images(split, int(n_images))
    # the library's one encoding loop (evaluation transform, each image and caption once), in float32
    feats = encode_split(
        model,
        subset,
        tokenizer,
        cfg.data,
        max_len=cfg.text.max_len,
        device=device,
        batch_size=batch_size,
        amp="off",
        progress=False,
        features="fp32",
    )
    return SearchIndex(
        label=choice.label,
        model=model,
        cfg=cfg,
        tokenizer=tokenizer,
        images=[load_image(p) for p in subset.image_paths],
        captions=list(subset.captions),
        img_of_caption=subset.img_of_caption.numpy(),
        img_levels=feats.img_levels,
        txt_levels=feats.txt_levels,
        txt_lens=feats.txt_lens,
    )


# --- the two directions -----------------------------------------------------------------------


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a whole number of results, at least 1, got {k!r}")
    return int(k)


def _check_image(index: SearchIndex, image) -> int:
    """An image index of the encoded subset: 0..n-1 (a negative index is refused, not counted from the end)."""
    if isinstance(image, bool) or not isinstance(image, (int, np.integer)) or not 0 <= image < index.n_images:
        raise ValueError(f"image must be an index in 0..{index.n_images - 1}, got {image!r}")
    return int(image)


def text_to_image(index: SearchIndex, query: str, k: int = 5) -> pd.DataFrame:
    """The ``k`` images that score highest with a typed caption (``nb.search_images``: the model's
    similarity, spec 2.2). Columns: rank, image, score, one of the image's own captions."""
    idx, scores = search_images(query, index.model, index.tokenizer, index.cfg, index.img_levels, k=k)
    first = {int(i): index.captions[int(np.flatnonzero(index.img_of_caption == i)[0])] for i in idx}
    return pd.DataFrame(
        {
            "rank": np.arange(1, len(idx) + 1),
            "image": idx.astype(int),
            "score": scores.astype(float),
            "its first caption": [first[int(i)] for i in idx],
        }
    ).set_index("rank")


@torch.no_grad()
def image_to_text(index: SearchIndex, image: int, k: int = 5) -> pd.DataFrame:
    """The ``k`` captions of the index that score highest with image ``image`` (the model's
    similarity over all encoded captions). Columns: rank, caption, score, own (written for it)."""
    image, k = _check_image(index, image), _check_k(k)
    img = [lv[int(image) : int(image) + 1] for lv in index.img_levels]  # levels x [1, R, D]
    scores = index.model.similarity(img, index.txt_levels, index.txt_lens)[0]  # [n_cap]
    top = torch.topk(scores, min(int(k), scores.numel()))
    idx = top.indices.cpu().numpy()
    return pd.DataFrame(
        {
            "rank": np.arange(1, len(idx) + 1),
            "caption": [index.captions[j] for j in idx],
            "score": top.values.cpu().numpy().astype(float),
            "own": index.img_of_caption[idx] == int(image),
        }
    ).set_index("rank")


def scan_t2i_attention(img: torch.Tensor, txt: torch.Tensor, lambda_softmax: float) -> torch.Tensor:
    """SCAN's text-to-image attention of one image and one caption (spec 2.1): ``img [R, D]``,
    ``txt [L, D]`` (the caption's real tokens) -> α ``[L, R]``, each word's weights over the regions
    (rows sum to 1): s = v·t, LeakyReLU 0.1, L2 over words per region, softmax over regions of λ·ŝ."""
    s = F.leaky_relu(img.float() @ txt.float().T, 0.1)  # [R, L]
    s = s / (s.norm(dim=1, keepdim=True) + 1e-8)
    return torch.softmax(lambda_softmax * s, dim=0).T  # [L, R]


def _grid(n_regions: int) -> tuple[int, int]:
    side = math.isqrt(n_regions)
    if side * side != n_regions:
        raise ValueError(f"cannot draw {n_regions} image tokens as a square grid; pick another level")
    return side, side


@torch.no_grad()
def word_attention(index: SearchIndex, query: str, image: int, level: int = 0):
    """Each word's SCAN attention over image ``image``'s tokens at ``level`` (0 = low, the finest
    grid). Returns ``(words, attention [n_words, R] numpy, grid_hw)`` without [CLS]/[SEP]."""
    image = _check_image(index, image)
    n_levels = len(index.img_levels)
    if not 0 <= int(level) < n_levels:
        raise ValueError(f"level must be in 0..{n_levels - 1} (the model has {n_levels} levels), got {level}")
    ids, mask = tokenize(index.tokenizer, [query], index.cfg.text.max_len)
    device = index.img_levels[0].device
    levels, lengths = index.model.encode_text(ids.to(device), mask.to(device))
    n = int(lengths[0])
    txt = levels[level][0, :n]  # [L, D]
    attn = scan_t2i_attention(index.img_levels[level][int(image)], txt, index.cfg.similarity.lambda_softmax)
    tokens = index.tokenizer.convert_ids_to_tokens(ids[0, :n].tolist())
    keep = [j for j, t in enumerate(tokens) if t not in _SPECIAL_TOKENS] or list(range(n))
    return [tokens[j] for j in keep], attn[keep].cpu().numpy(), _grid(attn.shape[1])


def _attention_panel(ax, img, att, grid, vmax: float, word: str):
    """One word's attention drawn on the image with a fixed colour scale 0..``vmax``."""
    ax.imshow(img)
    heat = viz.attention_to_pixels(att, grid, np.asarray(img).shape[:2])
    shown = ax.imshow(heat, cmap="inferno", alpha=0.55, vmin=0.0, vmax=vmax)
    ax.set_title(word, fontsize=8)
    ax.axis("off")
    return shown


def _attention_rows(fig, axes, rows) -> None:
    """Draw ``rows`` = [(index, image, words, attn, grid, row_title)] into ``axes`` (one row each):
    the image, then one panel per word, all on ONE colour scale (0 to the largest weight shown),
    with one colour bar for the whole figure."""
    vmax = max(max(float(att.max()) for _, _, _, att, _, _ in rows), 1e-12)
    shown = None
    for row_axes, (index, image, words, attn, grid, row_title) in zip(axes, rows):
        img = index.images[int(image)]
        for a in row_axes:
            a.axis("off")
        row_axes[0].imshow(img)
        row_axes[0].set_title(row_title, fontsize=8)
        for a, w, att in zip(row_axes[1:], words, attn):
            shown = _attention_panel(a, img, att, grid, vmax, w)
    if shown is not None:
        bar = fig.colorbar(shown, ax=list(np.ravel(axes)), fraction=0.025, pad=0.02)
        bar.set_label("attention weight (one scale for all panels)", fontsize=7)
        bar.ax.tick_params(labelsize=6)


def plot_text_query(index: SearchIndex, query: str, k: int = 3, level: int = 0, max_words: int = 8):
    """One row per top image: the image with its rank and score, then each word's attention on it,
    all panels on one colour scale."""
    table = text_to_image(index, query, k=k)
    rows = []
    for _, r in table.iterrows():
        words, attn, grid = word_attention(index, query, int(r["image"]), level)
        title = f"#{r.name} image {int(r['image'])}\nscore {r['score']:.3f}"
        rows.append((index, int(r["image"]), words[:max_words], attn[:max_words], grid, title))
    ncols = 1 + max(len(w) for _, _, w, _, _, _ in rows)
    fig, axes = plt.subplots(
        len(rows), ncols, figsize=(1.6 * ncols + 0.8, 1.8 * len(rows) + 0.5), squeeze=False
    )
    _attention_rows(fig, axes, rows)
    kind = "trained" if index.trained else "RANDOM WEIGHTS"
    fig.suptitle(
        f"{query!r}: word attention at level {level}\nmodel: {_short(index.label)} [{kind}]", fontsize=9
    )
    return fig


def _short(label: str, width: int = 70) -> str:
    return textwrap.shorten(label, width=width, placeholder=" ...")


def compare_text_to_image(indexes: list[SearchIndex], query: str, k: int = 3) -> pd.DataFrame:
    """The same typed caption on several models: each model's top ``k`` images and scores, side by
    side (columns: model name -> image, score; rows: rank)."""
    parts = {}
    for index in indexes:
        t = text_to_image(index, query, k=k)[["image", "score"]]
        parts[_short(index.label.split(" (")[0], 30)] = t
    return pd.concat(parts, axis=1)


def plot_compare_query(indexes: list[SearchIndex], query: str, level: int = 0, max_words: int = 8):
    """The same query on several models: one row per model with its top image and each word's
    attention on it, every panel on ONE colour scale, so the models' maps can be compared."""
    rows = []
    for index in indexes:
        top = text_to_image(index, query, k=1).iloc[0]
        words, attn, grid = word_attention(index, query, int(top["image"]), level)
        title = (
            f"{_short(index.label.split(' (')[0], 24)}\ntop: image {int(top['image'])}, {top['score']:.3f}"
        )
        rows.append((index, int(top["image"]), words[:max_words], attn[:max_words], grid, title))
    ncols = 1 + max(len(w) for _, _, w, _, _, _ in rows)
    fig, axes = plt.subplots(
        len(rows), ncols, figsize=(1.6 * ncols + 0.8, 1.9 * len(rows) + 0.5), squeeze=False
    )
    _attention_rows(fig, axes, rows)
    fig.suptitle(f"{query!r}: each model's top image and word attention at level {level}", fontsize=9)
    return fig


def plot_image_query(index: SearchIndex, image: int, k: int = 5, wrap: int = 40):
    """The image beside a bar chart (seaborn) of its ``k`` best captions' scores, its own captions
    in another colour. The score axis is zoomed to the scores' range (they often differ only in the
    third decimal), each bar is labelled with its score, and captions wrap at word boundaries."""
    table = image_to_text(index, image, k=k).reset_index()
    table["whose"] = np.where(table["own"], "its own caption", "another image's")
    table["label"] = [textwrap.fill(f"#{r} {c}", wrap) for r, c in zip(table["rank"], table["caption"])]
    lines = sum(lab.count("\n") + 1 for lab in table["label"])
    fig, (ax_img, ax_bar) = plt.subplots(1, 2, figsize=(10, 0.3 * lines + 1.8), width_ratios=(1, 3.2))
    ax_img.imshow(index.images[int(image)])
    ax_img.set_title(f"image {int(image)}", fontsize=9)
    ax_img.axis("off")
    sns.barplot(
        data=table,
        x="score",
        y="label",
        hue="whose",
        dodge=False,
        ax=ax_bar,
        palette={"its own caption": "tab:green", "another image's": "tab:gray"},
    )
    lo, hi = float(table["score"].min()), float(table["score"].max())
    pad = max(hi - lo, 1e-3) * 0.35
    ax_bar.set_xlim(lo - pad, hi + pad)
    for y, v in enumerate(table["score"]):
        ax_bar.text(v, y, f" {v:.4f}", va="center", fontsize=7)
    ax_bar.set(ylabel="", xlabel="score S(image, caption); axis zoomed to the scores' range, not from 0")
    ax_bar.tick_params(axis="y", labelsize=7)
    ax_bar.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"model: {_short(index.label)}", fontsize=9)
    fig.tight_layout()
    return fig


# --- the app ----------------------------------------------------------------------------------


def _results_html(query: str, table: pd.DataFrame) -> str:
    items = "".join(
        f"<li>image {int(r['image'])}: score {r['score']:.3f} ({_escape(r['its first caption'])})</li>"
        for _, r in table.iterrows()
    )
    return f"<b>top images for {_escape(query)!s}</b><ol>{items}</ol>"


def _escape(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SearchApp:
    """The ipywidgets app: a model menu, a caption box (Enter to search), k and level controls with
    the top images and their word attention, and an image picker with its top captions.

    ``choices``: from :func:`available_models`; each model's index is built on first use and kept.
    Without ipywidgets :meth:`show` falls back to :meth:`static` (plain output, for a script or nbval).
    """

    def __init__(
        self,
        choices: list[ModelChoice],
        split,
        data_root,
        n_images: int = 100,
        device: str = "cpu",
        query: str = "a big red circle",
        image: int = 0,
        k: int = 3,
    ):
        if not choices:
            raise ValueError("no models to show; pass available_models(...)'s list (never empty)")
        self.choices = {c.label: c for c in choices}
        self.split, self.data_root, self.n_images, self.device = split, data_root, n_images, device
        self.query, self.image, self.k = query, int(image), int(k)
        self._indexes: dict[str, SearchIndex] = {}
        self.label = choices[0].label

    def index(self, label: str | None = None) -> SearchIndex:
        """The encoded subset of model ``label`` (default: the selected one), built once."""
        label = label or self.label
        if label not in self._indexes:
            self._indexes[label] = build_index(
                self.choices[label], self.split, self.data_root, self.n_images, device=self.device
            )
        return self._indexes[label]

    def static(self, query: str | None = None, image: int | None = None, level: int = 0) -> None:
        """What the app shows, as plain output (nbval, a script): both directions for one query."""
        query, image = query or self.query, self.image if image is None else int(image)
        idx = self.index()
        print(f"model: {idx.label} | the first {idx.n_images} test images and their captions encoded")
        print(f"\ncaption -> images: {query!r}")
        print(text_to_image(idx, query, k=self.k).round(3).to_string())
        display(plot_text_query(idx, query, k=self.k, level=level))
        print(f"\nimage {image} -> captions")
        print(image_to_text(idx, image, k=5).round(3).to_string())
        display(plot_image_query(idx, image, k=5))
        plt.close("all")

    def compare(
        self, query: str | None = None, labels: list[str] | None = None, level: int = 0, k: int | None = None
    ):
        """The same query on several models (default: the first two choices, e.g. shipped DAIM and
        its t2i baseline): their top images side by side, and each one's top image with its word
        attention, all on one colour scale. Returns the table."""
        query = query or self.query
        labels = labels or list(self.choices)[:2]
        indexes = [self.index(label) for label in labels]
        table = compare_text_to_image(indexes, query, k=k or self.k)
        print(f"caption -> images on {len(indexes)} models: {query!r}")
        print(table.round(3).to_string())
        display(plot_compare_query(indexes, query, level=level))
        plt.close("all")
        return table

    def show(self):
        """Build and display the widgets; the top-level box is ``self.box``. Without ipywidgets it says
        so and shows :meth:`static` instead, so the notebook still runs to its end (its checks)."""
        if ipywidgets is None:
            print(
                "the interactive search needs ipywidgets (pip install -e '.[notebook]' or bash scripts/setup.sh); "
                "its static view instead:"
            )
            self.static()
            return
        w = ipywidgets
        self.model_menu = w.Dropdown(
            options=list(self.choices), value=self.label, description="model", layout=w.Layout(width="95%")
        )
        self.query_box = w.Text(
            value=self.query,
            description="caption",
            continuous_update=False,
            placeholder="type a caption, press Enter",
            layout=w.Layout(width="70%"),
        )
        self.query_box.add_class("daim-query")
        self.k_slider = w.IntSlider(value=self.k, min=1, max=6, description="top k")
        n_levels = len(self.index().img_levels)
        self.level_menu = w.Dropdown(
            options=[(f"level {i}", i) for i in range(n_levels)], value=0, description="attention"
        )
        self.image_picker = w.BoundedIntText(
            value=self.image, min=0, max=self.n_images - 1, description="image"
        )
        self.status = w.HTML()
        self.results = w.HTML()
        self.results.add_class("daim-results")
        self.text_out, self.image_out = w.Output(), w.Output()
        self.captions_html = w.HTML()
        self.captions_html.add_class("daim-captions")
        self.model_menu.observe(self._on_model, names="value")
        for ctl in (self.query_box, self.k_slider, self.level_menu):
            ctl.observe(lambda _change: self._refresh_text(), names="value")
        self.image_picker.observe(lambda _change: self._refresh_image(), names="value")
        text_tab = w.VBox(
            [w.HBox([self.query_box, self.k_slider]), self.level_menu, self.results, self.text_out]
        )
        image_tab = w.VBox([self.image_picker, self.captions_html, self.image_out])
        tabs = w.Tab(children=[text_tab, image_tab])
        tabs.set_title(0, "caption -> images")
        tabs.set_title(1, "image -> captions")
        self.box = w.VBox([self.model_menu, self.status, tabs])
        self._on_model(None)
        display(self.box)

    def _on_model(self, _change) -> None:
        self.label = self.model_menu.value
        self.status.value = f"<i>encoding {self.n_images} images with {_escape(self.label)} ...</i>"
        idx = self.index()
        kind = "trained" if idx.trained else "<b>random weights: not a trained model</b>"
        self.status.value = f"model: {_escape(idx.label)} [{kind}]; {idx.n_images} images encoded"
        self._refresh_text()
        self._refresh_image()

    def _refresh_text(self) -> None:
        query = self.query_box.value.strip()
        if not query:
            self.results.value = "<i>type a caption and press Enter</i>"
            return
        idx = self.index()
        self.text_out.clear_output(wait=True)
        with self.text_out:
            fig = plot_text_query(idx, query, k=self.k_slider.value, level=self.level_menu.value)
            display(fig)
            plt.close(fig)
        # the list last: once it names the query, the figure above it is drawn too
        self.results.value = _results_html(query, text_to_image(idx, query, k=self.k_slider.value))

    def _refresh_image(self) -> None:
        idx = self.index()
        image = int(self.image_picker.value)
        table = image_to_text(idx, image, k=5)
        items = "".join(
            f"<li>{'&#10003; ' if r['own'] else ''}{_escape(r['caption'])}: {r['score']:.3f}</li>"
            for _, r in table.iterrows()
        )
        self.captions_html.value = (
            f"<b>top captions for image {image}</b> (&#10003; = its own)<ol>{items}</ol>"
        )
        self.image_out.clear_output(wait=True)
        with self.image_out:
            fig = plot_image_query(idx, image, k=5)
            display(fig)
            plt.close(fig)
