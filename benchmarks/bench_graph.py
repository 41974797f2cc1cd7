"""Epoch time and peak memory of each graph baseline at Amazon-Sports size (MMSSL's README:
35,598 users, 18,357 items, 256,308 interactions; 4096-d image + 1024-d text features).

Data is generated (power-law item popularity, Gaussian features); only sizes matter here. Each
model runs in its own subprocess (clean peak memory). On CPU a full epoch takes minutes, so the
script times ``--batches`` training batches after one warm-up batch and EXTRAPOLATES the epoch
time (per-batch median x batches per epoch); the table says so. Evaluation time is one
``embeddings()`` plus full-ranking test evaluation of every user.

    python -m benchmarks.bench_graph --threads 1               # CPU, all models, extrapolated
    python -m benchmarks.bench_graph --quick                   # smoke mode (run_all --quick)
    python -m benchmarks.bench_graph --device cuda --batches 0 --models lightgcn,vbpr,slmrec,mmssl,mmssl_full
                                                               # GPU: whole epochs
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

SPORTS = {"users": 35598, "items": 18357, "interactions": 256308, "image": 4096, "text": 1024}


def make_data(users, items, interactions, dims, seed=0):
    import numpy as np

    from missrec.graph.data import GraphData

    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, items + 1) ** 0.8
    u = rng.integers(0, users, size=int(interactions * 1.15))
    i = rng.choice(items, size=len(u), p=pop / pop.sum())
    key = np.unique(u * items + i)[:interactions]
    u, i = key // items, key % items
    test = [np.zeros(0, np.int64) for _ in range(users)]
    for uu, ii in zip(rng.integers(0, users, size=users), rng.integers(0, items, size=users)):
        test[uu] = np.array([ii])
    feats = {k: rng.standard_normal((items, d), dtype=np.float32) for k, d in dims.items()}
    return GraphData.from_pairs(users, items, u, i, test, test, feats, "sports-size")


def run_one(a) -> dict:
    import torch

    import missrec.graph.base as base
    from missrec.graph import MODELS
    from missrec.graph.evaluate import evaluate_data

    torch.set_num_threads(a.threads) if a.threads else None
    data = make_data(a.users, a.items, a.interactions, {"image": a.image_dim, "text": a.text_dim})
    device = torch.device(a.device)
    torch.manual_seed(0)
    model = MODELS[a.model](data, json.loads(a.cfg)).to(device)
    opts = model.configure_optimizers()
    full = {}
    real = base.sample_bpr_batches

    def limited(*args, **kw):
        batches = real(*args, **kw)
        full["n"] = len(batches)
        return batches if a.batches <= 0 else batches[: a.batches + 1]

    mod = sys.modules[type(model).__module__]
    mod.sample_bpr_batches = limited  # time a few batches of the real epoch code
    times = []
    model.train()
    gen = torch.Generator().manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    if a.batches <= 0:
        model.train_epoch(data, 1, gen, opts)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        epoch_s, per_batch, measured = time.perf_counter() - t0, None, full["n"]
    else:
        # One batch per call: time each (the first is warm-up).
        batches = real(data, model.cfg.get("batch_size", 1024), gen, **({"mode": "users"} if a.model == "mmssl" else {}))
        full["n"] = len(batches)
        for b in range(a.batches + 1):
            mod.sample_bpr_batches = lambda *x, _b=batches[b], **k: [_b]
            t = time.perf_counter()
            model.train_epoch(data, 1, gen, opts)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t)
        per_batch = statistics.median(times[1:])
        epoch_s, measured = per_batch * full["n"], a.batches
    mod.sample_bpr_batches = real
    t = time.perf_counter()
    evaluate_data(model, data, "test", (10, 20, 50), batch_size=1024)
    eval_s = time.perf_counter() - t
    peak = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    return {"model": a.model, "device": str(device), "batches_per_epoch": full["n"], "batches_timed": measured,
            "s_per_batch": per_batch, "epoch_s": epoch_s, "extrapolated": a.batches > 0, "eval_s": eval_s,
            "peak_gib": peak, "peak_kind": "GPU max allocated" if device.type == "cuda" else "process max RSS",
            "params": int(sum(p.numel() for p in model.parameters()))}


# MMSSL's discriminator reads B x I dense score rows and has ~I^2/4 + I^2/32 weights (docs/BASELINES.md
# section 1, bug 6): at Sports size that is ~86 GFLOP per discriminator pass, ~100 s a batch on a
# shared CPU core. The bounded row keeps the I_max most popular items as its input columns and
# caps the hidden widths (missrec/graph/mmssl.py, "Memory bound"); every other cost is unchanged.
BOUNDED_MMSSL = {"d_max_items": 4096, "d_hidden_cap": 1024}
SPECS = {"lightgcn": ("lightgcn", {}), "vbpr": ("vbpr", {}), "slmrec": ("slmrec", {}),
         "mmssl": ("mmssl", BOUNDED_MMSSL), "mmssl_full": ("mmssl", {})}
QUICK = {"users": 2000, "items": 1000, "interactions": 20000, "image_dim": 256, "text_dim": 128}
COLUMNS = ["model", "cfg", "batches_per_epoch", "batches_timed", "s_per_batch", "epoch_s", "eval_s", "peak_gib",
           "params"]


def main(argv=None) -> dict:
    from benchmarks.common import Ctx, add_table, build_parser, finish, new_result, set_argv

    p = build_parser(__doc__.split("\n\n")[0], default_repeats=2)
    p.add_argument("--models", default="lightgcn,vbpr,slmrec,mmssl",
                   help="Any of " + ", ".join(SPECS) + " (mmssl: discriminator bounded by "
                        f"{BOUNDED_MMSSL}; mmssl_full: the original's sizes, ~100 s a batch on a CPU core).")
    p.add_argument("--batches", type=int, default=-1,
                   help="Timed batches per model after one warm-up (0: one whole epoch; -1: --repeats).")
    p.add_argument("--device", default="cpu")
    full = {"users": SPORTS["users"], "items": SPORTS["items"], "interactions": SPORTS["interactions"],
            "image_dim": SPORTS["image"], "text_dim": SPORTS["text"]}
    for k, v in full.items():
        p.add_argument(f"--{k}", type=int, default=None, help=f"default {v} (quick: {QUICK[k]})")
    p.add_argument("--cfg", default="", help="JSON model options added to every model's.")
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)  # subprocess mode
    p.add_argument("--model_cfg", default="{}", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    sizes = dict(QUICK if a.quick else full)
    for k in sizes:
        if getattr(a, k) is not None:
            sizes[k] = getattr(a, k)
        setattr(a, k, sizes[k])
    if a.batches < 0:
        a.batches = 1 if a.quick else max(1, a.repeats)
    if a.model:
        a.cfg = a.model_cfg
        print(json.dumps(run_one(a)))
        return {}
    set_argv(argv)
    ctx = Ctx(a)
    res = new_result("graph", ctx)
    from missrec.graph import MODELS

    rows = []
    for m in [x.strip() for x in a.models.split(",") if x.strip()]:
        if m not in SPECS:
            raise SystemExit(f"error: --models: unknown {m!r}; choose from {', '.join(SPECS)}")
        name, cfg = SPECS[m]
        if name not in MODELS.available():
            res["notes"].append(f"{m}: not available in this checkout, skipped")
            continue
        cfg = {**cfg, **json.loads(a.cfg or "{}")}
        cmd = [sys.executable, "-m", "benchmarks.bench_graph", "--model", name, "--model_cfg", json.dumps(cfg),
               "--device", a.device, "--batches", str(a.batches), "--threads", str(a.threads)]
        cmd += [x for k in sizes for x in (f"--{k}", str(sizes[k]))]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=str(Path(__file__).resolve().parents[1]))
        if r.returncode != 0:
            res["notes"].append(f"{m}: FAILED: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
            print(r.stderr[-2000:], file=sys.stderr, flush=True)
            continue
        x = json.loads(r.stdout.strip().splitlines()[-1])
        rows.append({"model": m, "cfg": json.dumps(cfg) if cfg else "defaults",
                     "batches_per_epoch": x["batches_per_epoch"], "batches_timed": x["batches_timed"],
                     "s_per_batch": x["s_per_batch"], "epoch_s": x["epoch_s"], "eval_s": x["eval_s"],
                     "peak_gib": x["peak_gib"], "params": x["params"]})
        print(f"{m}: {x['epoch_s']:.1f} s/epoch ({'extrapolated' if x['extrapolated'] else 'measured'}), "
              f"eval {x['eval_s']:.1f} s, peak {x['peak_gib']:.2f} GiB", flush=True)
    add_table(res, "main", f"Graph baselines at {'quick' if a.quick else 'Amazon-Sports'} size: {a.users:,} users, "
              f"{a.items:,} items, {a.interactions:,} interactions, image {a.image_dim} + text {a.text_dim} "
              f"(generated); epoch_s " + ("= median s/batch x batches/epoch (EXTRAPOLATED)" if a.batches > 0
                                          else "measured over one epoch"), COLUMNS, rows)
    res["notes"].append("peak_gib: " + ("torch.cuda.max_memory_allocated" if a.device.startswith("cuda")
                                        else "the model subprocess's max RSS (data + model + one batch)"))
    res["notes"].append("eval_s: one embeddings() pass plus full-ranking evaluation of every user")
    return finish(res, ctx)


if __name__ == "__main__":
    main()
