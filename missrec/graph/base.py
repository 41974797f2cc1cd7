"""The graph-model protocol and the batch samplers the models share.

A graph model is a :class:`GraphModel` (``nn.Module``) built as ``Model(data, cfg)``. It runs
its own batches inside an epoch (MMSSL takes a discriminator step and a generator step per
batch), so the loop in :mod:`missrec.graph.loop` only calls:

* ``configure_optimizers() -> list[torch.optim.Optimizer]``,
* ``train_epoch(data, epoch, generator, optimizers) -> {"loss": float, ...}``,
* ``embeddings() -> (user_emb [U, d], item_emb [I, d])`` under no_grad; score = ``user_emb @ item_emb.T``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .data import GraphData
from ..errors import DivergenceError, OptionError


# Range checks of model options (``GraphModel.checks``): (predicate, what is expected).
def at_least(lo: int):
    return (lambda v: v >= lo), f"must be a whole number >= {lo}"


POSITIVE = (lambda v: v > 0), "must be a number > 0"
NON_NEGATIVE = (lambda v: v >= 0), "must be a number >= 0"
FRACTION = (lambda v: 0 <= v < 1), "must lie in [0, 1)"


def _float_text(value):
    """YAML 1.1 (PyYAML) reads ``1e-3`` as a string: such a number written as text, as a float."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def check_options(model: str, cfg: dict, defaults: dict, checks: dict) -> dict:
    """``cfg`` with every value type-checked against its default's type, then range-checked.

    A wrong value is an OptionError naming the model and the key (``lightgcn option embed_dim: ...``),
    raised before the model allocates anything. Keys whose default is None take any value; a number
    written as text (``lr=1e-3``) counts as a number where the default is a float.
    """
    cfg = dict(cfg)
    for key, value in cfg.items():
        where = f"{model} option {key}"
        default = defaults.get(key)
        if isinstance(default, float) or (default is None and key in checks):
            value = cfg[key] = _float_text(value)
        if isinstance(default, bool):
            ok, want = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok, want = isinstance(value, int) and not isinstance(value, bool), "a whole number"
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            want = "a finite number"
        elif isinstance(default, str):
            ok, want = isinstance(value, str), "a string"
        else:
            ok, want = True, ""
        if not ok:
            raise OptionError(where, f"expected {want}, got {value!r} (set it in --model_opts or the YAML)")
        if key in checks and value is not None:
            test, what = checks[key]
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not test(value):
                raise OptionError(where, f"{what}, got {value!r} (set it in --model_opts or the YAML)")
    return cfg


class GraphModel(nn.Module):
    """Base class: keeps ``cfg`` and the data sizes; subclasses implement the three methods."""

    #: cfg keys a model understands, with defaults (subclasses extend this)
    defaults: dict = {}
    #: per-key range checks, key -> (predicate, what is expected); types follow ``defaults``
    checks: dict = {}

    @classmethod
    def check_cfg(cls, cfg: dict | None) -> dict:
        """``cfg`` over the defaults, every key known and every value type- and range-checked."""
        cfg = dict(cfg or {})
        unknown = sorted(set(cfg) - set(cls.defaults))
        if unknown:
            raise OptionError(f"{cls.__name__}: unknown options {unknown} (known: {sorted(cls.defaults)})")
        return {**cls.defaults, **check_options(cls.__name__.lower(), cfg, cls.defaults, cls.checks)}

    def __init__(self, data: GraphData, cfg: dict | None = None):
        super().__init__()
        self.cfg = type(self).check_cfg(cfg)
        self.n_users, self.n_items = data.n_users, data.n_items

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        raise NotImplementedError

    def train_epoch(self, data: GraphData, epoch: int, generator: torch.Generator, optimizers) -> dict[str, float]:
        raise NotImplementedError

    @torch.no_grad()
    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def set_graph(self, data: GraphData) -> None:
        """Replace the observed user x item graph the model propagates over (same users, items
        and parameters): the loop's test-time graph (``--test_graph train+valid``). Models whose
        scores do not depend on the graph keep this no-op."""
        if (data.n_users, data.n_items) != (self.n_users, self.n_items):
            raise ValueError(f"set_graph: expected {self.n_users} users x {self.n_items} items, "
                             f"got {data.n_users} x {data.n_items}")

    @property
    def device(self) -> torch.device:
        return next(iter(self.parameters()), torch.zeros(())).device


def check_finite(stats: dict, epoch: int) -> None:
    """Raise the one divergence error (shared with the sequential Trainer) when an epoch's statistics are NaN/inf."""
    bad = {k: v for k, v in stats.items() if not math.isfinite(float(v))}
    if bad:
        raise DivergenceError.at(epoch, None, f"loss {stats.get('loss', float('nan'))}, non-finite training "
                                 f"statistics {sorted(bad)}; stopped, nothing written",
                                 "lower the learning rate (lr=... in --model_opts or the YAML)")


def _randint(n: int, size: int, generator: torch.Generator) -> np.ndarray:
    return torch.randint(0, n, (size,), generator=generator).numpy()


