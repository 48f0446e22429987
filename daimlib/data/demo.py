"""The demo dataset: rendered scenes of coloured shapes with five captions each, in Karpathy format.

Each scene holds 1-3 objects (shape, colour, size) in distinct cells of a 3 x 3 grid. Captions
describe **every** object of the scene with its three attributes (closed-world reading, as human
captions are read) and the spatial relations between them ("a small red circle to the left of a
big blue square"); single objects get their location ("in the top left corner"). Captions of
different images share their words and differ in one attribute or relation: a fraction of the
scenes (``distractor_fraction``) are one-edit variants of an earlier scene of the same split, the
fine-grained confusion DAIM's modules target (``docs/design.md``).

Every caption stores its meaning as ``claims`` in the JSON, and every image its ``scene``;
:func:`caption_is_true` decides whether a caption is true of a scene, and
:func:`caption_uniqueness` reports the fraction of captions true of exactly one image of a split
(retrieval only measures the model if most captions single out one image).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from itertools import permutations
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from daimlib.data.tokenizer import build_wordpiece_tokenizer

SPLIT_SIZES = {"default": (4000, 200, 500), "small": (200, 50, 50)}
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 175, 70),
    "blue": (50, 100, 235),
    "yellow": (235, 215, 40),
    "purple": (160, 70, 210),
    "orange": (245, 140, 20),
    "white": (240, 240, 240),
    "cyan": (40, 210, 220),
}
SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
RADIUS = {"small": 5.0, "big": 8.5}  # pixels at 64 px
REL_WORDS = {
    "left": ("left of", "to the left of", "on the left of"),
    "right": ("right of", "to the right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
ROW_WORDS, COL_WORDS = ("top", "middle", "bottom"), ("left", "center", "right")
MAX_CAPTION_TOKENS = 30  # words and commas: [CLS] + 30 + [SEP] = the demo preset's text.max_len 32
MAX_SCENE_TRIES = 100  # draws before a scene that repeats another of its split is accepted


@dataclass
class DemoSpec:
    """Difficulty knobs of the demo dataset (stored in the JSON as ``demo_spec``)."""

    shapes: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
    colours: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
    sizes: tuple[str, ...] = ("small", "big")
    object_probs: tuple[float, ...] = (0.1, 0.35, 0.55)  # P(1 object), P(2), P(3)
    relations: tuple[str, ...] = ("horizontal", "vertical")  # relation vocabulary: left/right, above/below
    distractor_fraction: float = 0.3  # scenes made as a one-edit variant of an earlier scene
    image_size: int = 64
    supersample: int = 4  # drawn at this multiple, then downsampled (anti-aliasing)
    grid: int = 3
    split_sizes: tuple[int, int, int] = field(default=SPLIT_SIZES["default"])  # train, val, test images

    def check(self) -> None:
        bad = [s for s in self.shapes if s not in SHAPES] + [c for c in self.colours if c not in COLOURS]
        if bad:
            raise ValueError(
                f"unknown shapes/colours {bad}; available: shapes {SHAPES}, colours {sorted(COLOURS)}"
            )
        if not set(self.sizes) <= set(RADIUS) or not self.sizes:
            raise ValueError(f"sizes must be a non-empty subset of {sorted(RADIUS)}, got {self.sizes}")
        if not self.relations or not set(self.relations) <= {"horizontal", "vertical"}:
            raise ValueError(
                f"relations must be a non-empty subset of ('horizontal', 'vertical'), got {self.relations}"
            )
        if len(self.object_probs) > self.grid or abs(sum(self.object_probs) - 1) > 1e-6:
            raise ValueError(
                f"object_probs {self.object_probs} must sum to 1 with at most grid={self.grid} entries"
            )
        if self.split_sizes[2] % 5:
            raise ValueError(
                f"the test split needs a multiple of 5 images (5-fold protocol), got {self.split_sizes[2]}"
            )


# --- scenes ---------------------------------------------------------------------------------


def _cells_ok(cells, spec: DemoSpec) -> bool:
    """Every pair of cells must be related by a relation in the vocabulary."""
    g = spec.grid
    for a in range(len(cells)):
        for b in range(a + 1, len(cells)):
            (ra, ca), (rb, cb) = divmod(cells[a], g), divmod(cells[b], g)
            if not (
                ("horizontal" in spec.relations and ca != cb) or ("vertical" in spec.relations and ra != rb)
            ):
                return False
    return True


def _place(rng: random.Random, objects: list[dict], spec: DemoSpec) -> None:
    """Pixel centre inside each object's cell (jittered), in image_size pixels."""
    cell = spec.image_size / spec.grid
    for o in objects:
        r = RADIUS[o["size"]] * spec.image_size / 64
        slack = max(cell / 2 - r - 1, 0)
        o["x"] = round((o["col"] + 0.5) * cell + rng.uniform(-slack, slack), 2)
        o["y"] = round((o["row"] + 0.5) * cell + rng.uniform(-slack, slack), 2)
        o["r"] = round(r, 2)


