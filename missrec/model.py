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

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from . import packed
from .checkpoint import INTEREST, SHAPE_FIELDS, catalogue_of, other_catalogue
from .config import MISSRecConfig
from .errors import UserError
from .interest import interest_tokens, interest_tokens_packed
from .items import ItemTable
from .seqmodel import ModelScorer, SequentialModel


def _ragged_take(off: torch.Tensor, new_off: torch.Tensor, perm: torch.Tensor, new_len: torch.Tensor):
    """Index that reorders a packed tensor (row r at ``off[r]:off[r + 1]``) into row order ``perm``."""
    shift = (off[:-1][perm] - new_off[:-1]).repeat_interleave(new_len, output_size=int(new_off[-1]))
    return torch.arange(shift.numel(), device=off.device) + shift


def _adapt(adaptor: nn.Linear, items: ItemTable, ids: torch.Tensor | None, normalize: bool = False,
           key: str = "image") -> torch.Tensor:
    """``adaptor(items.<key>[ids])`` (``ids=None``: rows 1..n), L2-normalised if asked; a table of
    zero rows (data without that modality) is adapted once and broadcast (an expanded view), with
    the same values and gradients."""
    post = (lambda y: F.normalize(y, dim=-1)) if normalize else (lambda y: y)
    table = getattr(items, key)
    if items.is_zero(key):
        shape = (items.n_items,) if ids is None else tuple(ids.shape)
        return post(adaptor(table[:1])).expand(*shape, -1)
    return post(adaptor(table[1:] if ids is None else table[ids]))


