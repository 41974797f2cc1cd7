"""MMSSL (Wei et al., WWW 2023), as its code runs (``variant: executed``) and as its paper intends
(``variant: paper``), for any number of item modalities.

The reference for every behaviour below is ``docs/BASELINES.md`` section 1 (the
original ``main.py``/``Models.py`` read line by line). One forward pass (``_forward``):

* ``H_m = Dropout(Linear_m(F_m))``; ``U_m = A_ui H_m``, ``I_m = A_iu U_m`` with the one-sided
  graphs ``A_ui = D_u^-1/2 R``, ``A_iu = D_i^-1/2 R^T`` (degree + 1e-8).
* Modality-aware ID propagation over the (regenerated) modality graphs: ``P^u_m = A^m_ui E_item``,
  ``P^i_m = A^m_iu E_user``; fused across modalities by attention (below) into ``e_att``.
* ``E^0 = E + id_cat_rate * norm(e_att)``; ``n_ui_layers`` CF layers over ``A_ui``/``A_iu``, the last
  one wrapped in a softmax over the embedding dimension; layers averaged; then
  ``e_u = mean + model_cat_rate * sum_m norm(U_m)`` (items likewise with ``I_m``).

Training, per batch of distinct users (``train_epoch``): a D step (WGAN-GP: the "real" sample
built from the user's interactions and the fused score rows, the fake samples are the
per-modality score rows ``S_m = norm((U_m[B] I_m^T) * (1 - R[B]))``), then a G step
(BPR + L2 + feature L2 + cross-modal contrastive + adversarial term), then modality graph
regeneration from the top-k items of ``S_m``.

``executed`` keeps what the original code computes, including its defects:

* attention: keys are the projected queries and the values are broadcast by the *query* modality,
  so the output is exactly the linear map ``[P_m || ... || P_m] W_cat`` (``heads`` copies);
* discriminator ``LeakyReLU(True)`` = slope 1 (a linear network up to BatchNorm), BatchNorm under
  the gradient penalty;
* real sample ``softmax(R[B] + (log_log_scale / real_data_tau) * Gumbel)``: the original's operator
  precedence divides only the noise by the temperature (docs/BASELINES.md writes the intended
  ``(R + noise) / tau``; the code does not);
* graph regeneration every batch: buffer the top-k pairs, and on every ``T``-th batch rebuild the
  graphs from the buffer only (so with ``T = 1`` they are empty from the third batch on and the
  contrastive term has no gradient), users tiled with ``repeat`` while items are row-major (edges
  land on the wrong users for ``k > 1``), the buffer carried over epochs as in the original.

``paper`` changes exactly these: real multi-head attention across modalities (per-head scaled
dot products between modality queries and keys of the same node, projected values, output
projection ``W_o``); a non-linear discriminator (LeakyReLU slope ``d_slope``, 0.2) with
LayerNorm instead of BatchNorm, since the WGAN-GP penalty is a per-sample gradient norm that
BatchNorm couples across the batch; the intended real sample ``softmax((R + noise) / tau)``; and
the modality graphs rebuilt for *all* users at the start of every epoch after the first, from the
top-``max(1, int(I * m_topk_rate))`` items of the eval-mode ``S_m``, with correct pairing. Every one
of these is its own cfg key (``attention``, ``d_slope``, ``d_norm``, ``real_sample``, ``regen``,
``pairing``), so one defect can be switched at a time.

Memory bound (``d_max_items``, ``d_hidden_cap``): the original discriminator reads B x I dense rows
and has ~I^2/4 weights. Here it reads only a fixed column subset: all items when
``n_items <= d_max_items`` (the published datasets, 20,000 by default: the original's behaviour),
else the ``d_max_items`` most popular training items (fixed at construction, so each input unit
keeps meaning one item). ``S``, ``r`` and the mask are B x ``len(cols)``; hidden widths are
``min(cols/4, d_hidden_cap)`` and ``min(cols/8, d_hidden_cap/2)`` (cap off by default). Top-k for
graph regeneration runs over all items in column chunks of ``score_chunk``. Nothing of size
users x items is ever dense.

Over 500 lines on purpose: both variants share one forward pass and one training step, and each
defect of the original is a switch beside the code it changes, so they stay in one file.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import (FRACTION, NON_NEGATIVE, POSITIVE, GraphModel, at_least, check_finite, check_options,
                   sample_bpr_batches)
from .sparse import from_pairs, row_normalized, transpose
from ..errors import DataError, OptionError

DEFAULTS = {
    "variant": "executed",
    "embed_size": 64,
    "batch_size": 1024,
    "heads": 4,
    "n_ui_layers": 2,
    "lr": 5.5e-4,
    "d_lr": 3e-4,
    "weight_decay": 0.01,  # AdamW's default, which the original leaves in place
    "regs": 1e-5,
    "feat_reg_decay": 1e-5,
    "drop_rate": 0.2,
    "g_drop1": 0.31,
    "g_drop2": 0.5,
    "cl_rate": 0.03,
    "g_rate": 1e-4,
    "gp_rate": 1.0,
    "gp_lambda": 0.3,
    "model_cat_rate": 0.55,
    "id_cat_rate": 0.36,
    "tau": 0.5,
    "real_data_tau": 0.005,
    "ui_pre_scale": 100.0,
    "log_log_scale": 1e-5,
    "T": 1,
    "m_topk_rate": 1e-4,
    "last_layer_softmax": True,
    "d_max_items": 20000,
    "d_hidden_cap": None,
    "score_chunk": 8192,
    "modalities": None,  # feature names to use; None: every feature the dataset has
}

# Keys whose default depends on the variant; an explicit cfg value always wins.
VARIANT_DEFAULTS = {
    "executed": {"attention": "executed", "d_slope": 1.0, "d_norm": "batch", "real_sample": "executed",
                 "regen": "batch", "pairing": "tile"},
    "paper": {"attention": "multihead", "d_slope": 0.2, "d_norm": "layer", "real_sample": "intended",
              "regen": "epoch", "pairing": "interleave"},
}
CHECKS = {"embed_size": at_least(1), "batch_size": at_least(1), "heads": at_least(1), "n_ui_layers": at_least(0),
          "lr": POSITIVE, "d_lr": POSITIVE, "weight_decay": NON_NEGATIVE, "regs": NON_NEGATIVE,
          "feat_reg_decay": NON_NEGATIVE, "drop_rate": FRACTION, "g_drop1": FRACTION, "g_drop2": FRACTION,
          "cl_rate": NON_NEGATIVE, "g_rate": NON_NEGATIVE, "gp_rate": NON_NEGATIVE, "tau": POSITIVE,
          "real_data_tau": POSITIVE, "T": at_least(1), "m_topk_rate": NON_NEGATIVE, "d_max_items": at_least(1),
          "d_hidden_cap": at_least(1), "score_chunk": at_least(1)}
CHOICES = {"attention": ("executed", "multihead"), "d_norm": ("batch", "layer", "none"),
           "real_sample": ("executed", "intended"), "regen": ("batch", "epoch"),
           "pairing": ("tile", "interleave")}


def resolve_config(cfg: dict) -> dict:
    """``cfg`` over the defaults of its variant; unknown keys or values raise one clear error."""
    variant = cfg.get("variant", DEFAULTS["variant"])
    if variant not in VARIANT_DEFAULTS:
        raise OptionError(f"mmssl: variant: expected one of {sorted(VARIANT_DEFAULTS)}, got {variant!r}")
    out = {**DEFAULTS, **VARIANT_DEFAULTS[variant]}
    unknown = sorted(set(cfg) - set(out))
    if unknown:
        raise OptionError(f"mmssl: unknown config keys {unknown}; known: {sorted(out)}")
    out.update(cfg)
    for key, allowed in CHOICES.items():
        if out[key] not in allowed:
            raise OptionError(f"mmssl: {key}: expected one of {list(allowed)}, got {out[key]!r}")
    out = check_options("mmssl", out, {**DEFAULTS, **VARIANT_DEFAULTS["executed"]}, CHECKS)
    if int(out["T"]) < 1:
        raise OptionError(f"mmssl: T: expected an integer >= 1, got {out['T']!r}")
    if out["embed_size"] % out["heads"]:
        raise OptionError(f"mmssl: embed_size {out['embed_size']} is not divisible by heads {out['heads']}")
    return out


def one_sided_graphs(rows: torch.Tensor, cols: torch.Tensor, n_rows: int, n_cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(D_r^-1/2 R, D_c^-1/2 R^T)`` of the multigraph given by edge lists (duplicates add up).

    MMSSL's ``csr_norm(mean_flag=True)``: each side normalised by its own degree (+1e-8) only;
    rows without edges stay zero.
    """
    r = from_pairs(rows.long().cpu(), cols.long().cpu(), (n_rows, n_cols))
    return row_normalized(r), row_normalized(transpose(r))


