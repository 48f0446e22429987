"""``ablate(jobs=N)`` deals the visible GPUs round-robin to its worker processes (issue 25, part 1)."""

from __future__ import annotations

import multiprocessing as mp
import os

import torch

from experiments import ablation


def _fake_gpus(monkeypatch, n: int, visible: str | None) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)


def test_job_gpus_lists_the_visible_devices(monkeypatch):
    _fake_gpus(monkeypatch, 0, None)
    assert ablation.job_gpus() == []
    _fake_gpus(monkeypatch, 3, None)
    assert ablation.job_gpus() == ["0", "1", "2"]
    _fake_gpus(monkeypatch, 2, "5, 7")
    assert ablation.job_gpus() == ["5", "7"]


def test_each_worker_gets_its_own_gpu_round_robin(monkeypatch):
    _fake_gpus(monkeypatch, 3, "2,4,6")
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # the test process keeps its threads
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    counter, gpus = mp.get_context("spawn").Value("i", 0), tuple(ablation.job_gpus())
    seen = []
    for _ in range(5):  # five workers started by a pool of jobs=5
        ablation._worker_init(counter, gpus)
        seen.append(os.environ["CUDA_VISIBLE_DEVICES"])
    assert seen == ["2", "4", "6", "2", "4"]


def test_one_gpu_or_none_leaves_the_workers_alone(monkeypatch):
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    for n, visible in ((1, "3"), (0, None)):
        _fake_gpus(monkeypatch, n, visible)
        ablation._worker_init(mp.get_context("spawn").Value("i", 0), tuple(ablation.job_gpus()))
        assert os.environ.get("CUDA_VISIBLE_DEVICES") == visible
