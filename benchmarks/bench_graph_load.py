"""Load time and peak memory of the graph baselines' atomic-folder loader
(``missrec.graph.data.load_atomic``) at MovieLens-100k and Amazon-Sports size.

A leave-one-out atomic folder is generated (every prefix of each user's items[:-2] a train row,
then one valid and one test row per user, as the project's converters write it), with complete
histories (``--window 0``, the worst case: row text grows quadratically with a user's length) or
histories capped to the last ``--window`` items (the converters' default 50). The loader then runs
in a fresh subprocess, which reports its wall and CPU time, the process's max RSS before and
after loading (the baseline includes the torch import) and, from a second traced load, the peak
of Python/numpy allocations (tracemalloc).

    python -m benchmarks.bench_graph_load                          # both sizes, capped + complete
    python -m benchmarks.bench_graph_load --sizes sports --window 50
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {"ml-100k": {"users": 943, "items": 1682, "interactions": 100_000, "min_len": 20, "max_len": 737},
         "sports": {"users": 35_598, "items": 18_357, "interactions": 296_337, "min_len": 5, "max_len": 300}}


def write_leave_one_out(root, name, users, items, interactions, min_len, max_len, window=0, dim=32, seed=0):
    """Write ``<root>/<name>/`` (atomic layout) and return ``(folder, sequences)``; sequence lengths
    are heavy-tailed in [min_len, max_len] and sum to about ``interactions``; item popularity
    follows a power law."""
    import numpy as np

    from missrec.data.atomic import INTER_HEADER, write_features, write_index_map

    rng = np.random.default_rng(seed)
    mean_extra = max(interactions / users - min_len, 1.0)
    lens = np.clip(min_len + rng.exponential(mean_extra, size=users).astype(np.int64), min_len, max_len)
    lens = np.clip((lens * interactions / lens.sum()).astype(np.int64), min_len, max_len)
    pop = 1.0 / np.arange(1, items + 1) ** 0.7
    pop /= pop.sum()
    cdf = np.cumsum(pop)
    seqs = []
    for n in lens.tolist():  # distinct items, popularity-weighted (draw with replacement, keep firsts)
        draw = np.minimum(np.searchsorted(cdf, rng.random(3 * n + 20)), items - 1)
        _, first = np.unique(draw, return_index=True)
        seq = draw[np.sort(first)][:n]
        while len(seq) < n:  # rare: too few distinct draws; top up uniformly
            extra = rng.permutation(np.setdiff1d(np.arange(items), seq))[: n - len(seq)]
            seq = np.r_[seq, extra]
        seqs.append(seq)
    folder = Path(root) / name
    folder.mkdir(parents=True)
    files = {s: open(folder / f"{name}.{s}.inter", "w", encoding="utf-8") for s in ("train", "valid", "test")}
    for f in files.values():
        f.write(INTER_HEADER + "\n")
    for u, seq in enumerate(seqs):
        toks = [str(x) for x in seq.tolist()]
        joined = " ".join(toks)
        ends = np.cumsum([len(t) + 1 for t in toks]) - 1  # joined[:ends[k - 1]] = the first k tokens

        def hist(k):
            return joined[:ends[k - 1]] if not window or k <= window else " ".join(toks[k - window:k])
        n = len(toks)
        files["train"].write("".join(f"{u}\t{hist(k)}\t{toks[k]}\n" for k in range(1, n - 2)))
        files["valid"].write(f"{u}\t{hist(n - 2)}\t{toks[n - 2]}\n")
        files["test"].write(f"{u}\t{hist(n - 1)}\t{toks[n - 1]}\n")
    for f in files.values():
        f.close()
    write_index_map(folder / f"{name}.item2index", [f"i{i}" for i in range(items)])
    write_index_map(folder / f"{name}.user2index", [f"u{i}" for i in range(users)])
    write_features(folder / f"{name}.feat1CLS", rng.normal(size=(items, dim)).astype(np.float32))
    write_features(folder / f"{name}.feat3CLS", rng.normal(size=(items, dim)).astype(np.float32))
    return folder, seqs


_CHILD = """
import json, resource, sys, time, tracemalloc
from missrec.graph.data import load_atomic
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cpu0, t = resource.getrusage(resource.RUSAGE_SELF).ru_utime, time.perf_counter()
g = load_atomic(sys.argv[1], sys.argv[2])
dt, cpu = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_utime - cpu0
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
del g
tracemalloc.start()  # a second load, traced (tracemalloc slows allocation: not timed)
g = load_atomic(sys.argv[1], sys.argv[2])
peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({"seconds": dt, "cpu_seconds": cpu, "traced_peak_mib": peak / 2**20, "rss_before_mib": rss0 / 1024,
                  "rss_after_mib": rss1 / 1024, "users": g.n_users, "items": g.n_items, "train": g.n_train}))
"""


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="ml-100k,sports", help=f"Any of {', '.join(SIZES)}.")
    p.add_argument("--window", default="50,0", help="History caps to try (0: complete histories).")
    p.add_argument("--out", default="", help="Also write the rows as JSON here.")
    a = p.parse_args(argv)
    rows = []
    root = Path(__file__).resolve().parents[1]
    for size in [s for s in a.sizes.split(",") if s]:
        for window in [int(w) for w in a.window.split(",") if w]:
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                folder, seqs = write_leave_one_out(tmp, "d", **SIZES[size], window=window)
                gen = time.perf_counter() - t
                text_mib = sum(f.stat().st_size for f in folder.glob("*.inter")) / 2**20
                r = subprocess.run([sys.executable, "-c", _CHILD, tmp, "d"], capture_output=True, text=True,
                                   cwd=str(root), env=None)
                if r.returncode != 0:
                    raise SystemExit(f"{size} window {window}: loader failed:\n{r.stderr[-2000:]}")
                x = json.loads(r.stdout.strip().splitlines()[-1])
            row = {"size": size, "window": window or "complete", "interactions": int(sum(len(s) for s in seqs)),
                   "train_rows": int(sum(len(s) - 3 for s in seqs)), "inter_files_mib": round(text_mib, 1),
                   "generate_s": round(gen, 1), **{k: (round(v, 2) if isinstance(v, float) else v) for k, v in x.items()}}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if a.out:
        from missrec.fsutil import atomic_write_json
        atomic_write_json(a.out, rows)
    return rows


if __name__ == "__main__":
    main()
