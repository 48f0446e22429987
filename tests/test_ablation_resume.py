"""``ablate`` under interruption and reuse (issue 13 item 4, issue 9 item 5): Ctrl-C is never recorded
as a result, the same call continues run by run, and results are reused only for the same data and split."""

from __future__ import annotations

import json
import os
import signal

import pandas as pd
import pytest

from daimlib import runs
from daimlib import train as train_mod
from daimlib.losses import MatchingLoss
from experiments.ablation import ablate

OVER = {"train.batch_size": 8, "train.max_steps": 2, "data.train_split": "val", "train.eval_batch_size": 64}
pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]  # 4-6 short runs: ~25 s


def _ablate(root, out, **kw):
    return ablate(
        "demo", ["baseline", "daim"], seeds=1, data_root=root, out_dir=out, progress=False, **OVER, **kw
    )


def test_ctrl_c_is_never_a_result_and_the_same_call_continues_where_it_stopped(
    demo_root, tmp_path, monkeypatch
):
    real, calls = MatchingLoss.forward, {"n": 0}

    def sigint_in_daims_first_step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # baseline took steps 1-2; this is the daim run's first step
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(MatchingLoss, "forward", sigint_in_daims_first_step)
        with pytest.raises(KeyboardInterrupt, match="daim seed 0 was interrupted at step 1"):
            _ablate(demo_root, tmp_path)
    assert (tmp_path / "baseline_seed0" / "result.json").exists()
    assert not (tmp_path / "daim_seed0" / "result.json").exists() and not (tmp_path / "runs.csv").exists()
    assert runs.read_record(tmp_path / "daim_seed0")["stopped"] == "interrupted"

    trained = []
    real_epoch = train_mod.train_one_epoch

    def recording_epoch(ctx, st):
        trained.append((ctx.cfg.name, st.global_step))
        return real_epoch(ctx, st)

    monkeypatch.setattr(train_mod, "train_one_epoch", recording_epoch)
    table = _ablate(demo_root, tmp_path)
    assert trained == [("demo-daim-seed0", 1)]  # the baseline reused, the daim run resumed at step 1
    assert list(table["variant"]) == ["baseline", "daim"] and list(table["steps"]) == [2, 2]
    assert set(table["stopped"]) == {"max_steps"}
    assert list(pd.read_csv(tmp_path / "daim_seed0" / "history_steps.csv")["step"]) == [0, 1]


def test_results_are_reused_only_for_the_same_data_and_split(
    demo_root, other_demo_data, tmp_path, monkeypatch
):
    _ablate(demo_root, tmp_path / "abl")
    trained = []
    real_epoch = train_mod.train_one_epoch
    monkeypatch.setattr(
        train_mod, "train_one_epoch", lambda ctx, st: trained.append(1) or real_epoch(ctx, st)
    )
    on_val = _ablate(demo_root, tmp_path / "abl", eval_split="val")  # same training, another split
    assert trained == [] and set(on_val["split"]) == {"val"}
    assert json.loads((tmp_path / "abl" / "daim_seed0" / "result.json").read_text())["split"] == "val"
    with pytest.raises(ValueError, match="trained on other data"):
        _ablate(other_demo_data, tmp_path / "abl")
    assert trained == []