def sample_negatives(data: GraphData, users: np.ndarray, generator: torch.Generator, max_rounds: int = 50) -> np.ndarray:
    """One item per user drawn uniformly from the items NOT in the user's training set.

    Rejection sampling, vectorised: membership is a binary search of ``u * I + i`` in the sorted
    CSR keys. A user whose training set covers the catalogue keeps its last draw (cannot happen in
    any real dataset; it would make the negative a positive rather than loop forever)."""
    n_items = data.n_items
    keys = np.repeat(np.arange(data.n_users, dtype=np.int64), data.user_degrees()) * n_items + data.train_indices
    neg = _randint(n_items, len(users), generator)
    todo = np.arange(len(users))
    for _ in range(max_rounds):
        k = users[todo] * n_items + neg[todo]
        pos = np.searchsorted(keys, k)
        hit = (pos < len(keys)) & (keys[np.minimum(pos, len(keys) - 1)] == k)
        todo = todo[hit]
        if not len(todo):
            break
        neg[todo] = _randint(n_items, len(todo), generator)
    return neg


def sample_bpr_batches(data: GraphData, batch_size: int, generator: torch.Generator, mode: str = "pairs",
                       negatives: bool = True):
    """A list of ``(users, pos, neg)`` LongTensor batches covering one epoch.

    * ``mode="pairs"`` (LightGCN, VBPR, SLMRec): every training pair once, shuffled; one uniform
      negative per pair.
    * ``mode="users"`` (MMSSL's sampler): ``n_train // batch_size + 1`` batches, each of
      ``batch_size`` distinct users (users with training items, uniformly), one positive drawn from
      the user's items and one negative.

    With ``negatives=False`` the third tensor is empty (in-batch-softmax models need none).
    """
    if batch_size < 1:
        raise OptionError(f"batch_size must be >= 1, got {batch_size}")
    users_all, items_all = data.train_pairs()
    batches = []
    if mode == "pairs":
        perm = torch.randperm(len(users_all), generator=generator).numpy()
        for s in range(0, len(perm), batch_size):
            idx = perm[s:s + batch_size]
            u, p = users_all[idx], items_all[idx]
            batches.append((u, p, sample_negatives(data, u, generator) if negatives else np.zeros(0, np.int64)))
    elif mode == "users":
        deg = data.user_degrees()
        active = np.flatnonzero(deg > 0)
        b = min(batch_size, len(active))
        for _ in range(data.n_train // batch_size + 1):
            u = active[torch.randperm(len(active), generator=generator)[:b].numpy()]
            off = (torch.rand(len(u), generator=generator, dtype=torch.float64).numpy() * deg[u]).astype(np.int64)
            p = data.train_indices[data.train_indptr[u] + np.minimum(off, deg[u] - 1)]
            batches.append((u, p, sample_negatives(data, u, generator) if negatives else np.zeros(0, np.int64)))
    else:
        raise ValueError(f"mode must be 'pairs' or 'users', got {mode!r}")
    return [tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in t) for t in batches]


def feature_buffer(x: np.ndarray, normalize: bool) -> torch.Tensor:
    """A modality's features as a float32 tensor, optionally row-L2-normalised (SLMRec normalises)."""
    t = torch.from_numpy(np.array(x, dtype=np.float32))  # a copy: memmaps are read-only
    return nn.functional.normalize(t, dim=1) if normalize else t


def lightgcn_layers(adj: torch.Tensor, x: torch.Tensor, n_layers: int, dropout: nn.Module | None = None) -> torch.Tensor:
    """Mean of ``x, A x, A^2 x, ...`` (``n_layers`` hops); ``dropout`` (if given) is applied to each
    propagated layer, which then feeds the next (SLMRec's feature-dropout view)."""
    out, h = x, x
    for _ in range(n_layers):
        h = torch.sparse.mm(adj, h)
        if dropout is not None:
            h = dropout(h)
        out = out + h
    return out / (n_layers + 1)


def bpr_epoch(model: GraphModel, data: GraphData, generator: torch.Generator, opt, batch_loss) -> dict[str, float]:
    """One epoch of BPR batches: ``batch_loss(u, p, q)`` (on the model's device) -> loss; returns the mean loss."""
    total, n = 0.0, 0
    for u, p, q in sample_bpr_batches(data, model.cfg["batch_size"], generator):
        u, p, q = u.to(model.device), p.to(model.device), q.to(model.device)
        loss = batch_loss(u, p, q)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total, n = total + float(loss.detach()) * len(u), n + len(u)
    return {"loss": total / max(n, 1)}


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """``-mean log sigmoid(s_pos - s_neg)`` (softplus form, stable for large margins)."""
    return nn.functional.softplus(neg_scores - pos_scores).mean()


def l2_reg(*tensors: torch.Tensor) -> torch.Tensor:
    """``1/2 sum ||t||^2 / batch`` over the given batch tensors (the usual embedding regulariser)."""
    n = tensors[0].shape[0]
    return sum(t.pow(2).sum() for t in tensors) / (2 * max(n, 1))


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float, normalize: bool = True,
             mask_same: torch.Tensor | None = None) -> torch.Tensor:
    """In-batch softmax cross-entropy ``CE(a b^T / t, diag)``. ``mask_same`` (ids per row): off-diagonal
    entries with the same id as the row's own are not counted as negatives (repeated users/items)."""
    if normalize:
        a, b = nn.functional.normalize(a, dim=-1), nn.functional.normalize(b, dim=-1)
    logits = a @ b.T / temperature
    if mask_same is not None:
        same = (mask_same[:, None] == mask_same[None, :])
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
    target = torch.arange(len(a), device=a.device)
    return nn.functional.cross_entropy(logits, target)
