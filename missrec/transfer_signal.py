"""What a source dataset's next-item statistics know about a target, before any pretraining.

Pretraining can only carry over what holds in both domains. The cheapest test of that, run in
seconds: take the source's item popularity, its "most frequent successor of the last item"
counts (missrec/baselines.py) and its order-free item co-occurrence (the same users' items),
carry them to the target's items by identical item text (the ``<name>.text`` files: same title,
year and genres), and rank the target's test split with them, beside the target's own popularity
and successor counts fitted on its training split. A source whose
statistics rank the target's items no better than the target's own popularity has little
sequential knowledge that applies there, however well a model learns it; the source's scores on
its own test split show how much there is to learn at all.

Target items without a text match get the lowest score (below every matched item).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .baselines import PopularityScorer, SuccessorScorer
from .data.atomic import load_dataset, read_text
from .errors import DataError
from .evaluate import evaluate

METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")
MAX_COOC_ITEMS = 8192  # the co-occurrence table is dense: [n + 1, n + 1] float32 (268 MB at this size)


class CooccurrenceScorer:
    """Order-free taste: score of item j = sum, over the user's last ``last`` history items i, of
    ``c(i, j) / sqrt(c(i, i) c(j, j))``, where c(i, j) counts the users whose training items hold
    both i and j (each user's training items: every row's target plus its first history item)."""

    def __init__(self, train, n_items: int, last: int = 10):
        if n_items > MAX_COOC_ITEMS:
            raise DataError(f"co-occurrence check: {n_items} items is over its dense-table limit of {MAX_COOC_ITEMS}")
        self.last = int(last)
        users = np.unique(np.asarray(train.user).astype(str), return_inverse=True)[1]
        first = np.asarray(train.length) == 1
        u = np.concatenate([users, users[first]])
        i = np.concatenate([np.asarray(train.target), np.asarray(train.seq)[first, 0]])
        # The users x items incidence, a block of users at a time (memory: the block and the
        # [n + 1, n + 1] table, never users x items); a user's repeated item counts once.
        order = np.argsort(u, kind="stable")
        u, i = torch.as_tensor(u[order]), torch.as_tensor(i[order])
        c = torch.zeros(n_items + 1, n_items + 1)
        n_users, block = int(users.max(initial=-1)) + 1, 2048
        bounds = torch.searchsorted(u, torch.arange(0, n_users + block, block))
        for b in range(len(bounds) - 1):
            lo, hi = int(bounds[b]), int(bounds[b + 1])
            x = torch.zeros(block, n_items + 1)
            x[u[lo:hi] - b * block, i[lo:hi]] = 1.0
            c += x.t() @ x
        d = c.diagonal().clamp_min(1.0).sqrt()
        self.table = c / d[:, None] / d[None, :]
        self.table.fill_diagonal_(0.0)
        self.table[0] = 0.0

    def encode(self, seq: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(seq.shape[1], device=seq.device)[None, :]
        keep = (pos < length[:, None]) & (pos >= length[:, None] - self.last)
        hot = torch.zeros(seq.shape[0], self.table.shape[0], device=seq.device)
        hot.scatter_add_(1, seq, keep.float())
        hot[:, 0] = 0.0
        return hot.clamp_max(1.0)

    def score(self, u: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        return u @ self.table.to(u.device)[:, item_ids]

    def score_pairs(self, u: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        return (u * self.table.to(u.device)[:, item_ids].t()).sum(1)


def item_texts(ds) -> list[str]:
    """The text of each item, in index order (item id - 1), from ``<name>.text``."""
    path = ds.path("text")
    if not path.is_file():
        raise DataError(f"{path}: file not found (items are matched across datasets by their text)")
    texts = read_text(path)
    return [texts.get(raw, "") for raw in ds.item_ids]


def text_map(source, target) -> np.ndarray:
    """``[target.n_items + 1]`` int64: the source item id with the same (non-empty) text as each
    target item id, 0 where none (and at the padding index 0). Duplicate texts in the source map
    to their first item."""
    first: dict[str, int] = {}
    for i, t in enumerate(item_texts(source), start=1):
        if t:
            first.setdefault(t, i)
    out = np.zeros(target.n_items + 1, dtype=np.int64)
    for i, t in enumerate(item_texts(target), start=1):
        out[i] = first.get(t, 0) if t else 0
    return out


class MappedScorer:
    """A scorer over source item ids, applied to target ids through ``mapping`` (target -> source,
    0 = no match): histories are mapped item by item, and unmatched target items score -1."""

    def __init__(self, inner, mapping: np.ndarray):
        self.inner = inner
        self.mapping = torch.as_tensor(mapping, dtype=torch.int64)

    def encode(self, seq: torch.Tensor, length: torch.Tensor):
        return self.inner.encode(self.mapping.to(seq.device)[seq], length)

    def _fix(self, s: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        return torch.where(src > 0, s, torch.full((), -1.0, dtype=s.dtype, device=s.device))

    def score(self, u, item_ids: torch.Tensor) -> torch.Tensor:
        src = self.mapping.to(item_ids.device)[item_ids]
        return self._fix(self.inner.score(u, src), src[None, :])

    def score_pairs(self, u, item_ids: torch.Tensor) -> torch.Tensor:
        src = self.mapping.to(item_ids.device)[item_ids]
        return self._fix(self.inner.score_pairs(u, src), src)


def transfer_signal(target_root: str | os.PathLike, target: str, source_root: str | os.PathLike, source: str,
                    *, split: str = "test", ks: Sequence[int] = (10, 20)) -> dict:
    """Popularity and successor scorers of the target (fitted on its train split), the source's
    popularity, successor and co-occurrence scorers (fitted on the source's train split, carried
    over by item text) on the target's ``split``, and the source's popularity and successor on the
    source's ``split``. Returns ``{"matched_items", "target_items",
    "matched_targets" (share of the split's rows whose answer has a match), "scores": {name: metrics}}``."""
    tgt = load_dataset(target_root, target, splits=("train", split), require_features=())
    src = load_dataset(source_root, source, splits=("train", split), require_features=())
    if src.domains:
        raise DataError(f"{Path(source_root) / source}: a multi-domain corpus; the signal check takes one source domain")
    mapping = text_map(src, tgt)
    answers = np.asarray(tgt.splits[split].target, dtype=np.int64)
    s_train, t_train = src.splits["train"], tgt.splits["train"]
    runs = {  # name: (how to build the scorer, the dataset it ranks)
        "target popularity": (lambda: PopularityScorer.from_split(t_train, tgt.n_items), tgt),
        "target successor": (lambda: SuccessorScorer(t_train, tgt.n_items), tgt),
        "source popularity, by text": (lambda: MappedScorer(PopularityScorer.from_split(s_train, src.n_items), mapping), tgt),
        "source successor, by text": (lambda: MappedScorer(SuccessorScorer(s_train, src.n_items), mapping), tgt),
        "source co-occurrence, by text": (lambda: MappedScorer(CooccurrenceScorer(s_train, src.n_items), mapping), tgt),
        "source popularity, on the source": (lambda: PopularityScorer.from_split(s_train, src.n_items), src),
        "source successor, on the source": (lambda: SuccessorScorer(s_train, src.n_items), src),
    }
    scores = {}
    for name, (build, ds) in runs.items():
        try:
            scorer = build()
        except DataError as e:  # a catalogue too large for the dense co-occurrence table
            print(f"note: {e}; that row is left out", flush=True)
            continue
        scores[name] = evaluate(scorer, ds.splits[split], ds.n_items, ks=ks, progress=False)
    return {"target": target, "source": source, "split": split, "matched_items": int((mapping[1:] > 0).sum()),
            "target_items": tgt.n_items, "matched_targets": float((mapping[answers] > 0).mean()), "scores": scores}


def format_signal(res: dict, metrics: Sequence[str] = METRICS) -> str:
    metrics = [m for m in metrics if m in next(iter(res["scores"].values()))]
    lines = [f"what {res['source']}'s statistics know about {res['target']} ({res['split']} split): "
             f"{res['matched_items']:,} of {res['target_items']:,} target items have an identical text in "
             f"{res['source']}, covering {res['matched_targets']:.1%} of the answers",
             f"{'scorer':<36}" + "".join(f"{m:>11}" for m in metrics)]
    for name, m in res["scores"].items():
        lines.append(f"{name:<36}" + "".join(f"{m[k]:>11.4f}" for k in metrics))
    return "\n".join(lines)