def _random_scene(rng: random.Random, spec: DemoSpec) -> dict:
    n = rng.choices(range(1, len(spec.object_probs) + 1), weights=spec.object_probs)[0]
    while True:
        cells = rng.sample(range(spec.grid * spec.grid), n)
        if _cells_ok(cells, spec):
            break
    types: list[tuple] = []
    while len(types) < n:
        t = (rng.choice(spec.shapes), rng.choice(spec.colours), rng.choice(spec.sizes))
        if t not in types:
            types.append(t)
    objects = [
        {"shape": s, "colour": c, "size": z, "row": cell // spec.grid, "col": cell % spec.grid}
        for (s, c, z), cell in zip(types, cells)
    ]
    _place(rng, objects, spec)
    return {"objects": objects, "background": [rng.randint(35, 80)] * 3}


def _edit_scene(rng: random.Random, base: dict, spec: DemoSpec) -> dict:
    """A copy of ``base`` with one attribute or one position changed (a hard negative)."""
    for _ in range(50):
        objects = [dict(o) for o in base["objects"]]
        k = rng.randrange(len(objects))
        kinds = ["shape", "colour", "size", "move"] + (["swap"] if len(objects) > 1 else [])
        kind = rng.choice(kinds)
        if kind in ("shape", "colour", "size"):
            pool = {"shape": spec.shapes, "colour": spec.colours, "size": spec.sizes}[kind]
            objects[k][kind] = rng.choice([v for v in pool if v != objects[k][kind]] or pool)
        elif kind == "move":
            used = {o["row"] * spec.grid + o["col"] for o in objects}
            cell = rng.choice([c for c in range(spec.grid * spec.grid) if c not in used])
            objects[k]["row"], objects[k]["col"] = divmod(cell, spec.grid)
        else:
            m = rng.choice([i for i in range(len(objects)) if i != k])
            for key in ("row", "col"):
                objects[k][key], objects[m][key] = objects[m][key], objects[k][key]
        types = [(o["shape"], o["colour"], o["size"]) for o in objects]
        cells = [o["row"] * spec.grid + o["col"] for o in objects]
        if len(set(types)) == len(types) and _cells_ok(cells, spec) and objects != base["objects"]:
            _place(rng, objects, spec)
            return {"objects": objects, "background": [rng.randint(35, 80)] * 3}
    return _random_scene(rng, spec)


def scene_signature(scene: dict, spec: DemoSpec | None = None) -> tuple:
    """What a caption can say about a scene: object types, pairwise relations, a lone object's cell."""
    objs = scene["objects"]
    types = [(o["shape"], o["colour"], o["size"]) for o in objs]
    if len(objs) == 1:
        return (types[0], objs[0]["row"], objs[0]["col"])
    rels = DemoSpec().relations if spec is None else spec.relations
    sp = DemoSpec(relations=rels)
    pairs = sorted(
        (types[a], types[b], tuple(_true_relations(objs[a], objs[b], sp)))
        for a in range(len(objs))
        for b in range(len(objs))
        if a != b
    )
    return tuple(pairs)


def next_scene(rng: random.Random, spec: DemoSpec, made: list[dict], seen: set[tuple]) -> dict:
    """The next scene of a split: a one-edit variant of an earlier one (``distractor_fraction``) or a
    fresh one, redrawn while one caption could not tell it from an earlier scene of the split.
    Appends it to ``made`` and its signature to ``seen``."""
    for _try in range(MAX_SCENE_TRIES):
        if made and rng.random() < spec.distractor_fraction:
            scene = _edit_scene(rng, rng.choice(made), spec)
        else:
            scene = _random_scene(rng, spec)
        if scene_signature(scene, spec) not in seen:
            break
    seen.add(scene_signature(scene, spec))
    made.append(scene)
    return scene


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        h = r * 0.85
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r * 0.95, cy + r * 0.75), (cx - r * 0.95, cy + r * 0.75)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.8, cy), (cx, cy + r), (cx - r * 0.8, cy)]
    if shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            ang = -np.pi / 2 + k * np.pi / 5
            pts.append((cx + rad * np.cos(ang), cy + rad * np.sin(ang)))
        return pts
    if shape == "cross":
        a, b = r * 0.35, r
        return [
            (cx - a, cy - b),
            (cx + a, cy - b),
            (cx + a, cy - a),
            (cx + b, cy - a),
            (cx + b, cy + a),
            (cx + a, cy + a),
            (cx + a, cy + b),
            (cx - a, cy + b),
            (cx - a, cy + a),
            (cx - b, cy + a),
            (cx - b, cy - a),
            (cx - a, cy - a),
        ]
    raise ValueError(f"unknown shape {shape!r}")


