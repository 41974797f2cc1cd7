"""Run the paper's four finetuning settings on one dataset and print the results table.

Settings (rows of the MISSRec README table): with/without item IDs (transductive/inductive) x
with/without pretraining, then every ID-only model of missrec/model_registry.py (SASRec, GRU4Rec:
one row each, named by its model type) and popularity; each row gives the
wall time it took. Without --pretrained only the from-scratch settings run. Every option after
the script's own is passed to finetune/run.py for every run (e.g. --config, --data_root,
--epochs, --interest_reg original|mean for the form of the interest regulariser). Results of each run go to
<output_dir>/<id|noid>-<pt|scratch>/, the table to <output_dir>/table.md and table.json.

    python finetune/table.py --config finetune/configs/scientific.yaml --pretrained MISSRec-FHCKM_mm_full-100.pth
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

COLS = ("recall@10", "ndcg@10", "recall@50", "ndcg@50")
# The MISSRec README's results (R@10, N@10, R@50, N@50), keyed by (dataset, with_id, pretrained).
PAPER = {
    ("Scientific", True, False): (0.1282, 0.0711, 0.2376, 0.0946), ("Scientific", True, True): (0.1360, 0.0753, 0.2431, 0.0983),
    ("Scientific", False, False): (0.1269, 0.0659, 0.2354, 0.0891), ("Scientific", False, True): (0.1278, 0.0658, 0.2375, 0.0893),
    ("Pantry", True, False): (0.0771, 0.0363, 0.1804, 0.0583), ("Pantry", True, True): (0.0779, 0.0365, 0.1875, 0.0598),
    ("Pantry", False, False): (0.0715, 0.0337, 0.1801, 0.0569), ("Pantry", False, True): (0.0771, 0.0345, 0.1833, 0.0571),
    ("Instruments", True, False): (0.1292, 0.0842, 0.2369, 0.1072), ("Instruments", True, True): (0.1300, 0.0843, 0.2370, 0.1071),
    ("Instruments", False, False): (0.1207, 0.0771, 0.2191, 0.0981), ("Instruments", False, True): (0.1201, 0.0771, 0.2218, 0.0988),
    ("Arts", True, False): (0.1279, 0.0744, 0.2387, 0.0982), ("Arts", True, True): (0.1314, 0.0767, 0.2410, 0.1002),
    ("Arts", False, False): (0.1107, 0.0641, 0.2093, 0.0853), ("Arts", False, True): (0.1119, 0.0625, 0.2100, 0.0836),
    ("Office", True, False): (0.1269, 0.0848, 0.2001, 0.1005), ("Office", True, True): (0.1275, 0.0856, 0.2005, 0.1012),
    ("Office", False, False): (0.1072, 0.0694, 0.1726, 0.0834), ("Office", False, True): (0.1038, 0.0666, 0.1701, 0.0808),
}
SETTINGS = [(True, False), (True, True), (False, False), (False, True)]


def paper_key(dataset: str) -> str | None:
    base = dataset.split("_")[0]
    return base if any(k[0] == base for k in PAPER) else None


def baselines(data_root: str, dataset: str, max_len: int) -> dict:
    """Popularity on the test split, by the same evaluator (a floor every setting should clear)."""
    from missrec.baselines import PopularityScorer
    from missrec.data.atomic import load_dataset
    from missrec.evaluate import evaluate

    ds = load_dataset(data_root, dataset, max_len=max_len, require_features=())
    pop = PopularityScorer.from_split(ds.splits["train"], ds.n_items)
    return {"popularity": evaluate(pop, ds.splits["test"], ds.n_items, progress=False)}


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 100 else f"{seconds / 60:.1f} min"


def main(argv=None):
    from missrec.args import ModelArgs, TrainArgs, parse
    from missrec.data.sample import ensure_sample
    from missrec.evaluate import round_metrics
    from missrec.fsutil import atomic_write_json, atomic_write_text
    from missrec.data.atomic import MAX_LEN
    from missrec.model_registry import MODELS
    from missrec.recipes import finetune as ft

    from missrec.cli import ArgumentParser
    from missrec.errors import OptionError
    pre = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    pre.add_argument("--pretrained", default="none", help="Checkpoint for the two pretrained settings (none: skip them).")
    # The transfer model's four settings, then one row per ID-only model of the registry.
    runs = [(f"{'id' if i else 'noid'}-{'pt' if p else 'scratch'}", m, i, p)
            for m, (_, cls) in MODELS.items() if cls.transfers for i, p in SETTINGS]
    runs += [(m, m, True, False) for m, (_, cls) in MODELS.items() if not cls.transfers]
    pre.add_argument("--settings", default="all",
                     help=f"Comma-separated subset of {','.join(r[0] for r in runs)}.")
    own, rest = pre.parse_known_args(argv)
    margs, targs, fargs = parse((ModelArgs, TrainArgs, ft.FinetuneArgs), rest, defaults=ft.FINETUNE_DEFAULTS)
    wanted = None if own.settings == "all" else set(own.settings.split(","))
    known = {r[0] for r in runs}
    if wanted and wanted - known:
        raise OptionError("--settings", f"unknown setting(s) {', '.join(sorted(wanted - known))}; "
                                        f"choose from {','.join(sorted(known))} or all")
    no_pt = own.pretrained.lower() == "none"
    if wanted and no_pt and wanted & {"id-pt", "noid-pt"}:
        raise OptionError("--pretrained", "the id-pt / noid-pt settings need --pretrained CHECKPOINT")
    data_root = fargs.data_root or str(ensure_sample())
    base_out = Path(targs.output_dir)
    rows = []
    for tag, model, with_id, pretrained in runs:
        if (wanted and tag not in wanted) or (pretrained and no_pt):
            continue
        print(f"== {fargs.dataset}: {tag}", flush=True)
        t0 = time.perf_counter()
        res = ft.main(rest + ["--data_root", data_root, "--mode", "transductive" if with_id else "inductive",
                              "--pretrained", own.pretrained if pretrained else "none",
                              "--output_dir", str(base_out / tag), "--model", model], drop_foreign_options=True)
        rows.append({"setting": tag, "model": model, "with_id": with_id, "pretrained": pretrained, "best_epoch": res["best_epoch"],
                     "epochs_run": res["epochs_run"], "seconds": time.perf_counter() - t0,
                     "test": {k: res["test"][k] for k in COLS}})
    t0 = time.perf_counter()
    base = baselines(data_root, fargs.dataset, margs.max_seq_length or MAX_LEN)
    pop_seconds = time.perf_counter() - t0
    key = paper_key(fargs.dataset)
    head = ["Dataset", "With ID?", "Pre-trained?", "R@10", "N@10", "R@50", "N@50", "time"]
    if key:
        head += ["paper R@10", "paper N@10", "paper R@50", "paper N@50"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cls = MODELS[r["model"]][1]
        if cls.transfers:
            cells = [fargs.dataset, "✓" if r["with_id"] else "✗", "✓" if r["pretrained"] else "✗"]
        else:
            cells = [fargs.dataset, f"{cls.__name__} (ID only)", "✗"]
        cells += [f"{r['test'][c]:.4f}" for c in COLS] + [_duration(r["seconds"])]
        if key:
            paper = PAPER.get((key, r["with_id"], r["pretrained"])) if cls.transfers else None
            cells += [f"{v:.4f}" for v in paper] if paper else [""] * 4
        lines.append("| " + " | ".join(cells) + " |")
    pop = base["popularity"]
    lines.append("| " + " | ".join([fargs.dataset, "popularity", "—"] + [f"{pop[c]:.4f}" for c in COLS]
                                   + [_duration(pop_seconds)] + (["", "", "", ""] if key else [])) + " |")
    table = "\n".join(lines)
    print(table)
    base_out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(base_out / "table.md", table + "\n")
    atomic_write_json(base_out / "table.json", round_metrics({"dataset": fargs.dataset, "interest_reg": targs.interest_reg, "rows": rows, "baselines": base}))
    return rows


def cli(argv=None) -> int:
    """Console-script entry: one-line errors; exit status 0 (main's return value is for callers)."""
    from missrec.cli import run
    run(main, argv)
    return 0
