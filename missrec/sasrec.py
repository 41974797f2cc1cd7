"""SASRec: the ID-only self-attentive sequential recommender (Kang & McAuley, 2018), as a baseline.

Its usual defaults (the ones RecBole ships): hidden 64, 2 post-LN layers, 2 heads, FFN 256, GELU,
dropout 0.5, LayerNorm eps 1e-12, causal self-attention over item + position embeddings, the user
vector read at the last real position, logits = user vector . item embedding (tied), trained with
full-softmax cross-entropy over every item (padding excluded, as for MISSRec).

Each layer is the reference's: attention (dropout on the attention weights) -> dropout -> add & LN
-> FFN (linear, activation, linear; no dropout inside) -> dropout -> add & LN. Every linear map
(the fused QKV projection too) starts from normal(0, 0.02), drawn independently per layer.
Parameter names are those of ``nn.TransformerEncoderLayer``, so checkpoints written before this
layer existed load unchanged. It implements the model contract of missrec/seqmodel.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .config import MAX_LAYERS, MAX_WIDTH, check_fields, check_memory, encoder_params
from .errors import OptionError, UserError
from .seqmodel import ItemIdModel, ModelConfig

ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}


@dataclass
class SASRecConfig(ModelConfig):
    n_items: int = 0
    hidden_size: int = 64
    n_heads: int = 2
    num_layers: int = 2
    inner_size: int = 256
    dropout: float = 0.5
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    max_seq_length: int = 50
    model_type: str = "sasrec"
    source: dict = field(default_factory=dict)
    # The items the ID table was trained on ({name, n_items, items_sha256}, AtomicDataset.catalogue()).
    catalogue: dict = field(default_factory=dict)

    FIELDS = {
        "n_items": ("int", 0, 1 << 40), "hidden_size": ("int", 1, MAX_WIDTH), "n_heads": ("int", 1, MAX_WIDTH),
        "num_layers": ("int", 1, MAX_LAYERS), "inner_size": ("int", 1, MAX_WIDTH),
        "dropout": ("float", 0.0, 1.0, False, True), "hidden_act": ("choice", ("gelu", "relu")),
        "layer_norm_eps": ("float", 0.0, 1.0, True, False), "initializer_range": ("float", 0.0, 10.0, False, False),
        "max_seq_length": ("int", 1, 1 << 20), "model_type": ("choice", ("sasrec",)), "source": ("dict",),
        "catalogue": ("dict",),
    }

    def n_parameters(self) -> int:
        h = self.hidden_size
        return (self.n_items + 1 + self.max_seq_length + 2) * h + encoder_params(self.num_layers, h, self.inner_size)

    def __post_init__(self):
        check_fields(self, self.FIELDS)
        check_memory(self.n_parameters(), "SASRec model")
        if self.model_type != "sasrec":
            raise UserError(f"model_type must be 'sasrec', got {self.model_type!r}")
        if self.n_items <= 0:
            raise UserError("SASRec needs n_items > 0 (size of the item-ID table)")
        if self.hidden_size % self.n_heads:
            raise OptionError(f"hidden_size {self.hidden_size} is not divisible by n_heads {self.n_heads}")
        if self.hidden_act not in ACTIVATIONS:
            raise OptionError(f"hidden_act must be one of {', '.join(ACTIVATIONS)}, got {self.hidden_act!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "SASRecConfig":
        d = dict(d)
        if d.get("temperature", 1.0) == 1.0:  # written (always 1.0, unused) by earlier versions
            d.pop("temperature", None)
        return super().from_dict(d)


class SASRecLayer(nn.Module):
    """Post-LN transformer layer as in the reference SASRec (no dropout inside the FFN)."""

    def __init__(self, c: SASRecConfig):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(c.hidden_size, c.n_heads, dropout=c.dropout, batch_first=True)
        self.linear1 = nn.Linear(c.hidden_size, c.inner_size)
        self.linear2 = nn.Linear(c.inner_size, c.hidden_size)
        self.norm1 = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.norm2 = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout1 = nn.Dropout(c.dropout)
        self.dropout2 = nn.Dropout(c.dropout)
        self.activation = ACTIVATIONS[c.hidden_act]

    def forward(self, x: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        a = self.self_attn(x, x, x, attn_mask=causal, need_weights=False)[0]
        x = self.norm1(x + self.dropout1(a))
        return self.norm2(x + self.dropout2(self.linear2(self.activation(self.linear1(x)))))


class SASRec(ItemIdModel):
    model_type = "sasrec"
    config_cls = SASRecConfig
    options = {"hidden_size": "hidden_size", "n_heads": "n_heads", "inner_size": "inner_size",
               "num_encoder_layers": "num_layers", "dropout": "dropout", "max_seq_length": "max_seq_length"}
    architecture = ("hidden_size", "n_heads", "num_layers", "inner_size")
    fixed_fields = ("hidden_size", "n_heads", "num_layers", "inner_size", "max_seq_length", "n_items")
    card_title = "SASRec (ID-only baseline)"
    card_tags = ("id-based",)

    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.config = c = config
        self.item_embedding = nn.Embedding(c.n_items + 1, c.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(c.max_seq_length, c.hidden_size)
        # Built one by one (not deep copies of one layer), so every layer draws its own weights.
        self.encoder = nn.ModuleDict({"layers": nn.ModuleList(SASRecLayer(c) for _ in range(c.num_layers))})
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.dropout)
        self.apply(self._init_weights)

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(0.0, std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.data.zero_()
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.MultiheadAttention):  # the fused Q, K, V projection is no nn.Linear
            module.in_proj_weight.data.normal_(0.0, std)
            module.in_proj_bias.data.zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()

    def encode(self, seq: torch.Tensor, length: torch.Tensor, items=None) -> torch.Tensor:
        """User vectors [B, H]: the output at each row's last real position."""
        B, L = seq.shape
        if L > self.config.max_seq_length:
            raise ValueError(f"sequence length {L} exceeds max_seq_length {self.config.max_seq_length}")
        x = self.item_embedding(seq) + self.position_embedding.weight[:L].unsqueeze(0)
        x = self.dropout(self.LayerNorm(x))
        # Histories are left-aligned, so under the causal mask real positions never see padding;
        # no key-padding mask is needed (and none can empty a row of the softmax).
        causal = torch.triu(torch.ones(L, L, dtype=torch.bool, device=seq.device), 1)
        for layer in self.encoder["layers"]:
            x = layer(x, causal)
        return x[torch.arange(B, device=seq.device), length - 1]

    @classmethod
    def card_summary(cls, config: dict) -> str:
        return ("Self-attentive sequential recommender over item IDs, trained with full-softmax "
                "cross-entropy by the MISSRec (rebuilt) training loop, as the ID-only baseline of its tables.")
