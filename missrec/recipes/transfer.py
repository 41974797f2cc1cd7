"""Measure transfer: pretrain on a source (or take a checkpoint), finetune a target in the four
settings over several seeds, and compare pretrained with scratch per test user.

Settings: with item IDs (transductive) or without (inductive) x from scratch or from the pretrained
checkpoint, each run once per seed (``--seeds``) by missrec/recipes/finetune.py in its own folder
``<output_dir>/runs/<setting>-seed<S>/``. Model selection is finetuning's own (best epoch on the
validation split); the test split is read once per run, at its end, and its per-row ranks
(``test_ranks.npy``) are what this command compares. Printed and written to
``<output_dir>/results.json``:

- per setting: mean +- standard error over the seeds of every test metric;
- per mode (with / without IDs): the paired difference pretrained - scratch per test user (each
  user's metric averaged over the seeds), its mean, standard error and z = mean / SE.

``--user_fraction F --user_seed S`` first writes a low-data target: a seeded share F of the target's
users (all their rows; the same items and feature files) as a new dataset folder under
``--subset_root`` (default ``<output_dir>/data``). Every option not listed here is passed to every
finetuning run (e.g. --epochs, --patience, --hidden_size); model-shape options (--hidden_size,
--n_heads, --inner_size, layers, --dropout, --max_seq_length, ...) also go to pretraining, so both
arms share one architecture. A finished run (same options) is reused, so a killed command resumes.

With ``--source``, the command first prints what the source's popularity, successor and co-occurrence counts,
carried to the target's items by identical text, score on the target beside the target's own
(missrec/transfer_signal.py; ``--signal_only`` stops there): a source whose statistics score no
better than the target's popularity has little to transfer. ``--source rest`` pretrains on the
target's users outside the ``--user_fraction`` subset (a same-domain control).

    missrec-transfer --source ml-1m --source_root data --data_root data --dataset ml-100k \\
        --user_fraction 0.2 --user_seed 0 --seeds 0,1,2 --pretrain_args "--epochs 1" \\
        --hidden_size 64 --epochs 20 --patience 5 --output_dir outputs/transfer-ml
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import shlex
import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np

SETTINGS = {"id-scratch": ("transductive", False), "id-pt": ("transductive", True),
            "noid-scratch": ("inductive", False), "noid-pt": ("inductive", True)}
# Not in "all": the pretrained inductive model evaluated on the target as it is (finetune --zero_shot).
ZERO_SHOT = {"noid-zeroshot": ("inductive", True)}
ALL_SETTINGS = {**SETTINGS, **ZERO_SHOT}
RUN_RECORD = "transfer_run.json"
REST = "rest"  # --source rest: the target's users outside the --user_fraction subset


# ----------------------------------------------------------------------------- low-data target
def subset_users(data_root: str | Path, dataset: str, fraction: float, seed: int, out_root: str | Path,
                 name: str | None = None, rest: bool = False) -> tuple[Path, str]:
    """Write ``<out_root>/<name>/``: the rows of a seeded share ``fraction`` of ``dataset``'s users
    (``rest=True``: of every OTHER user, the same seeded draw's complement; default name
    ``<dataset>-users<F>-seed<S>-rest``).

    Users are those of the test split (one row each); the chosen ones keep all their train, valid
    and test rows, renumbered 0..k-1 in their old order when the user tokens are indices into
    ``<dataset>.user2index``. Items, text and feature files are copied unchanged (same catalogue).
    Returns (out_root, name); an existing folder written with the same choice is reused.
    """
    from missrec.data.atomic import FEATURE_SUFFIXES, INTER_HEADER, dataset_folder, read_index_map, read_meta, write_meta
    from missrec.errors import OptionError
    from missrec.fsutil import atomic_dir, atomic_write_text

    if not 0 < fraction <= 1:
        raise OptionError("--user_fraction", f"must be in (0, 1], got {fraction}")
    src = dataset_folder(data_root, dataset)
    name = name or f"{dataset}-users{fraction:g}-seed{seed}" + ("-rest" if rest else "")
    record = {"dataset": dataset, "folder": str(src), "user_fraction": fraction, "user_seed": seed,
              **({"rest": True} if rest else {})}
    out = Path(out_root) / name
    old = read_meta(out / f"{name}.meta.json") if (out / f"{name}.meta.json").is_file() else None
    if old is not None and {k: old.get("user_subset", {}).get(k) for k in record} == record:
        return Path(out_root), name

    def rows(split: str) -> list[tuple[str, str]]:
        path = src / f"{dataset}.{split}.inter"
        lines = path.read_text(encoding="utf-8").splitlines()
        if not lines or lines[0].split("\t") != INTER_HEADER.split("\t"):
            raise ValueError(f"{path}: bad header; expected {INTER_HEADER!r}")
        return [tuple(line.split("\t", 1)) for line in lines[1:] if line.strip()]

    splits = {s: rows(s) for s in ("train", "valid", "test")}
    users = list(dict.fromkeys(u for u, _ in splits["test"]))
    k = max(1, round(fraction * len(users)))
    rng = np.random.default_rng(seed)
    chosen = set(users[i] for i in rng.choice(len(users), size=k, replace=False))
    if rest:
        chosen = set(users) - chosen
        if not chosen:
            raise OptionError("--user_fraction", f"{fraction} leaves none of {dataset}'s {len(users)} users for the rest")
    up = src / f"{dataset}.user2index"
    raw_users = read_index_map(up) if up.is_file() else None
    renumber = raw_users is not None and all(u.isdigit() and int(u) < len(raw_users) for u in users)
    kept = sorted(chosen, key=int) if renumber else sorted(chosen)
    new_id = {u: str(i) for i, u in enumerate(kept)} if renumber else {u: u for u in kept}
    items = len(read_index_map(src / f"{dataset}.item2index"))
    with atomic_dir(out) as tmp:
        counts = {}
        for s, rs in splits.items():
            keep = [f"{new_id[u]}\t{rest}" for u, rest in rs if u in chosen]
            counts[s] = len(keep)
            atomic_write_text(tmp / f"{name}.{s}.inter", "\n".join([INTER_HEADER] + keep) + "\n")
        if renumber:
            atomic_write_text(tmp / f"{name}.user2index",
                              "".join(f"{raw_users[int(u)]}\t{new_id[u]}\n" for u in kept))
        shutil.copyfile(src / f"{dataset}.item2index", tmp / f"{name}.item2index")
        for suffix in ("text", *FEATURE_SUFFIXES.values()):
            if (src / f"{dataset}.{suffix}").is_file():
                shutil.copyfile(src / f"{dataset}.{suffix}", tmp / f"{name}.{suffix}")
        prev = read_meta(src / f"{dataset}.meta.json") or {}
        extra = {k: prev[k] for k in ("encoder", "modalities", "images", "feature_counts") if k in prev}
        write_meta(tmp, name, n_items=items, n_users=len(kept),
                   extra={**extra, "user_subset": {**record, "n_users": len(kept), "of_users": len(users),
                                                   "rows": counts}})
    print(f"{'the other users' if rest else 'low-data target'} {name}: {len(kept)} of {len(users)} users of {dataset} (seed {seed}), "
          f"{counts['train']} train rows, in {out}", flush=True)
    return Path(out_root), name


# ----------------------------------------------------------------------------- statistics
def mean_se(values: Sequence[float]) -> dict:
    """Mean and standard error (sample SD / sqrt(n); None for one value)."""
    v = np.asarray(values, dtype=np.float64)
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else None
    return {"mean": float(v.mean()), "se": se, "n": int(len(v))}


def paired(diffs: np.ndarray) -> dict:
    """Mean, SE and z of per-user differences (z None when SE is 0 or undefined)."""
    s = mean_se(diffs)
    s["z"] = s["mean"] / s["se"] if s["se"] else None
    return s


def summarise(runs: list[dict], metrics: Sequence[str]) -> tuple[dict, dict]:
    """Per-setting mean +- SE over seeds, and per-mode paired pretrained - scratch per test user."""
    from missrec.evaluate import per_row_metrics

    per_setting = {}
    for tag in ALL_SETTINGS:
        rs = [r for r in runs if r["setting"] == tag]
        if rs:
            per_setting[tag] = {m: mean_se([r["test"][m] for r in rs]) for m in metrics}
            per_setting[tag]["seeds"] = [r["seed"] for r in rs]
    pairs = {}
    for ids, mode in (("id", "with item IDs (transductive)"), ("noid", "without item IDs (inductive)")):
        by_seed = {}
        for r in runs:
            if r["setting"].startswith(ids + "-"):
                by_seed.setdefault(r["seed"], {})[r["setting"].split("-")[1]] = np.load(r["ranks_file"], allow_pickle=False)
        seeds = sorted(s for s, d in by_seed.items() if {"pt", "scratch"} <= set(d))
        if not seeds:
            continue
        n_users = {len(by_seed[s][a]) for s in seeds for a in ("pt", "scratch")}
        if len(n_users) != 1:
            raise ValueError(f"{ids}: runs ranked different numbers of test users {sorted(n_users)}")
        entry = {"mode": mode, "seeds": seeds, "n_users": n_users.pop()}
        for m in metrics:
            d = np.stack([per_row_metrics(by_seed[s]["pt"], m) - per_row_metrics(by_seed[s]["scratch"], m)
                          for s in seeds])
            entry[m] = {**paired(d.mean(0)), "per_seed_z": [paired(row)["z"] for row in d]}
        pairs[ids] = entry
    return per_setting, pairs


def _fmt(s: dict, signed: bool = False) -> str:
    sign = "+" if signed else ""
    se = f" ± {s['se']:.4f}" if s.get("se") is not None else ""
    return f"{s['mean']:{sign}.4f}{se}"


def report(per_setting: dict, pairs: dict, metrics: Sequence[str], dataset: str) -> str:
    n = max((len(v["seeds"]) for v in per_setting.values()), default=0)
    lines = [f"{dataset}: test metrics, mean ± standard error over {n} seed(s) (best epoch chosen on validation)", "",
             "| setting | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for tag, s in per_setting.items():
        lines.append(f"| {tag} | " + " | ".join(_fmt(s[m]) for m in metrics) + " |")
    if pairs:
        lines += ["", "paired difference pretrained - scratch per test user (each user's metric averaged over seeds):",
                  "", "| mode | users | seeds | " + " | ".join(f"{m} (z)" for m in metrics) + " |",
                  "|---|---|---|" + "---|" * len(metrics)]
        for p in pairs.values():
            cells = []
            for m in metrics:
                z = p[m]["z"]
                cells.append(f"{_fmt(p[m], signed=True)} ({'n/a' if z is None else f'{z:+.2f}'})")
            lines.append(f"| {p['mode']} | {p['n_users']} | {len(p['seeds'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- driver
def _model_options(argv: Sequence[str]) -> list[str]:
    """The ModelArgs options (and their values) among ``argv``: they apply to pretraining too."""
    from missrec.args import ModelArgs

    names = {f"--{f.name}" for f in dataclasses.fields(ModelArgs)}
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a.split("=", 1)[0] in names:
            out.append(a)
            if "=" not in a and i + 1 < len(argv):
                out.append(argv[i + 1])
                i += 1
        i += 1
    return out


def build_parser() -> argparse.ArgumentParser:
    from missrec.cli import ArgumentParser

    p = ArgumentParser(prog="missrec-transfer", description=__doc__.split("\n\n")[0],
                       epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_root", default="", help="folder holding the target dataset (empty: the embedded sample)")
    p.add_argument("--dataset", default="sample_a", help="the target dataset (default sample_a)")
    p.add_argument("--output_dir", default="outputs/transfer", help="runs, pretraining and results.json go here")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--pretrained", default="", help="checkpoint for the pretrained settings (instead of --source)")
    src.add_argument("--source", default="", help="pretrain on this dataset or corpus first (under --source_root); "
                     "'rest' with --user_fraction: on the target's OTHER users (a same-domain control: disjoint users, "
                     "the same items)")
    p.add_argument("--source_root", default="", help="folder holding --source (default: --data_root)")
    p.add_argument("--pretrain_args", default="",
                   help="extra options for pretraining, one quoted string (e.g. \"--epochs 1 --train_batch_size 512\")")
    p.add_argument("--seeds", default="0", help="comma-separated finetuning seeds (default 0)")
    p.add_argument("--settings", default="all", help="comma-separated subset of " + ",".join(SETTINGS) + " (default all: these four), "
                   "and/or noid-zeroshot: the pretrained model without IDs evaluated on the target with no "
                   "training (zero-shot transfer; e.g. all,noid-zeroshot)")
    p.add_argument("--user_fraction", type=float, default=None,
                   help="finetune on a seeded share of the target's users (a low-data target), e.g. 0.2")
    p.add_argument("--user_seed", type=int, default=0, help="seed choosing the --user_fraction users (default 0)")
    p.add_argument("--subset_root", default="", help="where the low-data target is written (default <output_dir>/data)")
    p.add_argument("--signal_only", action="store_true",
                   help="with --source: only print (and write to results.json) what the source's popularity, "
                        "successor and co-occurrence counts, carried to the target's items by identical text, score on the target, "
                        "beside the target's own; seconds, before any pretraining (see missrec/transfer_signal.py)")
    return p


def transfer(argv=None) -> dict:
    """Parse ``argv``, pretrain (or take a checkpoint), finetune every setting over the seeds, pair the
    per-user test metrics; write and return the results."""
    import sys

    from missrec.errors import OptionError
    from missrec.fsutil import atomic_write_json, atomic_write_text
    from missrec.recipes import finetune as ft

    argv = list(sys.argv[1:] if argv is None else argv)
    own, rest = build_parser().parse_known_args(argv)
    for opt in ("--mode", "--pretrained", "--seed", "--data_root", "--dataset", "--output_dir"):
        if any(a == opt or a.startswith(opt + "=") for a in rest):
            raise OptionError(opt, "is set by missrec-transfer for each run; use its own options (see --help)")
    try:
        seeds = [int(s) for s in own.seeds.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise OptionError("--seeds", f"expected comma-separated integers, got {own.seeds!r}")
    tags = [t.strip() for t in own.settings.split(",") if t.strip()]
    tags = list(dict.fromkeys(x for t in tags for x in (SETTINGS if t == "all" else [t])))
    unknown = [t for t in tags if t not in ALL_SETTINGS]
    if unknown or not tags:
        raise OptionError("--settings", f"unknown setting(s) {', '.join(unknown) or '(none)'}; choose from all,{','.join(ALL_SETTINGS)}")
    needs_pt = any(ALL_SETTINGS[t][1] for t in tags)
    if own.source == REST and own.user_fraction is None:
        raise OptionError("--source", "'rest' (the target's other users) needs --user_fraction")
    if own.signal_only and not own.source:
        raise OptionError("--signal_only", "needs --source DATASET (the source whose statistics are carried to the target)")
    if needs_pt and not (own.pretrained or own.source):
        raise OptionError("--source", "the pretrained settings need --source DATASET (to pretrain) or --pretrained CHECKPOINT")
    # Every run's options are checked before any work (finetuning's, then pretraining's).
    from missrec.args import ModelArgs, TrainArgs, parse
    from missrec.recipes import pretrain as pt
    parse((ModelArgs, ft.FinetuneTrainArgs, ft.FinetuneArgs), rest)
    if needs_pt and own.source:
        parse((ModelArgs, TrainArgs, pt.PretrainArgs), _model_options(rest) + shlex.split(own.pretrain_args))

    out = Path(own.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data_root = own.data_root
    if not data_root:
        from missrec.data.sample import ensure_sample
        data_root = str(ensure_sample())
    source_root = own.source_root or data_root
    full_root, dataset = data_root, own.dataset
    t_start = time.perf_counter()
    subset = None
    if own.user_fraction is not None:
        data_root, dataset = subset_users(data_root, dataset, own.user_fraction, own.user_seed,
                                          own.subset_root or out / "data")
        data_root = str(data_root)
        subset = {"of": own.dataset, "user_fraction": own.user_fraction, "user_seed": own.user_seed, "dataset": dataset}
        if own.source == REST:
            source_root, own.source = (str(x) for x in subset_users(full_root, own.dataset, own.user_fraction,
                                                                    own.user_seed, own.subset_root or out / "data", rest=True))

    signal = None
    if own.source:
        signal = _signal(data_root, dataset, source_root, own.source)
        if own.signal_only:
            atomic_write_json(out / "results.json", {"target": {"data_root": data_root, "dataset": dataset,
                                                                "subset": subset}, "source_signal": signal})
            print(f"results in {out / 'results.json'}", flush=True)
            return {"source_signal": signal}
    pretrain = {"checkpoint": own.pretrained or None}
    if needs_pt and own.source:
        pretrain = _pretrain(own, rest, out / "pretrain", source_root)

    runs = []
    for seed in seeds:
        for tag in tags:
            mode, with_pt = ALL_SETTINGS[tag]
            run_dir = out / "runs" / f"{tag}-seed{seed}"
            run_argv = [*rest, "--data_root", data_root, "--dataset", dataset, "--mode", mode,
                        "--pretrained", pretrain["checkpoint"] if with_pt else "none", "--seed", str(seed),
                        "--output_dir", str(run_dir), *(["--zero_shot", "true"] if tag in ZERO_SHOT else [])]
            runs.append(_finetune(ft, tag, seed, run_argv, run_dir))
    metrics = list(runs[0]["test"])
    per_setting, pairs = summarise(runs, metrics)
    table = report(per_setting, pairs, metrics, dataset)
    print(table, flush=True)
    results = {"target": {"data_root": data_root, "dataset": dataset, "subset": subset}, "pretrain": pretrain,
               "seeds": seeds, "settings": tags, "finetune_options": rest, "metrics": metrics,
               "per_setting": per_setting, "paired_pretrained_minus_scratch": pairs, "source_signal": signal,
               "runs": [{**r, "ranks_file": str(r["ranks_file"])} for r in runs],
               "seconds": time.perf_counter() - t_start}
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", table + "\n")
    print(f"results in {out / 'results.json'}", flush=True)
    return results


def _signal(data_root: str, dataset: str, source_root: str, source: str) -> dict | None:
    """The source-statistics check (missrec/transfer_signal.py), printed; None (with a note) where
    it does not apply: a multi-domain corpus as the source, or a dataset without a .text file."""
    from missrec.errors import DataError
    from missrec.transfer_signal import format_signal, transfer_signal

    try:
        res = transfer_signal(data_root, dataset, source_root, source)
    except DataError as e:
        print(f"note: no source-statistics check: {e}", flush=True)
        return None
    print(format_signal(res), flush=True)
    return res


def _pretrain(own, rest: list[str], pt_dir: Path, source_root: str) -> dict:
    """Pretrain on --source (resuming a killed run); reuse a finished one with the same options."""
    from missrec.recipes import pretrain as pt
    from missrec.trainer import checkpoint_dirs

    argv = ["--data_root", source_root, "--dataset", own.source, *_model_options(rest), *shlex.split(own.pretrain_args),
            "--output_dir", str(pt_dir)]
    record = pt_dir / RUN_RECORD
    done = json.loads(record.read_text()) if record.is_file() else None
    dirs = checkpoint_dirs(pt_dir)
    if done and done.get("argv") == argv and dirs:
        print(f"== pretraining on {own.source}: reusing {dirs[-1]} (finished with the same options)", flush=True)
        return {**done, "checkpoint": str(dirs[-1]), "reused": True}
    print(f"== pretraining on {own.source}: {' '.join(argv)}", flush=True)
    t0 = time.perf_counter()
    pt.pretrain(argv + ["--resume_from", "latest"])
    dirs = checkpoint_dirs(pt_dir)
    if not dirs:
        raise FileNotFoundError(f"{pt_dir}: pretraining wrote no checkpoint")
    info = {"source": own.source, "source_root": source_root, "argv": argv, "checkpoint": str(dirs[-1]),
            "seconds": time.perf_counter() - t0}
    from missrec.fsutil import atomic_write_json
    atomic_write_json(record, info)
    return info


def _where_aside(argv: list[str]) -> list[str]:
    """A run's options without its --output_dir: a finished run folder copied into another transfer
    folder (e.g. the scratch runs shared by two pretraining variants) is the same run."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--output_dir":
            skip = True
        elif not a.startswith("--output_dir="):
            out.append(a)
    return out


