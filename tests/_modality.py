"""Shared checks of a one-modality MISSRec (text-only or image-only): tests/test_text_only.py and
tests/test_image_only.py run them on the modality each keeps."""
from __future__ import annotations

import math

import torch

from missrec.items import ItemTable
from missrec.model import MISSRecScorer


def _table(kept: str, n: int, d: int) -> ItemTable:
    rows = torch.cat([torch.zeros(1, d), torch.randn(n, d)])
    return ItemTable(rows, None, hidden_size=16) if kept == "text" else ItemTable(None, rows, hidden_size=16)


def check_one_modality_model(model, kept: str, n: int, d: int) -> None:
    """``model``: a MISSRec with hidden 16 and only modality ``kept`` ("text" or "image")."""
    other = "image" if kept == "text" else "text"
    # Every parameter gets a gradient (multi-process training requires it).
    items0 = _table(kept, n, d)
    items0.discover_interests(model.eval(), 0.5)
    model.train()
    u0, reg0 = model(torch.tensor([[1, 2, 0]]), torch.tensor([2]), items0)
    (model.logits(u0, model.item_reps(items0)).logsumexp(-1).sum() + reg0).backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    model.eval()
    items = _table(kept, n, d)
    assert items.n_items == n and getattr(items, other) is None
    info = items.discover_interests(model, 0.5)
    assert info["k"] == math.ceil(0.5 * n)  # one vector per item: one modality
    assert getattr(items, f"{other}_interest").eq(0).all() and getattr(items, f"{kept}_interest")[1:].ge(1).all()
    seq = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    length = torch.tensor([3, 2])
    u, _ = model(seq, length, items)
    rt, rv, re = model.item_reps(items)
    present, absent = (rt, rv) if kept == "text" else (rv, rt)
    assert absent is None and re is None
    expected = (u @ present.t()) / model.config.temperature
    assert torch.allclose(model.logits(u, (rt, rv, re)), expected)
    scorer = MISSRecScorer(model, items)
    ids = torch.tensor([3, 7])
    assert torch.allclose(scorer.score_pairs(u, ids), expected[torch.arange(2), ids - 1], atol=1e-6)
    model.config.attention_impl = "padded"  # the reference path computes the same user vectors
    assert torch.allclose(u, model(seq, length, items)[0], atol=1e-5)
