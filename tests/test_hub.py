"""Hub-style models (issue 11 item 4) and the one hub probe, all offline on local folders."""

from __future__ import annotations

import json
import socket

import pytest
import torch

from daimlib import checkpoint as ck
from daimlib import encoders, hub, runtime
from daimlib.checkpoint import CheckpointError, save_checkpoint
from daimlib.config import DAIMConfig, load_preset
from daimlib.data import tokenizer as tokmod
from daimlib.losses import MatchingLoss
from daimlib.model import DAIM

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(3)
    m = DAIM.from_config(load_preset("demo"), pretrained=False)
    loss = MatchingLoss.from_config(m.cfg.loss)
    loss.margin_module.margin.fill_(0.2345)
    return m.attach_loss(loss)


def _same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


def test_from_pretrained_of_save_pretrained_round_trips_bit_for_bit(model, tmp_path):
    model.hub_meta = {"metrics": {"rsum": 123.4, "i2t_r1": 10.0}, "provenance": {"source_file": "x.ckpt"}}
    model.save_pretrained(tmp_path / "hf")
    names = sorted(p.name for p in (tmp_path / "hf").iterdir())
    assert names == ["README.md", "config.json", "meta.json", "model.safetensors"]
    loaded = DAIM.from_pretrained(tmp_path / "hf")
    _same_state(model, loaded)  # the margin travels beside the weights, not as a model key
    assert float(loaded.hub_loss.margin) == pytest.approx(0.2345)
    assert loaded.cfg == model.cfg and not loaded.training
    assert DAIMConfig.from_dict(json.loads((tmp_path / "hf" / "config.json").read_text())) == model.cfg
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "library_name: daimlib" in card and "| preset | `demo` |" in card
    assert "| margin | 0.234500 (adaptive, MOM) |" in card and "| rsum | 123.40 |" in card
    assert "source_file: `x.ckpt`" in card
    assert loaded.hub_meta["metrics"] == {"rsum": 123.4, "i2t_r1": 10.0}
    # the loaded model saves again to an identical state (metrics and provenance carried along)
    loaded.save_pretrained(tmp_path / "again")
    _same_state(model, DAIM.from_pretrained(tmp_path / "again"))
    assert "| rsum | 123.40 |" in (tmp_path / "again" / "README.md").read_text()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        model.eval()
        for u, v in zip(model.encode_image(x), loaded.encode_image(x)):
            assert torch.equal(u, v)


def test_existing_kit_checkpoint_folders_load_with_from_pretrained(model, tmp_path):
    save_checkpoint(tmp_path / "best", model, model.cfg, train_state={"step": 3}, meta={"kind": "best"})
    loaded = DAIM.from_pretrained(tmp_path / "best")  # no README.md, a train_state.pt
    _same_state(model, loaded)
    # and the integrity checks hold on this path too
    cfg_path = tmp_path / "best" / "config.json"
    cfg_path.write_text(cfg_path.read_text().replace('"lambda_softmax": 9.0', '"lambda_softmax": 4.0'))
    with pytest.raises(CheckpointError, match="config.json"):
        DAIM.from_pretrained(tmp_path / "best")


def test_save_pretrained_refuses_a_folder_with_foreign_files(model, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="notes.txt"):
        model.save_pretrained(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_a_missing_local_folder_or_an_uncached_repo_id_offline_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="no checkpoint folder at"):
        DAIM.from_pretrained(str(tmp_path / "runs" / "demo" / "best"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    with pytest.raises(CheckpointError, match=r"cannot get 'nobody/no-such-daim' from the local cache"):
        DAIM.from_pretrained("nobody/no-such-daim")


def test_a_checkpoint_saved_with_its_tokenizer_gives_it_back(model, tmp_path):
    from daimlib.data.tokenizer import build_wordpiece_tokenizer

    tok = build_wordpiece_tokenizer(["a red square", "a blue circle"] * 10, tmp_path / "tok", vocab_size=40)
    model.tokenizer = tok
    try:
        model.save_pretrained(tmp_path / "hf")
    finally:
        model.tokenizer = None
    loaded = DAIM.from_pretrained(tmp_path / "hf")
    assert loaded.tokenizer("a red circle")["input_ids"] == tok("a red circle")["input_ids"]
    assert ck.has_tokenizer(tmp_path / "hf")


# --- the one hub probe ---------------------------------------------------------------------------


def test_every_module_uses_the_same_probe():
    assert encoders.hub_reachable is hub.hub_reachable is tokmod.hub_reachable is runtime.hub_reachable


def test_probe_honours_hf_endpoint_and_hf_hub_offline(monkeypatch):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
        assert runtime.hub_endpoint() == ("127.0.0.1", port)
        assert runtime.hub_reachable(timeout=2)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        assert not runtime.hub_reachable(timeout=2)
    finally:
        server.close()
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert not runtime.hub_reachable(timeout=2)  # the same endpoint, now closed
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.example")
    assert runtime.hub_endpoint() == ("mirror.example", 80)
    monkeypatch.setenv("HF_ENDPOINT", "https://mirror.example/sub/path")
    assert runtime.hub_endpoint() == ("mirror.example", 443)
    monkeypatch.delenv("HF_ENDPOINT")
    assert runtime.hub_endpoint() == ("huggingface.co", 443)


def test_push_to_hub_uploads_the_saved_folder(model, tmp_path, monkeypatch):
    """No network: HfApi is replaced by a recorder; what it would upload is what save_pretrained writes."""
    import huggingface_hub.hub_mixin as hm

    uploaded = {}

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=None, exist_ok=False):
            return type("R", (), {"repo_id": repo_id})()

        def upload_folder(self, repo_id, folder_path, **kw):
            uploaded["files"] = sorted(p.name for p in folder_path.iterdir())
            uploaded["model"] = DAIM.from_pretrained(folder_path)
            return f"https://hub.example/{repo_id}/commit/1"

    monkeypatch.setattr(hm, "HfApi", FakeApi)
    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: True)  # offline here: the probe would refuse
    assert model.push_to_hub("someone/daim-demo").endswith("/commit/1")
    assert uploaded["files"] == ["README.md", "config.json", "meta.json", "model.safetensors"]
    _same_state(model, uploaded["model"])


