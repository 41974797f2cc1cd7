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

from .checkpoint import describe_catalogue
from .cli import ArgumentParser
from .data.atomic import load_dataset
from .errors import OptionError, UserError
from .factory import load_model, open_checkpoint
from .seqmodel import ModelScorer


class Recommender:
    def __init__(self, checkpoint: str, data_root: str, dataset: str, device: str | None = None,
                 interest_ratio: float = 0.5, seed: int = 0):
        ckpt = open_checkpoint(checkpoint)
        folder = self.folder = ckpt.folder
        self.model = load_model(ckpt).eval()
        c = self.model.config
        # Features are checked finite: one NaN row would rank first, or poison every score.
        self.ds = load_dataset(data_root, dataset, splits=(), max_len=c.max_seq_length,
                               require_features=self.model.features)
        check = getattr(self.model, "check_feature_dims", None)
        if check is not None:  # MISSRec: the modalities it reads must be there (or be zero rows of one it has)
            check(c.to_dict(), self.ds, folder)
        if self.model.uses_item_ids:
            self._check_catalogue(folder)
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(dev)
        self.items = self.model.make_items(self.ds, dev)
        # MISSRec: the checkpoint's interest clusters, or (a pretrained-only checkpoint carries the
        # corpus' clusters) this catalogue's, discovered.
        self.model.load_item_state(self.items, folder, interest_ratio=interest_ratio, seed=seed)
        self.index = {r: i + 1 for i, r in enumerate(self.ds.item_ids)}
        self.scorer = ModelScorer(self.model, self.items)
        self.device = dev

    def _check_catalogue(self, folder: Path) -> None:
        """An ID table scores rows by position: on another item list its recommendations are wrong."""
        c, here = self.model.config, self.ds.catalogue()
        was = getattr(c, "catalogue", None) or {}
        if c.n_items != here["n_items"] or (was and was.get("items_sha256") != here["items_sha256"]):
            trained = describe_catalogue(was) if was else f"{c.n_items} items"
            raise UserError(folder, f"its item-ID table was trained on {trained}, but {self.ds.folder} is "
                                    f"{describe_catalogue(here)}; recommend with the dataset it was finetuned on, "
                                    "or finetune on this one (or use an inductive checkpoint)")
        if not was:
            print(f"note: {folder}: the checkpoint does not record which items its ID table was trained on; "
                  f"using it because the item count ({c.n_items}) matches", file=sys.stderr)

    @torch.no_grad()
    def recommend(self, history: list[str], k: int = 10, exclude_history: bool = False) -> list[tuple[str, float]]:
        """The top ``k`` items as (raw id, score); with ``exclude_history`` fewer when the catalogue runs out."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise OptionError("--k", f"must be a positive integer, got {k!r}")
        if not history:
            raise OptionError("--history", "is empty: give at least one raw item id")
        unknown = [h for h in history if h not in self.index]
        if unknown:
            raise OptionError("--history", f"unknown item ids (not in {self.ds.name}.item2index): {unknown[:5]}")
        ids = [self.index[h] for h in history][-self.model.config.max_seq_length:]
        seq = torch.tensor([ids], device=self.device)
        u = self.scorer.encode(seq, torch.tensor([len(ids)], device=self.device))
        scores = self.scorer.score(u, torch.arange(1, self.ds.n_items + 1, device=self.device))[0]
        if not torch.isfinite(scores).all():
            raise UserError(self.folder, "gives non-finite scores: its weights are not finite "
                                                        "(a diverged run?); use another checkpoint")
        n = scores.numel()
        if exclude_history:
            seen = torch.unique(torch.tensor([self.index[h] for h in history], device=scores.device)) - 1
            scores[seen] = float("-inf")
            n -= seen.numel()  # never pad the list with history items
        top = torch.topk(scores, min(k, n))
        return [(self.ds.item_ids[int(i)], float(s)) for s, i in zip(top.values, top.indices)]


def _positive_int(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        k = 0
    if k < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return k


def _recommend(argv) -> int:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="Finetuned checkpoint folder (or .pth / registry name / Hub id).")
    p.add_argument("--data_root", required=True, help="Folder holding the dataset folder.")
    p.add_argument("--dataset", required=True, help="Dataset name (its item2index maps raw ids).")
    p.add_argument("--history", nargs="+", required=True, help="The user's raw item ids, oldest first.")
    p.add_argument("--k", type=_positive_int, default=10, help="How many items to return (>= 1).")
    p.add_argument("--exclude_history", action="store_true", help="Never recommend items already in the history.")
    p.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available).")
    a = p.parse_args(argv)
    rec = Recommender(a.checkpoint, a.data_root, a.dataset, a.device)
    for rank, (raw, score) in enumerate(rec.recommend(a.history, a.k, a.exclude_history), 1):
        print(f"{rank}\t{raw}\t{score:.4f}")
    return 0


def main(argv=None) -> int:
    """``missrec-recommend`` / python -m missrec.recommend: exit status 0, or 2 after one ``error:`` line."""
    from .cli import run
    return run(_recommend, argv, exit=False)


if __name__ == "__main__":
    sys.exit(main())