def contrastive_loss(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """MMSSL's one-directional InfoNCE: positives ``(z1_i, z2_i)``, negatives every other row of
    ``z1`` and every row of ``z2``, cosine similarities at temperature ``tau``."""
    z1 = F.normalize(z1, dim=1)
    z2 = F.normalize(z2, dim=1)
    refl = torch.exp(z1 @ z1.T / tau)
    between = torch.exp(z1 @ z2.T / tau)
    denom = refl.sum(1) + between.sum(1) - refl.diagonal()
    return -torch.log(between.diagonal() / denom + 1e-8).mean()


class ModalityAttention(nn.Module):
    """Fusion of the per-modality ID propagations ``P`` [M, N, d] into one [N, d] table."""

    def __init__(self, dim: int, heads: int, kind: str):
        super().__init__()
        self.dim, self.heads, self.kind = dim, heads, kind
        init = nn.init.xavier_uniform_
        self.w_q = nn.Parameter(init(torch.empty(dim, dim)))
        if kind == "executed":
            # the original's w_k is created but its product is overwritten by Q; w_v does not exist
            self.w_cat = nn.Parameter(init(torch.empty(heads * dim, dim)))
        else:
            self.w_k = nn.Parameter(init(torch.empty(dim, dim)))
            self.w_v = nn.Parameter(init(torch.empty(dim, dim)))
            self.w_o = nn.Parameter(init(torch.empty(dim, dim)))

    def forward(self, P: torch.Tensor) -> torch.Tensor:
        M, N, d = P.shape
        h, dh = self.heads, d // self.heads
        Q = (P @ self.w_q).reshape(M, N, h, dh).permute(2, 0, 1, 3)  # [h, M, N, dh]
        if self.kind == "executed":
            K = Q  # Models.py: K = Q.reshape(...)
            V = P.unsqueeze(1)  # [M, 1, N, d]: broadcast so V is indexed by the query modality
        else:
            K = (P @ self.w_k).reshape(M, N, h, dh).permute(2, 0, 1, 3)
            V = (P @ self.w_v).reshape(M, N, h, dh).permute(2, 0, 1, 3).unsqueeze(1)  # [h, 1, M, N, dh]
        att = (Q.unsqueeze(2) * K.unsqueeze(1)).sum(-1) / math.sqrt(dh)  # [h, M(query), M(key), N]
        att = torch.softmax(att, dim=2).unsqueeze(-1)
        if self.kind == "executed":
            Z = (att * V).sum(2)  # [h, M, N, d]: sum_j att_ij * V_i = V_i
            Z = torch.cat(list(Z), dim=-1)  # [M, N, h*d]
            Z = Z @ self.w_cat
        else:
            Z = (att * V).sum(2)  # [h, M, N, dh]: sum over key modalities of att * V_key
            Z = Z.permute(1, 2, 0, 3).reshape(M, N, d) @ self.w_o
        return Z.mean(0)


class Discriminator(nn.Module):
    """MMSSL's critic over score rows: Linear-LeakyReLU-Norm-Dropout twice, Linear, Sigmoid, x100."""

    def __init__(self, n_in: int, slope: float, norm: str, drop1: float, drop2: float,
                 hidden_cap: int | None = None):
        super().__init__()
        h1, h2 = max(1, n_in // 4), max(1, n_in // 8)
        if hidden_cap is not None:
            h1, h2 = min(h1, int(hidden_cap)), min(h2, max(1, int(hidden_cap) // 2))

        def norm_layer(width):
            return {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}.get(norm, lambda _: nn.Identity())(width)

        self.net = nn.Sequential(
            nn.Linear(n_in, h1), nn.LeakyReLU(slope), norm_layer(h1), nn.Dropout(drop1),
            nn.Linear(h1, h2), nn.LeakyReLU(slope), norm_layer(h2), nn.Dropout(drop2),
            nn.Linear(h2, 1), nn.Sigmoid())
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 100 * self.net(x.float()).view(-1)


class MMSSL(GraphModel):
    """See the module docstring. ``cfg`` keys: ``DEFAULTS`` and ``VARIANT_DEFAULTS``."""

    defaults = {**DEFAULTS, **VARIANT_DEFAULTS["executed"]}
    checks = CHECKS

    @classmethod
    def check_cfg(cls, cfg: dict | None) -> dict:
        return super().check_cfg(resolve_config(dict(cfg or {})))

    def __init__(self, data, cfg: dict | None = None):
        cfg = resolve_config(dict(cfg or {}))
        super().__init__(data, cfg)
        if not data.features:
            raise DataError(f"mmssl: dataset {getattr(data, 'name', '?')}: needs at least one item feature")
        self.n_users, self.n_items = int(data.n_users), int(data.n_items)
        self.modalities = sorted(data.features) if cfg["modalities"] is None else list(cfg["modalities"])
        missing = sorted(set(self.modalities) - set(data.features))
        if missing or not self.modalities:
            raise DataError(f"mmssl: modalities {missing or '[]'} not in dataset {getattr(data, 'name', '?')} "
                             f"(it has {sorted(data.features)})")
        d = int(cfg["embed_size"])
        for m in self.modalities:
            f = np.asarray(data.features[m])
            if f.ndim != 2 or f.shape[0] != self.n_items:
                raise DataError(f"mmssl: feature {m!r}: expected shape [n_items={self.n_items}, d], got {f.shape}")
            self.register_buffer(f"feat_{m}", torch.tensor(f, dtype=torch.float32), persistent=False)
        self.trans = nn.ModuleDict({m: nn.Linear(data.features[m].shape[1], d) for m in self.modalities})
        for lin in self.trans.values():
            nn.init.xavier_uniform_(lin.weight)
        self.user_emb = nn.Embedding(self.n_users, d)
        self.item_emb = nn.Embedding(self.n_items, d)
        nn.init.xavier_uniform_(self.user_emb.weight)
        nn.init.xavier_uniform_(self.item_emb.weight)
        self.attention = ModalityAttention(d, int(cfg["heads"]), cfg["attention"])
        self.dropout = nn.Dropout(cfg["drop_rate"])

        indptr, indices = self._observed(data)
        self.register_buffer("indptr", indptr, persistent=False)
        self.register_buffer("indices", indices, persistent=False)
        self._graphs = {m: self._A for m in self.modalities}
        self._pairs: dict = {m: None for m in self.modalities}  # None: still the training graph
        self._buffer = {m: ([], []) for m in self.modalities}
        self._dev_cache: dict = {}
        self._epochs_done = 0

        counts = torch.bincount(indices, minlength=self.n_items)
        if self.n_items > int(cfg["d_max_items"]):
            order = torch.argsort(-counts.double() - torch.arange(self.n_items) / (2.0 * self.n_items))
            cols = torch.sort(order[: int(cfg["d_max_items"])]).values
        else:
            cols = torch.arange(self.n_items)
        self.register_buffer("d_cols", cols, persistent=False)
        self.discriminator = Discriminator(int(cols.numel()), float(cfg["d_slope"]), cfg["d_norm"],
                                           cfg["g_drop1"], cfg["g_drop2"], cfg["d_hidden_cap"])

    # ----------------------------------------------------------------------------------- graphs
    def _observed(self, data) -> tuple[torch.Tensor, torch.Tensor]:
        """CSR of the observed graph R, and ``self._A`` = its one-sided normalisations."""
        indptr = torch.as_tensor(np.asarray(data.train_indptr), dtype=torch.long)
        indices = torch.as_tensor(np.asarray(data.train_indices), dtype=torch.long)
        rows = torch.repeat_interleave(torch.arange(self.n_users), indptr[1:] - indptr[:-1])
        self._A = one_sided_graphs(rows, indices, self.n_users, self.n_items)
        return indptr, indices

    def set_graph(self, data) -> None:
        """Propagate over (and mask) ``data``'s graph from now on. Modality graphs that are still R
        follow it; regenerated ones are the model's own top-k predictions, kept as selected."""
        super().set_graph(data)
        dev = self.user_emb.weight.device
        indptr, indices = self._observed(data)
        self.indptr, self.indices = indptr.to(dev), indices.to(dev)
        self._set_graphs(self._pairs)

    def _on(self, g: torch.Tensor) -> torch.Tensor:
        dev = self.user_emb.weight.device
        if g.device == dev:
            return g
        key = id(g)
        hit = self._dev_cache.get(key)
        if hit is None or hit[0] is not g:
            hit = (g, g.to(dev))
            self._dev_cache[key] = hit
        return hit[1]

    def _set_graphs(self, pairs: dict) -> None:
        """Rebuild each modality's one-sided graphs from ``{m: (user ids, item ids)}`` (None: R)."""
        self._pairs = dict(pairs)
        self._graphs = {m: self._A if p is None else one_sided_graphs(p[0], p[1], self.n_users, self.n_items)
                        for m, p in pairs.items()}
        # keep the training graph's device copy; drop those of replaced graphs
        self._dev_cache = {k: v for k, v in self._dev_cache.items() if any(v[0] is a for a in self._A)}

    # the regenerated graphs (and main.py's pending buffer) are model state: the loop keeps the
    # best epoch's state_dict, and the embeddings depend on them
    def get_extra_state(self) -> dict:
        return {"pairs": dict(self._pairs), "epochs_done": self._epochs_done,
                "buffer": {m: (list(u), list(i)) for m, (u, i) in self._buffer.items()}}

    def set_extra_state(self, state: dict) -> None:
        self._set_graphs(state["pairs"])
        self._epochs_done = int(state["epochs_done"])
        self._buffer = {m: (list(u), list(i)) for m, (u, i) in state["buffer"].items()}

    def modality_graph(self, m: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The current ``(A^m_ui, A^m_iu)`` of modality ``m`` (on CPU)."""
        return self._graphs[m]

    # ---------------------------------------------------------------------------------- forward
    def _forward(self) -> dict:
        a_ui, a_iu = self._on(self._A[0]), self._on(self._A[1])
        U, I, Pu, Pi = {}, {}, {}, {}
        for m in self.modalities:
            h = self.dropout(self.trans[m](getattr(self, f"feat_{m}")))
            U[m] = torch.sparse.mm(a_ui, h)
            I[m] = torch.sparse.mm(a_iu, U[m])
            g_ui, g_iu = self._graphs[m]
            Pu[m] = torch.sparse.mm(self._on(g_ui), self.item_emb.weight)
            Pi[m] = torch.sparse.mm(self._on(g_iu), self.user_emb.weight)
        att_u = self.attention(torch.stack([Pu[m] for m in self.modalities]))
        att_i = self.attention(torch.stack([Pi[m] for m in self.modalities]))
        eu = self.user_emb.weight + self.cfg["id_cat_rate"] * F.normalize(att_u, dim=1)
        ei = self.item_emb.weight + self.cfg["id_cat_rate"] * F.normalize(att_i, dim=1)
        us, its = [eu], [ei]
        n_layers = int(self.cfg["n_ui_layers"])
        for layer in range(n_layers):
            eu = torch.sparse.mm(a_ui, ei)
            if layer == n_layers - 1 and self.cfg["last_layer_softmax"]:
                eu = torch.softmax(eu, dim=-1)
            ei = torch.sparse.mm(a_iu, eu)
            if layer == n_layers - 1 and self.cfg["last_layer_softmax"]:
                ei = torch.softmax(ei, dim=-1)
            us.append(eu)
            its.append(ei)
        eu = torch.stack(us).mean(0)
        ei = torch.stack(its).mean(0)
        rate = self.cfg["model_cat_rate"]
        for m in self.modalities:
            eu = eu + rate * F.normalize(U[m], dim=1)
            ei = ei + rate * F.normalize(I[m], dim=1)
        return {"user": eu, "item": ei, "U": U, "I": I, "Pu": Pu, "Pi": Pi}

    @torch.no_grad()
    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        was = self.training
        self.eval()
        out = self._forward()
        self.train(was)
        return out["user"], out["item"]

    # ---------------------------------------------------------------------------------- helpers
    def _train_rows(self, users: torch.Tensor, cols: torch.Tensor | None = None) -> torch.Tensor:
        """Dense [B, len(cols)] 0/1 train indicator of ``users`` (``cols`` sorted; None = all items)."""
        start, end = self.indptr[users], self.indptr[users + 1]
        deg = end - start
        row = torch.repeat_interleave(torch.arange(users.numel(), device=users.device), deg)
        offs = torch.arange(int(deg.sum()), device=users.device) - torch.repeat_interleave(
            torch.cumsum(deg, 0) - deg, deg)
        items = self.indices[torch.repeat_interleave(start, deg) + offs]
        n_cols = self.n_items if cols is None else cols.numel()
        out = torch.zeros(users.numel(), n_cols, device=users.device)
        if cols is not None:
            pos = torch.searchsorted(cols, items).clamp_max(n_cols - 1)
            keep = cols[pos] == items
            row, items = row[keep], pos[keep]
        out[row, items] = 1.0
        return out

    def _score_rows(self, u: torch.Tensor, i: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """``norm((u[users] i[cols]^T) * (1 - R[users, cols]))`` over the discriminator columns."""
        cols = self.d_cols
        s = u[users] @ i[cols].T
        return F.normalize(s * (1 - self._train_rows(users, cols)), dim=1)

    def _masked_topk(self, u: torch.Tensor, i: torch.Tensor, users: torch.Tensor, k: int) -> torch.Tensor:
        """Top-``k`` item ids of ``(u[users] i^T) * (1 - R[users])`` over all items, in column chunks."""
        chunk = int(self.cfg["score_chunk"])
        best_v = best_i = None
        for lo in range(0, self.n_items, chunk):
            cols = torch.arange(lo, min(lo + chunk, self.n_items), device=u.device)
            s = (u[users] @ i[cols].T) * (1 - self._train_rows(users, cols))
            v, j = torch.topk(s, min(k, cols.numel()), dim=1)
            j = cols[j]
            if best_v is not None:
                v, sel = torch.topk(torch.cat([best_v, v], 1), min(k, best_v.shape[1] + v.shape[1]), dim=1)
                j = torch.gather(torch.cat([best_i, j], 1), 1, sel)
            best_v, best_i = v, j
        return best_i

    def _topk_rate(self) -> int:
        k = int(self.n_items * self.cfg["m_topk_rate"])
        return k if self.cfg["regen"] == "batch" else max(1, k)

    # --------------------------------------------------------------------------------- training
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        d_params = set(id(p) for p in self.discriminator.parameters())
        g_params = [p for p in self.parameters() if id(p) not in d_params]
        opt_g = torch.optim.AdamW(g_params, lr=self.cfg["lr"], weight_decay=self.cfg["weight_decay"])
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.cfg["d_lr"], betas=(0.5, 0.9))
        return [opt_g, opt_d]

    def _real_sample(self, users: torch.Tensor, s_ui: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        cfg = self.cfg
        r = self._train_rows(users, self.d_cols)
        unif = torch.rand(r.shape, generator=gen, device=r.device)
        # log(-log(U)) is minus a Gumbel sample; main.py subtracts it, scaled
        noise = -cfg["log_log_scale"] * torch.log(-torch.log(unif + 1e-8) + 1e-8)
        if cfg["real_sample"] == "executed":
            logits = r + noise / cfg["real_data_tau"]
        else:
            logits = (r + noise) / cfg["real_data_tau"]
        return F.normalize(torch.softmax(logits, dim=1) + cfg["ui_pre_scale"] * s_ui, dim=1)

    def d_losses(self, users: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Discriminator losses of one batch (generator outputs detached)."""
        with torch.no_grad():
            out = self._forward()
            s_ui = self._score_rows(out["user"], out["item"], users)
            fake = torch.cat([self._score_rows(out["U"][m], out["I"][m], users) for m in self.modalities])
            real = self._real_sample(users, s_ui, gen).repeat(len(self.modalities), 1)
        D = self.discriminator
        loss_real = -D(real).mean()
        loss_fake = D(fake).mean()
        alpha = torch.rand(real.shape[0], 1, generator=gen, device=real.device)
        mix = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        grad = torch.autograd.grad(D(mix).sum(), mix, create_graph=True)[0]
        gp = self.cfg["gp_lambda"] * ((grad.norm(2, dim=1) - 1) ** 2).mean()
        return {"d_real": loss_real, "d_fake": loss_fake, "gp": gp,
                "d_loss": loss_real + loss_fake + self.cfg["gp_rate"] * gp}

    def g_losses(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> tuple[dict, dict]:
        """Generator losses of one batch and the forward outputs (for graph regeneration)."""
        cfg = self.cfg
        out = self._forward()
        eu, ep, en = out["user"][users], out["item"][pos], out["item"][neg]
        bpr = -F.logsigmoid((eu * ep).sum(1) - (eu * en).sum(1)).mean()
        reg = cfg["regs"] * 0.5 * (eu.pow(2).sum() + ep.pow(2).sum() + en.pow(2).sum()) / users.numel()
        feat = sum(out["I"][m].pow(2).sum() + out["U"][m].pow(2).sum() for m in self.modalities)
        feat_reg = cfg["feat_reg_decay"] * 0.5 * feat / self.n_items
        cl = sum(contrastive_loss(out["Pu"][m][users], out["user"][users], cfg["tau"]) for m in self.modalities)
        fake = torch.cat([self._score_rows(out["U"][m], out["I"][m], users) for m in self.modalities])
        D = self.discriminator
        D.requires_grad_(False)
        try:
            g_adv = -D(fake).mean()
        finally:
            D.requires_grad_(True)
        loss = bpr + reg + feat_reg + cfg["cl_rate"] * cl + cfg["g_rate"] * g_adv
        return {"bpr": bpr, "reg": reg, "feat_reg": feat_reg, "cl": cl, "g_adv": g_adv, "loss": loss}, out

    def _regen_batch(self, idx: int, users: torch.Tensor, out: dict) -> None:
        """main.py's per-batch regeneration: rebuild on every T-th batch from the buffer, else buffer."""
        if idx % int(self.cfg["T"]) == 0 and idx != 0:
            pairs = {}
            for m in self.modalities:
                us, its = self._buffer[m]
                pairs[m] = (torch.cat(us) if us else torch.zeros(0, dtype=torch.long),
                            torch.cat(its) if its else torch.zeros(0, dtype=torch.long))
            self._set_graphs(pairs)
            self._buffer = {m: ([], []) for m in self.modalities}
            return
        k = self._topk_rate()
        if k == 0:
            return
        for m in self.modalities:
            top = self._masked_topk(out["U"][m].detach(), out["I"][m].detach(), users, k)
            self._buffer[m][0].append(self._pair_users(users, k).cpu())
            self._buffer[m][1].append(top.reshape(-1).cpu())

    def _pair_users(self, users: torch.Tensor, k: int) -> torch.Tensor:
        # items are row-major [B, k]; main.py tiles users ([u1..uB, u1..uB, ...]) instead
        return users.repeat(k) if self.cfg["pairing"] == "tile" else users.repeat_interleave(k)

    @torch.no_grad()
    def regenerate_all(self) -> None:
        """Rebuild every modality graph from every user's top-k items of the eval-mode ``S_m``."""
        was = self.training
        self.eval()
        out = self._forward()
        self.train(was)
        k = self._topk_rate()
        B = int(self.cfg["batch_size"])
        pairs = {}
        dev = self.user_emb.weight.device
        for m in self.modalities:
            us, its = [], []
            for lo in range(0, self.n_users, B):
                users = torch.arange(lo, min(lo + B, self.n_users), device=dev)
                us.append(self._pair_users(users, k).cpu())
                its.append(self._masked_topk(out["U"][m], out["I"][m], users, k).reshape(-1).cpu())
            pairs[m] = (torch.cat(us), torch.cat(its))
        self._set_graphs(pairs)

    def train_epoch(self, data, epoch: int, generator: torch.Generator, optimizers) -> dict[str, float]:
        opt_g, opt_d = optimizers
        self.train()
        if self.cfg["regen"] == "epoch" and self._epochs_done > 0:
            self.regenerate_all()
        dev = self.user_emb.weight.device
        gen = torch.Generator(device=dev)
        gen.manual_seed(int(torch.randint(2 ** 62, (1,), generator=generator)))
        sums: dict[str, float] = {}
        n = 0
        batches = sample_bpr_batches(data, int(self.cfg["batch_size"]), generator, mode="users")
        for idx, (users, pos, neg) in enumerate(batches):
            users, pos, neg = users.to(dev), pos.to(dev), neg.to(dev)
            d = self.d_losses(users, gen)
            opt_d.zero_grad(set_to_none=True)
            d["d_loss"].backward()
            opt_d.step()
            g, out = self.g_losses(users, pos, neg)
            opt_g.zero_grad(set_to_none=True)
            g["loss"].backward()
            opt_g.step()
            if self.cfg["regen"] == "batch":
                self._regen_batch(idx, users, out)
            for key, v in {**d, **g}.items():
                sums[key] = sums.get(key, 0.0) + float(v.detach())
            n += 1
        self._epochs_done += 1
        stats = {k: v / max(n, 1) for k, v in sums.items()}
        if not all(math.isfinite(v) for v in stats.values()):
            check_finite(stats, epoch)
        return stats
