"""Interest discovery k-means: ours (torch, on --device) vs the original's single-pass CPU clustering.

For N items there are 2N vectors (text + image, 300-d after the adaptors) and K = ceil(ratio x 2N)
clusters: ratio 0.02 (pretraining) and 0.5 (finetuning, K = N). Columns:

* ours_s: our k-means as interest discovery runs it (auto init, up to 20 Lloyd iterations, tol 1e-4);
* ours_single_step_s: ours with compat=True (random centres, one assignment, one mean update);
* reference_s: torchpq MinibatchKMeans on the CPU as the original drove it (see benchmarks/reference.py).

When a measurement would exceed --budget-s it is not run: its time is extrapolated from timed
probes (one assignment over a slice of the rows against all K centroids, plus, for the reference,
its per-cluster mean loop on a full-size mini-batch) with the cost model in :func:`ours_model` /
:func:`reference_model`; the row says so in `extrapolated`. Rows that did run also carry the
model's estimate in the JSON (`*_model_s`) so the model can be checked against reality.

    python -m benchmarks.bench_kmeans [--quick] [--device cpu|cuda] [--budget-s 120] [--out FILE.json]
"""
from __future__ import annotations

import time

import torch

from benchmarks.common import (Ctx, add_curve, add_table, build_parser, finish, matmul_peak_tflops, measure,
                               new_result, set_argv, sync)
from benchmarks.reference import RefMinibatchKMeans, ref_batch_size, ref_cluster_kmeans
from missrec.interest import assign, kmeans, n_interests

COLUMNS = ["N_items", "vectors", "K", "ratio", "ours_s", "ours_iters", "ours_single_step_s", "reference_s",
           "speedup_single_step", "speedup_full", "extrapolated"]
N_ITER = 20  # interest discovery's default Lloyd iterations (TrainArgs.kmeans_iters)
DIM = 300


