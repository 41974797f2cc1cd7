"""One table for a dataset from results.json files of graph baselines (baselines/run.py) and of
MISSRec finetuning (finetune/run.py), test metrics side by side.

    python baselines/compare.py outputs/baselines/sample_a-* outputs/finetune/results.json --out table.md

MISSRec's evaluator has one target per row (Recall@K = Hit@K); the graph evaluator also reports
Precision/Hit. Columns missing from a row are left blank. All rows must be of one dataset.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from ..errors import CorruptFileError, UserError

from ..cli import ArgumentParser, run

COLS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "recall@50", "ndcg@50")


def _row(path: Path) -> dict:
    p = path / "results.json" if path.is_dir() else path
    try:
        r = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CorruptFileError(f"{p}: not a readable results.json ({e})") from None
    if not isinstance(r, dict) or "test" not in r or "dataset" not in r:
        raise CorruptFileError(f"{p}: expected a results.json with 'dataset' and 'test'")
    if "model" in r:  # graph baseline
        name, pop = r["model"], r.get("popularity", {}).get("test")
    else:  # MISSRec finetune
        name = f"MISSRec ({'id' if r.get('mode') == 'transductive' else 'no id'}, " \
               f"{'pretrained' if str(r.get('pretrained', 'none')).lower() != 'none' else 'scratch'})"
        pop = None
    return {"dataset": r["dataset"], "name": name, "test": r["test"], "popularity": pop, "path": str(p)}


def table(paths, cols=COLS) -> str:
    rows = [_row(Path(x)) for x in paths]
    if not rows:
        raise UserError("no results given")
    ds = {r["dataset"] for r in rows}
    if len(ds) > 1:
        raise UserError(f"results of several datasets {sorted(ds)}: give one dataset's results")
    pop = next((r["popularity"] for r in rows if r["popularity"]), None)
    body = [(r["name"], r["test"]) for r in rows] + ([("popularity", pop)] if pop else [])
    fmt = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
    lines = [f"| {rows[0]['dataset']} | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    lines += [f"| {n} | " + " | ".join(fmt(t.get(c)) for c in cols) + " |" for n, t in body]
    return "\n".join(lines)


def main(argv=None) -> int:
    """``missrec-compare`` / baselines/compare.py: exit status 0, or 2 after one ``error:`` line."""
    return run(_compare, argv, exit=False)


def _compare(argv) -> int:
    p = ArgumentParser(prog="missrec-compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="results.json files or the folders holding them")
    p.add_argument("--out", default="", help="Also write the table here (markdown).")
    a = p.parse_args(argv)
    t = table(a.results)
    print(t)
    if a.out:
        from ..fsutil import atomic_write_text
        atomic_write_text(a.out, t + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
