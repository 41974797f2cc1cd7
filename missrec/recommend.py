"""Top-k recommendations for one user history, by raw item ids.

    python -m missrec.recommend CHECKPOINT --data_root DIR --dataset NAME --history A0001 A0042 --k 10

CHECKPOINT is a finetuned checkpoint folder (with its interest.safetensors), e.g.
outputs/finetune-sample_a/id-pt/best, or anything finetune/run.py's --pretrained accepts.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .checkpoint import load_model, resolve_checkpoint
from .data.atomic import load_dataset
from .items import ItemTable
from .model import MISSRecScorer


class Recommender:
    def __init__(self, checkpoint: str, data_root: str, dataset: str, device: str | None = None,
                 interest_ratio: float = 0.5, seed: int = 0):
        folder = resolve_checkpoint(checkpoint)
        self.model = load_model(folder).eval()
        c = self.model.config
        sasrec = c.model_type == "sasrec"  # ID-only: needs no item features
        self.ds = load_dataset(data_root, dataset, splits=(), max_len=c.max_seq_length, check_finite=False,
                               require_features=() if sasrec else ("text",))
        if (sasrec or c.use_id) and c.n_items != self.ds.n_items:
            raise ValueError(f"{folder}: its item-ID table has {c.n_items} items, {self.ds.folder} has {self.ds.n_items}")
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(dev)
        if sasrec:
            from .sasrec import id_only_items
            self.items = id_only_items(self.ds.n_items, dev)
        else:
            self.items = ItemTable.from_dataset(self.ds, c.hidden_size, device=dev, image_dim=c.image_dim)
            interest = folder / "interest.safetensors"
            if interest.is_file() and _covers(interest, self.ds.n_items):
                self.items.load_interest(interest)
            else:
                # A pretrained-only checkpoint carries the corpus' clusters: discover this catalogue's.
                self.items.discover_interests(self.model, interest_ratio, seed=seed)
        self.index = {r: i + 1 for i, r in enumerate(self.ds.item_ids)}
        self.scorer = MISSRecScorer(self.model, self.items)

    @torch.no_grad()
    def recommend(self, history: list[str], k: int = 10, exclude_history: bool = False) -> list[tuple[str, float]]:
        if not history:
            raise ValueError("the history is empty: give at least one raw item id")
        unknown = [h for h in history if h not in self.index]
        if unknown:
            raise ValueError(f"unknown item ids (not in {self.ds.name}.item2index): {unknown[:5]}")
        ids = [self.index[h] for h in history][-self.model.config.max_seq_length:]
        seq = torch.tensor([ids], device=self.items.device)
        u = self.scorer.encode(seq, torch.tensor([len(ids)], device=self.items.device))
        scores = self.scorer.score(u, torch.arange(1, self.items.n_items + 1, device=self.items.device))[0]
        if exclude_history:
            scores[torch.tensor(ids, device=scores.device) - 1] = float("-inf")
        top = torch.topk(scores, min(k, scores.numel()))
        return [(self.ds.item_ids[int(i)], float(s)) for s, i in zip(top.values, top.indices)]


def _covers(path: Path, n_items: int) -> bool:
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        return f.get_slice("text_interest").get_shape()[0] == n_items + 1


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="Finetuned checkpoint folder (or .pth / registry name / Hub id).")
    p.add_argument("--data_root", required=True, help="Folder holding the dataset folder.")
    p.add_argument("--dataset", required=True, help="Dataset name (its item2index maps raw ids).")
    p.add_argument("--history", nargs="+", required=True, help="The user's raw item ids, oldest first.")
    p.add_argument("--k", type=int, default=10, help="How many items to return.")
    p.add_argument("--exclude_history", action="store_true", help="Never recommend items already in the history.")
    p.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available).")
    a = p.parse_args(argv)
    rec = Recommender(a.checkpoint, a.data_root, a.dataset, a.device)
    for rank, (raw, score) in enumerate(rec.recommend(a.history, a.k, a.exclude_history), 1):
        print(f"{rank}\t{raw}\t{score:.4f}")


if __name__ == "__main__":
    from .cli import run
    run(main)