def _finetune(ft, tag: str, seed: int, argv: list[str], run_dir: Path) -> dict:
    """One finetuning run in its own folder; a finished one with the same options is reused."""
    from missrec.fsutil import atomic_write_json

    record = run_dir / RUN_RECORD
    ranks = run_dir / ft.TEST_RANKS
    if record.is_file() and ranks.is_file():
        done = json.loads(record.read_text())
        if _where_aside(done.get("argv") or []) == _where_aside(argv):
            print(f"== {tag} seed {seed}: reusing {run_dir}", flush=True)
            return {**done, "argv": argv, "dir": str(run_dir), "ranks_file": ranks}
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an unfinished or differently-configured run of this command: start it anew
    print(f"== {tag} seed {seed}", flush=True)
    t0 = time.perf_counter()
    res = ft.finetune(argv)
    info = {"setting": tag, "seed": seed, "argv": argv, "test": res["test"], "valid": res["valid"],
            "best_epoch": res["best_epoch"], "epochs_run": res["epochs_run"], "seconds": time.perf_counter() - t0,
            "dir": str(run_dir)}
    atomic_write_json(record, info)
    return {**info, "ranks_file": ranks}


def main(argv=None) -> int:
    """``missrec-transfer`` / finetune/transfer.py: exit status 0, or 2 after one ``error:`` line."""
    from missrec.cli import entry_status, run
    return run(entry_status(transfer), argv, exit=False)
