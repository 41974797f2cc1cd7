"""Packed (variable-length) transformer math on the weights of ``nn.Transformer`` layers.

A batch of sequences is held as the concatenation of its real tokens ``[N, H]`` plus the
per-row lengths, so the projections, feed-forward blocks and LayerNorms run on real tokens only.
Attention runs per sequence, in one of two ways (``MISSRecConfig.attention_impl``):

* ``packed``: a run of consecutive rows with equal lengths, laid out back to back, is attended as
  a view ``[b, L, h, d]`` of the packed tensors (no gather, no padding; the model sorts its rows by
  length so that such runs are long); the remaining rows are sorted by key length and cut into a
  few buckets of similar lengths, each gathered into a small dense block (masked only where its
  rows differ in length), and the outputs are put back in packed order. One query per row
  (the final decoder layer, :func:`decode_last`) is a per-token score and a per-row softmax;
* ``jagged``: the packed tensors are viewed as torch nested tensors of jagged layout (values +
  offsets, no copy) and passed to ``scaled_dot_product_attention`` in one call, which on CUDA
  dispatches to the fused flash / memory-efficient variable-length kernels.

benchmarks/bench_attention.py times both against padded SDPA and FlexAttention (RESULTS.md has
the numbers and the choice). On short histories either removes almost all of the padded path's work.

Only the last position's decoder output is used (the user vector) and the decoder has no
causal mask, so :func:`decode_last` runs the final decoder layer's queries, cross-attention,
feed-forward block and LayerNorms on that position only. Dropout draws 16-bit uniforms, four per
64-bit generator draw (:func:`keep_scale`). benchmarks/bench_step.py times a training step
against an earlier commit's code (benchmarks/RESULTS.md).

The layer math mirrors ``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer`` with
``norm_first=False`` (post-LN) and reads their parameters, so the same state_dict serves both
paths. Everything is plain tensor ops (no host loops over rows), device- and autocast-agnostic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Bucket edges on the key length: each bucket's longest key set is at most ~1.5x its shortest,
# so padding inside a bucket stays small while the number of attention calls stays ~10.
_EDGES = (1, 2, 3, 4, 6, 9, 13, 19, 28, 42, 63, 95, 142, 213, 320)
# A run of consecutive rows with the same query and key lengths, laid out back to back, is
# attended as a view of the packed tensors (no gather, no padding, no scatter in the backward)
# when it holds at least this many rows or key slots; smaller runs are gathered into buckets.
_VIEW_MIN_ROWS = 8
_VIEW_MIN_KEYS = 256


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
class View:
    """Rows whose queries are ``q[q0:q0 + b * lq]`` and keys ``k[k0:k0 + b * lk]``, all of one length."""

    b: int
    lq: int
    lk: int
    q0: int
    k0: int


@dataclass
class AttnPlan:
    """Where every query and key of each row lives in the packed tensors: views of equal-length
    runs of rows, and buckets of similar lengths for the rest (gathered with one index per tensor)."""

    blocks: list  # View | int (position of a bucket in ``buckets``), in output order
    buckets: list
    q_gather: torch.Tensor | None  # all buckets' q_index, flattened (one gather for every bucket)
    k_gather: torch.Tensor | None
    restore: torch.Tensor | None  # packed query order from the blocks' concatenated outputs (None: same)


@dataclass
class SegmentPlan:
    """One query per row, whose keys are the row's tokens, rows back to back covering every key:
    attention as per-token scores and per-row (segment) softmax sums, with no loop over rows."""

    key_row: torch.Tensor  # [Nk] row of each key
    n_rows: int


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
    which is how the model lays them out. ``impl="packed"`` takes any starts; it is fastest when
    rows of equal lengths are consecutive and back to back (the model sorts rows by length), as
    such runs become views."""
    if impl == "jagged":
        # Maxima on the host: the nested tensor carries them, and SDPA would otherwise sync for them.
        return JaggedPlan(torch.cat([q_starts, q_starts[-1:] + q_lens[-1:]]),
                          torch.cat([k_starts, k_starts[-1:] + k_lens[-1:]]),
                          int(q_lens.max()), int(k_lens.max()))
    if impl != "packed":
        raise ValueError(f"attention impl must be 'packed' or 'jagged', got {impl!r}")
    dev = k_lens.device
    # The plan is decided on the host (one small copy); the gathers stay on the device.
    qs, ql, ks, kl = torch.stack([q_starts, q_lens, k_starts, k_lens]).cpu().numpy()
    n = len(ql)
    if (ql == 1).all() and (qs == np.arange(n)).all() and ks[0] == 0 and (ks[1:] == ks[:-1] + kl[:-1]).all():
        return SegmentPlan(torch.arange(n, device=dev).repeat_interleave(k_lens, output_size=int(kl.sum())), n)
    cont = np.ones(n, dtype=bool)
    cont[0] = False
    cont[1:] = ((ql[1:] == ql[:-1]) & (kl[1:] == kl[:-1]) & (qs[1:] == qs[:-1] + ql[:-1])
                & (ks[1:] == ks[:-1] + kl[:-1]))
    run_start = np.flatnonzero(~cont)
    run_end = np.append(run_start[1:], n)
    blocks, pending, small = [], [], []
    for s, e in zip(run_start.tolist(), run_end.tolist()):
        if e - s >= _VIEW_MIN_ROWS or (e - s) * int(kl[s]) >= _VIEW_MIN_KEYS:
            blocks.append(View(e - s, int(ql[s]), int(kl[s]), int(qs[s]), int(ks[s])))
        else:
            small.extend(range(s, e))
    buckets, q_idx, k_idx = [], [], []
    if small:
        small = np.asarray(small)
        bucket_of = np.searchsorted(np.asarray(_EDGES), kl[small], side="left")
        order_h = small[np.argsort(bucket_of, kind="stable")]
        b_sorted = np.sort(bucket_of, kind="stable")
        cuts = np.flatnonzero(np.diff(b_sorted)) + 1
        for rows_h in np.split(order_h, cuts):
            lk, lq = int(kl[rows_h].max()), int(ql[rows_h].max())
            rows = torch.from_numpy(rows_h).to(dev)
            qi, qv = _slots(q_starts[rows], q_lens[rows], lq)
            ki, kv = _slots(k_starts[rows], k_lens[rows], lk)
            full = bool((kl[rows_h] == lk).all())
            buckets.append(Bucket(qi, qv, ki, None if full else kv[:, None, None, :]))
            q_idx.append(qi.reshape(-1))
            k_idx.append(ki.reshape(-1))
            blocks.append(len(buckets) - 1)
    # Queries in the order the blocks output them; a restore index unless that is packed order.
    pieces = [torch.arange(b.q0, b.q0 + b.b * b.lq, device=dev) if isinstance(b, View) else
              buckets[b].q_index[buckets[b].q_valid] for b in blocks]
    gathered = torch.cat(pieces)
    restore = None
    if not torch.equal(gathered, torch.arange(gathered.numel(), device=dev)):
        restore = torch.empty_like(gathered)
        restore[gathered] = torch.arange(gathered.numel(), device=dev)
    return AttnPlan(blocks, buckets, torch.cat(q_idx) if q_idx else None, torch.cat(k_idx) if k_idx else None,
                    restore)


