"""LightGCN (He et al., SIGIR 2020): ID embeddings propagated over the symmetric-normalised
user-item graph, mean over layers, BPR loss. The collaborative reference point (no features)."""
from __future__ import annotations

import torch
from torch import nn

from .base import NON_NEGATIVE, POSITIVE, GraphModel, at_least, bpr_epoch, bpr_loss, l2_reg, lightgcn_layers
from .data import GraphData
from .sparse import normalized_adjacency


class LightGCN(GraphModel):
    defaults = {"embed_dim": 64, "n_layers": 3, "lr": 1e-3, "reg": 1e-4, "batch_size": 2048, "init_std": 0.1}
    checks = {"embed_dim": at_least(1), "n_layers": at_least(0), "lr": POSITIVE, "reg": NON_NEGATIVE,
              "batch_size": at_least(1), "init_std": POSITIVE}

    def __init__(self, data: GraphData, cfg: dict | None = None):
        super().__init__(data, cfg)
        c = self.cfg
        self.embedding = nn.Parameter(torch.randn(self.n_users + self.n_items, c["embed_dim"]) * c["init_std"])
        self.register_buffer("adj", normalized_adjacency(data.train_csr_torch()), persistent=False)

    def set_graph(self, data):
        super().set_graph(data)
        self.adj = normalized_adjacency(data.train_csr_torch()).to(self.embedding.device)

    def configure_optimizers(self):
        return [torch.optim.Adam(self.parameters(), lr=self.cfg["lr"])]

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        out = lightgcn_layers(self.adj, self.embedding, self.cfg["n_layers"])
        return out[: self.n_users], out[self.n_users:]

    def train_epoch(self, data, epoch, generator, optimizers):
        def batch_loss(u, p, q):
            ue, ie = self.propagate()
            ego = self.embedding
            return (bpr_loss((ue[u] * ie[p]).sum(-1), (ue[u] * ie[q]).sum(-1))
                    + self.cfg["reg"] * l2_reg(ego[u], ego[self.n_users + p], ego[self.n_users + q]))
        return bpr_epoch(self, data, generator, optimizers[0], batch_loss)

    @torch.no_grad()
    def embeddings(self):
        return self.propagate()
