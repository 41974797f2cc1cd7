"""Variable-length attention core: padded SDPA vs length buckets vs jagged nested tensors vs FlexAttention.

Times only the attention of one self-attention layer (the decoder's, the model's hot spot), from
packed per-token ``q, k, v`` of shape ``[N, heads, head_dim]`` to the packed output, on the same
weights (the ``in_proj`` of a default-config MISSRec decoder layer) and the same batches:

* ``padded``: ``scaled_dot_product_attention`` on the batch padded to ``max_seq_length`` with a key
  mask, as ``--attention_impl padded`` runs it (its inputs are already dense, so no packing cost);
* ``buckets``: missrec/packed.py's per-length buckets (``--attention_impl packed``), plan included;
* ``jagged``: torch nested tensors of jagged layout (``nested_tensor_from_jagged``) fed to
  ``scaled_dot_product_attention`` (``--attention_impl jagged``);
* ``flex``: FlexAttention over the whole packed batch with a document mask (block mask built per
  batch, included). On a CPU it has no backward in this torch, and without ``torch.compile`` it
  materialises the ``N x N`` scores, so it is timed forward-only and only where that fits.

``eval`` = forward under ``no_grad``; ``train`` = forward + backward to q, k, v. Every impl's output
is checked against ``buckets`` (max abs difference in the table). The impls are interleaved within
each repeat in one process, so machine load hits them alike; the median over repeats is reported.

    python -m benchmarks.bench_attention [--quick] [--threads 1] [--repeats 7] [--flex eager|compiled|off]
"""
from __future__ import annotations

import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import Ctx, add_table, build_parser, finish, new_result, set_argv, synth_splits, sync
from missrec import packed
from missrec.config import MISSRecConfig
from missrec.model import MISSRec
from missrec.tasks import split_tensors

IMPLS = ["padded", "buckets", "jagged", "flex"]
COLUMNS = ["lengths", "mode", "batch", "mean_len", "max_len", "tokens", "padded_ms", "buckets_ms", "jagged_ms",
           "flex_ms", "jagged_vs_buckets", "buckets_vs_padded", "max_abs_diff", "flex_note"]
FLEX_SCORES_LIMIT = 64e6  # eager FlexAttention materialises heads x N x N fp32 scores: cap at 256 MB


def lengths_of(kind: str, batch: int, max_len: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "uniform":
        return rng.integers(1, max_len + 1, size=batch)
    if kind == "movielens":
        return np.where(rng.random(batch) < 0.9, max_len, rng.integers(1, max_len + 1, size=batch))
    # Amazon-style: the train rows (every prefix of 5-core users) of a Scientific-sized set.
    length = split_tensors(synth_splits(4385, 34_000, rng, mean_len=59_427 / 8_442, max_len=max_len)["train"])["length"]
    return length.numpy()[rng.choice(len(length), size=batch, replace=False)]


class Case:
    """Packed q/k/v of one batch plus the dense copies the padded impl starts from."""

    def __init__(self, model: MISSRec, length: np.ndarray, width: int, device, seed: int):
        mha = model.trm_model.decoder.layers[0].self_attn
        self.h, H = mha.num_heads, mha.embed_dim
        self.d = H // self.h
        g = torch.Generator().manual_seed(seed)
        self.length = torch.from_numpy(length).to(device)
        self.off = packed.offsets_of(self.length)
        n = int(self.length.sum())
        with torch.no_grad():
            x = torch.randn(n, H, generator=g).to(device)
            q, k, v = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).split(H, dim=-1)
        self.qkv = [t.reshape(n, self.h, self.d).contiguous() for t in (q, k, v)]
        self.grad_out = torch.randn(n, self.h, self.d, generator=g).to(device)
        B = len(length)
        self.real = torch.arange(width, device=device).unsqueeze(0) < self.length.unsqueeze(1)
        self.dense = []
        for t in self.qkv:
            z = t.new_zeros(B, width, self.h, self.d)
            z[self.real] = t
            self.dense.append(z.transpose(1, 2).contiguous())  # [B, h, L, d]
        self.key_mask = self.real[:, None, None, :]
        self.n, self.max_len = n, int(length.max())


def run_padded(c: Case, q, k, v):
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=c.key_mask)
    return o.transpose(1, 2)[c.real]  # the real positions, in packed order


def run_buckets(c: Case, q, k, v):
    plan = packed.plan_attention(c.off[:-1], c.length, c.off[:-1], c.length, impl="packed")
    return packed.varlen_attention(q, k, v, plan)


def run_jagged(c: Case, q, k, v):
    plan = packed.plan_attention(c.off[:-1], c.length, c.off[:-1], c.length, impl="jagged")
    return packed.varlen_attention(q, k, v, plan)


class Flex:
    def __init__(self, mode: str):
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        self.create_block_mask = create_block_mask
        self.fn = torch.compile(flex_attention, dynamic=True) if mode == "compiled" else flex_attention
        self.mode = mode

    def __call__(self, c: Case, q, k, v):
        doc = torch.repeat_interleave(torch.arange(len(c.length), device=q.device), c.length)

        def same_row(b, h, qi, ki):
            return doc[qi] == doc[ki]

        mask = self.create_block_mask(same_row, None, None, c.n, c.n, device=q.device)
        o = self.fn(*(t.transpose(0, 1).unsqueeze(0) for t in (q, k, v)), block_mask=mask)
        return o[0].transpose(0, 1)


