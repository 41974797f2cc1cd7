"""SASRec: the ID-only self-attentive sequential recommender (Kang & McAuley, 2018), as a baseline.

Its usual defaults (the ones RecBole ships): hidden 64, 2 post-LN layers, 2 heads, FFN 256, GELU,
dropout 0.5, LayerNorm eps 1e-12, causal self-attention over item + position embeddings, the user
vector read at the last real position, logits = user vector . item embedding (tied), trained with
full-softmax cross-entropy over every item (padding excluded, as for MISSRec).

It plugs into the same finetuning path as MISSRec: it exposes the methods that
:class:`missrec.objectives.FinetuneObjective` and :class:`missrec.model.MISSRecScorer` call
(``forward(seq, length, items) -> (u, reg)``, ``item_reps``, ``logits``, ``fuse``), so the shared
Trainer, the early stopping and the evaluator run it unchanged. It uses no item features: its
:class:`~missrec.items.ItemTable` is a zero-width placeholder (:func:`id_only_items`), and
:class:`SASRecTask` skips interest discovery.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .config import MAX_LAYERS, MAX_WIDTH, check_fields, check_memory, encoder_params
from .fsutil import atomic_write_json
from .items import ItemTable
from .tasks import FinetuneTask
from .errors import CorruptFileError, OptionError, UserError


@dataclass
class SASRecConfig:
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
    # Logits are raw dot products: the scorer divides by this, kept at 1.
    temperature: float = 1.0

    FIELDS = {
        "n_items": ("int", 0, 1 << 40), "hidden_size": ("int", 1, MAX_WIDTH), "n_heads": ("int", 1, MAX_WIDTH),
        "num_layers": ("int", 1, MAX_LAYERS), "inner_size": ("int", 1, MAX_WIDTH),
        "dropout": ("float", 0.0, 1.0, False, True), "hidden_act": ("choice", ("gelu", "relu")),
        "layer_norm_eps": ("float", 0.0, 1.0, True, False), "initializer_range": ("float", 0.0, 10.0, False, False),
        "max_seq_length": ("int", 1, 1 << 20), "model_type": ("choice", ("sasrec",)), "source": ("dict",),
        "temperature": ("float", 0.0, 1e6, True, False),
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

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SASRecConfig":
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise UserError(f"config.json: unknown keys {unknown}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())


class SASRec(nn.Module):
    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.config = c = config
        self.item_embedding = nn.Embedding(c.n_items + 1, c.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(c.max_seq_length, c.hidden_size)
        layer = nn.TransformerEncoderLayer(c.hidden_size, c.n_heads, c.inner_size, c.dropout, activation=c.hidden_act,
                                           layer_norm_eps=c.layer_norm_eps, batch_first=True, norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, c.num_layers, enable_nested_tensor=False)
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
        elif isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()

    def set_peft(self, enabled: bool) -> tuple[int, int]:
        if enabled:
            raise OptionError("SASRec has no parameter-efficient mode (it is trained from scratch)")
        for p in self.parameters():
            p.requires_grad_(True)
        n = sum(p.numel() for p in self.parameters())
        return n, n

    def forward(self, seq: torch.Tensor, length: torch.Tensor, items: ItemTable | None = None,
                text_table: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """User vectors [B, H] and a zero regulariser (the finetuning objective adds gamma x reg)."""
        B, L = seq.shape
        if L > self.config.max_seq_length:
            raise ValueError(f"sequence length {L} exceeds max_seq_length {self.config.max_seq_length}")
        x = self.item_embedding(seq) + self.position_embedding.weight[:L].unsqueeze(0)
        x = self.dropout(self.LayerNorm(x))
        # Histories are left-aligned, so under the causal mask real positions never see padding;
        # no key-padding mask is needed (and none can empty a row of the softmax).
        causal = torch.triu(torch.ones(L, L, dtype=torch.bool, device=seq.device), 1)
        out = self.encoder(x, mask=causal)
        u = out[torch.arange(B, device=seq.device), length - 1]
        return u, u.new_zeros(())

    def item_reps(self, items: ItemTable | None = None, ids: torch.Tensor | None = None, **_):
        e = self.item_embedding.weight[1:] if ids is None else self.item_embedding(ids)
        # The scorer protocol carries (text, image, id) reps; SASRec's one table fills the first two.
        return e, e, None

    def fuse(self, s_t: torch.Tensor, s_v: torch.Tensor, s_id: torch.Tensor | None) -> torch.Tensor:
        return s_t

    def logits(self, u: torch.Tensor, reps) -> torch.Tensor:
        return u @ reps[0].t()

    def save_pretrained(self, path: str | Path, items: ItemTable | None = None) -> None:
        from .checkpoint import save_model
        save_model(path, self, items)


def id_only_items(n_items: int, device=None) -> ItemTable:
    """A placeholder item table (no features) so that the shared task, trainer and checkpoints work."""
    t = ItemTable(torch.zeros(n_items + 1, 0), torch.zeros(n_items + 1, 0), hidden_size=1)
    return t.to(device) if device is not None else t


class SASRecTask(FinetuneTask):
    """Finetuning as for MISSRec, minus the per-epoch interest discovery SASRec has no use for."""

    def on_epoch_start(self, epoch, acc):
        return None


def load_sasrec(folder: str | Path, **overrides) -> SASRec:
    """A SASRec from a checkpoint folder; use :func:`missrec.model.load_model`, which dispatches here."""
    from .checkpoint import CONFIG, WEIGHTS, read_weights
    from .errors import reading

    folder = Path(folder)
    with reading(folder / CONFIG, "config.json", fix="download or save the checkpoint again"):
        d = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    if not isinstance(d, dict):
        raise CorruptFileError(f"{folder / CONFIG}: expected a JSON object of model options")
    d.update({k: v for k, v in overrides.items() if k in {f.name for f in dataclasses.fields(SASRecConfig)}})
    try:
        model = SASRec(SASRecConfig.from_dict(d))
    except (TypeError, ValueError) as e:
        raise UserError(f"{folder / CONFIG}: {e}") from None
    state = read_weights(folder)
    wpath = folder / WEIGHTS
    own = model.state_dict()
    if set(state) != set(own):
        raise UserError(f"{wpath}: weights do not match a SASRec (missing {sorted(set(own) - set(state))[:4]}, "
                         f"unexpected {sorted(set(state) - set(own))[:4]})")
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise UserError(f"{wpath}: '{k}' has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}")
    model.load_state_dict(state)
    return model
