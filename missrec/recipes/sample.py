"""``missrec-sample``: generate the embedded sample (if needed), print its size and the baselines.

The generator is missrec/data/sample.py; the baselines are missrec/baselines.py.
"""
from __future__ import annotations

import sys
import time
from typing import Sequence

from ..baselines import baseline_table, format_baseline_table
from ..cli import ArgumentParser, run
from ..errors import OptionError
from ..data.sample import SampleConfig, ensure_sample, format_summary, read_summary


def main(argv: Sequence[str] | None = None) -> int:
    """``missrec-sample``: exit status 0, or 2 after one ``error:`` line."""
    return run(_main, argv, exit=False)


def _main(argv: Sequence[str]) -> int:
    ap = ArgumentParser(
        prog="missrec-sample",
        description="Generate (if needed) the embedded synthetic multi-domain sample under ROOT/sample and print "
                    "its size and the random / popularity / most-frequent-successor baselines on the target "
                    "domains' test split.")
    ap.add_argument("--root", default=None,
                    help="data root; the sample goes to ROOT/sample (default: $MISSREC_DATA_ROOT or ./data)")
    ap.add_argument("--seed", type=int, default=0, help="generator seed (same seed => identical files; default 0)")
    ap.add_argument("--force", action="store_true", help="regenerate even if a complete sample with this seed exists")
    ap.add_argument("--no_baselines", action="store_true", help="skip the baseline evaluation")
    defaults = SampleConfig()
    helps = {"n_sources": "number of source domains, pooled into the pretraining corpus sample_pt",
             "n_targets": "number of small target domains sample_a, sample_b, ...",
             "source_items": "items per source domain", "source_users": "users per source domain",
             "target_items": "items per target domain", "target_users": "users per target domain"}
    for f, h in helps.items():
        ap.add_argument("--" + f, type=int, default=getattr(defaults, f), metavar="N",
                        help=f"{h} (default {getattr(defaults, f)})")
    ap.add_argument("--source_images", action="store_true",
                    help="also write PNGs for the source domains (sample_pt/images/<domain>/)")
    args = ap.parse_args(argv)
    sizes = {f: getattr(args, f) for f in helps}
    if args.source_images:
        sizes["source_images"] = True
    t0 = time.perf_counter()
    try:
        path = ensure_sample(args.root, args.seed, force=args.force, progress=True, **sizes)
    except OptionError as e:  # a size out of range: named as the option the user typed
        where = f"--{e.where.replace('_', '-')}" if e.where in sizes else e.where
        ap.error(f"{where}: {e.message}" if where else e.message)
    print(f"sample at {path} (seed {args.seed}, {time.perf_counter() - t0:.1f}s)")
    print(format_summary(read_summary(path)["domains"]))
    if not args.no_baselines:
        print("\nbaselines on the target domains' test split (full ranking, fitted on train):")
        print(format_baseline_table(baseline_table(path, progress=False)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