def render_scene(scene: dict, image_size: int = 64, supersample: int = 4) -> Image.Image:
    """Draw a scene at ``supersample`` x the size and downsample (anti-aliased RGB image)."""
    s = supersample
    img = Image.new("RGB", (image_size * s, image_size * s), tuple(scene["background"]))
    draw = ImageDraw.Draw(img)
    for o in scene["objects"]:
        cx, cy, r, colour = o["x"] * s, o["y"] * s, o["r"] * s, COLOURS[o["colour"]]
        if o["shape"] == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        else:
            draw.polygon(_polygon(o["shape"], cx, cy, r), fill=colour)
    return img.resize((image_size, image_size), Image.LANCZOS)


# --- captions and their meaning -------------------------------------------------------------


def _holds(a: dict, rel: str, b: dict) -> bool:
    return {
        "left": a["col"] < b["col"],
        "right": a["col"] > b["col"],
        "above": a["row"] < b["row"],
        "below": a["row"] > b["row"],
    }[rel]


def _true_relations(a: dict, b: dict, spec: DemoSpec) -> list[str]:
    rels = []
    if "horizontal" in spec.relations:
        rels += [r for r in ("left", "right") if _holds(a, r, b)]
    if "vertical" in spec.relations:
        rels += [r for r in ("above", "below") if _holds(a, r, b)]
    return rels


def _location_phrase(rng: random.Random, row: int, col: int) -> str:
    if (row, col) == (1, 1):
        return rng.choice(["in the center", "in the middle"])
    if row == 1:
        return rng.choice([f"on the {COL_WORDS[col]}", f"at the {COL_WORDS[col]}"])
    if col == 1:
        return rng.choice([f"at the {ROW_WORDS[row]}", f"in the {ROW_WORDS[row]} middle"])
    return rng.choice(
        [f"in the {ROW_WORDS[row]} {COL_WORDS[col]} corner", f"at the {ROW_WORDS[row]} {COL_WORDS[col]}"]
    )


def _np(o: dict) -> str:
    return f"{o['size']} {o['colour']} {o['shape']}"


def _rel_phrase(rng: random.Random, rels: list[str]) -> str:
    """Words for one or two true relations ("above and to the left of")."""
    if len(rels) == 1:
        return rng.choice(REL_WORDS[rels[0]])
    v = next(r for r in rels if r in ("above", "below"))
    h = next(r for r in rels if r in ("left", "right"))
    return f"{rng.choice(REL_WORDS[v])} and {rng.choice(REL_WORDS[h][:2])}"


def _one_caption(rng: random.Random, scene: dict, spec: DemoSpec) -> tuple[str, dict]:
    """One caption and its claims (objects in mention order, relations, locations).

    Every stated pair of objects gets all of its true relations (one or two).
    """
    objs = scene["objects"]
    order = list(range(len(objs)))
    rng.shuffle(order)
    desc = [{k: objs[i][k] for k in ("shape", "colour", "size")} for i in order]
    o = [objs[i] for i in order]
    claims: dict = {"objects": desc, "relations": [], "locations": []}
    if len(o) == 1:
        loc = _location_phrase(rng, o[0]["row"], o[0]["col"])
        claims["locations"].append([0, o[0]["row"], o[0]["col"]])
        t = rng.choice(
            [
                "a {x} {loc}",
                "{loc} there is a {x}",
                "a single {x} {loc}",
                "only one shape , a {x} {loc}",
                "the image shows a {x} {loc}",
                "a {x} alone {loc}",
            ]
        )
        return t.format(x=_np(o[0]), loc=loc), claims
    rels1 = _true_relations(o[0], o[1], spec)
    claims["relations"] += [[0, r, 1] for r in rels1]
    w1 = _rel_phrase(rng, rels1)
    if len(o) == 2:
        t = rng.choice(
            [
                "a {x} {r} a {y}",
                "a {x} is {r} a {y}",
                "there is a {x} {r} a {y}",
                "two shapes , a {x} {r} a {y}",
                "the image shows a {x} {r} a {y}",
                "a {x} placed {r} a {y}",
            ]
        )
        return t.format(x=_np(o[0]), y=_np(o[1]), r=w1), claims
    anchor = rng.choice([0, 1])
    rels2 = _true_relations(o[2], o[anchor], spec)
    claims["relations"] += [[2, r, anchor] for r in rels2]
    w2 = _rel_phrase(rng, rels2)
    t = rng.choice(
        [
            "a {x} {r} a {y} and a {z} {s} the {w}",
            "a {x} is {r} a {y} , and a {z} is {s} the {w}",
            "three shapes , a {x} {r} a {y} and a {z} {s} the {w}",
            "there is a {x} {r} a {y} and a {z} {s} the {w}",
        ]
    )
    return t.format(x=_np(o[0]), y=_np(o[1]), z=_np(o[2]), w=_np(o[anchor]), r=w1, s=w2), claims