def keep_scale(shape, p: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """Inverted-dropout multiplier: 0 with probability p (rounded to a multiple of 2**-16), else
    1 / (1 - p).

    Drawn as 16-bit integers, four per 64-bit draw of the generator: ``torch.rand`` spends one
    32-bit draw and a float conversion per element, and was the largest single cost of a
    training step (``F.dropout``'s Bernoulli sampler is slower still)."""
    numel = math.prod(shape)
    if p >= 1.0:
        return torch.zeros(shape, dtype=dtype, device=device)
    bits = torch.empty((numel + 3) // 4, dtype=torch.int64, device=device).random_(-2 ** 63, None)
    drop = min(round(p * 65536), 65535)  # r uniform on [-32768, 32767]: P(r < drop - 32768) = drop / 65536
    keep = torch.ge(bits.view(torch.int16)[:numel], drop - 32768, out=torch.empty(numel, dtype=dtype, device=device))
    keep.mul_(65536 / (65536 - drop))
    return keep.view(shape)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout (see :func:`keep_scale`): the distribution of ``F.dropout`` up to p's
    rounding to 2**-16, several times faster on a CPU."""
    if not training or p == 0.0:
        return x
    return x * keep_scale(x.shape, p, x.device, x.dtype)


def _drop(module: nn.Dropout, x: torch.Tensor) -> torch.Tensor:
    return dropout(x, module.p, module.training)


def _jagged(t: torch.Tensor, offsets: torch.Tensor, max_len: int) -> torch.Tensor:
    """[N, h, d] packed -> nested [B, h, j, d]. Contiguous values are required by every SDPA
    backend for jagged inputs (the q/k/v slices of the fused projection are strided views)."""
    return torch.nested.nested_tensor_from_jagged(t.contiguous(), offsets, max_seqlen=max_len).transpose(1, 2)


def _attend(qb, kb, vb, mask, dropout_p):
    """[b, h, Lq, d] x [b, h, Lk, d] -> [b, h, Lq, d]; ``mask`` [b, 1, 1, Lk] (True = attend) or None."""
    if dropout_p > 0.0:  # spelled out to use the faster dropout on the attention weights
        s = (qb @ kb.transpose(-1, -2)).mul_(qb.shape[-1] ** -0.5)
        if mask is not None:
            s = s.masked_fill_(~mask, float("-inf"))
        return (torch.softmax(s, dim=-1) * keep_scale(s.shape, dropout_p, s.device, s.dtype)) @ vb
    return F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask)


def _pieces(t: torch.Tensor, ranges: list) -> list:
    """``[t[s:s + n] for s, n in ranges]`` through one ``split`` where the ranges are disjoint: its
    backward assembles one gradient of ``t``, where a slice each would allocate and add a
    full-size zero gradient per range."""
    if not ranges:
        return []
    order = sorted(range(len(ranges)), key=lambda j: ranges[j][0])
    sizes, where, pos = [], [0] * len(ranges), 0
    for j in order:
        s, n = ranges[j]
        if s < pos:  # overlapping ranges: plain slices
            return [t[s:s + n] for s, n in ranges]
        if s > pos:
            sizes.append(s - pos)
        where[j] = len(sizes)
        sizes.append(n)
        pos = s + n
    if pos < t.shape[0]:
        sizes.append(t.shape[0] - pos)
    parts = t.split(sizes)
    return [parts[w] for w in where]


def _segment_attention(q, k, v, plan: SegmentPlan, dropout_p: float) -> torch.Tensor:
    """q: [B, h, d] (one query per row); k, v: [Nk, h, d], row ``plan.key_row[j]`` for key j."""
    row = plan.key_row
    s = (q[row] * k).sum(-1).mul_(q.shape[-1] ** -0.5)  # [Nk, h]
    with torch.no_grad():  # the softmax does not depend on the shift; the row max keeps exp finite
        top = s.new_full((plan.n_rows, s.shape[1]), float("-inf")).scatter_reduce_(
            0, row.unsqueeze(1).expand_as(s), s, "amax")
    e = torch.exp(s - top[row])
    w = e / e.new_zeros(plan.n_rows, s.shape[1]).index_add(0, row, e)[row]
    if dropout_p > 0.0:
        w = w * keep_scale(w.shape, dropout_p, w.device, w.dtype)
    return v.new_zeros(plan.n_rows, *v.shape[1:]).index_add(0, row, w.unsqueeze(-1) * v)


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: AttnPlan | JaggedPlan,
                     dropout_p: float = 0.0) -> torch.Tensor:
    """q: [Nq, h, d], k/v: [Nk, h, d] packed; returns [Nq, h, d] in packed query order."""
    if isinstance(plan, JaggedPlan):
        o = F.scaled_dot_product_attention(_jagged(q, plan.q_offsets, plan.q_max),
                                           _jagged(k, plan.k_offsets, plan.k_max),
                                           _jagged(v, plan.k_offsets, plan.k_max), dropout_p=dropout_p)
        return o.transpose(1, 2).values()
    if isinstance(plan, SegmentPlan):
        return _segment_attention(q, k, v, plan, dropout_p)
    h, d = q.shape[1], q.shape[2]
    bq = bk = bv = None
    if plan.buckets:  # one gather per tensor for all buckets, then a view per bucket
        sizes_q = [b.q_index.numel() for b in plan.buckets]
        sizes_k = [b.k_index.numel() for b in plan.buckets]
        bq = q[plan.q_gather].split(sizes_q)
        bk, bv = k[plan.k_gather].split(sizes_k), v[plan.k_gather].split(sizes_k)
    views = [b for b in plan.blocks if isinstance(b, View)]
    vq = _pieces(q, [(b.q0, b.b * b.lq) for b in views])
    vk = _pieces(k, [(b.k0, b.b * b.lk) for b in views])
    vv = _pieces(v, [(b.k0, b.b * b.lk) for b in views])
    outs = []
    i = 0
    for blk in plan.blocks:
        if isinstance(blk, View):
            qb = vq[i].view(blk.b, blk.lq, h, d).transpose(1, 2)
            kb = vk[i].view(blk.b, blk.lk, h, d).transpose(1, 2)
            vb = vv[i].view(blk.b, blk.lk, h, d).transpose(1, 2)
            i += 1
            o = _attend(qb, kb, vb, None, dropout_p)
            outs.append(o.transpose(1, 2).reshape(-1, h, d))
        else:
            b = plan.buckets[blk]
            shape_q, shape_k = (*b.q_index.shape, h, d), (*b.k_index.shape, h, d)
            o = _attend(bq[blk].view(shape_q).transpose(1, 2), bk[blk].view(shape_k).transpose(1, 2),
                        bv[blk].view(shape_k).transpose(1, 2), b.k_mask, dropout_p)
            outs.append(o.transpose(1, 2)[b.q_valid])
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    return out if plan.restore is None else out[plan.restore]


def packed_mha(mha: nn.MultiheadAttention, xq: torch.Tensor, xkv: torch.Tensor | None, plan,
               kv_rows: torch.Tensor | None = None, table=None) -> torch.Tensor:
    """``nn.MultiheadAttention`` on packed tokens. ``xkv=None``: self-attention (keys = ``xq``,
    or its rows ``kv_rows`` when some queries must not serve as keys). ``table=(T, rows)`` says
    ``xq == T[rows]`` with far fewer rows in ``T``: the projections run on ``T`` and are gathered."""
    H, h = mha.embed_dim, mha.num_heads
    W, bias = mha.in_proj_weight, mha.in_proj_bias
    if table is not None:
        qkv = F.linear(table[0], W, bias)
        q = qkv[:, :H][table[1]]
        k, v = qkv[:, H:][table[1] if kv_rows is None else table[1][kv_rows]].split(H, dim=-1)
    elif xkv is None and kv_rows is None:
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


def encoder_layer(layer: nn.TransformerEncoderLayer, x, plan, kv_rows=None, table=None):
    if layer.norm_first:
        raise ValueError("the packed path implements post-LayerNorm layers only")
    x = layer.norm1(x + _drop(layer.dropout1, packed_mha(layer.self_attn, x, None, plan, kv_rows, table)))
    return layer.norm2(x + _ff(layer, x, layer.dropout2))


def decoder_layer(layer: nn.TransformerDecoderLayer, x, memory, self_plan, cross_plan):
    if layer.norm_first:
        raise ValueError("the packed path implements post-LayerNorm layers only")
    x = layer.norm1(x + _drop(layer.dropout1, packed_mha(layer.self_attn, x, None, self_plan)))
    x = layer.norm2(x + _drop(layer.dropout2, packed_mha(layer.multihead_attn, x, memory, cross_plan)))
    return layer.norm3(x + _ff(layer, x, layer.dropout3))


def encode(encoder: nn.TransformerEncoder, x, plan, kv_rows=None, table=None):
    """``table=(T, rows)``: ``x == T[rows]`` (interest tokens are rows of the centroid table), so
    the first layer projects ``T`` and gathers (the same numbers, on far fewer rows)."""
    for i, layer in enumerate(encoder.layers):
        x = encoder_layer(layer, x, plan, kv_rows, table if i == 0 else None)
    return x if encoder.norm is None else encoder.norm(x)


def decode(decoder: nn.TransformerDecoder, x, memory, self_plan, cross_plan):
    for layer in decoder.layers:
        x = decoder_layer(layer, x, memory, self_plan, cross_plan)
    return x if decoder.norm is None else decoder.norm(x)


def decode_last(decoder: nn.TransformerDecoder, x, last, memory, self_plan, cross_plan, last_self_plan,
                last_cross_plan):
    """Decoder outputs at each row's position ``last`` ([B] packed indices) only.

    The decoder has no causal mask, and only the last position's output is used: in the final
    layer, the other positions serve as keys and values of the self-attention only, so their
    queries, cross-attention, feed-forward block and LayerNorms are skipped (the same numbers as
    ``decode(...)[last]``). ``last_*_plan``: plans with one query per row, in row order."""
    *layers, final = decoder.layers
    for layer in layers:
        x = decoder_layer(layer, x, memory, self_plan, cross_plan)
    if final.norm_first:
        raise ValueError("the packed path implements post-LayerNorm layers only")
    xl = x[last]
    xl = final.norm1(xl + _drop(final.dropout1, packed_mha(final.self_attn, xl, x, last_self_plan)))
    xl = final.norm2(xl + _drop(final.dropout2, packed_mha(final.multihead_attn, xl, memory, last_cross_plan)))
    xl = final.norm3(xl + _ff(final, xl, final.dropout3))
    return xl if decoder.norm is None else decoder.norm(xl)