def make_vectors(n_vec: int, seed: int, n_modes: int = 256) -> torch.Tensor:
    """Adaptor-output-like vectors: a mixture of Gaussian modes (CLIP features are clustered)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_modes, DIM, generator=g)
    x = torch.empty(n_vec, DIM)
    for s in range(0, n_vec, 1 << 18):
        e = min(s + (1 << 18), n_vec)
        x[s:e] = centres[torch.randint(n_modes, (e - s,), generator=g)] + 0.7 * torch.randn(e - s, DIM, generator=g)
    return x


def _timed(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- cost models
def probe_rows(k: int, flops: float, target_s: float, n: int) -> int:
    """Rows for an assignment probe of about ``target_s`` seconds at ``flops`` FLOP/s."""
    return int(min(n, max(256, target_s * flops / (2.0 * k * DIM))))


def ours_model(x: torch.Tensor, k: int, m: int) -> dict:
    """Per-row assignment cost (from ``m`` rows against K centroids) and the mean-update cost."""
    dev = x.device
    n = x.shape[0]
    g = torch.Generator().manual_seed(1)
    centroids = x[torch.randperm(n, generator=g)[:k].to(dev)].clone()
    t_assign = _timed(lambda: assign(x[:m], centroids), dev)
    labels = torch.randint(k, (n,), generator=g).to(dev)

    def update():
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).to(x.dtype)
        new = sums / counts.clamp_min(1).unsqueeze(1)
        ((new - centroids) ** 2).sum(1).max().sqrt().item()

    t_update = _timed(update, dev)
    per_row = t_assign / m
    step = per_row * n + t_update
    return {"per_row_s": per_row, "update_s": t_update, "probe_rows": m,
            "single_step_s": step, "full_s": N_ITER * step + per_row * n}


def _ref_minibatches(n: int, k: int) -> list[int]:
    """Sizes of the mini-batches ``cluster_kmeans`` feeds to ``fit_minibatch`` (one pass)."""
    bs = ref_batch_size(k)
    sizes = []
    for ptr in range(0, n, bs):
        remaining = n - ptr - bs
        sizes.append(bs + remaining if remaining <= k else bs)
        if remaining <= k:
            break
    return sizes


def reference_model(x_cpu: torch.Tensor, k: int, m: int, loop_iters: int = 96) -> dict:
    """Reference cost = per-row assignment x rows (fit pass + predict pass)
    + per mini-batch: the mean loop's fixed part + its per-cluster cost x non-empty clusters."""
    n = x_cpu.shape[0]
    km = RefMinibatchKMeans(k)
    g = torch.Generator().manual_seed(2)
    cents = x_cpu[torch.randperm(n, generator=g)[:k]].T.contiguous()
    data = x_cpu[:m].T.contiguous()
    t_assign = _timed(lambda: km.get_labels(data, cents), "cpu")
    per_row = t_assign / m
    sizes = _ref_minibatches(n, k)
    b = sizes[0]
    batch = x_cpu[:b].T.contiguous()
    labels = torch.randint(k, (b,), generator=g)
    # Two loop lengths separate the fixed part (zeros(d, K), unique) from the per-cluster part.
    i2 = min(loop_iters, k)
    i1 = max(1, i2 // 6)
    t1 = min(_timed(lambda: km.compute_centroids_loop(batch, labels, max_iters=i1), "cpu") for _ in range(2))
    t2 = min(_timed(lambda: km.compute_centroids_loop(batch, labels, max_iters=i2), "cpu") for _ in range(2))
    per_cluster = max(t2 - t1, 0.0) / max(i2 - i1, 1) if i2 > i1 else t2 / i2
    fixed = max(t1 - i1 * per_cluster, 0.0)
    # Non-empty clusters: every centre of the first mini-batch is one of its points (so all K);
    # later mini-batches: the expected number of distinct labels among s rows over K clusters.
    clusters = min(k, sizes[0]) + sum(k * (1.0 - (1.0 - 1.0 / k) ** s) for s in sizes[1:])
    total = per_row * (sum(sizes) + n) + fixed * len(sizes) + per_cluster * clusters
    return {"per_row_s": per_row, "per_cluster_s": per_cluster, "loop_fixed_s": fixed, "probe_rows": m,
            "minibatches": len(sizes), "minibatch_rows": b, "clusters_looped": clusters, "total_s": total}


# ----------------------------------------------------------------------------- one configuration
def run_case(ctx: Ctx, n_items: int, ratio: float, budget: float, flops: float, probe_s: float) -> dict:
    n = 2 * n_items
    k = n_interests(n_items, ratio)
    x_cpu = make_vectors(n, ctx.seed + n_items)
    x = x_cpu.to(ctx.device)
    extrapolated = []
    m = probe_rows(k, flops, probe_s, n)
    om = ours_model(x, k, m)
    row = {"N_items": n_items, "vectors": n, "K": k, "ratio": ratio, "ours_model": om}

    def timed_or_model(fn, est, name):
        if est <= budget:
            reps = 1 if est > 5 else None
            r = measure(fn, ctx, repeats=reps, warmup=0 if est > 5 else None)
            return r["median_s"]
        extrapolated.append(name)
        return est

    if om["full_s"] <= budget:
        res = {}
        row["ours_s"] = timed_or_model(lambda: res.setdefault("r", kmeans(x, k, n_iter=N_ITER, seed=ctx.seed)),
                                       om["full_s"], "ours")
        row["ours_iters"] = res["r"].n_iter
    else:
        row["ours_s"] = timed_or_model(None, om["full_s"], "ours")
        row["ours_iters"] = f"{N_ITER} (cap)"
    row["ours_single_step_s"] = timed_or_model(lambda: kmeans(x, k, seed=ctx.seed, compat=True),
                                               om["single_step_s"], "ours single step")
    mr = probe_rows(k, flops, probe_s, n)
    rm = reference_model(x_cpu, k, mr)
    row["reference_model"] = rm
    row["reference_s"] = timed_or_model(lambda: ref_cluster_kmeans(x_cpu, k, seed=ctx.seed), rm["total_s"],
                                        "reference")
    row["speedup_single_step"] = row["reference_s"] / row["ours_single_step_s"]
    row["speedup_full"] = row["reference_s"] / row["ours_s"]
    row["extrapolated"] = ", ".join(extrapolated) if extrapolated else "no"
    row["ours_model_s"], row["reference_model_s"] = om["full_s"], rm["total_s"]
    del x, x_cpu
    return row


def main(argv=None) -> dict:
    p = build_parser(__doc__.split("\n\n")[0], default_repeats=3)
    p.add_argument("--budget-s", type=float, default=None,
                   help="Longest a single measurement may run before it is extrapolated instead "
                        "(default: 120 s full, 0.1 s with --quick so that both paths run).")
    p.add_argument("--sizes", default="",
                   help="Comma-separated item counts N (default: 10000,100000,900000; quick: 300,1200).")
    args = p.parse_args(argv)
    set_argv(argv)
    ctx = Ctx(args)
    res = new_result("kmeans", ctx)
    budget = args.budget_s if args.budget_s is not None else (0.1 if ctx.quick else 120.0)
    sizes = [int(s) for s in args.sizes.split(",") if s] or ([300, 1200] if ctx.quick else [10_000, 100_000, 900_000])
    flops = matmul_peak_tflops(ctx, n=512 if ctx.quick else None) * 1e12
    probe_s = 0.05 if ctx.quick else 3.0
    rows = []
    for n_items in sizes:
        for ratio in (0.02, 0.5):
            rows.append(run_case(ctx, n_items, ratio, budget, flops, probe_s))
            r = rows[-1]
            print(f"  N={n_items:,} ratio={ratio}: ours {r['ours_s']:.3g}s, single step {r['ours_single_step_s']:.3g}s, "
                  f"reference {r['reference_s']:.3g}s ({r['extrapolated']})", flush=True)
    add_table(res, "main", f"k-means for interest discovery (seconds; extrapolated beyond {budget:g} s)", COLUMNS, rows)
    for ratio in (0.02, 0.5):
        sel = [r for r in rows if r["ratio"] == ratio]
        extra = lambda tag: [r["N_items"] for r in sel if tag in r["extrapolated"].split(", ")]
        add_curve(res, f"kmeans_vs_items_ratio{ratio}", "items", "N items (2N vectors)",
                  f"seconds (K = {ratio} x 2N)",
                  {"ours (k-means)": [(r["N_items"], r["ours_s"]) for r in sel],
                   "ours single step": [(r["N_items"], r["ours_single_step_s"]) for r in sel],
                   "reference": [(r["N_items"], r["reference_s"]) for r in sel]},
                  extrapolated={"ours (k-means)": extra("ours"), "ours single step": extra("ours single step"),
                                "reference": extra("reference")})
    res["notes"] += [
        "speedup_single_step = reference / ours single step (like for like); speedup_full = reference / ours "
        "with up to 20 Lloyd iterations (ours does a real k-means, the reference stops after one pass)",
        "the reference always runs on the CPU (where the original's pretraining clustered); ours on "
        f"{ctx.device}; k-means is fp32 on both sides",
        f"matmul roof measured here: {flops / 1e9:.1f} GFLOP/s",
    ]
    return finish(res, ctx)


if __name__ == "__main__":
    main()
