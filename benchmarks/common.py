"""Shared benchmark plumbing: options, environment header, timing, peak memory, synthetic data, output.

Every bench script builds its parser with :func:`build_parser`, times with :func:`measure`
(warm-up runs, then the median over repeats, with device synchronisation around each run) and
hands a result dict to :func:`finish`, which prints the tables under an environment header and
writes the JSON. A result dict looks like::

    {"benchmark": str, "env": {...}, "quick": bool, "command": str,
     "tables": {name: {"title": str, "columns": [str], "rows": [{column: value}]}},
     "curves": [{"name", "kind" ("items" | "batch" | "seqlen"), "x", "y", "series": {label: [[x, y]]}}],
     "notes": [str]}
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import math
import os
import platform
import resource
import shlex
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


# ----------------------------------------------------------------------------- options
def build_parser(description: str, default_repeats: int) -> argparse.ArgumentParser:
    # "resolve": a script may redefine a common option (e.g. --threads) with its own help/default.
    p = argparse.ArgumentParser(description=description, conflict_handler="resolve",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="Tiny sizes and few repeats (the smoke-test mode); the full sizes otherwise.")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="Device for our implementation (the references run where the original ran).")
    p.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                   help="Compute dtype for ours: auto = bf16 on a GPU that supports it, fp32 on CPU. "
                        "References always run in fp32, as the original did.")
    p.add_argument("--repeats", type=int, default=default_repeats,
                   help="Timed repeats per measurement; the median is reported (capped by --quick).")
    p.add_argument("--warmup", type=int, default=1, help="Untimed warm-up runs before the repeats.")
    p.add_argument("--out", default="", help="Write the result JSON here (nothing written when empty).")
    p.add_argument("--seed", type=int, default=0, help="Seed of the synthetic data and the models.")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default). On a CPU shared with other jobs, 1 avoids "
                        "multi-threaded ops stalling at their barriers while a core is taken.")
    return p


class Ctx:
    """Resolved run settings shared by one bench invocation."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.quick = bool(args.quick)
        if (getattr(args, "threads", 0) or 0) > 0:
            torch.set_num_threads(args.threads)
        self.device = torch.device(args.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit("error: --device cuda requested but no CUDA device is available")
        name = args.dtype
        if name == "auto":
            name = "bf16" if (self.device.type == "cuda" and torch.cuda.is_bf16_supported()) else "fp32"
        self.dtype_name = name
        self.dtype = DTYPES[name]
        self.repeats = max(1, min(args.repeats, 2) if self.quick else args.repeats)
        self.warmup = max(0, min(args.warmup, 1) if self.quick else args.warmup)
        self.seed = args.seed
        torch.manual_seed(self.seed)
        self.env = env_header(self.device, self.dtype_name)

    def autocast(self):
        """Mixed precision for *ours* (what accelerate's mixed_precision does); no-op in fp32."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)


def env_header(device: torch.device, dtype_name: str) -> dict:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        dev = f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    else:
        dev = f"CPU {_cpu_model()} ({torch.get_num_threads()} torch threads, {os.cpu_count()} logical cores)"
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {"device": dev, "device_type": device.type, "dtype": dtype_name,
            "torch": torch.__version__, "python": platform.python_version(), "numpy": np.__version__,
            "platform": platform.platform(), "load_average_at_start": load,
            "time": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ----------------------------------------------------------------------------- timing
def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn, ctx: Ctx, *, repeats: int | None = None, warmup: int | None = None,
            memory: bool = False) -> dict:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs.

    With ``memory``, the first run (warm-up or timed) is wrapped in :class:`PeakMemory` and
    its peak above the starting level is returned as ``peak_mem_mb``.
    """
    repeats = ctx.repeats if repeats is None else max(1, repeats)
    warmup = ctx.warmup if warmup is None else max(0, warmup)
    out = {}
    times = []
    for i in range(warmup + repeats):
        mem = PeakMemory(ctx.device) if (memory and i == 0) else contextlib.nullcontext()
        sync(ctx.device)
        t0 = time.perf_counter()
        with mem:
            fn()
            sync(ctx.device)
        dt = time.perf_counter() - t0
        if memory and i == 0:
            out["peak_mem_mb"] = mem.peak_bytes / 2**20
        if i >= warmup:
            times.append(dt)
    out.update({"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
                "repeats": repeats, "warmup": warmup, "times_s": times})
    return out


def measure_adaptive(fn, ctx: Ctx, *, slow_s: float | None = None, memory: bool = True) -> dict:
    """Like :func:`measure`, for expensive calls: the first run is timed (and its peak memory taken);
    if it took longer than ``slow_s`` (default 20 s, 0.2 s with --quick) it is the measurement
    (``single_run``: True), otherwise it counts as the warm-up and ``ctx.repeats`` timed runs follow."""
    slow_s = (0.2 if ctx.quick else 20.0) if slow_s is None else slow_s
    first = measure(fn, ctx, repeats=1, warmup=0, memory=memory)
    if first["median_s"] > slow_s:
        return {**first, "single_run": True}
    rest = measure(fn, ctx, warmup=0)
    return {**rest, "warmup": 1, "single_run": False, **({"peak_mem_mb": first["peak_mem_mb"]} if memory else {})}


class PeakMemory:
    """Peak memory above the level at entry.

    CUDA: ``torch.cuda.max_memory_allocated`` after a reset. CPU: the resident set size, sampled
    every millisecond from /proc/self/statm by a background thread, combined with the
    ``getrusage`` high-water mark when the block raised it; freed heap is trimmed back to the OS
    first so that re-used memory is not hidden. Allocations living for less than ~1 ms can be
    missed on CPU.
    """

    def __init__(self, device, interval_s: float = 0.001):
        self.device = torch.device(device)
        self.interval = interval_s
        self.peak_bytes = 0
        self.method = "cuda.max_memory_allocated" if self.device.type == "cuda" else "rss-sampling+maxrss"

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        _malloc_trim()
        self._base = _rss_bytes()
        self._maxrss_before = _maxrss_bytes()
        self._peak = self._base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_bytes())
            self._stop.wait(self.interval)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = max(0, torch.cuda.max_memory_allocated(self.device) - self._base)
            return False
        self._stop.set()
        self._thread.join()
        peak = max(self._peak, _rss_bytes())
        maxrss = _maxrss_bytes()
        if maxrss > self._maxrss_before:  # the process high-water mark was set inside the block
            peak = max(peak, maxrss)
        self.peak_bytes = max(0, peak - self._base)
        return False


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return _maxrss_bytes()