def test_the_model_card_is_a_hub_model_card_whose_example_runs_as_written(
    model, tmp_path, monkeypatch, capsys
):
    from huggingface_hub import ModelCard

    model.hub_meta = {"metrics": {"rsum": 123.4}, "test_metrics": {"rsum": 120.5, "i2t_r1": 9.5}}
    model.save_pretrained(tmp_path / "hf")
    card = ModelCard.load(tmp_path / "hf" / "README.md")
    results = {(r.metric_type, r.dataset_split): r.metric_value for r in card.data.eval_results}
    assert results == {("rsum", "val"): 123.4, ("rsum", "test"): 120.5, ("i2t_r1", "test"): 9.5}
    assert card.data.library_name == "daimlib" and card.data.datasets == [hub.DATASETS["demo"]]
    text = card.text
    assert "| rsum | 120.50 | test (`test`) |" in text and "| rsum | 123.40 | validation (`val`) |" in text
    assert (
        f"`{model.cfg.image.name}`'s architecture resized to" in text
    )  # the demo's Swin is built, not downloaded
    assert "## Limitations" in text and "@article{wang_daim" in text
    example = text.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path / "hf")  # "as written": run it in the saved folder
    exec(compile(example, "model_card_example", "exec"), {})
    assert capsys.readouterr().out.strip() == "(2, 3)"


def test_push_to_hub_offline_names_the_endpoint_and_the_repo(model, monkeypatch):
    import huggingface_hub.hub_mixin as hm

    monkeypatch.setattr(hm, "HfApi", lambda *a, **k: pytest.fail("nothing may be sent offline"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.example:8080")
    with pytest.raises(ConnectionError, match=r"http://mirror\.example:8080.*'someone/daim-demo'"):
        model.push_to_hub("someone/daim-demo")


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_the_card_of_a_tiny_run_names_the_data_it_trained_on(tmp_path, monkeypatch):
    """The ``tiny`` preset fits any folder (``data.dataset="any"``): the card named the dataset 'any' (and the
    hub metadata ``datasets: [any]``); the layout training read is recorded in meta.json and named instead."""
    from huggingface_hub import ModelCard

    from daimlib.data import make_f30k_layout
    from daimlib.train import train

    monkeypatch.setenv("DAIM_CACHE_DIR", str(tmp_path / "cache"))
    make_f30k_layout(tmp_path / "f30k", n_train=8, n_val=2, n_test=2)
    cfg = load_preset("tiny", **{"train.batch_size": 8, "train.max_steps": 1, "data.num_workers": 0})
    assert cfg.data.dataset == "any"
    train(cfg, tmp_path / "f30k", tmp_path / "run", progress=False, eval_split=None)
    DAIM.from_pretrained(tmp_path / "run" / "last").save_pretrained(tmp_path / "hf")
    card = ModelCard.load(tmp_path / "hf" / "README.md")
    assert card.data.datasets == ["flickr30k"] and "trained on flickr30k." in card.text
    # a tiny checkpoint that records no data (saved outside a run): no made-up dataset
    bare = DAIM.from_config(cfg, pretrained=False)
    bare.save_pretrained(tmp_path / "hf_bare")
    card = ModelCard.load(tmp_path / "hf_bare" / "README.md")
    assert card.data.datasets is None and "trained on data this checkpoint does not name." in card.text
