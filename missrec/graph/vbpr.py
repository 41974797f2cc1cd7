"""VBPR (He & McAuley, AAAI 2016), with any number of modalities.

score(u, i) = gamma_u . gamma_i + theta_u . (E f_i) + beta_i + beta' . f_i, where f_i is the
concatenation of the item's (row-L2-normalised) modality features and E a learned projection;
BPR loss with L2 regularisation of the batch rows: ``reg`` on the latent factors (gamma_u,
theta_u, gamma_i), ``bias_reg`` on beta_i (default: ``reg``) and ``proj_reg`` on E and beta'
(the feature side the VBPR paper regularises too; 0 by default). ``weight_decay`` is Adam's
coupled decay of every parameter. :meth:`VBPR.embeddings` folds the biases into an extra column
(user side 1) so that the evaluator's dot product is the exact score.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import NON_NEGATIVE, POSITIVE, GraphModel, at_least, bpr_epoch, bpr_loss, feature_buffer, l2_reg
from .data import GraphData
from ..errors import DataError


class VBPR(GraphModel):
    defaults = {"embed_dim": 64, "visual_dim": 64, "lr": 1e-3, "reg": 1e-4, "batch_size": 2048, "init_std": 0.1, "weight_decay": 0.0,
                "bias_reg": None, "proj_reg": 0.0, "normalize_features": True, "modalities": None}
    checks = {"embed_dim": at_least(1), "visual_dim": at_least(1), "lr": POSITIVE, "reg": NON_NEGATIVE,
              "batch_size": at_least(1), "init_std": POSITIVE, "weight_decay": NON_NEGATIVE, "bias_reg": NON_NEGATIVE,
              "proj_reg": NON_NEGATIVE}

    def __init__(self, data: GraphData, cfg: dict | None = None):
        super().__init__(data, cfg)
        c = self.cfg
        mods = list(c["modalities"] or sorted(data.features))
        missing = [m for m in mods if m not in data.features]
        if not mods or missing:
            raise DataError(f"VBPR needs item features; {data.name} has {sorted(data.features)}, asked for {mods}")
        self.modalities = mods
        feats = torch.cat([feature_buffer(data.features[m], c["normalize_features"]) for m in mods], dim=1)
        self.register_buffer("features", feats, persistent=False)
        d, k, std = c["embed_dim"], c["visual_dim"], c["init_std"]
        self.gamma_u = nn.Parameter(torch.randn(self.n_users, d) * std)
        self.gamma_i = nn.Parameter(torch.randn(self.n_items, d) * std)
        self.theta_u = nn.Parameter(torch.randn(self.n_users, k) * std)
        self.proj = nn.Linear(feats.shape[1], k, bias=False)
        nn.init.xavier_uniform_(self.proj.weight)
        self.beta_i = nn.Parameter(torch.zeros(self.n_items))
        self.beta_f = nn.Parameter(torch.zeros(feats.shape[1]))

    def configure_optimizers(self):
        return [torch.optim.Adam(self.parameters(), lr=self.cfg["lr"], weight_decay=self.cfg["weight_decay"])]

    def _items(self, idx: torch.Tensor) -> torch.Tensor:
        f = self.features[idx]
        bias = self.beta_i[idx] + f @ self.beta_f
        return torch.cat([self.gamma_i[idx], self.proj(f), bias[:, None]], dim=1)

    def _users(self, idx: torch.Tensor) -> torch.Tensor:
        one = torch.ones(len(idx), 1, device=self.gamma_u.device)
        return torch.cat([self.gamma_u[idx], self.theta_u[idx], one], dim=1)

    def train_epoch(self, data, epoch, generator, optimizers):
        c = self.cfg
        bias_reg = c["reg"] if c["bias_reg"] is None else c["bias_reg"]

        def batch_loss(u, p, q):
            ue, pe, qe = self._users(u), self._items(p), self._items(q)
            loss = bpr_loss((ue * pe).sum(-1), (ue * qe).sum(-1))
            loss = loss + c["reg"] * l2_reg(self.gamma_u[u], self.theta_u[u], self.gamma_i[p], self.gamma_i[q])
            if bias_reg:
                loss = loss + bias_reg * l2_reg(self.beta_i[p][:, None], self.beta_i[q][:, None])
            if c["proj_reg"]:
                # once per batch, like the per-row terms' 1/batch scale
                loss = loss + c["proj_reg"] * (self.proj.weight.pow(2).sum() + self.beta_f.pow(2).sum()) / (2 * len(u))
            return loss
        return bpr_epoch(self, data, generator, optimizers[0], batch_loss)

    @torch.no_grad()
    def embeddings(self):
        dev = self.gamma_u.device
        users = self._users(torch.arange(self.n_users, device=dev))
        items = torch.cat([self._items(torch.arange(s, min(s + 8192, self.n_items), device=dev))
                           for s in range(0, self.n_items, 8192)])
        return users, items
