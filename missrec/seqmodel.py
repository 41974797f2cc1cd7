"""The sequential-model contract: what the trainer, the objective, the evaluator, recommend, the
model card and the factory call on a model. MISSRec (missrec/model.py), SASRec (missrec/sasrec.py)
and GRU4Rec (missrec/gru4rec.py) implement it; missrec/model_registry.py lists them by
``model_type``. docs/EXTENDING.md shows how to add one.

A model is an ``nn.Module`` built as ``Model(config)`` from its ``config_cls`` (a dataclass with
``to_dict``/``from_dict``; its ``model_type`` is the registry key and is stored in config.json).
Item-side data a model reads beside the ids (MISSRec's feature tables and interest clusters) is an
*item context* that stays outside the module (DDP would broadcast it as buffers):
``make_items(ds, device)`` builds it, every call below receives it, and ID-only models have none
(``None``).

* ``encode(seq [B, L], length [B], items) -> [B, H]`` user vectors (histories left-aligned, 0 = padding);
* ``candidates(items)`` -> the representation of every item 1..n_items (computed once per evaluation);
* ``score(user, cands, ids=None) -> [B, M]`` scores against items ``ids`` (None: all, in id order);
* ``score_pairs(user, cands, ids [B]) -> [B]`` row b against ``ids[b]`` (= matching ``score`` entries);
* ``loss(batch, items) -> {"ce": ..., ["reg": ...]}`` the finetuning loss terms; the objective adds
  ``--gamma_reg`` x ``reg`` to ``ce`` (missrec/objectives.py:FinetuneObjective);
* optional hooks: ``on_epoch_start`` (MISSRec's interest discovery), ``load_item_state`` (state of
  the item context saved with a checkpoint), ``prepare_state`` (adapt stored weights on load).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import save_model
from .errors import OptionError


class ModelConfig:
    """Mixin for a model's config dataclass: config.json <-> dataclass, unknown keys refused."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"config.json: unknown keys {unknown}")
        return cls(**d)


