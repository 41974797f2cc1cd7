"""Sparse graph operators on the user x item training matrix R (torch sparse COO, never dense U x I).

* :func:`normalized_adjacency`: the bipartite ``(U+I) x (U+I)`` matrix ``A = [[0, R], [R^T, 0]]``
  normalised as ``D^-1/2 A D^-1/2`` (``kind="sym"``, LightGCN / SLMRec) or ``D^-1 A``
  (``kind="mean"``); isolated nodes keep an all-zero row instead of dividing by zero.
* :func:`row_normalized`: MMSSL's one-sided ``D_u^-1/2 R`` (degree + eps, as its code does).
* :func:`propagate`: ``adj @ x`` with a sparse ``adj``.
"""
from __future__ import annotations

import torch


def _coo(r: torch.Tensor) -> torch.Tensor:
    if not r.is_sparse:
        raise TypeError("expected a torch sparse COO matrix (R must never be dense U x I)")
    return r.coalesce()


def normalized_adjacency(r: torch.Tensor, kind: str = "sym") -> torch.Tensor:
    """``D^-1/2 A D^-1/2`` (``sym``) or ``D^-1 A`` (``mean``) of the bipartite graph of ``r [U, I]``."""
    r = _coo(r)
    n_users, n_items = r.shape
    (ru, ri), v = r.indices(), r.values().to(torch.float32)
    rows = torch.cat([ru, ri + n_users])
    cols = torch.cat([ri + n_users, ru])
    vals = torch.cat([v, v])
    deg = torch.zeros(n_users + n_items, dtype=vals.dtype, device=vals.device).index_add_(0, rows, vals)
    if kind == "sym":
        d = deg.pow(-0.5)
        d[torch.isinf(d)] = 0.0
        vals = d[rows] * vals * d[cols]
    elif kind == "mean":
        d = deg.reciprocal()
        d[torch.isinf(d)] = 0.0
        vals = d[rows] * vals
    else:
        raise ValueError(f"kind must be 'sym' or 'mean', got {kind!r}")
    n = n_users + n_items
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, n), check_invariants=False).coalesce()


def row_normalized(r: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``D^-1/2 R`` with ``D`` the row sums of ``r`` (+ ``eps``): MMSSL's user->item graph; pass
    ``transpose(r)`` for its item->user graph."""
    r = _coo(r)
    ri, v = r.indices()[0], r.values().to(torch.float32)
    deg = torch.zeros(r.shape[0], dtype=v.dtype, device=v.device).index_add_(0, ri, v)
    d = (deg + eps).pow(-0.5)
    return torch.sparse_coo_tensor(r.indices(), d[ri] * v, r.shape, check_invariants=False).coalesce()


def transpose(r: torch.Tensor) -> torch.Tensor:
    return _coo(r).t().coalesce()


def from_pairs(rows: torch.Tensor, cols: torch.Tensor, shape, values: torch.Tensor | None = None) -> torch.Tensor:
    """A coalesced sparse matrix with ones (or ``values``) at ``(rows, cols)``; duplicates summed."""
    rows, cols = rows.reshape(-1).long(), cols.reshape(-1).long()
    if values is None:
        values = torch.ones(len(rows), device=rows.device)
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, tuple(shape), check_invariants=False).coalesce()


def propagate(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``adj @ x`` (sparse x dense); differentiable in ``x``."""
    return torch.sparse.mm(adj, x)
