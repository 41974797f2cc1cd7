"""What a source dataset's next-item statistics know about a target, before any pretraining.

Pretraining can only carry over what holds in both domains. The cheapest test of that, run in
seconds: take the source's item popularity and its "most frequent successor of the last item"
counts (missrec/baselines.py), carry them to the target's items by identical item text (the
``<name>.text`` files: same title, year and genres), and rank the target's test split with them,
beside the same two statistics fitted on the target's own training split. A source whose
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
    """Popularity and successor scorers of the target (fitted on its train split) and of the source
    (fitted on the source's train split, carried over by item text) on the target's ``split``, and
    the source's own two on the source's ``split``. Returns ``{"matched_items", "target_items",
    "matched_targets" (share of the split's rows whose answer has a match), "scores": {name: metrics}}``."""
    tgt = load_dataset(target_root, target, splits=("train", split), require_features=())
    src = load_dataset(source_root, source, splits=("train", split), require_features=())
    if src.domains:
        raise DataError(f"{Path(source_root) / source}: a multi-domain corpus; the signal check takes one source domain")
    mapping = text_map(src, tgt)
    answers = np.asarray(tgt.splits[split].target, dtype=np.int64)
    s_train, t_train = src.splits["train"], tgt.splits["train"]
    runs = {
        "target popularity": (PopularityScorer.from_split(t_train, tgt.n_items), tgt),
        "target successor": (SuccessorScorer(t_train, tgt.n_items), tgt),
        "source popularity, by text": (MappedScorer(PopularityScorer.from_split(s_train, src.n_items), mapping), tgt),
        "source successor, by text": (MappedScorer(SuccessorScorer(s_train, src.n_items), mapping), tgt),
        "source popularity, on the source": (PopularityScorer.from_split(s_train, src.n_items), src),
        "source successor, on the source": (SuccessorScorer(s_train, src.n_items), src),
    }
    scores = {name: evaluate(scorer, ds.splits[split], ds.n_items, ks=ks, progress=False)
              for name, (scorer, ds) in runs.items()}
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
