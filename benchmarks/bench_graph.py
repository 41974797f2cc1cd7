"""Epoch time and peak memory of each graph baseline at Amazon-Sports size (MMSSL's README:
35,598 users, 18,357 items, 256,308 interactions; 4096-d image + 1024-d text features).

Data is generated (power-law item popularity, Gaussian features); only sizes matter here. Each
model runs in its own subprocess (clean peak memory). On CPU a full epoch takes minutes, so the
script times ``--batches`` training batches after one warm-up batch and EXTRAPOLATES the epoch
time (per-batch median x batches per epoch); the table says so. Evaluation time is one
``embeddings()`` plus full-ranking test evaluation of every user.

    python benchmarks/bench_graph.py                       # CPU, all models, extrapolated
    python benchmarks/bench_graph.py --device cuda --batches 0   # GPU: full epochs (0 = whole epoch)
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
    import numpy as np
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="lightgcn,vbpr,slmrec,mmssl")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batches", type=int, default=3, help="Timed batches per model after one warm-up (0: a whole epoch).")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--users", type=int, default=SPORTS["users"])
    p.add_argument("--items", type=int, default=SPORTS["items"])
    p.add_argument("--interactions", type=int, default=SPORTS["interactions"])
    p.add_argument("--image_dim", type=int, default=SPORTS["image"])
    p.add_argument("--text_dim", type=int, default=SPORTS["text"])
    p.add_argument("--cfg", default="{}", help="JSON model options (one model only).")
    p.add_argument("--out", default="benchmarks/results/graph.json")
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)  # subprocess mode
    a = p.parse_args(argv)
    if a.model:
        print(json.dumps(run_one(a)))
        return
    from missrec.graph import MODELS

    rows = []
    for m in a.models.split(","):
        if m not in MODELS.available():
            print(f"{m}: not available in this checkout, skipped", flush=True)
            continue
        cmd = [sys.executable, __file__, "--model", m] + [x for k, v in vars(a).items()
                                                          if k not in ("model", "models", "out")
                                                          for x in (f"--{k}", str(v))]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"{m}: FAILED\n{r.stderr[-2000:]}", flush=True)
            continue
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        x = rows[-1]
        print(f"{m}: {x['epoch_s']:.1f} s/epoch ({'extrapolated' if x['extrapolated'] else 'measured'}), "
              f"eval {x['eval_s']:.1f} s, peak {x['peak_gib']:.2f} GiB", flush=True)
    head = "| model | device | batches/epoch | s/batch | epoch s | eval s | peak GiB | params |"
    lines = [f"Amazon-Sports size: {a.users} users, {a.items} items, {a.interactions} interactions, "
             f"features image {a.image_dim} + text {a.text_dim} (generated)", "", head, "|---|---|---|---|---|---|---|---|"]
    for x in rows:
        ep = f"{x['epoch_s']:.1f}" + (f" (extrapolated from {x['batches_timed']})" if x["extrapolated"] else "")
        spb = f"{x['s_per_batch']:.3f}" if x["s_per_batch"] is not None else "—"
        lines.append(f"| {x['model']} | {x['device']} | {x['batches_per_epoch']} | {spb} | {ep} | {x['eval_s']:.1f} | "
                     f"{x['peak_gib']:.2f} ({x['peak_kind']}) | {x['params']:,} |")
    print("\n".join(lines))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from missrec.fsutil import atomic_write_json
    atomic_write_json(out, {"command": " ".join(sys.argv), "rows": rows, "table": lines})


if __name__ == "__main__":
    main()