def make_captions(rng: random.Random, scene: dict, spec: DemoSpec, n: int = 5) -> list[tuple[str, dict]]:
    """``n`` distinct captions of a scene (different templates, word order, relation words)."""
    out: dict[str, dict] = {}
    for _ in range(400):
        text, claims = _one_caption(rng, scene, spec)
        if len(_tokens(text)) + text.count(",") > MAX_CAPTION_TOKENS:
            continue  # would be truncated by the 32-token text encoder
        out.setdefault(text, claims)
        if len(out) == n:
            break
    while len(out) < n:  # a scene with very few phrasings: repeat (never happens with the default templates)
        text, claims = next(iter(out.items()))
        out[text + " " * len(out)] = claims
    return [(t.strip(), c) for t, c in out.items()]


def caption_is_true(claims: dict, scene: dict) -> bool:
    """Is a caption (its ``claims``) true of a scene?

    True iff the scene has as many objects as the caption describes and some one-to-one matching
    of described to scene objects agrees on every stated attribute, relation and location.
    """
    objs, desc = scene["objects"], claims["objects"]
    if len(objs) != len(desc):
        return False
    for perm in permutations(range(len(objs))):
        m = [objs[p] for p in perm]
        if not all(m[k][a] == d[a] for k, d in enumerate(desc) for a in d):
            continue
        if not all(_holds(m[a], rel, m[b]) for a, rel, b in claims["relations"]):
            continue
        if all(m[k]["row"] == r and m[k]["col"] == c for k, r, c in claims["locations"]):
            return True
    return False


def caption_match_counts(split) -> np.ndarray:
    """For each caption of a demo :class:`~daimlib.data.KarpathySplit`, how many of its images it is true of."""
    if split.caption_meta is None or "scene" not in split.meta[0]:
        raise ValueError(
            "caption_match_counts needs the demo dataset's 'scene' and 'claims' fields; "
            f"{split!r} has none (only make_demo_dataset writes them)"
        )
    scenes = [m["scene"] for m in split.meta]

    def key(objs):
        return tuple(sorted((o["shape"], o["colour"], o["size"]) for o in objs))

    buckets: dict[tuple, list[int]] = {}
    for i, sc in enumerate(scenes):
        buckets.setdefault(key(sc["objects"]), []).append(i)
    counts = np.zeros(split.n_captions, dtype=np.int64)
    for j, cm in enumerate(split.caption_meta):
        claims = cm["claims"]
        counts[j] = sum(caption_is_true(claims, scenes[i]) for i in buckets.get(key(claims["objects"]), []))
    return counts


def caption_uniqueness(split) -> float:
    """Fraction (0..1) of the split's captions that are true of exactly one of its images."""
    return float(np.mean(caption_match_counts(split) == 1))


# --- the dataset on disk --------------------------------------------------------------------


def _tokens(text: str) -> list[str]:
    return [w for w in text.lower().replace(",", " ").split() if w]


def _refuse_foreign_folder(root: Path, json_path: Path) -> None:
    """A non-empty folder is written into only when it holds demo data (a ``dataset_demo.json`` with its
    ``demo_spec``): never over a user's dataset (issue 14: 4,700 demo images in a Flickr30K folder)."""
    if root.exists() or root.is_symlink():
        if not root.is_dir():
            raise FileExistsError(
                f"--root {root.name} is a file (or a dangling link), not a folder; the demo data is a folder of "
                "images and JSON: choose a new folder, e.g. --root data/demo"
            )
    if not root.is_dir() or not any(root.iterdir()):
        return
    if json_path.is_file():
        try:
            if "demo_spec" in json.loads(json_path.read_text(encoding="utf-8")):
                return
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError):
            pass
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    raise FileExistsError(
        f"{root.name}/ is not empty and holds no demo data (it has {shown}); the demo generator writes only into an "
        "empty folder or one it made before. Choose a new folder, e.g. --root data/demo"
    )


