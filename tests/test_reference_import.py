"""Import of the authors' checkpoints (issue 8): the imported model computes what the reference computes.

The fixtures (``tests/fixtures/reference_checkpoints``, see its README) are two tiny random-weight
checkpoints in the reference code's own Lightning layout, and the reference code's outputs on fixed
inputs (float64, eval mode). The comparisons below are against those stored outputs, not against
anything daimlib computed.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from daimlib import reference as R
from daimlib.checkpoint import CheckpointError, load_loss, load_model, model_config_diff, read_meta
from daimlib.config import load_preset
from daimlib.losses import AdaptiveMargin, triplet_loss
from daimlib.paths import sha256_file
from daimlib.reference_map import reference_to_kit
from daimlib.similarity import scan

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FIX = Path(__file__).parent / "fixtures" / "reference_checkpoints"
CKPT = {"daim": FIX / "tiny_daim_reference.ckpt", "hat": FIX / "tiny_hat_reference.ckpt"}
CONFIGS = json.loads((FIX / "tiny_configs.json").read_text())
LEVELS = ("low", "mid", "high")


@pytest.fixture(scope="module")
def outputs():
    return load_file(str(FIX / "tiny_outputs.safetensors"))


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    out = tmp_path_factory.mktemp("imported")
    return {f: R.import_reference(CKPT[f], out=out / f, text_heads=2) for f in ("daim", "hat")}


def _raw(family="daim"):
    with torch.serialization.safe_globals([(c, n) for n, c in R.STAND_INS.items()]):
        return torch.load(CKPT[family], map_location="cpu", weights_only=True)


def _write_variant(tmp_path, edit, family="daim", name="edited.ckpt"):
    """A Lightning-layout file whose state_dict went through ``edit`` (the callbacks entry left out)."""
    ck = _raw(family)
    sd = ck["state_dict"]
    edit(sd)
    ck.pop("callbacks")
    path = tmp_path / name
    torch.save(ck, path)
    return path


# --- mapping and architecture --------------------------------------------------------------------


@pytest.mark.parametrize("table", ["daim_keys.tsv", "hat_keys.tsv"])
def test_mapping_rules_reproduce_every_row_of_the_full_size_manifest(table):
    with open(FIX / table, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    counts = {"param": 0, "buffer": 0, "drop": 0}
    for row in rows:
        if row["kind"] == "hparam":
            continue
        kind, target = reference_to_kit(row["reference_key"])
        if row["daimlib_key"] == "-":
            assert kind in ("drop", "buffer"), row
            assert (kind == "buffer") == (row["kind"] == "buffer"), row
        else:
            assert (kind, target) == ("param", row["daimlib_key"]), row
        counts[kind] += 1
    assert counts == {"param": 540, "buffer": 35, "drop": 4}


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
@pytest.mark.parametrize("family", ["daim", "hat"])
def test_architecture_and_config_are_read_from_the_checkpoint(family, imported):
    res = imported[family]
    a, img, txt = res.arch, CONFIGS["image"], CONFIGS["text"]
    assert (a.embed_dim, list(a.depths), list(a.num_heads)) == (
        img["embed_dim"],
        img["depths"],
        img["num_heads"],
    )
    assert (a.window_size, a.patch_size, a.img_size, a.mlp_ratio) == (7, 4, 224, 4.0)
    assert (a.vocab_size, a.hidden_size, a.num_hidden_layers, a.intermediate_size) == (
        txt["vocab_size"],
        txt["hidden_size"],
        txt["num_hidden_layers"],
        txt["intermediate_size"],
    )
    assert (a.max_position_embeddings, a.type_vocab_size, a.proj_dim) == (512, 2, 20)
    # the same model as the preset with the fixture's overrides (independently written down)
    expected = load_preset(CONFIGS["daimlib_presets"][family], **CONFIGS["daimlib_overrides"][family])
    assert model_config_diff(res.cfg, expected) == {}
    assert res.cfg.name == CONFIGS["daimlib_presets"][family]
    assert res.report == {"mapped": 540, "dropped": 4, "buffers_checked": 35}


def test_bert_heads_are_not_guessed_when_no_shape_tells_them():
    with pytest.raises(CheckpointError, match=r"--text-heads N"):
        R.import_reference(CKPT["daim"])


# --- agreement with the reference outputs --------------------------------------------------------


def _run(model, o, dtype):
    model = model.to(dtype).eval()
    with torch.no_grad():
        img_in = model.image_encoder(o["inputs/images"].to(dtype))
        img = [p(x) for p, x in zip(model.img_proj, img_in)]
        txt_in, lens = model.text_encoder(o["inputs/input_ids"], o["inputs/attention_mask"])
        txt = [p(x) for p, x in zip(model.txt_proj, txt_in)]
        sc = model.cfg.similarity
        per_level = [scan(i, t, lens, sc.direction, sc.lambda_softmax) for i, t in zip(img, txt)]
        total = model.similarity(img, txt, lens)
    return img_in, txt_in, img, txt, per_level, total, lens


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
@pytest.mark.parametrize("family", ["daim", "hat"])
def test_imported_model_matches_the_reference_forward_pass_in_float64(family, imported, outputs):
    o, f = outputs, family
    img_in, txt_in, img, txt, per_level, total, lens = _run(imported[f].model, o, torch.float64)
    assert torch.equal(lens, o["inputs/lengths"])
    for x, s in zip(img_in, (2, 3, 4)):
        assert (x - o[f"{f}/encoder/image_stage{s}"]).abs().max() < 1e-12
    for x, k in zip(txt_in, (4, 10, 12)):
        assert (x - o[f"{f}/encoder/text_layer{k}"]).abs().max() < 1e-12
    for lv, x, y in zip(LEVELS, img, txt):
        assert (x - o[f"{f}/feats/image_{lv}"]).abs().max() < 1e-12
        assert (y - o[f"{f}/feats/text_{lv}"]).abs().max() < 1e-12
    for lv, s in zip(LEVELS, per_level):  # daimlib's SCAN runs in float32 by design
        assert (s.double() - o[f"{f}/sims/{lv}"]).abs().max() < 2e-7
    assert (total.double() - o[f"{f}/sims/total"]).abs().max() < 5e-7
    # the reference figures repeated in plain JSON agree too
    assert torch.allclose(
        total.double(), torch.tensor(CONFIGS["reference_results"][f]["sims"], dtype=torch.float64), atol=5e-7
    )
    imported[f].model.float()


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
@pytest.mark.parametrize("family", ["daim", "hat"])
def test_imported_model_in_float32_agrees_at_the_1e5_level(family, imported, outputs):
    o, f = outputs, family
    img_in, txt_in, img, txt, per_level, total, _ = _run(imported[f].model, o, torch.float32)
    for lv, x, y in zip(LEVELS, img, txt):
        assert (x.double() - o[f"{f}/feats/image_{lv}"]).abs().max() < 1e-4 * o[
            f"{f}/feats/image_{lv}"
        ].abs().max()
        assert (y.double() - o[f"{f}/feats/text_{lv}"]).abs().max() < 1e-4 * o[
            f"{f}/feats/text_{lv}"
        ].abs().max()
    assert (total.double() - o[f"{f}/sims/total"]).abs().max() < 1e-5
    # the reference's own float32 encoders land as close to its float64 result
    assert (total.double() - o[f"{f}/sims_fp32enc/total"]).abs().max() < 1e-5


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
@pytest.mark.parametrize("family", ["daim", "hat"])
def test_training_loss_on_the_square_batch_matches_the_reference(family, imported, outputs):
    o, f = outputs, family
    model = imported[f].model.double().eval()
    batch = {
        "images": o["inputs/images"].double(),
        "input_ids": o["inputs/input_ids"][:3],
        "attention_mask": o["inputs/attention_mask"][:3],
    }
    loss_fn = imported[f].loss.eval()  # the MatchingLoss holding the imported margin
    with torch.no_grad():
        scores = model(batch).scores
        res = loss_fn(scores)
    model.float()
    assert (scores.double() - o[f"{f}/train/scores"]).abs().max() < 5e-7
    assert abs(float(res.loss) - float(o[f"{f}/train/loss"])) < 1e-6
    assert float(res.loss) == pytest.approx(CONFIGS["reference_results"][f]["loss"], abs=1e-6)
    assert res.margin == pytest.approx(float(o[f"{f}/train/margin_before"]), abs=1e-8)


@pytest.mark.parametrize("case", ["ema", "reset", "inactive"])
def test_margin_step_from_the_imported_margin_matches_the_reference(case, imported, outputs):
    o, expected = outputs, CONFIGS["mom_scenarios"][case]
    cfg = imported["daim"].cfg
    mom = AdaptiveMargin.from_config(cfg.loss)
    mom.margin.copy_(imported["daim"].loss.margin)
    assert float(mom.margin) == pytest.approx(expected["margin_before"], abs=1e-8)
    scores = sum(o[f"mom/{case}/scores_{lv}"] for lv in ("high", "low", "mid"))  # compute_SCAN's order
    mom.update(scores)
    assert float(mom.margin) == pytest.approx(float(o[f"mom/{case}/margin_after"]), abs=2e-8)
    loss = triplet_loss(scores, mom.margin, hardest=True, reduction="sum")
    assert float(loss) == pytest.approx(float(o[f"mom/{case}/daim_loss"]), abs=2e-6)
    hat = imported["hat"]
    hat_loss = triplet_loss(scores, hat.loss.margin, hardest=True, reduction="sum")
    assert float(hat_loss) == pytest.approx(float(o[f"mom/{case}/hat_loss"]), abs=2e-6)


# --- the written folder --------------------------------------------------------------------------


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
@pytest.mark.parametrize("family", ["daim", "hat"])
def test_written_folder_carries_margin_and_provenance_and_loads_with_load_model(family, imported, outputs):
    res = imported[family]
    meta = read_meta(res.out_dir)
    prov = meta["provenance"]
    info = CONFIGS["checkpoints"][family]
    assert prov["source_file"] == info["file"]
    assert prov["source_sha256"] == sha256_file(CKPT[family])
    assert (prov["lightning_version"], prov["epoch"], prov["global_step"]) == (
        "1.3.2",
        info["epoch"],
        info["global_step"],
    )
    assert prov["family"] == family
    model = load_model(res.out_dir)
    assert float(load_loss(res.out_dir).margin) == pytest.approx(
        CONFIGS[family]["margin"]["in_checkpoint"], abs=1e-8
    )
    o = outputs
    with torch.no_grad():  # the public door: encode_image, encode_text, similarity
        img = model.encode_image(o["inputs/images"])
        txt, lens = model.encode_text(o["inputs/input_ids"], o["inputs/attention_mask"])
        s = model.similarity(img, txt, lens)
    assert (s.double() - o[f"{family}/sims/total"]).abs().max() < 1e-5


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_a_kit_folder_is_accepted_and_round_trips(imported, tmp_path):
    src = imported["hat"]
    res = R.import_reference(src.out_dir, out=tmp_path / "again")
    a, b = src.model.state_dict(), load_model(tmp_path / "again").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert res.provenance["source_format"] == "daimlib"


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_a_bare_state_dict_file_imports_with_its_preset(imported, tmp_path, outputs):
    path = tmp_path / "bare.pt"
    torch.save(_raw("daim")["state_dict"], path)  # keeps the pickled module list (_metadata)
    with pytest.warns(UserWarning, match="assuming Flickr30K"):
        res = R.import_reference(path, text_heads=2)
    assert res.cfg.name == "daim_f30k"  # family from the module list; dataset defaulted with a warning
    sd = OrderedDict(_raw("daim")["state_dict"])  # a plain OrderedDict: no module list
    torch.save(dict(sd), path)
    with pytest.raises(CheckpointError, match="cannot tell whether this checkpoint is DAIM or HAT"):
        R.import_reference(path, text_heads=2)
    res = R.import_reference(path, preset="daim_f30k", text_heads=2)
    o = outputs
    assert res.provenance["margin"] == 0.2  # no stored config: the preset's initial margin
    with torch.no_grad():
        s = res.model.similarity(
            res.model.encode_image(o["inputs/images"]),
            *res.model.encode_text(o["inputs/input_ids"], o["inputs/attention_mask"]),
        )
    assert (s.double() - o["daim/sims/total"]).abs().max() < 1e-5


# --- family ----------------------------------------------------------------------------------------


def test_family_is_read_from_module_list_and_stored_config():
    for f in ("daim", "hat"):
        family, signals = R.detect_family(R.read_reference(CKPT[f]))
        assert family == f and set(signals.values()) == {f}


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_other_family_preset_is_refused_unless_forced(imported, outputs, tmp_path):
    with pytest.raises(CheckpointError, match=r"HAT checkpoint.*daim_f30k.*--force"):
        R.import_reference(CKPT["hat"], preset="daim_f30k", text_heads=2)
    with pytest.raises(CheckpointError, match=r"DAIM checkpoint.*hat_coco"):
        R.import_reference(CKPT["daim"], preset="hat_coco", text_heads=2)
    with pytest.warns(UserWarning, match="Forced"), pytest.warns(UserWarning, match="direction='i2t'"):
        res = R.import_reference(CKPT["hat"], preset="daim_f30k", force=True, text_heads=2)
    o = outputs
    with torch.no_grad():
        s = res.model.similarity(
            res.model.encode_image(o["inputs/images"]),
            *res.model.encode_text(o["inputs/input_ids"], o["inputs/attention_mask"]),
        )
    assert (s.double() - o["hat/sims/total"]).abs().max() > 0.1  # it loads, and computes another function
    # the same family with another dataset is fine
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert R.import_reference(CKPT["daim"], preset="daim_coco", text_heads=2).cfg.data.dataset == "coco"


# --- refusals --------------------------------------------------------------------------------------

_K = "vit_model.layers.2.blocks.5.mlp.fc1.weight"


def _rename(sd):
    sd["vit_model.layers.2.blocks.5.mlp.fc_1.weight"] = sd.pop(_K)


def _reshape(sd):
    sd[_K] = sd[_K][:, :-1].clone()


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (lambda sd: sd.pop("cross_modal_text_transform_2.bias"), r"1 missing keys.*txt_proj\.1\.bias"),
        (
            lambda sd: sd.__setitem__("vit_model.extra.weight", torch.zeros(2)),
            r"1 extra keys.*vit_model\.extra\.weight",
        ),
        (_rename, r"1 extra keys.*mlp\.fc_1\.weight.*1 missing keys.*layers\.2\.blocks\.5\.mlp\.fc1\.weight"),
        (
            _reshape,
            r"1 reshaped keys: vit_model\.layers\.2\.blocks\.5\.mlp\.fc1\.weight: checkpoint \(128, 31\) vs kit",
        ),
        (
            lambda sd: sd["vit_model.layers.1.blocks.1.attn_mask"].mul_(2),
            r"buffers that differ.*layers\.1\.blocks\.1\.attn_mask",
        ),
        (
            lambda sd: sd.__setitem__(
                "cross_modal_text_transform.weight",
                sd["cross_modal_text_transform.weight"].t().contiguous().repeat(2, 1)[:20],
            ),
            r"reshaped keys: cross_modal_text_transform\.weight",
        ),
    ],
    ids=["missing", "extra", "renamed", "reshaped", "buffer", "transposed"],
)
@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_edited_state_dicts_are_refused_with_a_list_of_keys(tmp_path, edit, pattern):
    path = _write_variant(tmp_path, edit)
    with pytest.raises(CheckpointError, match=pattern):
        R.import_reference(path, text_heads=2)


def test_a_plain_timm_swin_or_bert_state_dict_is_refused_as_foreign(tmp_path):
    import timm
    from transformers import BertConfig, BertModel

    swin = timm.create_model(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        embed_dim=8,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        num_classes=0,
    )
    torch.save(swin.state_dict(), tmp_path / "swin.pth")
    with pytest.raises(CheckpointError, match="plain timm Swin state dict"):
        R.import_reference(tmp_path / "swin.pth", preset="daim_f30k")
    bert = BertModel(
        BertConfig(
            vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=16
        )
    )
    torch.save(bert.state_dict(), tmp_path / "bert.bin")
    with pytest.raises(CheckpointError, match="plain BERT state dict"):
        R.import_reference(tmp_path / "bert.bin", preset="daim_f30k")


def test_truncated_empty_and_non_checkpoint_files_are_refused(tmp_path):
    data = CKPT["daim"].read_bytes()
    for cut in (len(data) // 2, len(data) - 100, 1000):
        (tmp_path / "cut.ckpt").write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated or damaged"):
            R.import_reference(tmp_path / "cut.ckpt", text_heads=2)
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        R.import_reference(tmp_path / "empty.ckpt")
    (tmp_path / "notes.ckpt").write_text("epoch=7 step=19999\nthis is not a checkpoint\n")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        R.import_reference(tmp_path / "notes.ckpt")
    (tmp_path / "list.pt").parent.mkdir(exist_ok=True)
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list, not a checkpoint dict"):
        R.import_reference(tmp_path / "list.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        R.import_reference(tmp_path / "nope.ckpt")


def test_list_globals_names_what_the_pickle_references_without_loading_it():
    names = R.list_globals(CKPT["daim"])
    assert set(names) == {
        "collections.OrderedDict",
        "torch._utils._rebuild_tensor_v2",
        "torch.FloatStorage",
        "torch.LongStorage",
        "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    }
    # torch's own scan finds exactly one global outside its allow-list, the one we stand in for
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(CKPT["daim"])) == [
        "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"
    ]
    ck = R.load_reference_file(CKPT["daim"])
    assert [type(k) for k in ck["callbacks"]] == [type] and list(ck["callbacks"])[
        0
    ] is R.LightningModelCheckpointStandIn


def test_sacred_read_only_containers_load_as_plain_containers(tmp_path):
    class ReadOnlyDict(dict):
        def __reduce__(self):
            return (ReadOnlyDict, (dict(self),))

    class ReadOnlyList(list):
        def __reduce__(self):
            return (ReadOnlyList, (list(self),))

    for cls, name in ((ReadOnlyDict, "ReadOnlyDict"), (ReadOnlyList, "ReadOnlyList")):
        cls.__module__, cls.__qualname__ = "sacred.config.custom_containers", name
    ck = _raw("hat")
    ck.pop("callbacks")
    ck["hyper_parameters"] = {
        "config": ReadOnlyDict({**ck["hyper_parameters"]["config"], "loss_names": ReadOnlyList([1, 2])})
    }
    import sys
    import types

    mod = types.ModuleType("sacred.config.custom_containers")
    mod.ReadOnlyDict, mod.ReadOnlyList = ReadOnlyDict, ReadOnlyList
    for m in ("sacred", "sacred.config"):
        sys.modules.setdefault(m, types.ModuleType(m))
    sys.modules["sacred.config.custom_containers"] = mod
    try:
        torch.save(ck, tmp_path / "sacred.ckpt")
    finally:
        for m in ("sacred.config.custom_containers", "sacred.config", "sacred"):
            sys.modules.pop(m, None)
    assert "sacred.config.custom_containers.ReadOnlyDict" in R.list_globals(tmp_path / "sacred.ckpt")
    ref = R.read_reference(tmp_path / "sacred.ckpt")
    assert ref.config["direction"] == "i2t" and isinstance(ref.config, dict)
    assert R.import_reference(tmp_path / "sacred.ckpt", text_heads=2).cfg.name == "hat_f30k"


# --- command line ----------------------------------------------------------------------------------


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_cli_imports_lists_globals_and_turns_errors_into_exit_2(tmp_path, capsys, monkeypatch):
    from daimlib.__main__ import main

    monkeypatch.chdir(tmp_path)
    assert main(["import-reference", str(CKPT["daim"]), "--list-globals"]) == 0
    out = capsys.readouterr().out
    assert "stand-in  pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint" in out
    assert "allowed   torch._utils._rebuild_tensor_v2" in out
    assert main(["import-reference", str(CKPT["daim"]), "--out", "imported/daim", "--text-heads", "2"]) == 0
    out = capsys.readouterr().out
    assert "Lightning 1.3.2, epoch 8, step 20000" in out and "540 mapped" in out
    assert "family daim, preset daim_f30k, SCAN t2i, margin 0.211655" in out
    assert "written: imported/daim" in out and str(tmp_path) not in out
    assert (tmp_path / "imported" / "daim" / "model.safetensors").is_file()
    (tmp_path / "cut.ckpt").write_bytes(CKPT["daim"].read_bytes()[:5000])
    assert main(["import-reference", "cut.ckpt", "--out", "x"]) == 2
    assert "truncated or damaged" in capsys.readouterr().err
    assert (
        main(
            ["import-reference", str(CKPT["hat"]), "--out", "x", "--preset", "daim_f30k", "--text-heads", "2"]
        )
        == 2
    )
    assert "--force" in capsys.readouterr().err
    assert main(["import-reference", str(CKPT["hat"])]) == 2
    assert "needs --out" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# --- full-size-shaped random checkpoints (the layout of the released ones) -------------------------


def test_synthetic_buffers_equal_the_ones_the_reference_code_computed():
    from reference_synth import relative_position_index, shifted_window_mask

    sd = _raw("daim")["state_dict"]
    masks = [k for k in sd if k.endswith("attn_mask")]
    assert len(masks) == 11
    for k in masks:
        n_w, n, _ = sd[k].shape
        assert torch.equal(shifted_window_mask(math.isqrt(n_w) * math.isqrt(n), math.isqrt(n)), sd[k]), k
    assert torch.equal(
        relative_position_index(7), sd["vit_model.layers.0.blocks.0.attn.relative_position_index"]
    )


@pytest.mark.slow
@pytest.mark.parametrize("family", ["daim", "hat"])
def test_a_full_size_random_checkpoint_in_the_reference_layout_imports_and_runs(family, tmp_path):
    from reference_synth import write_synthetic_reference

    path = write_synthetic_reference(FIX / f"{family}_keys.tsv", tmp_path / "full.ckpt", family=family)
    res = R.import_reference(path, out=tmp_path / "kit")  # BERT-base: 768 / 64 = 12 heads, nothing told
    assert res.cfg.name == f"{family}_f30k" and res.report == {
        "mapped": 540,
        "dropped": 4,
        "buffers_checked": 35,
    }
    assert model_config_diff(res.cfg, load_preset(f"{family}_f30k")) == {}  # exactly the paper preset
    assert sum(p.numel() for p in res.model.parameters()) == 198_786_744  # the manifest's count
    del res
    model = load_model(tmp_path / "kit")
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102, 0, 0]])
    with torch.no_grad():
        img = model.encode_image(torch.rand(1, 3, 224, 224))
        txt, lens = model.encode_text(ids, (ids > 0).long())
        s = model.similarity(img, txt, lens)
    assert [tuple(x.shape) for x in img] == [(1, 784, 768), (1, 196, 768), (1, 49, 768)]
    assert s.shape == (1, 1) and torch.isfinite(s).all()


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_out_holding_anything_but_an_earlier_import_is_refused(tmp_path, imported):
    from daimlib.checkpoint import save_checkpoint

    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset_flickr30k.json").write_text("{}")
    with pytest.raises(FileExistsError, match="not a kit checkpoint"):
        R.import_reference(CKPT["hat"], out=data, text_heads=2)
    assert (data / "dataset_flickr30k.json").read_text() == "{}"
    run_best = save_checkpoint(tmp_path / "run" / "best", imported["hat"].model, imported["hat"].cfg)
    with pytest.raises(FileExistsError, match="did not import"):
        R.import_reference(CKPT["hat"], out=run_best, text_heads=2)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        R.import_reference(CKPT["hat"], out=tmp_path / "file", text_heads=2)
    # an earlier import is replaced, and an empty folder is fine
    again = R.import_reference(CKPT["hat"], out=imported["hat"].out_dir, text_heads=2)
    assert read_meta(again.out_dir)["provenance"]["source_file"] == "tiny_hat_reference.ckpt"
    (tmp_path / "empty").mkdir()
    R.import_reference(CKPT["hat"], out=tmp_path / "empty", text_heads=2)


def test_cli_stores_a_given_tokenizer_in_the_imported_folder(tmp_path, capsys, monkeypatch):
    from daimlib.__main__ import main
    from daimlib.checkpoint import load_checkpoint_tokenizer
    from daimlib.data.tokenizer import build_wordpiece_tokenizer

    tok = build_wordpiece_tokenizer(["a dog on a red sofa", "two cats"] * 10, tmp_path / "tok", vocab_size=40)
    monkeypatch.chdir(tmp_path)
    argv = ["import-reference", str(CKPT["hat"]), "--out", "kit", "--text-heads", "2", "--tokenizer", "tok"]
    assert main(argv) == 0
    assert main(argv[:-1] + ["no-such-folder"]) == 2
    assert "is not a folder" in capsys.readouterr().err
    saved = load_checkpoint_tokenizer(tmp_path / "kit")
    assert saved("a red dog")["input_ids"] == tok("a red dog")["input_ids"]
