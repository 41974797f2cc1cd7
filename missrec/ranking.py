"""Ranking metrics from ranks: the one core behind the sequential evaluator
(:mod:`missrec.evaluate`, one target per row) and the graph evaluator
(:mod:`missrec.graph.evaluate`, a set of held-out items per user).

Input: the 1-based full-ranking rank of every target, grouped by user (``lens[u]`` targets of
user u, consecutive in ``ranks``; ``lens=None`` = one target per row). A target that can never be
retrieved (masked) has a rank past the catalogue. Per user with G = its targets and
h_K = #{t in G : rank_t <= K}:

* Recall@K = h_K / |G|, Precision@K = h_K / K, Hit@K = [h_K > 0];
* NDCG@K = DCG@K / IDCG@K, DCG@K = sum_{rank_t <= K} 1 / log2(rank_t + 1), IDCG@K = the DCG of
  n ideal hits at ranks 1..n, with

  - ``ndcg="standard"``: n = min(|G|, K);
  - ``ndcg="legacy"``: MMSSL's (HKUDS/MMSSL ``utility/batch_test.py`` + ``utility/metrics.py``): the
    retrieved list is the top max(ks) items, and the ideal DCG at K is that of the list's hits
    sorted first and cut at K, i.e. n = min(h_{max(ks)}, K). It depends on the largest K
    evaluated together and inflates NDCG (docs/BASELINES.md, "Evaluation"); for comparisons with
    published tables only.

With one target per user both forms equal 1 / log2(rank + 1) if rank <= K, else 0.
Means are over users with at least one target.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

DEFAULT_KS = (10, 20, 50)
NDCG_FORMS = ("standard", "legacy")
METRICS = ("recall", "precision", "ndcg", "hit")


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, on any device
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def per_user_metrics(ranks, lens=None, ks: Iterable[int] = DEFAULT_KS, ndcg: str = "standard",
                     names: Sequence[str] = METRICS) -> dict[str, np.ndarray]:
    """``{"<metric>@<K>": float64[n_users]}`` for every user (users with no target get 0; see
    :func:`ranking_metrics` for the means)."""
    if ndcg not in NDCG_FORMS:
        raise ValueError(f"ndcg must be 'standard' or 'legacy', got {ndcg!r}")
    unknown = sorted(set(names) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {', '.join(METRICS)}")
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"cut-offs K must be >= 1, got {ks}")
    r = _as_numpy(ranks).astype(np.float64).reshape(-1)
    lens = np.ones(len(r), dtype=np.int64) if lens is None else _as_numpy(lens).astype(np.int64).reshape(-1)
    if len(r) != lens.sum():
        raise ValueError(f"{len(r)} ranks for {lens.sum()} targets")
    if len(r) and r.min() < 1:
        raise ValueError("ranks are 1-based; got a rank < 1")
    owner = np.repeat(np.arange(len(lens)), lens)
    gain = 1.0 / np.log2(r + 1.0)

    def per_owner(weights):  # float64 even when there are no targets at all
        return np.bincount(owner, weights=weights, minlength=len(lens)).astype(np.float64)

    def hits_within(k):
        return per_owner((r <= k).astype(np.float64))

    kmax_hits = hits_within(max(ks)).astype(np.int64)
    disc = np.r_[0.0, np.cumsum(1.0 / np.log2(np.arange(2, max(ks) + 2)))]  # disc[n] = IDCG of n hits
    safe = np.maximum(lens, 1)
    out = {}
    for k in ks:
        hits = hits_within(k)
        if "recall" in names:
            out[f"recall@{k}"] = hits / safe
        if "precision" in names:
            out[f"precision@{k}"] = hits / k
        if "ndcg" in names:
            dcg = per_owner(np.where(r <= k, gain, 0.0))
            ideal = np.minimum(lens if ndcg == "standard" else kmax_hits, k)
            idcg = disc[ideal]
            out[f"ndcg@{k}"] = np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)
        if "hit" in names:
            out[f"hit@{k}"] = (hits > 0).astype(np.float64)
    return out


def ranking_metrics(ranks, lens=None, ks: Iterable[int] = DEFAULT_KS, ndcg: str = "standard",
                    names: Sequence[str] = METRICS) -> dict[str, float]:
    """Means over users with ``lens > 0`` of :func:`per_user_metrics` (keys ordered by K, then
    by ``names``). Raises ``ValueError`` when no user has a target."""
    lens_np = None if lens is None else _as_numpy(lens).astype(np.int64).reshape(-1)
    per = per_user_metrics(ranks, lens_np, ks, ndcg, names)
    keep = np.ones(len(_as_numpy(ranks).reshape(-1)), dtype=bool) if lens_np is None else lens_np > 0
    if not keep.any():
        raise ValueError("no targets to compute metrics from")
    return {k: float(v[keep].mean()) for k, v in per.items()}
