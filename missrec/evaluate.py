"""Full-ranking evaluation: Recall@K and NDCG@K with one target per row.

Every item 1..n_items is ranked for every user (id 0 is padding and never ranked); scores are
computed in chunks over items, so no ``[users, items]`` matrix ever exists. Instead of a top-k
list we keep the 1-based rank of each target, from which every metric at every K follows exactly
(``rank <= K`` is the same test as "the target is in the top-K").

Scorer protocol (implemented by the model and by :mod:`missrec.baselines`):

* ``encode(seq: LongTensor[B, L], length: LongTensor[B]) -> U`` (any tensor/tuple),
* ``score(U, item_ids: LongTensor[M]) -> FloatTensor[B, M]``,
* ``score_pairs(U, item_ids: LongTensor[B]) -> FloatTensor[B]``: row b against ``item_ids[b]``;
  it must give the same values as the matching entries of ``score`` (up to float rounding).
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import torch

from .errors import DataError, OptionError
from .ranking import DEFAULT_KS, ranking_metrics


@torch.no_grad()
def compute_ranks(scorer, seq: torch.Tensor, length: torch.Tensor, target: torch.Tensor, n_items: int, *,
                  chunk_size: int = 65536, mask_history: bool = False) -> torch.Tensor:
    """1-based rank of each row's target among items 1..n_items (LongTensor[B]).

    ``rank = 1 + #{j != target : s_j > s_t} + #{j != target : s_j == s_t}`` over the unmasked items:
    ties count *against* the target (pessimistic), so a constant scorer ranks every target last
    instead of first and cannot look good. NaN scores are treated as -inf (a NaN target ranks
    behind everything). With ``mask_history`` the row's history items other than the target
    itself are left out of the ranking (they neither beat nor tie the target).
    """
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if target.numel() and (int(target.min()) < 1 or int(target.max()) > n_items):
        raise ValueError(f"target ids must lie in 1..{n_items} (0 is padding); got "
                         f"{int(target.min())}..{int(target.max())}")
    u = scorer.encode(seq, length)
    s_t = _no_nan(scorer.score_pairs(u, target).reshape(-1))
    device = s_t.device
    target = target.to(device)
    s_t_col, t_col = s_t[:, None], target[:, None]
    if mask_history:
        hist = seq.to(device)
        # Positions past `length` are padding (id 0) in a well-formed batch; mask by length anyway.
        in_hist = torch.arange(hist.shape[1], device=device)[None, :] < length.to(device)[:, None]
        hist = torch.where(in_hist & (hist != t_col), hist, torch.zeros_like(hist))
    worse = torch.zeros(len(target), dtype=torch.long, device=device)
    for start in range(1, n_items + 1, chunk_size):
        end = min(start + chunk_size, n_items + 1)
        ids = torch.arange(start, end, device=device)
        s = _no_nan(scorer.score(u, ids))
        beats = (s >= s_t_col) & (ids[None, :] != t_col)
        if mask_history:
            rows, cols = torch.nonzero((hist >= start) & (hist < end), as_tuple=True)
            beats[rows, hist[rows, cols] - start] = False
        worse += beats.sum(1)
    return worse + 1


def _no_nan(x: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(x, nan=-math.inf, posinf=math.inf, neginf=-math.inf)


def metrics_from_ranks(ranks, ks: Iterable[int] = DEFAULT_KS) -> dict[str, float]:
    """Means over rows of Recall@K (= hit, one target per row) and NDCG@K = 1/log2(rank+1) if rank <= K
    (:func:`missrec.ranking.ranking_metrics` with one target per row)."""
    return ranking_metrics(ranks, None, ks, names=("recall", "ndcg"))


def _shard(n_rows: int, batch_size: int, world: int, rank: int) -> tuple[int, int]:
    """Contiguous row range of process `rank`, cut at batch boundaries.

    Cutting at multiples of ``batch_size`` makes every process see exactly the batches a single
    process would, so scores (and hence ranks) are bit-identical to the single-process run.
    """
    n_batches = -(-n_rows // batch_size)
    per = -(-n_batches // world)
    lo = min(rank * per * batch_size, n_rows)
    hi = min((rank + 1) * per * batch_size, n_rows)
    return lo, hi


def _local_ranks(scorer, split, n_items, *, lo_hi, batch_size, chunk_size, mask_history, device, progress,
                 desc) -> torch.Tensor:
    from tqdm.auto import tqdm

    lo, hi = lo_hi
    out = []
    # Shards are equal up to the last one, so the main process's bar tracks the whole run.
    bar = tqdm(total=hi - lo, desc=desc, unit="user", disable=not progress, leave=False)
    for s in range(lo, hi, batch_size):
        e = min(s + batch_size, hi)
        seq = torch.from_numpy(np.ascontiguousarray(split.seq[s:e])).to(device)
        length = torch.from_numpy(np.ascontiguousarray(split.length[s:e])).to(device)
        target = torch.from_numpy(np.ascontiguousarray(split.target[s:e])).to(device)
        out.append(compute_ranks(scorer, seq, length, target, n_items, chunk_size=chunk_size,
                                 mask_history=mask_history))
        bar.update(e - s)
    bar.close()
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=device)


@torch.no_grad()
def evaluate_ranks(scorer, split, n_items: int, *, batch_size: int = 512, chunk_size: int = 65536,
                   mask_history: bool = False, device=None, accelerator=None, progress: bool = True,
                   desc: str = "evaluate") -> torch.Tensor:
    """Ranks (CPU LongTensor[len(split)], in row order) of every row of ``split``; see :func:`evaluate`."""
    n = len(split)
    world, rank, main = 1, 0, True
    if accelerator is not None:
        world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
        device = accelerator.device if device is None else device
    if device is None and isinstance(scorer, torch.nn.Module):
        device = next(iter(scorer.parameters()), torch.zeros(())).device
    device = torch.device(device) if device is not None else torch.device("cpu")
    # A model left in training mode would rank with dropout on: evaluate in eval mode, then restore.
    was_training = isinstance(scorer, torch.nn.Module) and scorer.training
    if was_training:
        scorer.eval()
    try:
        local = _local_ranks(scorer, split, n_items, lo_hi=_shard(n, batch_size, world, rank), batch_size=batch_size,
                             chunk_size=chunk_size, mask_history=mask_history, device=device,
                             progress=progress and main, desc=desc)
    finally:
        if was_training:
            scorer.train()
    if world == 1:
        return local.cpu()
    # Collectives need equal shapes: pad every shard to the longest with rank 0 (never a real rank),
    # gather in process order (= row order, as shards are contiguous), then drop the padding.
    longest = max(_shard(n, batch_size, world, r)[1] - _shard(n, batch_size, world, r)[0] for r in range(world))
    padded = torch.zeros(longest, dtype=torch.long, device=local.device)
    padded[: len(local)] = local
    gathered = accelerator.gather_for_metrics(padded)
    if gathered.shape[0] != longest * world:
        # gather_for_metrics trimmed the remainder of a *training* dataloader we happen to be inside.
        gathered = accelerator.gather(padded)
    ranks = gathered.cpu()
    ranks = ranks[ranks > 0]
    if len(ranks) != n:
        raise RuntimeError(f"distributed evaluation gathered {len(ranks)} ranks for {n} rows")
    return ranks


def evaluate(scorer, split, n_items: int, *, ks: Sequence[int] = DEFAULT_KS, batch_size: int = 512,
             chunk_size: int = 65536, mask_history: bool = False, device=None, accelerator=None,
             progress: bool = True, return_ranks: bool = False):
    """Full-ranking Recall@K / NDCG@K of ``scorer`` on ``split`` (a :class:`missrec.data.atomic.Split`).

    Users are processed in batches of ``batch_size``, items in chunks of ``chunk_size``. With an
    ``accelerator`` each process takes a contiguous shard of rows and the ranks are gathered, so
    every process returns the same dict as a single-process run would. Batches go to ``device``
    (default: the accelerator's, else the module's parameters', else CPU). A ``torch.nn.Module``
    scorer is switched to eval mode for the run and restored afterwards. ``return_ranks``: return
    ``(metrics, ranks)``, ranks a CPU LongTensor of each row's 1-based rank in row order (per-user
    metrics for paired comparisons, see :func:`per_row_metrics`).
    """
    if len(split) == 0:
        raise DataError("cannot evaluate an empty split")
    if batch_size < 1:
        raise OptionError(f"batch_size must be >= 1, got {batch_size}")
    ranks = evaluate_ranks(scorer, split, n_items, batch_size=batch_size, chunk_size=chunk_size,
                           mask_history=mask_history, device=device, accelerator=accelerator,
                           progress=progress)
    m = metrics_from_ranks(ranks, ks)
    return (m, ranks) if return_ranks else m


def per_row_metrics(ranks, metric: str) -> np.ndarray:
    """One row's value of ``recall@K`` or ``ndcg@K`` for each rank (their mean is metrics_from_ranks')."""
    r = np.asarray(ranks, dtype=np.float64).reshape(-1)
    name, _, k = metric.partition("@")
    if name not in ("recall", "ndcg") or not k.isdigit():
        raise ValueError(f"metric must be recall@K or ndcg@K, got {metric!r}")
    hit = r <= int(k)
    return np.where(hit, 1.0 / np.log2(r + 1.0), 0.0) if name == "ndcg" else hit.astype(np.float64)


def round_metrics(d: dict, digits: int = 4) -> dict:
    """Round every float (recursively through dicts) to ``digits`` decimals, for reports."""
    if isinstance(d, dict):
        return {k: round_metrics(v, digits) for k, v in d.items()}
    if isinstance(d, float):
        return round(d, digits)
    return d
