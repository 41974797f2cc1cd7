"""Pretraining and finetuning tasks for the shared Trainer (data -> batches, epoch hooks)."""
from __future__ import annotations

import torch

from .data.atomic import Split
from .evaluate import evaluate
from .items import ItemTable
from .objectives import FinetuneObjective, PretrainObjective
from .seqmodel import ModelScorer


def split_tensors(split: Split) -> dict[str, torch.Tensor]:
    return {"seq": torch.from_numpy(split.seq), "length": torch.from_numpy(split.length),
            "target": torch.from_numpy(split.target)}


class _Task:
    drop_last = False

    def __init__(self, name, model, items: ItemTable | None, train: Split, args, seed: int):
        """``model``: a missrec/seqmodel.py model; ``items``: its item context (None for ID-only models)."""
        self.name, self.model, self.items, self.args, self.seed = name, model, items, args, seed
        self.train = split_tensors(train.truncated(model.config.max_seq_length))
        self.n_train_rows = len(train)

    def make_batch(self, global_idx, rank, world, micro_step, device):
        """This process's slice of a global (micro-)batch of row indices.

        ``micro_step`` numbers the run's micro-batches: a seed for per-batch randomness that any
        process count draws alike (PretrainTask's item drop).
        """
        local = torch.tensor_split(global_idx, world)[rank]
        return {k: v[local].to(device, non_blocking=True) for k, v in self.train.items()}

    def on_epoch_start(self, epoch, acc):
        """The model's per-epoch hook (MISSRec: interest discovery on the main process, broadcast)."""
        return self.model.on_epoch_start(self.items, epoch, self.args, acc, self.seed)

    def on_epoch_end(self, epoch, acc) -> dict:
        """Metrics of the finished epoch (the Trainer logs them and may select on one)."""
        return {}


class PretrainTask(_Task):
    drop_last = True

    def __init__(self, model, items, train, args, pargs):
        super().__init__("pretrain", model, items, train, args, args.seed)
        self.keep_prob = pargs.item_keep_prob
        self.objective = PretrainObjective(
            model, lambda_seq=pargs.lambda_seq, gamma_reg=args.gamma_reg, augmentation=pargs.augmentation,
            mask_false_negatives=pargs.mask_false_negatives,
            negatives=getattr(pargs, "negatives", "in_batch"))

    def make_batch(self, global_idx, rank, world, micro_step, device):
        batch = super().make_batch(global_idx, rank, world, micro_step, device)
        # The item-drop mask is drawn for the GLOBAL micro-batch from a step-seeded generator, so
        # every process count draws the same masks for the same rows.
        g = torch.Generator().manual_seed(self.seed * 7919 + micro_step)
        keep = torch.rand(len(global_idx), self.train["seq"].shape[1], generator=g) < self.keep_prob
        batch["keep"] = torch.tensor_split(keep, world)[rank].to(device)
        return batch


class FinetuneTask(_Task):
    """Full-softmax finetuning with per-epoch validation metrics (the Trainer selects the best epoch)."""

    def __init__(self, model, items, splits: dict, args, fargs, n_items: int | None = None):
        super().__init__("finetune", model, items, splits["train"], args, args.seed)
        self.splits = {k: v.truncated(model.config.max_seq_length) for k, v in splits.items()}
        self.n_items = items.n_items if n_items is None else n_items  # items is None for ID-only models
        self.fargs = fargs
        self.objective = FinetuneObjective(model, gamma_reg=args.gamma_reg)

    def evaluate(self, split_name: str, acc, return_ranks: bool = False):
        """Metrics of one split; with ``return_ranks`` also each row's rank (see evaluate.evaluate)."""
        was = self.model.training
        self.model.eval()
        m = evaluate(ModelScorer(self.model, self.items), self.splits[split_name], self.n_items,
                     ks=self.fargs.ks_tuple, batch_size=self.args.eval_batch_size,
                     mask_history=self.fargs.mask_history, accelerator=acc, progress=False,
                     return_ranks=return_ranks)
        self.model.train(was)
        return m

    def on_epoch_end(self, epoch, acc):
        m = self.evaluate("valid", acc)
        return {f"valid_{k}": v for k, v in m.items()}
