"""Full-ranking evaluation with several held-out items per user (graph baselines' datasets).

This extends :mod:`missrec.evaluate` from one target per row to a set per user, with the same
conventions: every item is ranked, scores are computed in chunks of items (never a
``[users, items]`` matrix beyond one batch x chunk), each held-out item gets its 1-based rank
``1 + #{j unmasked, j != t : s_j >= s_t}`` (ties count against it, NaN is -inf), and every
metric at every K follows from the ranks. Train items are masked (neither beat nor tie); a
held-out item that is also a train item can never be retrieved (MMSSL excludes train items
from the candidates).

Per user with a non-empty truth set G and hits h_K = #{t in G : rank_t <= K}:
Recall@K = h_K / |G|, Precision@K = h_K / K, Hit@K = [h_K > 0],
NDCG@K = DCG / IDCG with DCG = sum_{rank_t <= K} 1 / log2(rank_t + 1) and

* ``ndcg="standard"``: IDCG over min(|G|, K) ideal hits;
* ``ndcg="legacy"``: MMSSL's utility/batch_test.py + utility/metrics.py: the retrieved list is the
  top max(ks) items and IDCG@K is the DCG of its hits sorted first, cut at K, i.e. over
  min(h_{max(ks)}, K) ideal hits (inflated; for comparisons with its published tables only).

Means are over users with a non-empty truth set. The metrics themselves are computed from the
ranks by :mod:`missrec.ranking`, the core the sequential evaluator uses too.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..evaluate import _no_nan
from ..errors import DataError, OptionError
from ..ranking import DEFAULT_KS, ranking_metrics


def _flatten(truth: Sequence[np.ndarray], users: np.ndarray):
    lens = np.array([len(truth[u]) for u in users], dtype=np.int64)
    items = np.concatenate([np.asarray(truth[u], dtype=np.int64) for u in users]) if len(users) else np.zeros(0, np.int64)
    return lens, items


@torch.no_grad()
def multi_ranks(user_emb: torch.Tensor, item_emb: torch.Tensor, users: np.ndarray, truth: Sequence[np.ndarray],
                train_mask: tuple[np.ndarray, np.ndarray] | None, *, batch_size: int = 1024,
                chunk_size: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """``(lens, ranks)``: per user the size of its truth set, and the concatenated ranks of every
    truth item (users in the given order). ``train_mask`` = CSR ``(indptr, indices)`` of items to
    mask per user (indexed by user id)."""
    n_items = item_emb.shape[0]
    users = np.asarray(users, dtype=np.int64)
    all_lens, all_ranks = [], []
    device = user_emb.device
    for s in range(0, len(users), batch_size):
        bu = users[s:s + batch_size]
        lens, items = _flatten(truth, bu)
        if items.size and (items.min() < 0 or items.max() >= n_items):
            raise ValueError(f"truth item ids must lie in 0..{n_items - 1}")
        row = torch.from_numpy(np.repeat(np.arange(len(bu)), lens)).to(device)
        tgt = torch.from_numpy(items).to(device)
        ue = user_emb[torch.from_numpy(bu).to(device)]
        s_t = _no_nan((ue[row] * item_emb[tgt]).sum(-1))
        # Masked pairs of this batch: (row, item), and which targets are themselves masked.
        if train_mask is not None:
            indptr, indices = train_mask
            deg = indptr[bu + 1] - indptr[bu]
            m_row = np.repeat(np.arange(len(bu)), deg)
            m_item = np.concatenate([indices[indptr[u]:indptr[u + 1]] for u in bu]) if len(bu) else np.zeros(0, np.int64)
            m_row_t, m_item_t = torch.from_numpy(m_row).to(device), torch.from_numpy(m_item.astype(np.int64)).to(device)
            key_m = np.sort(m_row * n_items + m_item)
            key_t = np.repeat(np.arange(len(bu)), lens) * n_items + items
            pos = np.searchsorted(key_m, key_t)
            t_masked = torch.from_numpy((pos < len(key_m)) & (key_m[np.minimum(pos, max(len(key_m) - 1, 0))] == key_t)
                                        if len(key_m) else np.zeros(len(key_t), dtype=bool)).to(device)
        worse = torch.zeros(len(tgt), dtype=torch.long, device=device)
        for c0 in range(0, n_items, chunk_size):
            c1 = min(c0 + chunk_size, n_items)
            sc = _no_nan(ue @ item_emb[c0:c1].T)
            if train_mask is not None:
                sel = (m_item_t >= c0) & (m_item_t < c1)
                sc[m_row_t[sel], m_item_t[sel] - c0] = float("nan")  # marker: masked
            masked = torch.isnan(sc)
            ids = torch.arange(c0, c1, device=device)
            beats = (sc[row] >= s_t[:, None]) & (ids[None, :] != tgt[:, None]) & ~masked[row]
            worse += beats.sum(1)
        rank = worse + 1
        if train_mask is not None:
            rank = torch.where(t_masked, torch.full_like(rank, n_items + 1), rank)
        all_lens.append(lens)
        all_ranks.append(rank.cpu().numpy())
    return (np.concatenate(all_lens) if all_lens else np.zeros(0, np.int64),
            np.concatenate(all_ranks) if all_ranks else np.zeros(0, np.int64))


def metrics_from_multi_ranks(lens: np.ndarray, ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS,
                             ndcg: str = "standard") -> dict[str, float]:
    """Recall / Precision / NDCG / Hit @K averaged over users with ``lens > 0``, plus ``users``
    (:func:`missrec.ranking.ranking_metrics`; see the module doc)."""
    lens = np.asarray(lens, dtype=np.int64)
    if len(ranks) != lens.sum():
        raise ValueError(f"{len(ranks)} ranks for {lens.sum()} truth items")
    if not (lens > 0).any():
        raise DataError("no user has held-out items to evaluate")
    out = ranking_metrics(ranks, lens, ks, ndcg)
    out["users"] = int((lens > 0).sum())
    return out


def evaluate_multi(user_emb: torch.Tensor, item_emb: torch.Tensor, users, truth: Sequence[np.ndarray],
                   train_mask: tuple[np.ndarray, np.ndarray] | None, ks: Sequence[int] = DEFAULT_KS,
                   ndcg: str = "standard", batch_size: int = 1024, chunk_size: int = 65536) -> dict[str, float]:
    """Metrics of ``user_emb[users] @ item_emb.T`` against ``truth[u]`` per user (users with an
    empty truth set are skipped). See the module docstring for the definitions."""
    users = np.asarray([u for u in np.asarray(users, dtype=np.int64) if len(truth[u])], dtype=np.int64)
    lens, ranks = multi_ranks(user_emb, item_emb, users, truth, train_mask, batch_size=batch_size,
                              chunk_size=chunk_size)
    return metrics_from_multi_ranks(lens, ranks, ks, ndcg)


def evaluate_data(model, data, split: str, ks: Sequence[int] = DEFAULT_KS, ndcg: str = "standard",
                  batch_size: int = 1024) -> dict[str, float]:
    """A :class:`~missrec.graph.base.GraphModel` on ``data.valid`` or ``data.test``, train items masked."""
    was = model.training
    model.eval()
    try:
        ue, ie = model.embeddings()
    finally:
        model.train(was)
    truth = data.split(split)
    return evaluate_multi(ue, ie, np.arange(data.n_users), truth, (data.train_indptr, data.train_indices),
                          ks=ks, ndcg=ndcg, batch_size=batch_size)