def _dot(u: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``u @ r.t()``; one vector broadcast to every item (zero rows, see _adapt): one score column."""
    return u @ r[:1].t() if r.shape[0] > 1 and r.stride(0) == 0 else u @ r.t()


def feature_dims(ds) -> tuple[int | None, int | None]:
    """(text dim, image dim) of a dataset's feature files, None where a file is absent; a dataset
    with neither is an error naming the text file (MISSRec reads item features)."""
    tdim = ds.features["text"].shape[1] if "text" in ds.features else None
    idim = ds.features["image"].shape[1] if "image" in ds.features else None
    if tdim is None and idim is None:
        name = (getattr(ds, "domains", None) or [ds.name])[0]  # a corpus: its first domain's files
        raise UserError(Path(ds.folder) / f"{name}.feat1CLS",
                        f"file not found, nor {name}.feat3CLS: MISSRec needs text or image features "
                        "(missrec-features writes them; --model sasrec or gru4rec need none)")
    return tdim, idim


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


class MISSRec(SequentialModel):
    """MISSRec; its contract methods (missrec/seqmodel.py) come after the MISSRec-specific ones."""

    model_type = "missrec"
    config_cls = MISSRecConfig
    features = ()  # text or image, at least one: checked by feature_dims
    optional_features = ("text", "image")  # absent: a model without it, or zero rows for a checkpoint that has it
    options = {k: k for k in ("hidden_size", "n_heads", "inner_size", "num_encoder_layers", "num_decoder_layers",
                              "dropout", "max_seq_length", "temperature", "fusion")}
    architecture = ("hidden_size", "n_heads", "inner_size", "num_encoder_layers", "num_decoder_layers")
    fixed_fields = SHAPE_FIELDS
    runtime_fields = ("interest_reg", "attention_impl")
    transfers = True
    card_title = "MISSRec"
    card_tags = ("multimodal", "pretrain-then-transfer")
    card_files = ("`interest.safetensors` (interest clusters)",)

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
        # text_dim None: an image-only model; image_dim None: a text-only model (no such modality
        # at all, not zero rows).
        self.text_adaptor = nn.Linear(c.text_dim, c.hidden_size) if c.text_dim is not None else None
        self.img_adaptor = nn.Linear(c.image_dim, c.hidden_size) if c.image_dim is not None else None
        # The text/image fusion weight exists only with two modalities (an unused parameter would
        # also break multi-process training, where every parameter must get a gradient).
        two = self.text_adaptor is not None and self.img_adaptor is not None
        self.fusion_factor = nn.Parameter(torch.tensor(0.0)) if two else None
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
        x = None
        if self.text_adaptor is not None:
            x = (self.text_adaptor(text_table[ids]) if text_table is not None
                 else _adapt(self.text_adaptor, items, ids, key="text"))
        if self.img_adaptor is not None:
            v = _adapt(self.img_adaptor, items, ids)
            x = v if x is None else x + v
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
        """Real tokens only: [sum(length), H] item tokens and [sum(n_interests), H] interest tokens.

        Rows are processed sorted by (history length, number of interest tokens), so that runs of
        equal lengths lie back to back and their attention reads views of the packed tensors
        (missrec/packed.py); the user vectors are returned in the caller's row order."""
        B, L = seq.shape
        dev = seq.device
        impl = self.config.attention_impl
        pos = torch.arange(L, device=dev).unsqueeze(0).expand(B, L)
        is_real = pos < length.unsqueeze(1)
        flat, flat_pos = seq[is_real], pos[is_real]
        flat_row = torch.arange(B, device=dev).repeat_interleave(length)
        tok, tok_row, n_int = interest_tokens_packed(items.text_interest[flat], items.image_interest[flat],
                                                     flat_row, B, items.centroids.shape[0])
        if bool((n_int == 0).any()):
            raise UserError("a history has no interest tokens: run interest discovery (or load the "
                             "interest state) before encoding sequences")
        d_off, i_off = packed.offsets_of(length), packed.offsets_of(n_int)
        lens_h = torch.stack([length, n_int]).cpu().numpy()
        order_h = np.lexsort((lens_h[1], lens_h[0]))
        perm = None
        if (order_h != np.arange(B)).any():
            perm = torch.from_numpy(order_h).to(dev)
            length, n_int = length[perm], n_int[perm]
            new_d, new_i = packed.offsets_of(length), packed.offsets_of(n_int)
            take_d, take_i = _ragged_take(d_off, new_d, perm, length), _ragged_take(i_off, new_i, perm, n_int)
            flat, flat_pos, tok = flat[take_d], flat_pos[take_d], tok[take_i]
            d_off, i_off = new_d, new_i
            tok_row = torch.arange(B, device=dev).repeat_interleave(n_int)

        uniq, inv = torch.unique(flat, return_inverse=True)
        x = self.adapt(uniq, items, text_table)[inv]
        x = x + self.position_embedding.weight[flat_pos]
        if self.item_embedding is not None:
            x = x + self.item_embedding(flat)
        x = packed.dropout(self.LayerNorm(x), self.dropout.p, self.training)

        cent = items.centroids.to(x.dtype)
        if self.config.interest_reg == "original":
            # Each row's real tokens followed by one zero "padding" query that attends to them
            # but is no key: its output is what the original pooled at padding positions.
            q_len = n_int + 1
            q_off = packed.offsets_of(q_len)
            kv_rows = torch.arange(tok.numel(), device=dev) + tok_row
            table = torch.cat([cent.new_zeros(1, cent.shape[1]), cent])  # row 0: the zero query
            src_rows = tok.new_zeros(tok.numel() + B).index_copy(0, kv_rows, tok + 1)
            src = table[src_rows]
            plan = packed.plan_attention(q_off[:-1], q_len, i_off[:-1], n_int, impl)
            enc = packed.encode(self.trm_model.encoder, src, plan, kv_rows, (table, src_rows))
            memory = enc[kv_rows]
            real_sum = memory.new_zeros(B, memory.shape[1]).index_add(0, tok_row, memory)
            reg = regulariser_original(real_sum, enc[q_off[1:] - 1], n_int, self._has_pad_token(length))
        else:
            plan = packed.plan_attention(i_off[:-1], n_int, i_off[:-1], n_int, impl)
            memory = packed.encode(self.trm_model.encoder, cent[tok], plan, table=(cent, tok))
            real_sum = memory.new_zeros(B, memory.shape[1]).index_add(0, tok_row, memory)
            reg = regulariser_mean(real_sum, n_int)

        one = torch.ones_like(length)
        rows = torch.arange(B, device=dev)
        self_plan = cross_plan = None
        if len(self.trm_model.decoder.layers) > 1:
            self_plan = packed.plan_attention(d_off[:-1], length, d_off[:-1], length, impl)
            cross_plan = packed.plan_attention(d_off[:-1], length, i_off[:-1], n_int, impl)
        out = packed.decode_last(self.trm_model.decoder, x, d_off[1:] - 1, memory, self_plan, cross_plan,
                                 packed.plan_attention(rows, one, d_off[:-1], length, impl),
                                 packed.plan_attention(rows, one, i_off[:-1], n_int, impl))
        u = F.normalize(out, dim=-1)
        if perm is not None:
            u = u[torch.empty_like(perm).scatter_(0, perm, rows)]
        return u, reg

    # ------------------------------------------------------------------ item side
    def item_reps(self, items: ItemTable, ids: torch.Tensor | None = None,
                  text_feats: torch.Tensor | None = None, image_feats: torch.Tensor | None = None):
        """Normalised adapted text / image vectors (and ID vectors) of the given item ids; the image
        vectors are None for a text-only model (``image_dim`` None), the text vectors for an
        image-only one (``text_dim`` None).

        ``ids=None`` means every item 1..n_items, taken as views of the tables (no gather copy).
        """
        rt = None  # an image-only model has no text score
        if self.text_adaptor is not None:
            rt = (_adapt(self.text_adaptor, items, ids, normalize=True, key="text") if text_feats is None else
                  F.normalize(self.text_adaptor(text_feats), dim=-1))
        rv = None  # a text-only model has no image score
        if self.img_adaptor is not None:
            rv = (_adapt(self.img_adaptor, items, ids, normalize=True) if image_feats is None else
                  F.normalize(self.img_adaptor(image_feats), dim=-1))
        re = None
        if self.item_embedding is not None:
            e = self.item_embedding.weight[1:] if ids is None else self.item_embedding(ids)
            re = F.normalize(e, dim=-1)
        return rt, rv, re

    def fuse(self, s_t: torch.Tensor | None, s_v: torch.Tensor | None, s_id: torch.Tensor | None) -> torch.Tensor:
        """Cosine-scale scores; w = softmax(phi * [s_t, s_v]) without a [..., 2] tensor.

        ``s_v`` None (a text-only model): the text score alone stands for the modalities;
        ``s_t`` None (an image-only model): the image score alone.
        """
        if s_v is None:
            s = s_t
        elif s_t is None:
            s = s_v
        elif self.config.fusion == "static":
            s = 0.5 * (s_t + s_v)
        else:
            d = s_t - s_v  # computed once (the [B, n_items] passes dominate the full softmax's cost)
            s = torch.addcmul(s_v, torch.sigmoid(self.fusion_factor * d), d)
        if s_id is not None:
            s = torch.add(s_id, s, alpha=2.0).div_(3.0)
        return s

    def logits(self, u: torch.Tensor, reps) -> torch.Tensor:
        """[B, M] logits of user vectors against candidate reps (from item_reps)."""
        rt, rv, re = reps
        s_id = None if re is None else u @ re.t()
        # One vector broadcast to every item (zero rows of a modality, see _adapt): one score column.
        s_t = None if rt is None else _dot(u, rt)
        s_v = None if rv is None else _dot(u, rv)
        return self.fuse(s_t, s_v, s_id) / self.config.temperature

    # ------------------------------------------------------------------ the contract (missrec/seqmodel.py)
    @classmethod
    def config_for(cls, ds, options: dict, *, mode: str = "transductive") -> MISSRecConfig:
        use_id = mode == "transductive"
        # No image features (a text-only catalogue): a text-only model (image_dim None); no text
        # features (an image-only catalogue): an image-only model (text_dim None).
        tdim, idim = feature_dims(ds)
        return MISSRecConfig(**cls.config_fields(options), text_dim=tdim, image_dim=idim, use_id=use_id,
                             n_items=ds.n_items if use_id else 0)

    @classmethod
    def adapt_config(cls, stored: dict, ds, *, mode: str, source) -> dict:
        """A pretrained config for finetuning on ``ds``: its feature dims must match; ``mode`` sets the ID table."""
        cls.check_feature_dims(stored, ds, source)
        use_id = mode == "transductive"
        return {**stored, "use_id": use_id, "n_items": ds.n_items if use_id else 0}

    @classmethod
    def check_feature_dims(cls, stored: dict, ds, source) -> None:
        """A one-line UserError naming ``source`` unless a model of config ``stored`` can read ``ds``."""
        tdim, idim = feature_dims(ds)
        have = (stored.get("text_dim"), stored.get("image_dim"))
        # A text-only checkpoint ignores a target's images (an image-only one its texts); one with a
        # modality the target lacks reads zero rows of it. The dims of the modalities read must
        # match, and at least one modality must be in both.
        shared = [i for i in (0, 1) if have[i] is not None and (tdim, idim)[i] is not None]
        if not shared or any(have[i] != (tdim, idim)[i] for i in shared):
            raise UserError(source, f"expects text/image features of dims {have[0]}/{have[1]}, but {ds.folder} "
                                    f"has {tdim}/{idim} (extract them with the same CLIP model; None = absent)")

    @property
    def uses_item_ids(self) -> bool:
        return self.config.use_id

    def make_items(self, ds, device=None) -> ItemTable:
        # A text-only model reads no image table, an image-only one no text table; a model with a
        # modality the catalogue lacks gets zero rows of its dim.
        c = self.config
        return ItemTable.from_dataset(ds, c.hidden_size, device=device, image_dim=c.image_dim, text_dim=c.text_dim,
                                      text_only=c.image_dim is None, image_only=c.text_dim is None)

    def encode(self, seq, length, items: ItemTable = None) -> torch.Tensor:
        return self(seq, length, items)[0]

    def candidates(self, items: ItemTable = None):
        return tuple(None if r is None else r.float() for r in self.item_reps(items))

    def score(self, user, cands, ids=None) -> torch.Tensor:
        reps = cands if ids is None else tuple(None if r is None else r[ids - 1] for r in cands)
        return self.logits(user, reps)

    def score_pairs(self, user, cands, ids) -> torch.Tensor:
        rt, rv, re = (None if r is None else r[ids - 1] for r in cands)
        s_id = None if re is None else (user * re).sum(-1)
        s_t = None if rt is None else (user * rt).sum(-1)
        s_v = None if rv is None else (user * rv).sum(-1)
        return self.fuse(s_t, s_v, s_id) / self.config.temperature

    def loss(self, batch: dict, items: ItemTable = None) -> dict:
        """Softmax cross-entropy over every item (padding excluded) and the interest regulariser."""
        u, reg = self(batch["seq"], batch["length"], items)
        logits = self.logits(u, self.item_reps(items))
        return {"ce": F.cross_entropy(logits.float(), batch["target"] - 1), "reg": reg}

    def on_epoch_start(self, items: ItemTable, epoch: int, args, accelerator, seed: int) -> dict | None:
        """Interest discovery on the main process, broadcast to the others."""
        info = None
        if accelerator is None or accelerator.is_main_process:
            was = self.training
            self.eval()
            info = items.discover_interests(
                self, args.interest_ratio, n_iter=args.kmeans_iters, init=args.kmeans_init, seed=seed + epoch,
                compat=args.kmeans_compat, warm_start=args.kmeans_warm_start)
            self.train(was)
        items.broadcast_interests(accelerator)
        return info

    def load_item_state(self, items: ItemTable, folder: Path, *, interest_ratio: float | None = None,
                        seed: int = 0) -> None:
        """The checkpoint's interest clusters; with ``interest_ratio``, discover them when the file is
        absent or covers another catalogue (a pretrained-only checkpoint carries the corpus' clusters)."""
        path = Path(folder) / INTEREST
        if interest_ratio is None or (path.is_file() and _covers(path, items.n_items)):
            items.load_interest(path)
        else:
            items.discover_interests(self, interest_ratio, seed=seed)

    def prepare_state(self, state: dict, stored: dict, folder: Path, dataset=None) -> set[str]:
        """Keep a stored item-ID table only for the catalogue it was trained on (else it starts fresh,
        with a note); fit the position table to this model's max_seq_length (rows count from the oldest
        item: a shorter table keeps the first rows, a longer one starts its extra rows fresh)."""
        c = self.config
        if self.fusion_factor is None:
            state.pop("fusion_factor", None)  # text-only checkpoints written before it was left out
        pos = state.get("position_embedding.weight")
        if pos is not None and pos.shape[0] != c.max_seq_length:
            fresh = self.position_embedding.weight.detach().clone()
            n = min(pos.shape[0], c.max_seq_length)
            fresh[:n] = pos[:n]
            if pos.shape[0] < c.max_seq_length:
                print(f"note: {folder}: positions {pos.shape[0]}..{c.max_seq_length - 1} are new to the "
                      "checkpoint and start fresh", file=sys.stderr)
            state["position_embedding.weight"] = fresh
        if "item_embedding.weight" in state:
            own = self.state_dict().get("item_embedding.weight")
            if own is None:
                state.pop("item_embedding.weight")  # inductive use of a transductive checkpoint
            else:
                new = catalogue_of(dataset)
                why = other_catalogue(folder, stored.get("catalogue") or {}, tuple(state["item_embedding.weight"].shape),
                                      tuple(own.shape), new)
                if why:
                    state.pop("item_embedding.weight")
                    print(f"note: {folder}: {why}; its item-ID table starts fresh (the rest of the model is reused)",
                          file=sys.stderr)
                if new:
                    c.catalogue = new
        if not c.use_id:
            c.catalogue = {}
        return {"item_embedding.weight"}  # a new ID table keeps its fresh initialisation

    @classmethod
    def card_tags_for(cls, config: dict) -> tuple[str, ...]:
        if "text_dim" in config and config["text_dim"] is None:
            kind = "image-only"
        else:
            kind = "multimodal" if config.get("image_dim") else "text-only"
        return (kind, "pretrain-then-transfer")

    def data_notes(self, ds) -> list[str]:
        c = self.config
        if c.image_dim is None:
            return ["text features only, a text-only model"
                    + (" (the dataset's image features are not used)" if "image" in ds.features else "")]
        if c.text_dim is None:
            return ["image features only, an image-only model"
                    + (" (the dataset's text features are not used)" if "text" in ds.features else "")]
        return [f"no {m} features ({ds.name}.{suffix} absent): zero rows for all {ds.n_items} items "
                f"(the model has {'an image' if m == 'image' else 'a text'} adaptor)"
                for m, suffix in (("text", "feat1CLS"), ("image", "feat3CLS")) if m not in ds.features]

    @classmethod
    def card_summary(cls, config: dict) -> str:
        mode = "transductive (item IDs + modalities)" if config.get("use_id") else "inductive (modalities only)"
        text_only = config.get("image_dim") is None
        image_only = "text_dim" in config and config["text_dim"] is None
        text = "no text features" if image_only else f"text features of dim {config.get('text_dim')}"
        image = "no image features" if text_only else f"image features of dim {config.get('image_dim')}"
        kind = ", image-only" if image_only else ", text-only" if text_only else ""
        return ("Multi-modal interest-aware sequential recommender (MISSRec, ACM MM 2023), "
                f"{mode}{kind}; {text}; {image}.")


def _covers(path: Path, n_items: int) -> bool:
    """Whether an interest.safetensors holds interest ids for ``n_items`` items."""
    with safe_open(str(path), "pt") as f:
        return f.get_slice("text_interest").get_shape()[0] == n_items + 1


# The evaluator's adapter, under its former name (missrec/seqmodel.py:ModelScorer serves every model).
MISSRecScorer = ModelScorer