def _maxrss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024  # Linux reports KiB


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def matmul_peak_tflops(ctx: Ctx, n: int | None = None) -> float:
    """Achieved TFLOP/s of a large square matmul in ``ctx.dtype``: the practical roof of this device."""
    n = n or (8192 if ctx.device.type == "cuda" else 2048)
    dt = ctx.dtype if ctx.device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=ctx.device, dtype=dt)
    b = torch.randn(n, n, device=ctx.device, dtype=dt)
    r = measure(lambda: a @ b, ctx, repeats=max(3, ctx.repeats), warmup=1)
    return 2 * n ** 3 / r["min_s"] / 1e12


def copy_bandwidth_gbs(ctx: Ctx, mb: int | None = None) -> float:
    """Achieved GB/s (read + write) of a large device-to-device copy: the practical memory roof."""
    mb = mb or (2048 if ctx.device.type == "cuda" else 256)
    src = torch.empty(mb * 2**20 // 4, device=ctx.device, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    r = measure(lambda: dst.copy_(src), ctx, repeats=max(3, ctx.repeats), warmup=1)
    return 2 * src.numel() * 4 / r["min_s"] / 1e9


# ----------------------------------------------------------------------------- synthetic data
def popularity(n_items: int, rng: np.random.Generator, alpha: float = 0.8) -> np.ndarray:
    """Zipf-like item popularity (a few head items, a long tail), in random item order."""
    p = 1.0 / np.arange(1, n_items + 1) ** alpha
    rng.shuffle(p)
    return p / p.sum()


def user_lengths(n_users: int, mean_len: float, rng: np.random.Generator, cap: int = 400) -> np.ndarray:
    """5-core users: 5 + a geometric tail, so the mean length is ``mean_len`` (Amazon-like: ~7-8)."""
    extra = max(mean_len - 5.0, 0.1)
    return np.minimum(5 + rng.geometric(1.0 / (1.0 + extra), size=n_users) - 1, cap)


def _rows(items: np.ndarray, starts: np.ndarray, t: np.ndarray, max_len: int):
    """History item ids (left-aligned, last ``max_len``), lengths and targets of rows (user start, position)."""
    first = np.maximum(0, t - max_len)
    length = t - first
    j = np.arange(max_len)
    idx = (starts + first)[:, None] + j[None, :]
    real = j[None, :] < length[:, None]
    seq = np.where(real, items[np.minimum(idx, len(items) - 1)], 0).astype(np.int64)
    return seq, length.astype(np.int64), items[starts + t].astype(np.int64)


def synth_splits(n_items: int, n_train_rows: int, rng: np.random.Generator, *, mean_len: float = 7.5,
                 max_len: int = 50) -> dict:
    """Train/valid/test :class:`missrec.data.atomic.Split` objects with the real split rules.

    Users get 5-core sequences of popularity-sampled items (ids 1..n_items); train rows are every
    prefix of ``items[:-2]`` with a history of at least one item, exactly ``n_train_rows`` of them.
    """
    from missrec.data.atomic import Split

    lens = []
    total = 0
    while total < n_train_rows:
        chunk = user_lengths(max(1024, (n_train_rows - total) // max(1, int(mean_len) - 3) + 1), mean_len, rng)
        rows = np.cumsum(chunk - 3)
        take = int(np.searchsorted(rows, n_train_rows - total)) + 1
        lens.append(chunk[:take])
        total += int(rows[min(take, len(rows)) - 1])
    lens = np.concatenate(lens)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    items = rng.choice(n_items, size=int(lens.sum()), p=popularity(n_items, rng)) + 1
    user = np.repeat(np.arange(len(lens)), lens - 3)
    pos = np.arange(len(user)) - np.repeat(np.cumsum(lens - 3) - (lens - 3), lens - 3) + 1
    user, pos = user[:n_train_rows], pos[:n_train_rows]
    out = {"train": Split(user, *_rows(items, starts[user], pos, max_len))}
    uids = np.arange(len(lens))
    out["valid"] = Split(uids, *_rows(items, starts, lens - 2, max_len))
    out["test"] = Split(uids, *_rows(items, starts, lens - 1, max_len))
    return out


def synth_eval_split(n_items: int, n_users: int, rng: np.random.Generator, *, mean_len: float = 7.5,
                     max_len: int = 50):
    """One evaluation row per user (history ``items[:-1]``, target ``items[-1]``)."""
    from missrec.data.atomic import Split

    lens = user_lengths(n_users, mean_len, rng)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    items = rng.choice(n_items, size=int(lens.sum()), p=popularity(n_items, rng)) + 1
    return Split(np.arange(n_users), *_rows(items, starts, lens - 1, max_len))


def synth_item_table(n_items: int, dim: int, seed: int, hidden_size: int = 300, missing_image: float = 0.01,
                     device="cpu"):
    """A :class:`missrec.items.ItemTable` with random CLIP-like (unit-norm) features, 512-d by default."""
    from missrec.items import ItemTable

    g = torch.Generator().manual_seed(seed)
    text = torch.zeros(n_items + 1, dim)
    image = torch.zeros(n_items + 1, dim)
    for t in (text, image):
        t[1:] = torch.nn.functional.normalize(torch.randn(n_items, dim, generator=g), dim=1)
    # A few items lack an image: all-zero rows, as in the real data.
    image[1:][torch.rand(n_items, generator=g) < missing_image] = 0
    return ItemTable(text, image, None, hidden_size).to(device)


def random_interests(items, k: int, seed: int) -> None:
    """Give every item random text/image cluster ids in 1..k and random centroids (no k-means)."""
    g = torch.Generator().manual_seed(seed + 1)
    n = items.n_items
    items.set_interests(torch.randint(0, k, (n,), generator=g) + 1, torch.randint(0, k, (n,), generator=g) + 1,
                        torch.randn(k, items.centroids.shape[1], generator=g) * 0.1)


# ----------------------------------------------------------------------------- output
def new_result(name: str, ctx: Ctx) -> dict:
    return {"benchmark": name, "env": ctx.env, "quick": ctx.quick,
            "command": "python -m benchmarks.bench_" + name + " " + " ".join(shlex.quote(a) for a in _argv()),
            "repeats": ctx.repeats, "warmup": ctx.warmup, "tables": {}, "curves": [], "notes": []}


def _argv() -> list[str]:
    return list(getattr(_argv, "override", None) or sys.argv[1:])


def set_argv(argv) -> None:
    """Record the argv a main() was called with (run_all calls mains in-process)."""
    _argv.override = list(argv) if argv is not None else None


def add_table(result: dict, name: str, title: str, columns: list[str], rows: list[dict]) -> None:
    for r in rows:
        missing = [c for c in columns if c not in r]
        if missing:
            raise KeyError(f"table {name}: row lacks columns {missing}")
    result["tables"][name] = {"title": title, "columns": list(columns), "rows": rows}


def add_curve(result: dict, name: str, kind: str, x: str, y: str, series: dict,
              extrapolated: dict | None = None) -> None:
    """``series``: label -> [(x, y)]; ``extrapolated``: label -> the x values whose y is extrapolated."""
    if kind not in ("items", "batch", "seqlen"):
        raise ValueError(f"curve kind must be items|batch|seqlen, got {kind!r}")
    result["curves"].append({"name": name, "kind": kind, "x": x, "y": y,
                             "series": {k: [[float(a), float(b)] for a, b in v] for k, v in series.items()},
                             "extrapolated": {k: [float(a) for a in v] for k, v in (extrapolated or {}).items()}})


def fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.1f}"
        if a >= 1:
            return f"{v:.2f}"
        return f"{v:.3g}"
    if isinstance(v, int):
        return f"{v:,}"
    return "-" if v is None else str(v)


def format_table(table: dict) -> str:
    cols = table["columns"]
    cells = [[fmt(r[c]) for c in cols] for r in table["rows"]]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(cols)]
    line = "  ".join(c.rjust(w) for c, w in zip(cols, widths))
    out = [table["title"], line, "-" * len(line)]
    out += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(out)


def markdown_table(table: dict) -> str:
    cols = table["columns"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in table["rows"]]
    return "\n".join(out)


def header_text(env: dict) -> str:
    return (f"device: {env['device']} | dtype (ours): {env['dtype']} | torch {env['torch']} | "
            f"python {env['python']} | numpy {env['numpy']} | load avg {env['load_average_at_start']}")


def finish(result: dict, ctx: Ctx) -> dict:
    print(header_text(result["env"]))
    for t in result["tables"].values():
        print()
        print(format_table(t))
    for n in result["notes"]:
        print(f"note: {n}")
    if ctx.args.out:
        from missrec.fsutil import atomic_write_json
        Path(ctx.args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(ctx.args.out, result)
    return result


# ----------------------------------------------------------------------------- work counting
_GATHERS = ("aten::index.Tensor", "aten::embedding", "aten::index_select", "aten::gather", "aten::take")
_NO_TRAFFIC = ("aten::empty", "aten::empty_strided", "aten::empty_like", "aten::detach", "aten::lift_fresh")


def count_work(fn) -> dict:
    """FLOPs (``torch.utils.flop_counter``) and an estimate of the bytes moved by one call of ``fn``.

    Bytes: every non-view op is charged the sizes of its tensor inputs and outputs (a gather only
    its output twice plus its index, not the whole table it reads from). Caches are ignored, so it
    is the kernel-level traffic, an upper-bound-like estimate of DRAM traffic.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten
    from torch.utils.flop_counter import FlopCounterMode

    class _Bytes(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = func.name()
            if getattr(func, "is_view", False) or name.split(".")[0] in _NO_TRAFFIC:
                return out
            outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
            ins = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
            size = lambda ts: sum(t.numel() * t.element_size() for t in ts)
            if name.split(".")[0] in {g.split(".")[0] for g in _GATHERS}:
                idx = [t for t in ins if not t.is_floating_point()]
                self.total += 2 * size(outs) + size(idx)
            else:
                self.total += size(ins) + size(outs)
            return out

    fc = FlopCounterMode(display=False)
    bm = _Bytes()
    with fc, bm:
        fn()
    return {"flops": float(fc.get_total_flops()), "bytes": float(bm.total)}
