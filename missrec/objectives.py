"""Training objectives, each an nn.Module around the model so that DDP sees one forward per step.

Pretraining: sequence->item contrast on fused logits (in-batch negatives, the paper's, or
``negatives="all_items"``: a softmax over every item of the corpus) + lambda x sequence->sequence
contrast against an augmented view + gamma x interest regulariser. Finetuning: softmax
cross-entropy over every item (padding excluded) + gamma x regulariser.

In distributed runs the in-batch candidates of all ranks are gathered with gradients, so N
processes with the same global batch optimise the same loss as one process.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .items import ItemTable
from .errors import DataError, OptionError


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` from all ranks along dim 0; gradients flow back to each rank's slice."""
    _, world = _world()
    if world == 1:
        return t
    import warnings
    from torch.distributed.nn.functional import all_gather
    with warnings.catch_warnings():
        # Deprecated in favour of a private API; still the public autograd-aware gather.
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(all_gather(t.contiguous()), 0)


def gather_no_grad(t: torch.Tensor) -> torch.Tensor:
    _, world = _world()
    if world == 1:
        return t
    out = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(out, t.contiguous())
    return torch.cat(out, 0)


def item_drop(seq: torch.Tensor, length: torch.Tensor, keep: torch.Tensor):
    """Drop positions where ``keep`` is False (the first item is always kept) and compact left.

    Returns the new sequence, lengths, and the gather index such that
    ``new_seq == seq.gather(1, index)`` on real positions: any per-position tensor (features,
    masks) re-gathered with the same index stays aligned with its item.
    """
    L = seq.shape[1]
    pos = torch.arange(L, device=seq.device).unsqueeze(0)
    keep = keep.clone()
    keep[:, 0] = True
    keep &= pos < length.unsqueeze(1)
    new_len = keep.sum(1)
    index = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    new_seq = seq.gather(1, index) * (pos < new_len.unsqueeze(1))
    return new_seq, new_len, index


class PretrainObjective(nn.Module):
    def __init__(self, model, *, lambda_seq: float = 1e-3, gamma_reg: float = 1e-4,
                 augmentation: str = "auto", mask_false_negatives: bool = False, negatives: str = "in_batch"):
        super().__init__()
        if augmentation not in ("auto", "item_drop", "word_drop", "both"):
            raise OptionError(f"augmentation must be auto|item_drop|word_drop|both, got {augmentation!r}")
        self.model = model
        self.lambda_seq, self.gamma_reg = lambda_seq, gamma_reg
        # The item-drop keep mask arrives in the batch (drawn per global batch by the task).
        self.augmentation = augmentation
        self.mask_false_negatives = mask_false_negatives
        if negatives not in ("in_batch", "all_items"):
            raise OptionError(f"negatives must be in_batch|all_items, got {negatives!r}")
        self.negatives = negatives

    def augment(self, seq, length, keep, items: ItemTable):
        mode = self.augmentation
        if mode == "auto":
            mode = "both" if items.text_aug is not None else "item_drop"
        if mode in ("word_drop", "both") and getattr(self.model, "text_adaptor", True) is None:
            # An image-only model has no text to drop words from (pretrain.py refuses it up front).
            raise OptionError("--augmentation", f"{mode} needs text features; an image-only model has none "
                                                "(use item_drop or auto)")
        if mode in ("word_drop", "both") and items.text_aug is None:
            raise DataError("word-drop augmentation needs the corpus' .feat2CLS files")
        if mode in ("item_drop", "both"):
            seq, length, _ = item_drop(seq, length, keep)
        text = items.text_aug if mode in ("word_drop", "both") else None
        return seq, length, text

    def forward(self, batch: dict, items: ItemTable):
        m = self.model
        seq, length, target = batch["seq"], batch["length"], batch["target"]
        u, reg = m(seq, length, items)
        seq2, len2, text2 = self.augment(seq, length, batch["keep"], items)
        u2, reg2 = m(seq2, len2, items, text_table=text2)

        rank, _ = _world()
        labels = torch.arange(seq.shape[0], device=seq.device) + rank * seq.shape[0]
        if self.negatives == "all_items":
            # Every item of the corpus is a candidate (each process scores its own rows; DDP averages
            # equal-sized slices, so any process count optimises the same loss).
            logits = m.logits(u, m.item_reps(items))
            loss_si = F.cross_entropy(logits.float(), target - 1)
        else:
            rt, rv, _ = m.item_reps(items, target)
            # rv None: a text-only model; rt None: an image-only one.
            rt, rv = (None if r is None else gather_with_grad(r) for r in (rt, rv))
            loss_si = self._in_batch(m.logits(u, (rt, rv, None)), target, labels)
        loss_ss = F.cross_entropy((u @ gather_with_grad(u2).t()).float() / m.config.temperature, labels)
        loss = loss_si + self.lambda_seq * loss_ss + self.gamma_reg * (reg + reg2)
        return loss, {"loss_seq_item": loss_si.detach(), "loss_seq_seq": loss_ss.detach()}

    def _in_batch(self, logits, target, labels):
        if self.mask_false_negatives:
            all_t = gather_no_grad(target)
            same = target.unsqueeze(1) == all_t.unsqueeze(0)
            same[torch.arange(len(target), device=target.device), labels] = False
            logits = logits.masked_fill(same, float("-inf"))
        return F.cross_entropy(logits.float(), labels)


class FinetuneObjective(nn.Module):
    """Any missrec/seqmodel.py model's loss terms: ``ce`` + gamma x ``reg`` (when the model has one)."""

    def __init__(self, model, *, gamma_reg: float = 1e-4):
        super().__init__()
        self.model = model
        self.gamma_reg = gamma_reg

    def forward(self, batch: dict, items: ItemTable | None):
        terms = self.model.loss(batch, items)
        loss = terms["ce"]
        if "reg" in terms:
            loss = loss + self.gamma_reg * terms["reg"]
        return loss, {"loss_ce": terms["ce"].detach()}