def flex_status(ctx: Ctx, mode: str):
    """(callable or None, reason when unavailable)."""
    if mode == "off":
        return None, "not run: --flex off"
    try:
        f = Flex(mode)
    except Exception as e:  # ImportError on older torch, or a backend refusing the device
        return None, f"not available: {type(e).__name__}: {e}"
    return f, ""


def time_case(ctx: Ctx, c: Case, mode: str, flex, flex_reason: str) -> dict:
    fns = {"padded": run_padded, "buckets": run_buckets, "jagged": run_jagged}
    note = flex_reason
    if flex is not None:
        if mode == "train":
            note = "not available: FlexAttention has no backward on CPU in this torch" if ctx.device.type == "cpu" \
                else ""
        elif flex.mode == "eager" and c.h * c.n * c.n > FLEX_SCORES_LIMIT:
            note = f"not run: eager FlexAttention would materialise {c.h * c.n * c.n * 4 / 2**30:.1f} GiB of scores"
        if not note:
            fns["flex"] = flex
    outs = {}

    def once(name):
        fn = fns[name]
        leaves = [t.detach().clone().requires_grad_(mode == "train")
                  for t in (c.dense if name == "padded" else c.qkv)]
        sync(ctx.device)
        t0 = time.perf_counter()
        if mode == "train":
            with ctx.autocast():
                o = fn(c, *leaves)
            o.backward(c.grad_out.to(o.dtype))
        else:
            with torch.no_grad(), ctx.autocast():
                o = fn(c, *leaves)
        sync(ctx.device)
        outs[name] = o.detach().float()
        return time.perf_counter() - t0

    times = {n: [] for n in fns}
    for _ in range(ctx.warmup):
        for n in fns:
            once(n)
    for _ in range(ctx.repeats):
        for n in fns:  # interleaved: load changes hit every impl alike
            times[n].append(once(n))
    med = {n: statistics.median(t) * 1e3 for n, t in times.items()}
    diff = max((outs[n] - outs["buckets"]).abs().max().item() for n in outs)
    nan = float("nan")
    return {"mode": mode, "batch": len(c.length), "mean_len": float(c.length.float().mean()), "max_len": c.max_len,
            "tokens": c.n, **{f"{n}_ms": med.get(n, nan) for n in IMPLS},
            "jagged_vs_buckets": med["buckets"] / med["jagged"], "buckets_vs_padded": med["padded"] / med["buckets"],
            "max_abs_diff": diff, "flex_note": note or f"{flex.mode}, forward only",
            "times_ms": {n: [t * 1e3 for t in ts] for n, ts in times.items()}}


def main(argv=None) -> dict:
    p = build_parser(__doc__.split("\n\n")[0], default_repeats=7)
    p.add_argument("--batch", type=int, default=0, help="Rows per batch (default 512; 32 with --quick).")
    p.add_argument("--lengths", default="amazon,uniform,movielens",
                   help="Comma-separated length distributions: amazon (Scientific-style train prefixes), "
                        "uniform (1..max_seq_length), movielens (90%% at max_seq_length).")
    p.add_argument("--flex", default="eager", choices=["eager", "compiled", "off"],
                   help="FlexAttention variant: eager (no compile), compiled (torch.compile, ~30 s to compile "
                        "on a CPU), or off.")
    args = p.parse_args(argv)
    set_argv(argv)
    ctx = Ctx(args)
    res = new_result("attention", ctx)
    width = 20 if ctx.quick else 50
    batch = args.batch or (32 if ctx.quick else 512)
    model = MISSRec(MISSRecConfig(max_seq_length=width)).to(ctx.device).eval()
    flex, flex_reason = flex_status(ctx, args.flex)
    rows = []
    for i, kind in enumerate(k.strip() for k in args.lengths.split(",") if k.strip()):
        if kind not in ("amazon", "uniform", "movielens"):
            raise SystemExit(f"error: --lengths: unknown distribution {kind!r} (amazon, uniform, movielens)")
        c = Case(model, lengths_of(kind, batch, width, np.random.default_rng(ctx.seed + i)), width, ctx.device,
                 ctx.seed + i)
        for mode in ("eval", "train"):
            rows.append({"lengths": kind, **time_case(ctx, c, mode, flex, flex_reason)})
            r = rows[-1]
            print(f"  {kind} {mode}: padded {r['padded_ms']:.2f} ms, buckets {r['buckets_ms']:.2f} ms, "
                  f"jagged {r['jagged_ms']:.2f} ms, flex {r['flex_ms']:.2f} ms", flush=True)
    add_table(res, "main", "Attention core, one self-attention layer (ms; medians of interleaved repeats)",
              COLUMNS, rows)
    res["notes"].append("x_vs_y = y time / x time (> 1: x faster); max_abs_diff = largest difference of any impl's "
                        "output from buckets'; padded starts from dense [B, h, max_seq_length, d] inputs")
    return finish(res, ctx)


if __name__ == "__main__":
    main()