class SequentialModel(nn.Module):
    """Base class of every sequential recommender; subclasses set the class attributes and
    implement ``encode``, ``candidates``, ``score``, ``score_pairs`` and ``loss``."""

    model_type: str = ""  # registry key, written to config.json
    config_cls: type = None  # the config dataclass (to_dict / from_dict)
    #: dataset feature files the model reads ("text", "image"); () = item ids only
    features: tuple[str, ...] = ()
    #: feature files it reads when present (absent: zero rows)
    optional_features: tuple[str, ...] = ()
    #: command-line model option (missrec/args.py:ModelArgs) -> config field it sets; others are refused
    options: dict[str, str] = {}
    #: config fields a checkpoint fixes: an explicit conflicting option with --pretrained is an error
    architecture: tuple[str, ...] = ()
    #: config fields a resumed run must match (missrec/checkpoint.py:check_resumable)
    fixed_fields: tuple[str, ...] = ()
    #: config fields that are choices of the run (e.g. attention path): an explicit run option overrides
    #: the stored value, and the override is printed
    runtime_fields: tuple[str, ...] = ()
    #: can start from a pretrained checkpoint (--pretrained); ID-only models train from scratch
    transfers: bool = False
    card_title: str = ""
    card_tags: tuple[str, ...] = ()
    card_files: tuple[str, ...] = ()  # files beside config.json + model.safetensors

    @classmethod
    def card_tags_for(cls, config: dict) -> tuple[str, ...]:
        """The model card's tags for a checkpoint of this config."""
        return cls.card_tags

    def data_notes(self, ds) -> list[str]:
        """Lines a run prints about the data this model reads (e.g. an absent optional feature file)."""
        return [f"no {f} features ({ds.name}.{FEATURE_SUFFIXES[f]} absent): zero rows for all {ds.n_items} items"
                for f in self.optional_features if f not in ds.features]

    # ------------------------------------------------------------------ building
    @classmethod
    def config_fields(cls, options: dict) -> dict:
        """Command-line model options -> config fields; an option this model has not is an OptionError."""
        out = {}
        for name, value in options.items():
            if name not in cls.options:
                known = ", ".join(f"--{o}" for o in cls.options) or "none"
                raise OptionError(f"--{name}", f"--model {cls.model_type} has no such option (its model options: {known})")
            out[cls.options[name]] = value
        return out

    @classmethod
    def config_for(cls, ds, options: dict, *, mode: str = "transductive"):
        """A fresh model's config for dataset ``ds`` (an AtomicDataset) and the run's explicit options."""
        return cls.config_cls(n_items=ds.n_items, **cls.config_fields(options))

    @classmethod
    def adapt_config(cls, stored: dict, ds, *, mode: str, source) -> dict:
        """A pretrained checkpoint's config fitted to finetuning on ``ds`` (only for ``transfers`` models)."""
        return dict(stored)

    @classmethod
    def option_default(cls, name: str):
        """The config default of a command-line model option (None when the model has not the option)."""
        f = {f.name: f for f in dataclasses.fields(cls.config_cls)}.get(cls.options.get(name))
        return None if f is None or f.default is dataclasses.MISSING else f.default

    @property
    def uses_item_ids(self) -> bool:
        """Whether the model has an item-ID table (its rows are one catalogue's items)."""
        return True

    def make_items(self, ds, device=None):
        """The item context for dataset ``ds`` (None: the model reads item ids only)."""
        return None

    def prepare_state(self, state: dict, stored: dict, folder: Path, dataset=None) -> set[str]:
        """Adapt a checkpoint's ``state`` (in place) to this model; returns keys allowed to be absent."""
        return set()

    # ------------------------------------------------------------------ the contract
    def encode(self, seq: torch.Tensor, length: torch.Tensor, items=None) -> torch.Tensor:
        raise NotImplementedError

    def candidates(self, items=None):
        raise NotImplementedError

    def score(self, user: torch.Tensor, cands, ids: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def score_pairs(self, user: torch.Tensor, cands, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, batch: dict, items=None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def score_all(self, user: torch.Tensor, items=None) -> torch.Tensor:
        """[B, n_items] scores of every item 1..n_items."""
        return self.score(user, self.candidates(items))

    # ------------------------------------------------------------------ optional hooks
    def on_epoch_start(self, items, epoch: int, args, accelerator, seed: int) -> dict | None:
        """Per-epoch work before training (MISSRec: interest discovery); a dict is logged."""
        return None

    def load_item_state(self, items, folder: Path, *, interest_ratio: float | None = None, seed: int = 0) -> None:
        """Restore the item context's state saved in checkpoint ``folder`` (no-op without one)."""
        return None

    def set_peft(self, enabled: bool) -> tuple[int, int]:
        """Freeze all but the parameter-efficient subset; returns (trainable, total) parameter counts."""
        if enabled:
            raise OptionError("--peft", f"--model {self.model_type} has no parameter-efficient mode (it trains from scratch)")
        for p in self.parameters():
            p.requires_grad_(True)
        n = sum(p.numel() for p in self.parameters())
        return n, n

    @classmethod
    def card_summary(cls, config: dict) -> str:
        """The model card's description paragraph (missrec/modelcard.py)."""
        return ""

    # ------------------------------------------------------------------ files
    def save_pretrained(self, path: str | Path, items=None) -> Path:
        return save_model(path, self, items)


class ModelScorer:
    """The evaluator's scorer protocol (missrec/evaluate.py) for any :class:`SequentialModel`."""

    def __init__(self, model: SequentialModel, items=None):
        self.model, self.items = model, items
        self._cands = None

    @property
    def device(self):
        return next(iter(self.model.parameters())).device

    @torch.no_grad()
    def encode(self, seq, length):
        dev = self.device
        return self.model.encode(seq.to(dev), length.to(dev), self.items).float()

    def _all(self):
        if self._cands is None:
            self._cands = self.model.candidates(self.items)
        return self._cands

    @torch.no_grad()
    def score(self, u, item_ids):
        return self.model.score(u, self._all(), item_ids.to(self.device))

    @torch.no_grad()
    def score_pairs(self, u, item_ids):
        return self.model.score_pairs(u, self._all(), item_ids.to(self.device))


class ItemIdModel(SequentialModel):
    """A model whose items are rows of its own ID table ``item_embedding`` (row 0 = padding), scored
    by dot product with the user vector (tied input/output embeddings) and trained with softmax
    cross-entropy over every item: SASRec, GRU4Rec. Subclasses implement ``__init__`` and ``encode``."""

    card_tags = ("id-based",)

    def candidates(self, items=None) -> torch.Tensor:
        return self.item_embedding.weight[1:].float()

    def score(self, user, cands, ids=None) -> torch.Tensor:
        return user @ (cands if ids is None else cands[ids - 1]).t()

    def score_pairs(self, user, cands, ids) -> torch.Tensor:
        return (user * cands[ids - 1]).sum(-1)

    def loss(self, batch: dict, items=None) -> dict:
        u = self.encode(batch["seq"], batch["length"], items)
        logits = u @ self.item_embedding.weight[1:].t()  # every item but padding
        return {"ce": F.cross_entropy(logits.float(), batch["target"] - 1)}

    def forward(self, seq: torch.Tensor, length: torch.Tensor, items=None) -> torch.Tensor:
        return self.encode(seq, length, items)
