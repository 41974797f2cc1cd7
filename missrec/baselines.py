"""Non-learned reference scorers, built from a training :class:`~missrec.data.atomic.Split`.

All three follow the scorer protocol of :mod:`missrec.evaluate` (``encode`` / ``score`` /
``score_pairs``), so they go through exactly the same full-ranking evaluator as the model.
They are sanity floors: a learned sequential model must beat all of them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .data.atomic import load_dataset
from .data.sample import target_domains
from .evaluate import evaluate
from .errors import DataError


def _rows(split):
    seq = np.asarray(split.seq, dtype=np.int64)
    length = np.asarray(split.length, dtype=np.int64)
    target = np.asarray(split.target, dtype=np.int64)
    return seq, length, target


def item_counts(split, n_items: int, histories: str = "first") -> np.ndarray:
    """Per-item counts ``[n_items + 1]`` (index = item id; index 0, padding, stays 0).

    Every row adds 1 to its target. ``histories`` says what the histories add:

    * ``"first"`` (default): rows of length 1 add 1 to their single history item. With the
      leave-one-out layout (a train row for every prefix of ``items[:-2]``) each user has exactly
      one such row, holding ``items[0]``, while ``items[1:-2]`` are the targets of the other rows:
      the count is then exactly *the number of training interactions with the item*, each counted
      once (prefix rows would otherwise count early items once per later row).
    * ``"all"``: every history position of every row adds 1 (repeats across prefix rows included).
    * ``"none"``: targets only.
    """
    seq, length, target = _rows(split)
    top = max(int(seq.max(initial=0)), int(target.max(initial=0)))
    if top > n_items or int(target.min(initial=1)) < 1:
        raise DataError(f"split holds item ids outside 1..{n_items} (max {top})")
    counts = np.bincount(target, minlength=n_items + 1).astype(np.int64)
    if histories == "first":
        counts += np.bincount(seq[length == 1, 0], minlength=n_items + 1)
    elif histories == "all":
        h = seq[seq > 0]
        counts += np.bincount(h, minlength=n_items + 1)
    elif histories != "none":
        raise ValueError(f"histories must be 'first', 'all' or 'none', got {histories!r}")
    counts[0] = 0
    return counts


class _FixedItemScores:
    """A scorer giving every user the same per-item score table ``[n_items + 1]``."""

    table: torch.Tensor

    def encode(self, seq: torch.Tensor, length: torch.Tensor):
        return int(seq.shape[0])

    def score(self, u, item_ids: torch.Tensor) -> torch.Tensor:
        t = self.table.to(item_ids.device)[item_ids]
        return t[None, :].expand(u, -1)

    def score_pairs(self, u, item_ids: torch.Tensor) -> torch.Tensor:
        return self.table.to(item_ids.device)[item_ids]


class PopularityScorer(_FixedItemScores):
    """Score = training count of the item (see :func:`item_counts`; default counts interactions)."""

    def __init__(self, counts):
        self.counts = np.asarray(counts, dtype=np.int64)
        self.table = torch.as_tensor(self.counts, dtype=torch.float64)

    @classmethod
    def from_split(cls, train, n_items: int, histories: str = "first") -> "PopularityScorer":
        return cls(item_counts(train, n_items, histories))


class RandomScorer(_FixedItemScores):
    """A fixed random score per item (same for every user), reproducible from ``seed``.

    Scores are i.i.d. uniform, so (ties having probability ~0) the expected Recall@K is K / n_items.
    """

    def __init__(self, n_items: int, seed: int = 0):
        g = torch.Generator().manual_seed(int(seed))
        self.table = torch.rand(n_items + 1, generator=g, dtype=torch.float64)


class SuccessorScorer:
    """"Next item = most frequent successor of the last item".

    Counts, over the training rows, how often item ``j`` is the target right after last item
    ``i`` (with prefix rows these are all consecutive pairs of the training sequences, each once).
    Score of item j for a user whose last item is i: ``count(i, j) + pop(j) / (max pop + 1)``; the
    popularity term lies in [0, 1), so it only breaks ties between equal counts (and is the whole
    score for a last item never seen in training). Counts are kept sparse (sorted pair keys), so
    memory is O(#distinct pairs), never ``[n_items, n_items]``.
    """

    def __init__(self, train, n_items: int, histories: str = "first"):
        seq, length, target = _rows(train)
        self.n_items = int(n_items)
        keep = length > 0
        last = seq[keep, length[keep] - 1]
        keys = last * (self.n_items + 1) + target[keep]
        uniq, cnt = np.unique(keys, return_counts=True)
        self.keys = torch.as_tensor(uniq, dtype=torch.int64)
        self.counts = torch.as_tensor(cnt, dtype=torch.float64)
        pop = item_counts(train, n_items, histories).astype(np.float64)
        self.tiebreak = torch.as_tensor(pop / (pop.max() + 1.0))

    def encode(self, seq: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        idx = (length.clamp(min=1) - 1).to(seq.device)
        return seq.gather(1, idx[:, None]).squeeze(1)

    def _pair_counts(self, key: torch.Tensor) -> torch.Tensor:
        keys, counts = self.keys.to(key.device), self.counts.to(key.device)
        if len(keys) == 0:
            return torch.zeros(key.shape, dtype=torch.float64, device=key.device)
        pos = torch.searchsorted(keys, key).clamp(max=len(keys) - 1)
        return torch.where(keys[pos] == key, counts[pos], torch.zeros((), dtype=torch.float64, device=key.device))

    def score(self, last: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        last = last.to(item_ids.device)
        key = last[:, None] * (self.n_items + 1) + item_ids[None, :]
        return self._pair_counts(key) + self.tiebreak.to(item_ids.device)[item_ids][None, :]

    def score_pairs(self, last: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        last = last.to(item_ids.device)
        return self._pair_counts(last * (self.n_items + 1) + item_ids) + self.tiebreak.to(item_ids.device)[item_ids]


# ----------------------------------------------------------------------------- tables
def baseline_table(root: str | os.PathLike, names: Sequence[str] | None = None, *, split: str = "test",
                   ks: Sequence[int] = (10, 20, 50), seed: int = 0, progress: bool = False) -> dict:
    """Random / popularity / most-frequent-successor metrics on each target domain's ``split``.

    ``root`` is the folder holding the dataset folders; ``names`` defaults to the embedded sample's
    target domains (what missrec/data/sample.py's ``ensure_sample`` returns). The baselines are
    fitted on the train split only. Returns ``{domain: {baseline: metrics}}``.
    """
    root = Path(root)
    if names is None:
        names = target_domains(root)
    out = {}
    for name in names:
        ds = load_dataset(root, name, splits=("train", split), require_features=())
        train, n = ds.splits["train"], ds.n_items
        scorers = {"random": RandomScorer(n, seed), "popularity": PopularityScorer.from_split(train, n),
                   "successor": SuccessorScorer(train, n)}
        out[name] = {k: evaluate(s, ds.splits[split], n, ks=ks, progress=progress) for k, s in scorers.items()}
    return out


def format_baseline_table(results: dict, cols: Sequence[str] = ("recall@10", "ndcg@10", "recall@50")) -> str:
    lines = [f"{'domain':<12}{'baseline':<12}" + "".join(f"{c:>11}" for c in cols)]
    for dom, per in results.items():
        for base, m in per.items():
            lines.append(f"{dom:<12}{base:<12}" + "".join(f"{m[c]:>11.4f}" for c in cols))
    return "\n".join(lines)
