"""Run the paper's four finetuning settings on one dataset and print the results table.

Settings (rows of the MISSRec README table): with/without item IDs (transductive/inductive) x
with/without pretraining, then every ID-only model of missrec/model_registry.py (SASRec, GRU4Rec:
one row each, named by its model type) and popularity; each row gives the wall time it took; its
columns are Recall and NDCG at every cut-off of --ks. Without --pretrained only the from-scratch
settings run. Every option but --settings is finetuning's and is passed to finetune/run.py for
every run (e.g. --config, --data_root, --epochs, --interest_reg original|mean for the form of the
interest regulariser); a model option a model has not is dropped for it, with a note. Results of each run go to
<output_dir>/<id|noid>-<pt|scratch>/, the table to <output_dir>/table.md and table.json.

    python finetune/table.py --config finetune/configs/scientific.yaml --pretrained MISSRec-FHCKM_mm_full-100.pth
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from missrec.args import InvalidOption
from missrec.model_registry import MODELS
from missrec.cli import entry_status, run

PAPER_COLS = ("recall@10", "ndcg@10", "recall@50", "ndcg@50")  # the cut-offs of the paper's table
SETTINGS = [(True, False), (True, True), (False, False), (False, True)]
# The transfer model's four settings (with/without IDs x with/without pretraining), then one row per
# ID-only model of the registry: (tag, model type, with IDs, pretrained).
RUNS = ([(f"{'id' if i else 'noid'}-{'pt' if p else 'scratch'}", m, i, p)
         for m, (_, cls) in MODELS.items() if cls.transfers for i, p in SETTINGS]
        + [(m, m, True, False) for m, (_, cls) in MODELS.items() if not cls.transfers])
SETTING_TAGS = tuple(r[0] for r in RUNS)


@dataclass
class TableArgs:
    """The table's own option (--pretrained, the checkpoint of the pretrained rows, is finetuning's)."""

    settings: str = field(default="all", metadata={"help": "Comma-separated subset of " + ",".join(SETTING_TAGS) + " (or all)."})

    def __post_init__(self):
        wanted = set(self.settings.split(",")) - {"all"}
        if wanted - set(SETTING_TAGS):
            raise InvalidOption("settings", f"unknown setting(s) {', '.join(sorted(wanted - set(SETTING_TAGS)))}; "
                                            f"choose from {','.join(SETTING_TAGS)} or all")

    @property
    def wanted(self) -> set[str] | None:
        return None if self.settings == "all" else set(self.settings.split(","))


def columns(ks) -> list[str]:
    """Recall and NDCG at every cut-off of --ks, in order: R@10, N@10, R@20, N@20, ..."""
    return [f"{m}@{k}" for k in ks for m in ("recall", "ndcg")]


def _short(col: str) -> str:
    return col.replace("recall@", "R@").replace("ndcg@", "N@")
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


def paper_key(dataset: str) -> str | None:
    base = dataset.split("_")[0]
    return base if any(k[0] == base for k in PAPER) else None


def baselines(data_root: str, dataset: str, max_len: int, ks=(10, 20, 50)) -> dict:
    """Popularity on the test split, by the same evaluator (a floor every setting should clear)."""
    from missrec.baselines import PopularityScorer
    from missrec.data.atomic import load_dataset
    from missrec.evaluate import evaluate

    ds = load_dataset(data_root, dataset, max_len=max_len, require_features=())
    pop = PopularityScorer.from_split(ds.splits["train"], ds.n_items)
    return {"popularity": evaluate(pop, ds.splits["test"], ds.n_items, ks=tuple(ks), progress=False)}


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 100 else f"{seconds / 60:.1f} min"


def run_table(argv=None) -> list:
    """Parse ``argv`` (the table's --settings plus finetuning's options), run the settings, print and
    write the table; return its rows."""
    from missrec.args import ModelArgs, parse
    from missrec.data.sample import ensure_sample
    from missrec.errors import OptionError
    from missrec.fsutil import atomic_write_json, atomic_write_text
    from missrec.data.atomic import MAX_LEN
    from missrec.recipes import finetune as ft

    argv = list(sys.argv[1:] if argv is None else argv)
    margs, targs, fargs, own = parse((ModelArgs, ft.FinetuneTrainArgs, ft.FinetuneArgs, TableArgs), argv,
                                     description=__doc__)
    rest = _without(argv, "--settings")  # finetuning's options, passed to every run
    wanted, own_pt = own.wanted, fargs.pretrained
    no_pt = own_pt.lower() == "none"
    if wanted and no_pt and wanted & {"id-pt", "noid-pt"}:
        raise OptionError("--pretrained", "the id-pt / noid-pt settings need --pretrained CHECKPOINT")
    data_root = fargs.data_root or str(ensure_sample())
    base_out = Path(targs.output_dir)
    cols = columns(fargs.ks_tuple)
    rows = []
    for tag, model, with_id, pretrained in RUNS:
        if (wanted and tag not in wanted) or (pretrained and no_pt):
            continue
        print(f"== {fargs.dataset}: {tag}", flush=True)
        t0 = time.perf_counter()
        res = ft.finetune(rest + ["--data_root", data_root, "--mode", "transductive" if with_id else "inductive",
                              "--pretrained", own_pt if pretrained else "none",
                              "--output_dir", str(base_out / tag), "--model", model], drop_foreign_options=True)
        rows.append({"setting": tag, "model": model, "with_id": with_id, "pretrained": pretrained, "best_epoch": res["best_epoch"],
                     "epochs_run": res["epochs_run"], "seconds": time.perf_counter() - t0,
                     "test": {k: res["test"][k] for k in cols}})
    t0 = time.perf_counter()
    base = baselines(data_root, fargs.dataset, margs.max_seq_length or MAX_LEN, fargs.ks_tuple)
    pop_seconds = time.perf_counter() - t0
    key = paper_key(fargs.dataset)
    head = ["Dataset", "With ID?", "Pre-trained?", *map(_short, cols), "time"]
    if key:
        head += [f"paper {_short(c)}" for c in PAPER_COLS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cls = MODELS[r["model"]][1]
        if cls.transfers:
            cells = [fargs.dataset, "✓" if r["with_id"] else "✗", "✓" if r["pretrained"] else "✗"]
        else:
            cells = [fargs.dataset, f"{cls.__name__} (ID only)", "✗"]
        cells += [f"{r['test'][c]:.4f}" for c in cols] + [_duration(r["seconds"])]
        if key:
            paper = PAPER.get((key, r["with_id"], r["pretrained"])) if cls.transfers else None
            cells += [f"{v:.4f}" for v in paper] if paper else [""] * 4
        lines.append("| " + " | ".join(cells) + " |")
    pop = base["popularity"]
    lines.append("| " + " | ".join([fargs.dataset, "popularity", "—"] + [f"{pop[c]:.4f}" for c in cols]
                                   + [_duration(pop_seconds)] + (["", "", "", ""] if key else [])) + " |")
    table = "\n".join(lines)
    print(table)
    base_out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(base_out / "table.md", table + "\n")
    atomic_write_json(base_out / "table.json", {"dataset": fargs.dataset, "interest_reg": targs.interest_reg,
                                                "ks": list(fargs.ks_tuple), "rows": rows, "baselines": base})
    return rows


def _without(argv: list[str], option: str) -> list[str]:
    """``argv`` without ``option VALUE`` / ``option=VALUE``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == option:
            skip = True
        elif not a.startswith(option + "="):
            out.append(a)
    return out


def main(argv=None) -> int:
    """``missrec-table`` / finetune/table.py: exit status 0, or 2 after one ``error:`` line."""
    return run(entry_status(run_table), argv, exit=False)
