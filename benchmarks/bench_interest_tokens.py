"""Interest-token construction: ours (one sort-based tensor op chain) vs the original's per-sample loop.

Both build, for every row of a batch, the sorted set of the text and image cluster ids of its
items. Rows come from a synthetic catalogue with a realistic (Amazon-like, mean ~7.5) history
length distribution ("realistic") or with every position filled ("full", the worst case).
Cluster ids use the finetuning ratio (K = N items for N = 26k). Integer work: --dtype does not apply.

    python -m benchmarks.bench_interest_tokens [--quick] [--device cpu|cuda] [--out FILE.json]
"""
from __future__ import annotations

import numpy as np
import torch

from benchmarks.common import (Ctx, add_curve, add_table, build_parser, finish, measure, new_result, set_argv,
                               synth_eval_split)
from benchmarks.reference import ref_interest_tokens
from missrec.interest import interest_tokens, n_interests

COLUMNS = ["batch", "length", "lengths", "mean_len", "K", "ours_ms", "reference_ms", "speedup", "match"]


def _batch(n_rows: int, max_len: int, full: bool, n_items: int, k: int, rng, device):
    if full:
        seq = rng.integers(1, n_items + 1, size=(n_rows, max_len))
    else:
        seq = synth_eval_split(n_items, n_rows, rng, max_len=max_len).seq
    seq = torch.from_numpy(np.ascontiguousarray(seq)).to(device)
    table_t = torch.cat([torch.zeros(1, dtype=torch.long), torch.randint(1, k + 1, (n_items,))]).to(device)
    table_v = torch.cat([torch.zeros(1, dtype=torch.long), torch.randint(1, k + 1, (n_items,))]).to(device)
    return table_t[seq], table_v[seq], seq


def _same(ours: torch.Tensor, ref: torch.Tensor) -> bool:
    """The reference keeps 0 as a token; dropping it must give exactly our rows."""
    ref_rows = [r[r != 0].tolist() for r in ref.cpu()]
    our_rows = [r[r != 0].tolist() for r in ours.cpu()]
    return ref_rows == our_rows


def run_case(ctx: Ctx, batch: int, length: int, full: bool, n_items: int, k: int, rng) -> dict:
    t, v, seq = _batch(batch, length, full, n_items, k, rng, ctx.device)
    ours = measure(lambda: interest_tokens(t, v), ctx)
    ref = measure(lambda: ref_interest_tokens(t, v), ctx)
    ok = _same(interest_tokens(t, v), ref_interest_tokens(t, v)[0])
    return {"batch": batch, "length": length, "lengths": "full" if full else "realistic",
            "mean_len": float((seq != 0).sum(1).float().mean()), "K": k,
            "ours_ms": ours["median_s"] * 1e3, "reference_ms": ref["median_s"] * 1e3,
            "speedup": ref["median_s"] / ours["median_s"], "match": ok}


def main(argv=None) -> dict:
    p = build_parser(__doc__.split("\n\n")[0], default_repeats=5)
    args = p.parse_args(argv)
    set_argv(argv)
    ctx = Ctx(args)
    res = new_result("interest_tokens", ctx)
    rng = np.random.default_rng(ctx.seed)
    n_items = 2000 if ctx.quick else 26_000
    k = n_interests(n_items, 0.5)
    batches = [64, 256] if ctx.quick else [512, 4096]
    L = 20 if ctx.quick else 50
    rows = [run_case(ctx, b, L, full, n_items, k, rng) for b in batches for full in (False, True)]
    add_table(res, "main", f"Interest tokens, {n_items:,} items, K = {k:,}: ours vs per-sample loop (median ms)",
              COLUMNS, rows)

    curve_b = [16, 64, 256] if ctx.quick else [64, 128, 256, 512, 1024, 2048, 4096]
    pts = [run_case(ctx, b, L, True, n_items, k, rng) for b in curve_b]
    add_curve(res, "interest_tokens_vs_batch", "batch", "batch size", f"ms (full rows, L={L})",
              {"ours": [(r["batch"], r["ours_ms"]) for r in pts],
               "reference": [(r["batch"], r["reference_ms"]) for r in pts]})
    curve_l = [5, 10, 20] if ctx.quick else [5, 10, 20, 30, 40, 50]
    b0 = 64 if ctx.quick else 512
    pts = [run_case(ctx, b0, length, True, n_items, k, rng) for length in curve_l]
    add_curve(res, "interest_tokens_vs_length", "seqlen", "sequence length", f"ms (full rows, batch {b0})",
              {"ours": [(r["length"], r["ours_ms"]) for r in pts],
               "reference": [(r["length"], r["reference_ms"]) for r in pts]})
    if not all(r["match"] for r in rows):
        res["notes"].append("MISMATCH: ours and the reference built different interest sets")
    res["notes"].append("speedup = reference time / ours, both on the same device in this process; "
                        "match = identical interest sets (the reference's 0 token removed)")
    return finish(res, ctx)


if __name__ == "__main__":
    main()
