"""Packed (variable-length) transformer math on the weights of ``nn.Transformer`` layers.

A batch of sequences is held as the concatenation of its real tokens ``[N, H]`` plus the
per-row lengths, so the projections, feed-forward blocks and LayerNorms run on real tokens only.
Attention runs per sequence, in one of two ways (``MISSRecConfig.attention_impl``):

* ``packed``: rows are sorted by key length and cut into a few buckets of similar lengths; each
  bucket is gathered into a small dense block (masked only where its rows differ in length) for
  ``scaled_dot_product_attention``, and the outputs are scattered back to packed order;
* ``jagged``: the packed tensors are viewed as torch nested tensors of jagged layout (values +
  offsets, no copy) and passed to ``scaled_dot_product_attention`` in one call, which on CUDA
  dispatches to the fused flash / memory-efficient variable-length kernels.

benchmarks/bench_attention.py times both against padded SDPA and FlexAttention (RESULTS.md has
the numbers and the choice). On short histories either removes almost all of the padded path's work.

The layer math mirrors ``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer`` with
``norm_first=False`` (post-LN) and reads their parameters, so the same state_dict serves both
paths. Everything is plain tensor ops (no host loops over rows), device- and autocast-agnostic.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Bucket edges on the key length: each bucket's longest key set is at most ~1.5x its shortest,
# so padding inside a bucket stays small while the number of attention calls stays ~10.
_EDGES = (1, 2, 3, 4, 6, 9, 13, 19, 28, 42, 63, 95, 142, 213, 320)


def offsets_of(lengths: torch.Tensor) -> torch.Tensor:
    """[B + 1] start offsets of each row in the packed layout."""
    return F.pad(torch.cumsum(lengths, 0), (1, 0))


@dataclass
class Bucket:
    q_index: torch.Tensor  # [b, Lq] packed query row of each slot (clamped where invalid)
    q_valid: torch.Tensor  # [b, Lq] bool
    k_index: torch.Tensor  # [b, Lk]
    k_mask: torch.Tensor | None  # [b, 1, 1, Lk] bool (True = attend) or None when all rows are full


@dataclass
class AttnPlan:
    """Where every query and key of each row lives in the packed tensors, grouped in buckets."""

    buckets: list
    restore: torch.Tensor  # packed query order from the concatenation of the buckets' valid queries


@dataclass
class JaggedPlan:
    """Row offsets of the packed queries and keys (each row's tokens contiguous, rows in order)."""

    q_offsets: torch.Tensor  # [B + 1]
    k_offsets: torch.Tensor
    q_max: int
    k_max: int


def _slots(starts: torch.Tensor, lens: torch.Tensor, width: int):
    ar = torch.arange(width, device=starts.device)
    valid = ar.unsqueeze(0) < lens.unsqueeze(1)
    index = starts.unsqueeze(1) + ar.unsqueeze(0).minimum((lens - 1).clamp_min(0).unsqueeze(1))
    return index, valid


def plan_attention(q_starts: torch.Tensor, q_lens: torch.Tensor, k_starts: torch.Tensor,
                   k_lens: torch.Tensor, impl: str = "packed") -> AttnPlan | JaggedPlan:
    """Plan attention of each row's queries (``q_lens`` from ``q_starts``) to its keys.

    ``impl="jagged"`` needs the rows back to back in order (``starts == offsets_of(lens)[:-1]``),
    which is how the model lays them out."""
    if impl == "jagged":
        # Maxima on the host: the nested tensor carries them, and SDPA would otherwise sync for them.
        return JaggedPlan(torch.cat([q_starts, q_starts[-1:] + q_lens[-1:]]),
                          torch.cat([k_starts, k_starts[-1:] + k_lens[-1:]]),
                          int(q_lens.max()), int(k_lens.max()))
    if impl != "packed":
        raise ValueError(f"attention impl must be 'packed' or 'jagged', got {impl!r}")
    # Bucketing is decided on the host (one small copy); the gathers stay on the device.
    k_host, q_host = k_lens.cpu().numpy(), q_lens.cpu().numpy()
    bucket_of = np.searchsorted(np.asarray(_EDGES), k_host, side="left")
    order_h = np.argsort(bucket_of, kind="stable")
    b_sorted = bucket_of[order_h].tolist()
    order = torch.from_numpy(order_h).to(k_lens.device)
    buckets, pieces = [], []
    s = 0
    n = len(b_sorted)
    while s < n:
        e = s
        while e < n and b_sorted[e] == b_sorted[s]:
            e += 1
        rows, rows_h = order[s:e], order_h[s:e]
        lk, lq = int(k_host[rows_h].max()), int(q_host[rows_h].max())
        qi, qv = _slots(q_starts[rows], q_lens[rows], lq)
        ki, kv = _slots(k_starts[rows], k_lens[rows], lk)
        full = bool((k_host[rows_h] == lk).all())
        buckets.append(Bucket(qi, qv, ki, None if full else kv[:, None, None, :]))
        pieces.append(qi[qv])
        s = e
    gathered = torch.cat(pieces)
    restore = torch.empty_like(gathered)
    restore[gathered] = torch.arange(gathered.numel(), device=gathered.device)
    return AttnPlan(buckets, restore)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout from a uniform draw: the same distribution as ``F.dropout``, whose CPU
    Bernoulli sampler is ~2x slower than ``torch.rand`` (it was a quarter of a training step)."""
    if not training or p == 0.0:
        return x
    keep = torch.rand(x.shape, device=x.device) >= p
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - p))


def _drop(module: nn.Dropout, x: torch.Tensor) -> torch.Tensor:
    return dropout(x, module.p, module.training)


def _jagged(t: torch.Tensor, offsets: torch.Tensor, max_len: int) -> torch.Tensor:
    """[N, h, d] packed -> nested [B, h, j, d]. Contiguous values are required by every SDPA
    backend for jagged inputs (the q/k/v slices of the fused projection are strided views)."""
    return torch.nested.nested_tensor_from_jagged(t.contiguous(), offsets, max_seqlen=max_len).transpose(1, 2)


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: AttnPlan | JaggedPlan,
                     dropout_p: float = 0.0) -> torch.Tensor:
    """q: [Nq, h, d], k/v: [Nk, h, d] packed; returns [Nq, h, d] in packed query order."""
    if isinstance(plan, JaggedPlan):
        o = F.scaled_dot_product_attention(_jagged(q, plan.q_offsets, plan.q_max),
                                           _jagged(k, plan.k_offsets, plan.k_max),
                                           _jagged(v, plan.k_offsets, plan.k_max), dropout_p=dropout_p)
        return o.transpose(1, 2).values()
    outs = []
    for b in plan.buckets:
        qb = q[b.q_index].transpose(1, 2)  # [b, h, Lq, d]
        kb = k[b.k_index].transpose(1, 2)
        vb = v[b.k_index].transpose(1, 2)
        if dropout_p > 0.0:  # spelled out to use the faster dropout on the attention weights
            s = (qb @ kb.transpose(-1, -2)) * (qb.shape[-1] ** -0.5)
            if b.k_mask is not None:
                s = s.masked_fill(~b.k_mask, float("-inf"))
            o = dropout(torch.softmax(s, dim=-1), dropout_p, True) @ vb
        else:
            o = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=b.k_mask)
        outs.append(o.transpose(1, 2)[b.q_valid])
    return torch.cat(outs)[plan.restore]


def packed_mha(mha: nn.MultiheadAttention, xq: torch.Tensor, xkv: torch.Tensor | None, plan: AttnPlan,
               kv_rows: torch.Tensor | None = None) -> torch.Tensor:
    """``nn.MultiheadAttention`` on packed tokens. ``xkv=None``: self-attention (keys = ``xq``,
    or its rows ``kv_rows`` when some queries must not serve as keys)."""
    H, h = mha.embed_dim, mha.num_heads
    W, bias = mha.in_proj_weight, mha.in_proj_bias
    if xkv is None and kv_rows is None:
        q, k, v = F.linear(xq, W, bias).split(H, dim=-1)
    else:
        src = xq[kv_rows] if xkv is None else xkv
        q = F.linear(xq, W[:H], None if bias is None else bias[:H])
        k, v = F.linear(src, W[H:], None if bias is None else bias[H:]).split(H, dim=-1)
    d = H // h
    o = varlen_attention(q.reshape(-1, h, d), k.reshape(-1, h, d), v.reshape(-1, h, d), plan,
                         mha.dropout if mha.training else 0.0)
    return mha.out_proj(o.reshape(-1, H))


def _ff(layer, x, out_drop):
    return _drop(out_drop, layer.linear2(_drop(layer.dropout, layer.activation(layer.linear1(x)))))


def encoder_layer(layer: nn.TransformerEncoderLayer, x, plan, kv_rows=None):
    if layer.norm_first:
        raise ValueError("the packed path implements post-LayerNorm layers only")
    x = layer.norm1(x + _drop(layer.dropout1, packed_mha(layer.self_attn, x, None, plan, kv_rows)))
    return layer.norm2(x + _ff(layer, x, layer.dropout2))


def decoder_layer(layer: nn.TransformerDecoderLayer, x, memory, self_plan, cross_plan):
    if layer.norm_first:
        raise ValueError("the packed path implements post-LayerNorm layers only")
    x = layer.norm1(x + _drop(layer.dropout1, packed_mha(layer.self_attn, x, None, self_plan)))
    x = layer.norm2(x + _drop(layer.dropout2, packed_mha(layer.multihead_attn, x, memory, cross_plan)))
    return layer.norm3(x + _ff(layer, x, layer.dropout3))


def encode(encoder: nn.TransformerEncoder, x, plan, kv_rows=None):
    for layer in encoder.layers:
        x = encoder_layer(layer, x, plan, kv_rows)
    return x if encoder.norm is None else encoder.norm(x)


def decode(decoder: nn.TransformerDecoder, x, memory, self_plan, cross_plan):
    for layer in decoder.layers:
        x = decoder_layer(layer, x, memory, self_plan, cross_plan)
    return x if decoder.norm is None else decoder.norm(x)
