"""SLMRec (Tao et al., IEEE TMM 2022), as docs/BASELINES.md section 2 describes its code,
with any number of modalities and the listed fixes.

* One LightGCN tower per branch: ``id`` (user table E_u, item table E_i) and one per modality m
  (E_u, Linear(f_m)); every tower shares the same user table E_u; mean over layers 0..L.
* Concat fusion: z_u = Linear([u_id | u_m ...]), z_i = its own Linear over the item outputs.
* Main loss: in-batch softmax CE(norm(z_u) norm(z_i)^T / temp, diagonal) over (user, positive) pairs.
* Self-supervised task (``ssl_task``), weight ``ssl_alpha``:
  ``FAC`` fine-and-coarse alignment of the batch positives' pre-fusion item outputs, id aligned
  with modality 1, then (through the chain of heads) with modality 2, ... (last heads 64 -> 32);
  ``FD`` two feature-dropout views (dropout on each propagated layer, feeding the next);
  ``FM`` two views each zeroing one branch's item-side input (two distinct branches per batch);
  ``FD+FM`` FM with the per-layer dropout. FD/FM: user InfoNCE + item InfoNCE between the views.

Fixes (docs/BASELINES.md section 2, "Bugs"): a validation split (the loaders), embeddings recomputed
under no_grad for evaluation (not cached before the last step), FAC logits L2-normalised
(``fac_normalize``; ``false`` = as published), in-batch repeats of a user or item not used as
negatives (``mask_duplicates``), ``mean`` fusion works for any number of branches.

Two switches beyond the published code (defaults: as published):

* ``score``: ``dot`` (default) ranks by the raw ``z_u . z_i`` as the original's ``predict`` does;
  ``cosine`` ranks by ``norm(z_u) . norm(z_i)``, the quantity the main loss trains. The norms
  are not trained by any loss, but items that are batch positives more often get more updates
  and larger norms, so ``dot`` ranks popular items up by accident (on the embedded sample
  ``cosine`` alone is worse).
* ``logq``: the in-batch softmax draws its negatives in proportion to item popularity (every
  batch positive is another row's negative), so it learns ``log p(i|u) - log q(i)`` and ranks
  popular items down. ``logq: true`` subtracts ``log q(i)`` (q = the item's share of the training
  pairs) from every logit during training, the sampled-softmax correction of Yi et al. (RecSys
  2019, "Sampling-bias-corrected neural modeling"), so the scores estimate ``log p(i|u)``.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .base import (FRACTION, NON_NEGATIVE, POSITIVE, GraphModel, at_least, feature_buffer, info_nce,
                   lightgcn_layers, sample_bpr_batches)
from .data import GraphData
from .sparse import normalized_adjacency
from ..errors import DataError, OptionError

SSL_TASKS = ("FAC", "FD", "FM", "FD+FM", "none")


class SLMRec(GraphModel):
    defaults = {"embed_dim": 64, "n_layers": 3, "lr": 0.01, "weight_decay": 1e-4, "batch_size": 2048, "temp": 0.2,
                "ssl_task": "FAC", "ssl_temp": 0.2, "ssl_alpha": 0.1, "dropout": 0.3, "fusion": "concat",
                "fac_normalize": True, "mask_duplicates": True, "normalize_features": True, "modalities": None,
                "score": "dot", "logq": False}
    checks = {"embed_dim": at_least(2), "n_layers": at_least(0), "lr": POSITIVE, "weight_decay": NON_NEGATIVE,
              "batch_size": at_least(1), "temp": POSITIVE, "ssl_temp": POSITIVE, "ssl_alpha": NON_NEGATIVE,
              "dropout": FRACTION}

    def __init__(self, data: GraphData, cfg: dict | None = None):
        super().__init__(data, cfg)
        c = self.cfg
        if c["ssl_task"] not in SSL_TASKS:
            raise OptionError(f"SLMRec: ssl_task must be one of {SSL_TASKS}, got {c['ssl_task']!r}")
        if c["fusion"] not in ("concat", "mean"):
            raise OptionError(f"SLMRec: fusion must be 'concat' or 'mean', got {c['fusion']!r}")
        if c["score"] not in ("cosine", "dot"):
            raise OptionError(f"SLMRec: score must be 'cosine' or 'dot', got {c['score']!r}")
        mods = list(c["modalities"] or data.features)
        missing = [m for m in mods if m not in data.features]
        if not mods or missing:
            raise DataError(f"SLMRec needs item features; {data.name} has {sorted(data.features)}, asked for {mods}")
        self.modalities = mods
        d = c["embed_dim"]
        for m in mods:
            self.register_buffer(f"feat_{m}", feature_buffer(data.features[m], c["normalize_features"]), persistent=False)
        self.register_buffer("adj", normalized_adjacency(data.train_csr_torch()), persistent=False)
        cnt = torch.from_numpy(np.bincount(data.train_indices, minlength=data.n_items)).float()
        # log of each item's share of the training pairs (+1: items never seen stay finite)
        self.register_buffer("log_q", torch.log((cnt + 1) / (cnt + 1).sum()), persistent=False)
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, d)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, d)))
        self.dense = nn.ModuleDict({m: nn.Linear(data.features[m].shape[1], d) for m in mods})
        n_branch = 1 + len(mods)
        width = n_branch * d if c["fusion"] == "concat" else d
        self.fuse_user, self.fuse_item = nn.Linear(width, d), nn.Linear(width, d)
        if c["ssl_task"] == "FAC":
            # Stage k aligns the running id chain with modality k; the last stage projects to d // 2.
            outs = [d] * (len(mods) - 1) + [d // 2]
            self.fac_chain = nn.ModuleList([nn.Linear(d, o) for o in outs])
            self.fac_mod = nn.ModuleList([nn.Linear(d, o) for o in outs])
            for lin in [*self.fac_chain, *self.fac_mod]:
                nn.init.xavier_uniform_(lin.weight)
        self.drop = nn.Dropout(c["dropout"])

    def set_graph(self, data):
        super().set_graph(data)
        self.adj = normalized_adjacency(data.train_csr_torch()).to(self.user_emb.device)

    def configure_optimizers(self):
        # Adam with coupled L2 weight decay, as the original.
        return [torch.optim.Adam(self.parameters(), lr=self.cfg["lr"], weight_decay=self.cfg["weight_decay"])]

    # ---------------------------------------------------------------------------------- forward
    def item_inputs(self) -> list[torch.Tensor]:
        """Item-side input of each branch: [E_i, Linear(f_m) ...] (recomputed every forward)."""
        return [self.item_emb] + [self.dense[m](getattr(self, f"feat_{m}")) for m in self.modalities]

    def towers(self, inputs: list[torch.Tensor], dropout: bool = False, zero: int | None = None):
        """Per branch (users [U, d], items [I, d]) after LightGCN; branch ``zero`` gets a zero item input."""
        outs = []
        for b, x in enumerate(inputs):
            if b == zero:
                x = torch.zeros_like(x)
            h = lightgcn_layers(self.adj, torch.cat([self.user_emb, x]), self.cfg["n_layers"],
                                self.drop if dropout else None)
            outs.append((h[: self.n_users], h[self.n_users:]))
        return outs

    def fuse(self, outs) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cfg["fusion"] == "concat":
            u, i = torch.cat([o[0] for o in outs], 1), torch.cat([o[1] for o in outs], 1)
        else:
            u, i = torch.stack([o[0] for o in outs]).mean(0), torch.stack([o[1] for o in outs]).mean(0)
        return self.fuse_user(u), self.fuse_item(i)

    # ---------------------------------------------------------------------------------- losses
    def main_loss(self, zu: torch.Tensor, zi: torch.Tensor, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        logits = F.normalize(zu, dim=-1) @ F.normalize(zi, dim=-1).T / self.cfg["temp"]
        if self.cfg["logq"]:
            logits = logits - self.log_q[items][None, :]
        if self.cfg["mask_duplicates"]:
            # A repeated user's other positives, or another row's copy of the same item, are not negatives.
            dup = (users[:, None] == users[None, :]) | (items[:, None] == items[None, :])
            dup.fill_diagonal_(False)
            logits = logits.masked_fill(dup, float("-inf"))
        return F.cross_entropy(logits, torch.arange(len(zu), device=zu.device))

    def fac_loss(self, outs, items: torch.Tensor) -> torch.Tensor:
        t, norm = self.cfg["ssl_temp"], self.cfg["fac_normalize"]
        a = outs[0][1][items]
        total = 0.0
        for k in range(len(self.modalities)):
            a = self.fac_chain[k](a)
            b = self.fac_mod[k](outs[k + 1][1][items])
            total = total + info_nce(a, b, t, normalize=norm)
        return total

    def view_loss(self, inputs, users, items, dropout: bool, zero=(None, None)) -> torch.Tensor:
        t = self.cfg["ssl_temp"]
        (u1, i1), (u2, i2) = (self.fuse(self.towers(inputs, dropout, z)) for z in zero)
        mu = users if self.cfg["mask_duplicates"] else None
        mi = items if self.cfg["mask_duplicates"] else None
        return info_nce(u1[users], u2[users], t, mask_same=mu) + info_nce(i1[items], i2[items], t, mask_same=mi)

    def ssl_loss(self, inputs, outs, users, items, generator: torch.Generator) -> torch.Tensor:
        task = self.cfg["ssl_task"]
        if task == "FAC":
            return self.fac_loss(outs, items)
        if task == "FD":
            return self.view_loss(inputs, users, items, dropout=True)
        if task in ("FM", "FD+FM"):
            pick = torch.randperm(len(inputs), generator=generator)[:2].tolist()
            return self.view_loss(inputs, users, items, dropout=task == "FD+FM", zero=tuple(pick))
        return torch.zeros((), device=users.device)

    def batch_loss(self, users, items, generator) -> tuple[torch.Tensor, dict]:
        inputs = self.item_inputs()
        outs = self.towers(inputs)
        zu, zi = self.fuse(outs)
        main = self.main_loss(zu[users], zi[items], users, items)
        ssl = self.ssl_loss(inputs, outs, users, items, generator)
        return main + self.cfg["ssl_alpha"] * ssl, {"main": float(main.detach()), "ssl": float(ssl.detach()) if torch.is_tensor(ssl) else float(ssl)}

    def train_epoch(self, data, epoch, generator, optimizers):
        (opt,) = optimizers
        sums, n = {"loss": 0.0, "main": 0.0, "ssl": 0.0}, 0
        for u, p, _ in sample_bpr_batches(data, self.cfg["batch_size"], generator, negatives=False):
            u, p = u.to(self.device), p.to(self.device)
            loss, parts = self.batch_loss(u, p, generator)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for k, v in {"loss": float(loss.detach()), **parts}.items():
                sums[k] += v * len(u)
            n += len(u)
        return {k: v / max(n, 1) for k, v in sums.items()}

    @torch.no_grad()
    def embeddings(self):
        zu, zi = self.fuse(self.towers(self.item_inputs()))
        if self.cfg["score"] == "cosine":
            zu, zi = F.normalize(zu, dim=-1), F.normalize(zi, dim=-1)
        return zu, zi
