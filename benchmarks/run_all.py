"""Run every benchmark, collect the JSON results and draw the scaling curves.

Each bench script's ``main`` is called in this process (one interpreter start), with ``--quick``
when asked, writing ``<out-dir>/<bench>.json``. Then ``<out-dir>/summary.json`` (what ran, how
long, what failed), ``<out-dir>/tables.md`` (every table as Markdown, for RESULTS.md) and the
scaling plots ``scaling_items.png``, ``scaling_batch.png``, ``scaling_seqlen.png`` (time vs number
of items, vs batch size, vs sequence length; ours vs reference) are written.

    python -m benchmarks.run_all --quick                      # smoke mode, ~30 s on 2 CPU cores
    python -m benchmarks.run_all --threads 1                  # full sizes (long on a CPU)
    python -m benchmarks.run_all --only kmeans,eval --device cuda
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import time
import traceback
from pathlib import Path

BENCHES = ["interest_tokens", "kmeans", "train", "eval", "attention", "features", "graph"]
KINDS = {"items": "time vs number of items", "batch": "time vs batch size", "seqlen": "time vs sequence length"}


def available() -> list[str]:
    """The benches whose script exists (bench_features comes from another stage and may be absent)."""
    return [b for b in BENCHES if importlib.util.find_spec(f"benchmarks.bench_{b}") is not None]


def bench_argv(name: str, args, out: Path) -> list[str]:
    argv = ["--out", str(out)]
    if args.quick:
        argv.append("--quick")
    for opt in ("device", "dtype", "repeats", "threads"):
        v = getattr(args, opt)
        if v not in (None, ""):
            argv += [f"--{opt}", str(v)]
    return argv


def plot_curves(results: dict, out_dir: Path) -> list[Path]:
    """One PNG per curve kind; one panel per curve (ours vs reference series), log-log axes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for kind, title in KINDS.items():
        curves = [(name, c) for name, r in results.items() for c in r.get("curves", []) if c["kind"] == kind]
        if not curves:
            continue
        ncols = min(3, len(curves))
        nrows = -(-len(curves) // ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.9 * nrows), squeeze=False)
        for ax in axes.flat[len(curves):]:
            ax.set_visible(False)
        for ax, (bench, c) in zip(axes.flat, curves):
            any_extra = False
            for label, pts in c["series"].items():
                if not pts:
                    continue
                xs, ys = zip(*sorted(pts))
                style = "--" if label.startswith("reference") else "-"
                line, = ax.plot(xs, ys, style, marker="o", label=label)
                extra = set(c.get("extrapolated", {}).get(label, []))
                if extra:  # extrapolated points drawn hollow
                    any_extra = True
                    ex = [(x, y) for x, y in zip(xs, ys) if x in extra]
                    ax.plot(*zip(*ex), "o", color=line.get_color(), markerfacecolor="white",
                            markersize=7)
            if any_extra:
                ax.plot([], [], "o", color="gray", markerfacecolor="white", label="hollow: extrapolated")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(c["x"])
            ax.set_ylabel(c["y"])
            ax.set_title(f"{bench}: {c['name']}", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        env = next(iter(results.values()))["env"]
        fig.suptitle(f"{title} -- {env['device']}, ours in {env['dtype']}", fontsize=10)
        fig.tight_layout()
        path = out_dir / f"scaling_{kind}.png"
        tmp = path.with_name(f".{path.name}.tmp.png")
        fig.savefig(tmp, dpi=90)
        plt.close(fig)
        tmp.replace(path)
        written.append(path)
    return written


def write_tables_md(results: dict, path: Path) -> None:
    from benchmarks.common import header_text, markdown_table
    from missrec.fsutil import atomic_write_text

    parts = []
    for name, r in results.items():
        parts.append(f"## {name}\n\n`{r['command']}`\n\n{header_text(r['env'])}\n")
        for t in r["tables"].values():
            parts.append(f"**{t['title']}**\n\n{markdown_table(t)}\n")
        parts += [f"- {n}" for n in r.get("notes", [])]
        parts.append("")
    atomic_write_text(path, "\n".join(parts) + "\n")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="Run every bench in its small smoke-test mode.")
    p.add_argument("--out-dir", default="",
                   help="Where JSON, tables.md and PNGs go (default benchmarks/results, or "
                        "benchmarks/results/quick with --quick).")
    p.add_argument("--only", default="", help="Comma-separated subset of: " + ", ".join(BENCHES))
    p.add_argument("--skip", default="", help="Comma-separated benches to leave out.")
    p.add_argument("--device", default="", help="Passed to every bench (default: each bench's own default).")
    p.add_argument("--dtype", default="", help="Passed to every bench (auto | bf16 | fp16 | fp32).")
    p.add_argument("--repeats", default="", help="Passed to every bench (timed repeats).")
    p.add_argument("--threads", default="", help="Passed to every bench (torch CPU threads).")
    p.add_argument("--collect-only", action="store_true",
                   help="Run nothing: rebuild summary.json, tables.md and the plots from the <bench>.json "
                        "files already in --out-dir (e.g. after re-running one bench by hand).")
    args = p.parse_args(argv)

    have = available()
    chosen = [b.strip() for b in args.only.split(",") if b.strip()] or have
    unknown = [b for b in chosen + [s for s in args.skip.split(",") if s] if b not in BENCHES]
    if unknown:
        raise SystemExit(f"error: unknown benches {unknown}; choose from {BENCHES}")
    missing = [b for b in chosen if b not in have]
    if missing:
        raise SystemExit(f"error: bench scripts not present: {missing}")
    chosen = [b for b in chosen if b not in set(args.skip.split(","))]
    root = Path(__file__).resolve().parent
    out_dir = Path(args.out_dir) if args.out_dir else root / "results" / ("quick" if args.quick else "")
    out_dir.mkdir(parents=True, exist_ok=True)

    from benchmarks.common import set_argv
    from missrec.fsutil import atomic_write_json

    results, summary = {}, {"quick": args.quick, "benches": {}, "failed": []}
    if args.collect_only:
        import json

        for name in chosen:
            path = out_dir / f"{name}.json"
            if path.is_file():
                results[name] = json.loads(path.read_text(encoding="utf-8"))
                summary["benches"][name] = {"json": path.name, "collected": True,
                                            "command": results[name].get("command")}
        chosen = []
    for name in chosen:
        out = out_dir / f"{name}.json"
        argv_b = bench_argv(name, args, out)
        print(f"\n=== bench_{name} {' '.join(argv_b)}", flush=True)
        t0 = time.perf_counter()
        try:
            mod = importlib.import_module(f"benchmarks.bench_{name}")
            results[name] = mod.main(argv_b)
            summary["benches"][name] = {"json": out.name, "seconds": time.perf_counter() - t0, "argv": argv_b}
        except (Exception, SystemExit) as e:  # one failing bench must not hide the others' results
            summary["failed"].append(name)
            summary["benches"][name] = {"error": "".join(traceback.format_exception_only(type(e), e)).strip(),
                                        "traceback": traceback.format_exc(), "argv": argv_b}
            print(f"bench_{name} FAILED: {e}", file=sys.stderr, flush=True)
        finally:
            set_argv(None)
    if results:
        summary["plots"] = [p.name for p in plot_curves(results, out_dir)]
        write_tables_md(results, out_dir / "tables.md")
    atomic_write_json(out_dir / "summary.json", summary)
    print(f"\nwrote {out_dir}: " + ", ".join(sorted(x.name for x in out_dir.iterdir() if not x.name.startswith("."))))
    return summary


if __name__ == "__main__":
    s = main()
    sys.exit(1 if s["failed"] else 0)
