"""The MISSRec model: interest-aware encoder-decoder with dynamic multi-modal fusion.

Module names follow the original implementation (``position_embedding``, ``trm_model``,
``LayerNorm``, ``fusion_factor``, ``text_adaptor``, ``img_adaptor``, ``item_embedding``) so an
original state_dict loads by key renaming only (see missrec/pth.py).

Differences from the original, on purpose: the padding item is never scored (nor a class of the
training loss), and by default (``interest_reg="mean"``) the interest regulariser pools only real
interest tokens and averages over the batch; ``interest_reg="original"`` computes the original's
form exactly. Interchangeable paths compute the sequence side: ``attention_impl="packed"`` or
``"jagged"`` (real tokens only, missrec/packed.py; attention per length bucket or on nested jagged
tensors) and ``"padded"`` (nn.Transformer on padded batches).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import packed
from .checkpoint import (WEIGHTS, catalogue_of, other_catalogue, read_config, read_model_type, read_weights,
                         save_model)
from .config import MISSRecConfig
from .hub import resolve
from .interest import interest_tokens, interest_tokens_packed
from .items import ItemTable


def regulariser_mean(real_sum: torch.Tensor, n_real: torch.Tensor) -> torch.Tensor:
    """Squared norm of each row's mean real encoder output, averaged over rows, / hidden size."""
    pooled = real_sum / n_real.clamp_min(1).unsqueeze(1).to(real_sum.dtype)
    return (pooled * pooled).sum(1).mean() / pooled.shape[1]


def regulariser_original(real_sum: torch.Tensor, pad_memory: torch.Tensor, n_real: torch.Tensor,
                         has_pad: torch.Tensor) -> torch.Tensor:
    """The original's form: memory summed over all T slots of the padded token batch (padding
    included), times the row's fraction of real tokens, squared norm summed over rows, / hidden.

    real_sum: [B, H] encoder outputs summed over real tokens; pad_memory: [B, H] the output at a
    padding slot; has_pad: [B] 1 where the original's token set held the padding id 0 too.
    T = max(n_real + has_pad) is the original's padded width.
    """
    width = (n_real + has_pad).max()
    n = n_real.to(real_sum.dtype).unsqueeze(1)
    pooled = (n / width) * (real_sum + (width - n) * pad_memory)
    return (pooled * pooled).sum() / pooled.shape[1]


