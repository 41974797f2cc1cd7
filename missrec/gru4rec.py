"""GRU4Rec (Hidasi et al., 2016), as RecBole ships it: the ID-only recurrent baseline.

item embedding (64) -> dropout (0.3) -> GRU (hidden 128, 1 layer, no biases) -> linear back to the
embedding size; the user vector is that output at the last real position, scored against the
(tied) item embeddings and trained with full-softmax cross-entropy over every item
(missrec/seqmodel.py:ItemIdModel). Initialisation as RecBole's: xavier-normal embeddings,
xavier-uniform GRU weights. Model options: --hidden_size (GRU width), --num_encoder_layers (GRU
layers), --dropout, --max_seq_length.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .seqmodel import ItemIdModel, ModelConfig


@dataclass
class GRU4RecConfig(ModelConfig):
    n_items: int = 0
    embedding_size: int = 64
    hidden_size: int = 128
    num_layers: int = 1
    dropout: float = 0.3
    max_seq_length: int = 50
    model_type: str = "gru4rec"
    source: dict = field(default_factory=dict)
    catalogue: dict = field(default_factory=dict)  # the items the ID table was trained on

    def __post_init__(self):
        if self.model_type != "gru4rec":
            raise ValueError(f"model_type must be 'gru4rec', got {self.model_type!r}")
        if self.n_items <= 0:
            raise ValueError("GRU4Rec needs n_items > 0 (size of the item-ID table)")


class GRU4Rec(ItemIdModel):
    model_type = "gru4rec"
    config_cls = GRU4RecConfig
    options = {"hidden_size": "hidden_size", "num_encoder_layers": "num_layers", "dropout": "dropout",
               "max_seq_length": "max_seq_length"}
    architecture = ("embedding_size", "hidden_size", "num_layers")
    fixed_fields = ("embedding_size", "hidden_size", "num_layers", "max_seq_length", "n_items")
    card_title = "GRU4Rec (ID-only baseline)"

    def __init__(self, config: GRU4RecConfig):
        super().__init__()
        self.config = c = config
        self.item_embedding = nn.Embedding(c.n_items + 1, c.embedding_size, padding_idx=0)
        self.emb_dropout = nn.Dropout(c.dropout)
        self.gru_layers = nn.GRU(c.embedding_size, c.hidden_size, c.num_layers, bias=False, batch_first=True)
        self.dense = nn.Linear(c.hidden_size, c.embedding_size)
        nn.init.xavier_normal_(self.item_embedding.weight)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        for name, w in self.gru_layers.named_parameters():
            nn.init.xavier_uniform_(w)

    def encode(self, seq: torch.Tensor, length: torch.Tensor, items=None) -> torch.Tensor:
        """User vectors [B, embedding_size]: the projected GRU output at each row's last real position.
        Histories are left-aligned, so the padding after it never reaches that output."""
        out, _ = self.gru_layers(self.emb_dropout(self.item_embedding(seq)))
        return self.dense(out[torch.arange(seq.shape[0], device=seq.device), length - 1])

    @classmethod
    def card_summary(cls, config: dict) -> str:
        return ("Session-based recurrent recommender over item IDs (GRU4Rec), trained with full-softmax "
                "cross-entropy by the MISSRec (rebuilt) training loop, as an ID-only baseline of its tables.")
