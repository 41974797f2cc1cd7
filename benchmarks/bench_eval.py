"""Full-ranking evaluation: users/s, ours (chunked scores, counted ranks) vs the original (materialised).

Ours: ``missrec.evaluate.evaluate_ranks`` with ``MISSRecScorer`` -- item representations computed
once per evaluation, scores in chunks of 65,536 items, the target's rank counted, no
``[users, items]`` matrix. Reference: RecBole's full-sort batch as the original ran it -- the
adaptors re-applied to the whole catalogue for every batch, the ``[B, N + 1, 2]`` fused tensor,
``[B, N + 1]`` scores, ``topk``, and the ``[B, N + 1]`` positives matrix of the collector.

The model is transductive (item IDs + both modalities, the paper's default) with random weights
and a non-zero fusion factor; features are random unit-norm 512-d. Both sides use the same batch
of users and must produce the same Recall/NDCG (checked in the table). Ours is timed on both
sequence paths on the same weights: ``ours`` = packed (the default, real tokens only) and
``padded`` (``--attention_impl padded``); with ``--sorted`` also packed with the users sorted by
history length (``sorted_users_per_s``; ranks are put back in user order and must be identical).

    python -m benchmarks.bench_eval [--quick] [--device cpu|cuda] [--dtype bf16|fp32] [--out FILE.json]
"""
from __future__ import annotations

import numpy as np
import torch

from benchmarks.common import (Ctx, add_curve, add_table, build_parser, finish, measure_adaptive, new_result,
                               random_interests, set_argv, synth_eval_split, synth_item_table)
from benchmarks.reference import RefTables, metrics_from_topk, ref_eval_batch
from missrec.config import MISSRecConfig
from missrec.data.atomic import Split
from missrec.evaluate import evaluate_ranks, metrics_from_ranks
from missrec.interest import n_interests
from missrec.model import MISSRec, MISSRecScorer

COLUMNS = ["items", "users", "mean_len", "batch", "ours_users_per_s", "padded_users_per_s", "reference_users_per_s",
           "speedup", "packed_vs_padded", "ours_peak_mb", "padded_peak_mb", "reference_peak_mb", "ndcg@10_ours",
           "ndcg@10_padded", "ndcg@10_reference", "recall@50_ours", "recall@50_reference"]


def run_case(ctx: Ctx, n_items: int, n_users: int, batch: int, sort: bool = False) -> dict:
    rng = np.random.default_rng(ctx.seed + n_items)
    max_len = 20 if ctx.quick else 50  # shorter histories only in the smoke mode
    items = synth_item_table(n_items, 512, ctx.seed, device=ctx.device)
    random_interests(items, n_interests(n_items, 0.5), ctx.seed)
    model = MISSRec(MISSRecConfig(use_id=True, n_items=n_items, max_seq_length=max_len)).to(ctx.device).eval()
    with torch.no_grad():
        model.fusion_factor.fill_(0.7)  # exercise the dynamic fusion weights
    split = synth_eval_split(n_items, n_users, rng, max_len=max_len)
    out = {}

    def ours(impl="packed", key="ranks", rows=None):
        model.config.attention_impl = impl
        s = split if rows is None else Split(split.user[rows], split.seq[rows], split.length[rows], split.target[rows])
        with ctx.autocast():
            out[key] = evaluate_ranks(MISSRecScorer(model, items), s, n_items, batch_size=batch,
                                      device=ctx.device, progress=False)
        model.config.attention_impl = "packed"

    tables = RefTables(items, ctx.device)

    @torch.no_grad()
    def reference():
        collected = []
        for s in range(0, n_users, batch):
            seq = torch.from_numpy(split.seq[s:s + batch]).to(ctx.device)
            length = torch.from_numpy(split.length[s:s + batch]).to(ctx.device)
            target = torch.from_numpy(split.target[s:s + batch]).to(ctx.device)
            collected.append(ref_eval_batch(model, tables, seq, length, target))
        out["collected"] = torch.cat(collected)

    o = measure_adaptive(ours, ctx)
    pd = measure_adaptive(lambda: ours("padded", "padded_ranks"), ctx)
    r = measure_adaptive(reference, ctx)
    extra = {}
    if sort:
        order = np.argsort(split.length, kind="stable")
        so = measure_adaptive(lambda: ours(key="sorted_ranks", rows=order), ctx)
        back = torch.empty_like(out["sorted_ranks"])
        back[torch.from_numpy(order)] = out["sorted_ranks"]
        extra = {"sorted_users_per_s": n_users / so["median_s"],
                 "sorted_ranks_identical": bool(torch.equal(back, out["ranks"]))}
    m_ours = metrics_from_ranks(out["ranks"], (10, 50))
    m_pad = metrics_from_ranks(out["padded_ranks"], (10, 50))
    m_ref = {**metrics_from_topk(out["collected"], 10), **metrics_from_topk(out["collected"], 50)}
    del model, items, tables
    return {"items": n_items, "users": n_users, "mean_len": float(split.length.mean()), "batch": batch,
            "ours_users_per_s": n_users / o["median_s"], "padded_users_per_s": n_users / pd["median_s"],
            "reference_users_per_s": n_users / r["median_s"],
            "speedup": r["median_s"] / o["median_s"], "packed_vs_padded": pd["median_s"] / o["median_s"],
            "ours_peak_mb": o["peak_mem_mb"], "padded_peak_mb": pd["peak_mem_mb"],
            "reference_peak_mb": r["peak_mem_mb"],
            "ndcg@10_ours": m_ours["ndcg@10"], "ndcg@10_padded": m_pad["ndcg@10"],
            "ndcg@10_reference": m_ref["ndcg@10"], **extra,
            "recall@50_ours": m_ours["recall@50"], "recall@50_reference": m_ref["recall@50"],
            "timing": "single run" if (o.get("single_run") or r.get("single_run")) else f"median of {o['repeats']}"}


