"""--threads: resolution of the default and application at the training entry points' startup."""
from __future__ import annotations

import os

import pytest
import torch

from missrec.threads import apply_threads, resolve_threads


def test_explicit_count_is_used_and_applied():
    before = torch.get_num_threads()
    try:
        assert apply_threads(1, announce=False) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_auto_follows_omp_num_threads_then_free_cores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert resolve_threads(0) == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "getloadavg", lambda: (5.1, 0.0, 0.0))
    assert resolve_threads(0) == 3  # 8 cores, ~5 busy
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 0.0, 0.0))
    assert resolve_threads(0) == 1  # never below one
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.0, 0.0))
    assert resolve_threads(0) == 8


def test_negative_is_a_one_line_error():
    with pytest.raises(ValueError, match="--threads"):
        resolve_threads(-1)


def test_train_args_have_threads_and_the_accelerator_applies_them(monkeypatch):
    from missrec.args import TrainArgs
    from missrec.trainer import make_accelerator
    assert TrainArgs().threads == 0
    before = torch.get_num_threads()
    try:
        make_accelerator(TrainArgs(threads=1, cpu=True, output_dir="unused"))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