class MISSRec(nn.Module):
    def __init__(self, config: MISSRecConfig):
        super().__init__()
        self.config = c = config
        self.position_embedding = nn.Embedding(c.max_seq_length, c.hidden_size)
        self.trm_model = nn.Transformer(
            d_model=c.hidden_size, nhead=c.n_heads, num_encoder_layers=c.num_encoder_layers,
            num_decoder_layers=c.num_decoder_layers, dim_feedforward=c.inner_size, dropout=c.dropout,
            activation=c.hidden_act, layer_norm_eps=c.layer_norm_eps, batch_first=True, norm_first=False,
        )
        # The nested-tensor fast path changes numerics between train and eval; keep one code path.
        self.trm_model.encoder.enable_nested_tensor = False
        self.trm_model.encoder.use_nested_tensor = False
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.dropout)
        self.text_adaptor = nn.Linear(c.text_dim, c.hidden_size)
        # image_dim None: a text-only model (no image modality at all, not zero image rows).
        self.img_adaptor = nn.Linear(c.image_dim, c.hidden_size) if c.image_dim is not None else None
        # The text/image fusion weight exists only with two modalities (an unused parameter would
        # also break multi-process training, where every parameter must get a gradient).
        self.fusion_factor = nn.Parameter(torch.tensor(0.0)) if self.img_adaptor is not None else None
        self.item_embedding = nn.Embedding(c.n_items + 1, c.hidden_size, padding_idx=0) if c.use_id else None
        self.apply(self._init_weights)
        if self.fusion_factor is not None:
            with torch.no_grad():
                self.fusion_factor.zero_()

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(0.0, std)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(0.0, std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()

    # ------------------------------------------------------------------ parameter groups
    def peft_parameter_names(self) -> list[str]:
        """What parameter-efficient finetuning trains: adaptors, input LayerNorm, fusion, ID table."""
        prefixes = ("text_adaptor.", "img_adaptor.", "LayerNorm.", "fusion_factor", "item_embedding.")
        return [n for n, _ in self.named_parameters() if n.startswith(prefixes)]

    def set_peft(self, enabled: bool) -> tuple[int, int]:
        keep = set(self.peft_parameter_names()) if enabled else None
        for n, p in self.named_parameters():
            p.requires_grad_(keep is None or n in keep)
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return trainable, sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ sequence side
    def adapt(self, ids: torch.Tensor, items: ItemTable, text_table: torch.Tensor | None = None) -> torch.Tensor:
        """Sum of the adapted modality vectors of the given item ids (the sequence input)."""
        x = self.text_adaptor((items.text if text_table is None else text_table)[ids])
        if self.img_adaptor is not None:
            x = x + self.img_adaptor(items.image[ids])
        return x

    def forward(self, seq: torch.Tensor, length: torch.Tensor, items: ItemTable,
                text_table: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """User vectors [B, H] (L2-normalised) and the interest regulariser (scalar).

        seq: [B, L] item ids (0 = padding, left-aligned), length: [B] (>= 1).
        text_table: optional [n_items + 1, text_dim] table replacing ``items.text`` (word-drop view).
        """
        B, L = seq.shape
        if L > self.config.max_seq_length:
            raise ValueError(f"sequence length {L} exceeds max_seq_length {self.config.max_seq_length}")
        if self.config.attention_impl != "padded":
            return self._forward_packed(seq, length, items, text_table)
        return self._forward_padded(seq, length, items, text_table)

    def _has_pad_token(self, length: torch.Tensor) -> torch.Tensor:
        # The original always padded histories to max_seq_length, so a shorter row's set of
        # interest ids contained the padding id 0 as one more (masked) token.
        return (length < self.config.max_seq_length).long()

    def _forward_padded(self, seq, length, items, text_table):
        """The reference path: every row padded to the batch width, as nn.Transformer runs it."""
        B, L = seq.shape
        # Adapt each distinct item of the batch once (far fewer rows than B x L positions), then
        # scatter back: the adaptors are linear per row, so this is exact.
        uniq, inv = torch.unique(seq, return_inverse=True)
        x = self.adapt(uniq, items, text_table)[inv]
        x = x + self.position_embedding.weight[:L].unsqueeze(0)
        if self.item_embedding is not None:
            x = x + self.item_embedding(seq)
        x = self.dropout(self.LayerNorm(x))

        tokens = interest_tokens(items.text_interest[seq], items.image_interest[seq])
        original = self.config.interest_reg == "original"
        if original:
            # One extra padding slot per row: its encoder output is the memory the original
            # pooled at each of that row's padding positions (all equal: zero input, same keys).
            tokens = F.pad(tokens, (0, 1))
        src_pad = tokens == 0
        memory = self.trm_model.encoder(items.centroids[tokens].to(x.dtype), src_key_padding_mask=src_pad)
        real = (~src_pad).unsqueeze(-1).to(memory.dtype)
        n_real = (~src_pad).sum(1)
        real_sum = (memory * real).sum(1)
        if original:
            reg = regulariser_original(real_sum, memory[:, -1], n_real, self._has_pad_token(length))
            memory, src_pad = memory[:, :-1], src_pad[:, :-1]
        else:
            reg = regulariser_mean(real_sum, n_real)

        out = self.trm_model.decoder(x, memory, tgt_key_padding_mask=seq == 0, memory_key_padding_mask=src_pad)
        u = out[torch.arange(B, device=seq.device), length - 1]
        return F.normalize(u, dim=-1), reg

    def _forward_packed(self, seq, length, items, text_table):
        """Real tokens only: [sum(length), H] item tokens and [sum(n_interests), H] interest tokens."""
        B, L = seq.shape
        dev = seq.device
        impl = self.config.attention_impl
        pos = torch.arange(L, device=dev).unsqueeze(0).expand(B, L)
        is_real = pos < length.unsqueeze(1)
        flat, flat_pos = seq[is_real], pos[is_real]
        flat_row = torch.arange(B, device=dev).repeat_interleave(length)
        uniq, inv = torch.unique(flat, return_inverse=True)
        x = self.adapt(uniq, items, text_table)[inv]
        x = x + self.position_embedding.weight[flat_pos]
        if self.item_embedding is not None:
            x = x + self.item_embedding(flat)
        x = packed.dropout(self.LayerNorm(x), self.dropout.p, self.training)

        tok, tok_row, n_int = interest_tokens_packed(items.text_interest[flat], items.image_interest[flat],
                                                     flat_row, B, items.centroids.shape[0])
        if bool((n_int == 0).any()):
            raise ValueError("a history has no interest tokens: run interest discovery (or load the "
                             "interest state) before encoding sequences")
        emb = items.centroids[tok].to(x.dtype)
        i_off = packed.offsets_of(n_int)
        if self.config.interest_reg == "original":
            # Each row's real tokens followed by one zero "padding" query that attends to them
            # but is no key: its output is what the original pooled at padding positions.
            q_len = n_int + 1
            q_off = packed.offsets_of(q_len)
            kv_rows = torch.arange(tok.numel(), device=dev) + tok_row
            src = emb.new_zeros(tok.numel() + B, emb.shape[1]).index_copy(0, kv_rows, emb)
            plan = packed.plan_attention(q_off[:-1], q_len, i_off[:-1], n_int, impl)
            enc = packed.encode(self.trm_model.encoder, src, plan, kv_rows)
            memory = enc[kv_rows]
            real_sum = memory.new_zeros(B, memory.shape[1]).index_add(0, tok_row, memory)
            reg = regulariser_original(real_sum, enc[q_off[1:] - 1], n_int, self._has_pad_token(length))
        else:
            plan = packed.plan_attention(i_off[:-1], n_int, i_off[:-1], n_int, impl)
            memory = packed.encode(self.trm_model.encoder, emb, plan)
            real_sum = memory.new_zeros(B, memory.shape[1]).index_add(0, tok_row, memory)
            reg = regulariser_mean(real_sum, n_int)

        d_off = packed.offsets_of(length)
        self_plan = packed.plan_attention(d_off[:-1], length, d_off[:-1], length, impl)
        cross_plan = packed.plan_attention(d_off[:-1], length, i_off[:-1], n_int, impl)
        out = packed.decode(self.trm_model.decoder, x, memory, self_plan, cross_plan)
        return F.normalize(out[d_off[1:] - 1], dim=-1), reg

    # ------------------------------------------------------------------ item side
    def item_reps(self, items: ItemTable, ids: torch.Tensor | None = None,
                  text_feats: torch.Tensor | None = None, image_feats: torch.Tensor | None = None):
        """Normalised adapted text / image vectors (and ID vectors) of the given item ids; the image
        vectors are None for a text-only model (``image_dim`` None).

        ``ids=None`` means every item 1..n_items, taken as views of the tables (no gather copy).
        """
        t = items.text[1:] if ids is None else items.text[ids]
        t = t if text_feats is None else text_feats
        rt = F.normalize(self.text_adaptor(t), dim=-1)
        rv = None  # a text-only model has no image score
        if self.img_adaptor is not None:
            v = items.image[1:] if ids is None else items.image[ids]
            v = v if image_feats is None else image_feats
            rv = F.normalize(self.img_adaptor(v), dim=-1)
        re = None
        if self.item_embedding is not None:
            e = self.item_embedding.weight[1:] if ids is None else self.item_embedding(ids)
            re = F.normalize(e, dim=-1)
        return rt, rv, re

    def fuse(self, s_t: torch.Tensor, s_v: torch.Tensor | None, s_id: torch.Tensor | None) -> torch.Tensor:
        """Cosine-scale scores; w = softmax(phi * [s_t, s_v]) without a [..., 2] tensor.

        ``s_v`` None (a text-only model): the text score alone stands for the modalities.
        """
        if s_v is None:
            s = s_t
        elif self.config.fusion == "static":
            s = 0.5 * (s_t + s_v)
        else:
            w_t = torch.sigmoid(self.fusion_factor * (s_t - s_v))
            s = s_v + w_t * (s_t - s_v)
        if s_id is not None:
            s = (s_id + 2.0 * s) / 3.0
        return s

    def logits(self, u: torch.Tensor, reps) -> torch.Tensor:
        """[B, M] logits of user vectors against candidate reps (from item_reps)."""
        rt, rv, re = reps
        s_id = None if re is None else u @ re.t()
        s_v = None if rv is None else u @ rv.t()
        return self.fuse(u @ rt.t(), s_v, s_id) / self.config.temperature

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, path: str | Path, items: ItemTable | None = None) -> None:
        save_model(path, self, items)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, dataset: str | Path | None = None,
                        **overrides) -> "MISSRec":
        """Build a model from anything ``--pretrained`` accepts (see missrec/hub.py).

        ``overrides`` change config fields (e.g. use_id, n_items); ``dataset`` (a dataset folder)
        lets an original transductive .pth map its item rows to ours. Weights whose shapes no
        longer fit are an error, except an ID table for another catalogue, which is dropped;
        weights absent from the file (e.g. a new ID table) keep their fresh initialisation.
        """
        folder = resolve(name_or_path, dataset=dataset)
        d = read_config(folder).to_dict()
        d.update(overrides)
        model = cls(MISSRecConfig.from_dict(d))
        state = read_weights(folder)
        wpath = folder / WEIGHTS
        if overrides.get("use_id") is not None and "item_embedding.weight" in state:
            _adopt_id_table(model, folder, state, dataset)
        if not model.config.use_id:
            model.config.catalogue = {}
        if model.fusion_factor is None:
            state.pop("fusion_factor", None)  # text-only checkpoints written before it was left out
        own = model.state_dict()
        unexpected = sorted(set(state) - set(own))
        if unexpected:
            raise ValueError(f"{wpath}: unexpected weights {unexpected[:8]}")
        for k, v in state.items():
            if own[k].shape != v.shape:
                raise ValueError(f"{wpath}: '{k}' has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}")
        missing = sorted(set(own) - set(state) - {"item_embedding.weight"})
        if missing:
            raise ValueError(f"{wpath}: missing weights {missing[:8]}")
        model.load_state_dict(state, strict=False)
        return model