def main(argv=None) -> dict:
    p = build_parser(__doc__.split("\n\n")[0], default_repeats=3)
    p.add_argument("--cases", default="",
                   help="Comma-separated items:users:batch triples (default on a CPU: "
                        "26000:2048:1024,450000:512:256; on a GPU: 26000:16384:1024,450000:4096:1024; "
                        "quick: 300:32:16,1000:32:16).")
    p.add_argument("--curve-items", default="",
                   help="Extra catalogue sizes for the users/s-vs-items curve, as items:users:batch "
                        "(default on a CPU: 4385:2048:1024,100000:1024:512; on a GPU: "
                        "4385:16384:1024,100000:8192:1024; quick: 600:32:16).")
    p.add_argument("--sorted", action="store_true",
                   help="Also time the packed path with users sorted by history length (an experiment).")
    args = p.parse_args(argv)
    set_argv(argv)
    ctx = Ctx(args)
    res = new_result("eval", ctx)

    def parse(spec, default):
        spec = spec or default
        try:
            return [tuple(int(v) for v in c.split(":")) for c in spec.split(",") if c]
        except ValueError:
            raise SystemExit(f"error: expected items:users:batch triples, got {spec!r}") from None

    # On a GPU both sides use the original's eval_batch_size of 1024 everywhere; on a CPU the 450k
    # case uses 256 so that the reference's [B, N + 1, 2] tensors fit in host memory.
    gpu = ctx.device.type == "cuda"
    cases = parse(args.cases, "300:32:16,1000:32:16" if ctx.quick else
                  "26000:16384:1024,450000:4096:1024" if gpu else "26000:2048:1024,450000:512:256")
    extra = parse(args.curve_items, "600:32:16" if ctx.quick else
                  "4385:16384:1024,100000:8192:1024" if gpu else "4385:2048:1024,100000:1024:512")
    rows = []
    for n_items, n_users, batch in cases:
        rows.append(run_case(ctx, n_items, n_users, batch, args.sorted))
        r = rows[-1]
        print(f"  {n_items:,} items: ours (packed) {r['ours_users_per_s']:.1f} users/s, padded "
              f"{r['padded_users_per_s']:.1f}, reference {r['reference_users_per_s']:.1f}"
              + (f", packed sorted {r['sorted_users_per_s']:.1f} (ranks identical: {r['sorted_ranks_identical']})"
                 if args.sorted else ""), flush=True)
    pts = rows + [run_case(ctx, *c) for c in extra]
    pts.sort(key=lambda r: r["items"])
    add_table(res, "main", "Full-ranking evaluation (users/s; same users and batch on both sides)",
              COLUMNS + (["sorted_users_per_s", "sorted_ranks_identical"] if args.sorted else []), rows)
    add_curve(res, "eval_vs_items", "items", "number of items", "ms per user",
              {"ours": [(r["items"], 1e3 / r["ours_users_per_s"]) for r in pts],
               "ours padded": [(r["items"], 1e3 / r["padded_users_per_s"]) for r in pts],
               "reference": [(r["items"], 1e3 / r["reference_users_per_s"]) for r in pts]})
    res["curve_points"] = pts
    bad = [r["items"] for r in rows if abs(r["ndcg@10_ours"] - r["ndcg@10_reference"]) > 1e-3
           or abs(r["ndcg@10_ours"] - r["ndcg@10_padded"]) > 1e-3
           or abs(r["recall@50_ours"] - r["recall@50_reference"]) > 1e-3]
    if bad:
        res["notes"].append(f"METRIC MISMATCH between ours and the reference at {bad} items")
    res["notes"].append("speedup = reference time / ours for the same users and batch; the reference is fp32, "
                        f"ours {ctx.dtype_name}; metrics must agree (ours counts ties against the target)")
    if any(b < 1024 for _, _, b in cases):
        res["notes"].append("batches below the original's eval_batch_size of 1024 keep the reference within "
                            "host memory: at 450k items its [1024, N+1, 2] fused tensor alone is 3.7 GB in fp32")
    return finish(res, ctx)


if __name__ == "__main__":
    main()