def _demo_spec(size: str | tuple[int, int, int], knobs: dict) -> DemoSpec:
    """The checked :class:`DemoSpec` of ``make_demo_dataset``'s ``size`` and ``knobs``."""
    if isinstance(size, str):
        if size not in SPLIT_SIZES:
            raise ValueError(
                f"size must be one of {sorted(SPLIT_SIZES)} or a (train, val, test) tuple, got {size!r}"
            )
        sizes = SPLIT_SIZES[size]
    else:
        sizes = tuple(int(v) for v in size)
    unknown = sorted(set(knobs) - {f for f in DemoSpec.__dataclass_fields__ if f != "split_sizes"})
    if unknown:
        raise ValueError(f"unknown demo knobs {unknown}; knobs are the fields of DemoSpec")
    spec = DemoSpec(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in knobs.items()}, split_sizes=sizes
    )
    spec.check()
    return spec


def make_demo_dataset(
    root: str | Path,
    seed: int = 0,
    size: str | tuple[int, int, int] = "default",
    overwrite: bool = False,
    progress: bool = True,
    **knobs,
) -> Path:
    """Write the demo dataset to ``root``; return the path of ``root/dataset_demo.json``.

    Writes ``root/images/*.png``, ``root/dataset_demo.json`` (Karpathy format, with ``scene`` per
    image and ``claims`` per caption) and ``root/tokenizer/`` (a WordPiece vocabulary of the
    TRAIN captions). ``size``: ``"default"`` (4000/200/500 images), ``"small"`` (200/50/50) or a
    ``(train, val, test)`` tuple. ``knobs``: fields of :class:`DemoSpec` (difficulty). The same
    arguments give a byte-identical JSON and identical images; an existing dataset made with the
    same arguments is reused unless ``overwrite``. A non-empty folder without demo data is refused
    (``FileExistsError``), whatever ``overwrite`` says.
    """
    root = Path(root)
    spec = _demo_spec(size, knobs)
    sizes = spec.split_sizes
    json_path = root / "dataset_demo.json"
    _refuse_foreign_folder(root, json_path)
    header = {"seed": seed, **asdict(spec)}
    header = json.loads(json.dumps(header))  # tuples -> lists, as read back
    if json_path.is_file() and (root / "tokenizer" / "tokenizer.json").is_file() and not overwrite:
        try:
            old = json.loads(json_path.read_text(encoding="utf-8"))
            if old.get("demo_spec") == header and all(
                (root / "images" / r["filename"]).is_file() for r in old["images"]
            ):
                return json_path
        except (json.JSONDecodeError, KeyError, TypeError):
            pass
    rng = random.Random(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    records = []
    sentid = 0
    total = sum(sizes)
    bar = tqdm(total=total, desc="demo images", disable=not progress, leave=False)
    for split, n in zip(("train", "val", "test"), sizes):
        made: list[dict] = []
        seen: set[tuple] = set()
        for _ in range(n):
            scene = next_scene(rng, spec, made, seen)
            imgid = len(records)
            fname = f"{imgid:05d}.png"
            render_scene(scene, spec.image_size, spec.supersample).save(root / "images" / fname, format="PNG")
            sents = []
            for text, claims in make_captions(rng, scene, spec):
                assert caption_is_true(claims, scene), text  # a caption is always true of its own image
                sents.append(
                    {"raw": text, "tokens": _tokens(text), "imgid": imgid, "sentid": sentid, "claims": claims}
                )
                sentid += 1
            records.append(
                {
                    "filename": fname,
                    "imgid": imgid,
                    "split": split,
                    "sentids": [s["sentid"] for s in sents],
                    "sentences": sents,
                    "scene": scene,
                }
            )
            bar.update()
    bar.close()
    data = {"images": records, "dataset": "demo", "demo_spec": header}
    json_path.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")
    train_caps = [s["raw"] for r in records if r["split"] == "train" for s in r["sentences"]]
    build_wordpiece_tokenizer(train_caps, root / "tokenizer", vocab_size=512)
    return json_path