def load_model(name_or_path: str | Path, dataset: str | Path | None = None, **overrides) -> nn.Module:
    """Any checkpoint we write, by its config's ``model_type``: MISSRec, or the SASRec baseline.

    The one place that dispatches on the model type (finetuning's best model, recommend);
    ``--pretrained`` transfer is MISSRec only and calls :meth:`MISSRec.from_pretrained` itself.
    """
    folder = resolve(name_or_path, dataset=dataset)
    if read_model_type(folder) == "sasrec":
        from .sasrec import load_sasrec
        return load_sasrec(folder, **overrides)
    return MISSRec.from_pretrained(folder, dataset=dataset, **overrides)


def _adopt_id_table(model: MISSRec, folder: Path, state: dict, dataset) -> None:
    """Keep a checkpoint's item-ID table only for the catalogue it was trained on (else drop it, with a note)."""
    own = model.state_dict().get("item_embedding.weight")
    if own is None:
        state.pop("item_embedding.weight")  # inductive use of a transductive checkpoint
        return
    new = catalogue_of(dataset)
    why = other_catalogue(folder, read_config(folder), tuple(state["item_embedding.weight"].shape),
                          tuple(own.shape), new)
    if why:
        state.pop("item_embedding.weight")
        print(f"note: {folder}: {why}; its item-ID table starts fresh (the rest of the model is reused)",
              file=sys.stderr)
    if new:
        model.config.catalogue = new


class MISSRecScorer:
    """Adapts a model + item table to the evaluator's scorer protocol (encode / score / score_pairs)."""

    def __init__(self, model: MISSRec, items: ItemTable):
        self.model, self.items = model, items
        self._reps = None

    @torch.no_grad()
    def encode(self, seq, length):
        dev = self.items.device
        u, _ = self.model(seq.to(dev), length.to(dev), self.items)
        return u.float()

    def _all_reps(self):
        if self._reps is None:
            self._reps = tuple(None if r is None else r.float() for r in self.model.item_reps(self.items))
        return self._reps

    @torch.no_grad()
    def score(self, u, item_ids):
        reps = tuple(None if r is None else r[item_ids.to(self.items.device) - 1] for r in self._all_reps())
        return self.model.logits(u, reps)

    @torch.no_grad()
    def score_pairs(self, u, item_ids):
        rt, rv, re = (None if r is None else r[item_ids.to(self.items.device) - 1] for r in self._all_reps())
        s_id = None if re is None else (u * re).sum(-1)
        s_v = None if rv is None else (u * rv).sum(-1)
        return self.model.fuse((u * rt).sum(-1), s_v, s_id) / self.model.config.temperature
