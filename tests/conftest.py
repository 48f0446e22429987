"""Shared fixtures: the tiny demo configuration and a fixed seed."""

import pytest
import torch

from daimlib.config import load_preset


@pytest.fixture
def tiny_cfg():
    """The ``demo`` preset: 64 px Swin with patch 8 (16/4/1 tokens) + 3-layer BERT of width 128, D = 128."""
    return load_preset("demo")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
