"""Every model on one dataset folder, one protocol, one table.

    python baselines/compare.py --data_root data --dataset ml-100k --output_dir outputs/compare/ml-100k
    python baselines/compare.py --dataset sample_a --seeds 3 --epochs 20           # the embedded sample
    python baselines/compare.py --models missrec-id,sasrec,gru4rec,lightgcn --pretrained missrec-fhckm-100
    python baselines/compare.py outputs/baselines/sample_a-* outputs/finetune/results.json   # collect only

Run mode (no positional arguments): on ``<data_root>/<dataset>`` (this project's atomic folder;
empty --data_root: the embedded sample), runs every model of --models for each of --seeds seeds,
in-process, and writes ``results.json`` + ``results.md`` to --output_dir. Model names:

* ``missrec-id`` / ``missrec-noid``: MISSRec from scratch, transductive / inductive
  (finetune/run.py); with --pretrained also ``missrec-id-pt`` / ``missrec-noid-pt`` are added;
* any other sequential model name (``sasrec``, ``gru4rec`` where the model registry has it) is
  passed to finetune/run.py as ``--model NAME``;
* ``lightgcn``, ``vbpr``, ``slmrec``, ``mmssl``: the graph baselines (baselines/run.py);
* popularity is always added (training-item counts, same evaluator and masking as the graph rows).

One protocol (the table's header says it): leave-one-out by time (each user's last item is the
test target, the second-to-last the validation target), full ranking of every item, ties against
the target, each model's epoch selected on validation only, the user's earlier items masked
(sequential models: the test row's history, i.e. its last ``max_seq_length`` items, as
``--mask_history true``; graph models and popularity: every train and validation item, as
``--test_graph train+valid``; the two agree for every user whose history fits the sequence length).
A run whose ``results.json`` already exists in its folder is collected, not re-run (--rerun to
force). --finetune_args / --baseline_args pass extra options to every sequential / graph run;
``--model_args NAME="OPTIONS"`` (repeatable) to one model's runs only, after those, so it wins (e.g.
``--model_args "mmssl=--epochs 10"``: a model whose epoch costs minutes gets its own cap).

Collect mode (positional results.json files or folders): one table of their test metrics, as
before.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import time
from pathlib import Path

from ..errors import CorruptFileError, OptionError

COLS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "recall@50", "ndcg@50")
KS = "10,20,50"

def _graph_models() -> tuple[str, ...]:
    """The graph baselines' registry names (missrec/graph/__init__.py): a new graph model needs no edit here."""
    from ..graph import MODELS
    return tuple(MODELS.keys())


GRAPH_MODELS = _graph_models()

def _default_models() -> str:
    """MISSRec with and without IDs, every ID-only model of the sequential registry, every graph model."""
    from ..model_registry import MODELS as SEQUENTIAL
    id_only = [m for m, (_, cls) in SEQUENTIAL.items() if not cls.transfers]
    return ",".join(["missrec-id", "missrec-noid", *id_only, *GRAPH_MODELS])


DEFAULT_MODELS = _default_models()

PROTOCOL = ("leave-one-out by time (last item = test, second-to-last = validation); full ranking of all "
            "{n_items} items, ties against the target; epoch chosen on validation only; the user's earlier "
            "items masked (sequential models: the test row's history, its last {max_len} items; graph models "
            "and popularity: all train + validation items)")


# ------------------------------------------------------------------------------ collect mode
def _row(path: Path) -> dict:
    p = path / "results.json" if path.is_dir() else path
    try:
        r = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CorruptFileError(f"{p}: not a readable results.json ({e})") from None
    if not isinstance(r, dict) or "test" not in r or "dataset" not in r:
        raise CorruptFileError(f"{p}: expected a results.json with 'dataset' and 'test'")
    if "popularity" in r or "mode" not in r:  # graph baseline
        name, pop = r.get("model", "?"), r.get("popularity", {}).get("test")
    elif r.get("model", "missrec") != "missrec":  # another sequential model (sasrec, gru4rec, ...)
        name, pop = r["model"], None
    else:  # MISSRec finetune
        name = f"MISSRec ({'id' if r.get('mode') == 'transductive' else 'no id'}, " \
               f"{'pretrained' if str(r.get('pretrained', 'none')).lower() != 'none' else 'scratch'})"
        pop = None
    return {"dataset": r["dataset"], "name": name, "test": r["test"], "popularity": pop, "path": str(p)}


def table(paths, cols=COLS) -> str:
    rows = [_row(Path(x)) for x in paths]
    if not rows:
        raise OptionError("no results given")
    ds = {r["dataset"] for r in rows}
    if len(ds) > 1:
        raise OptionError(f"results of several datasets {sorted(ds)}: give one dataset's results")
    pop = next((r["popularity"] for r in rows if r["popularity"]), None)
    body = [(r["name"], r["test"]) for r in rows] + ([("popularity", pop)] if pop else [])
    fmt = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
    lines = [f"| {rows[0]['dataset']} | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    lines += [f"| {n} | " + " | ".join(fmt(t.get(c)) for c in cols) + " |" for n, t in body]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ run mode
def _sequential_argv(name: str, pretrained: str) -> list[str]:
    """finetune/run.py options selecting model ``name``."""
    if name.startswith("missrec-"):
        parts = name.split("-")[1:]
        if parts not in (["id"], ["noid"], ["id", "pt"], ["noid", "pt"]):
            raise OptionError(f"--models: unknown MISSRec setting {name!r}; use missrec-id, missrec-noid, "
                             f"missrec-id-pt or missrec-noid-pt")
        pt = parts[-1] == "pt"
        if pt and pretrained.lower() == "none":
            raise OptionError(f"--models {name}: needs --pretrained CHECKPOINT")
        return ["--model", "missrec", "--mode", "transductive" if parts[0] == "id" else "inductive",
                "--pretrained", pretrained if pt else "none"]
    return ["--model", name]


def _model_list(spec: str, pretrained: str) -> list[str]:
    names = [m.strip() for m in spec.split(",") if m.strip()]
    if not names:
        raise OptionError("--models: give at least one model")
    if pretrained.lower() != "none":
        for base in ("missrec-id", "missrec-noid"):
            if base in names and f"{base}-pt" not in names:
                names.insert(names.index(base) + 1, f"{base}-pt")
    if len(set(names)) != len(names):
        raise OptionError(f"--models: a model is listed twice in {spec!r}")
    return names


def _per_model_args(specs: list[str], names: list[str]) -> dict[str, list[str]]:
    """``["mmssl=--epochs 10", ...]`` -> ``{"mmssl": ["--epochs", "10"]}``; a model not in --models is an error."""
    out: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, opts = spec.partition("=")
        name = name.strip()
        if not sep or not name:
            raise OptionError(f"--model_args: expected NAME=\"OPTIONS\" (e.g. mmssl=\"--epochs 10\"), got {spec!r}")
        if name not in names:
            raise OptionError(f"--model_args: {name!r} is not in --models ({', '.join(names)})")
        if name in out:
            raise OptionError(f"--model_args: {name!r} is given twice")
        try:
            out[name] = shlex.split(opts)
        except ValueError as e:
            raise OptionError(f"--model_args {name}: {e}") from None
    return out


def _run_one(name: str, seed: int, out: Path, a, data_root: str) -> dict:
    """Run (or collect) one model at one seed; returns its summary row."""
    done = out / "results.json"
    timing = out / "compare_run.json"
    if not (done.is_file() and timing.is_file()) or a.rerun:
        t0 = time.perf_counter()
        common = ["--data_root", data_root, "--dataset", a.dataset, "--output_dir", str(out), "--seed", str(seed),
                  "--plot", "false"]
        if out.exists():  # an unfinished run, or --rerun: its files are moved aside (never deleted)
            common.append("--overwrite_output_dir")
        if a.epochs:
            common += ["--epochs", str(a.epochs)]
        if name in GRAPH_MODELS:
            from . import baselines
            # A graph run's --progress is one line per epoch (no bar): kept, so a long run is never silent.
            baselines.run_baseline(["--format", "atomic", "--model", name, "--test_graph", "train+valid", "--ks", KS,
                            "--metric", a.metric, *common, *shlex.split(a.baseline_args),
                            *a.per_model.get(name, [])])
        else:
            from . import finetune
            # No bar; finetuning still logs a line every --log_every steps.
            finetune.finetune([*_sequential_argv(name, a.pretrained), "--mask_history", "true", "--ks", KS,
                           "--metric", a.metric, "--progress", "false", *common, *shlex.split(a.finetune_args),
                           *a.per_model.get(name, [])])
        from ..fsutil import atomic_write_json
        atomic_write_json(timing, {"model": name, "seed": seed, "wall_seconds": time.perf_counter() - t0})
    r = json.loads(done.read_text(encoding="utf-8"))
    wall = json.loads(timing.read_text(encoding="utf-8"))["wall_seconds"]
    params = r.get("params", r.get("total_params"))
    # Epochs counted from 1 in the table (a recipe whose history starts at epoch 0 is shifted).
    shift = 1 if (r.get("history") or [{}])[0].get("epoch") == 0 else 0
    best = None if r.get("best_epoch") is None else r["best_epoch"] + shift
    return {"model": name, "seed": seed, "test": {k: r["test"].get(k) for k in COLS}, "best_epoch": best,
            "epochs_run": len(r.get("history") or []) or r.get("epochs_run"), "wall_seconds": wall, "params": params,
            "trainable_params": r.get("trainable_params", params), "output_dir": str(out)}


def popularity_row(data_root: str, dataset: str) -> dict:
    """Training-count popularity on the test split, train + validation items observed and masked."""
    import numpy as np

    from ..graph.data import load_atomic
    from ..graph.evaluate import evaluate_multi
    from ..graph.loop import observed_for_test
    from .baselines import popularity

    t0 = time.perf_counter()
    data = observed_for_test(load_atomic(data_root, dataset, modalities=()), "train+valid")
    u, i = popularity(data)
    m = evaluate_multi(u, i, np.arange(data.n_users), data.test, (data.train_indptr, data.train_indices),
                       tuple(int(k) for k in KS.split(",")))
    return {"model": "popularity", "seed": None, "test": {k: m[k] for k in COLS}, "best_epoch": None,
            "epochs_run": None, "wall_seconds": time.perf_counter() - t0, "params": 0, "trainable_params": 0,
            "n_items": data.n_items, "n_users": data.n_users}


def summarize(runs: list[dict]) -> dict:
    """Mean and standard error (sample s.d. / sqrt(n); None for one seed) per metric over seeds."""
    out = {}
    for key in ("test", "best_epoch", "wall_seconds", "params"):
        vals = {}
        if key == "test":
            for c in COLS:
                vals[c] = [r["test"][c] for r in runs if r["test"].get(c) is not None]
        else:
            vals[key] = [r[key] for r in runs if r[key] is not None]
        for k, v in vals.items():
            n = len(v)
            mean = sum(v) / n if n else None
            se = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1) / n) if n > 1 else None
            out[k] = {"mean": mean, "se": se, "n": n}
    return out


def _fmt(s: dict, digits: int = 4) -> str:
    if s["mean"] is None:
        return ""
    m = f"{s['mean']:.{digits}f}"
    return m if s["se"] is None else f"{m} ± {s['se']:.{digits}f}"


def _params(p) -> str:
    if p["mean"] is None:
        return ""
    p = p["mean"]
    return f"{p / 1e6:.2f}M" if p >= 1e6 else f"{int(p):,}"


def render(dataset: str, protocol: str, seeds: int, summary: dict[str, dict]) -> str:
    head = ["model", *[c.replace("recall", "R").replace("ndcg", "N") for c in COLS], "best epoch", "time (s)", "params"]
    lines = [f"**{dataset}**: {protocol}. " + (f"Mean ± s.e. over {seeds} seeds." if seeds > 1 else "One seed."),
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in summary.items():
        cells = [name, *[_fmt(s[c]) for c in COLS], _fmt(s["best_epoch"], 1) if s["best_epoch"]["n"] else "",
                 _fmt(s["wall_seconds"], 1), _params(s["params"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("time: wall seconds of the whole run (training, validation every epoch, test); "
                 "params: all parameters of the model.")
    return "\n".join(lines)


def run_all(a) -> dict:
    from ..evaluate import round_metrics
    from ..fsutil import atomic_write_json, atomic_write_text

    data_root = a.data_root
    if not data_root:
        from ..data.sample import ensure_sample
        data_root = str(ensure_sample())
    if a.seeds < 1:
        raise OptionError(f"--seeds: must be >= 1, got {a.seeds}")
    names = _model_list(a.models, a.pretrained)
    a.per_model = _per_model_args(a.model_args, names)
    for n in names:
        if not n.startswith("missrec-") and n not in GRAPH_MODELS:
            _sequential_argv(n, a.pretrained)
    out = Path(a.output_dir or f"outputs/compare/{a.dataset}")
    seeds = [a.seed + k for k in range(a.seeds)]
    runs = []
    for name in names:
        for s in seeds:
            print(f"== {a.dataset}: {name}, seed {s}", flush=True)
            runs.append(_run_one(name, s, out / name / f"seed{s}", a, data_root))
    pop = popularity_row(data_root, a.dataset)
    runs.append(pop)
    summary = {n: summarize([r for r in runs if r["model"] == n]) for n in [*names, "popularity"]}
    protocol = PROTOCOL.format(n_items=pop["n_items"], max_len=a.max_len)
    md = render(a.dataset, protocol, len(seeds), summary)
    print(md, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    result = {"dataset": a.dataset, "data_root": data_root, "protocol": protocol, "seeds": seeds,
              "models": [*names, "popularity"], "summary": summary, "runs": runs}
    atomic_write_json(out / "results.json", round_metrics(result, 6))
    atomic_write_text(out / "results.md", md + "\n")
    return result


def compare(argv=None):
    """Collect mode: the table (str); run mode: the results dict (see the module doc)."""
    from ..cli import ArgumentParser

    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="*", help="Collect mode: results.json files or the folders holding them.")
    p.add_argument("--out", default="", help="Collect mode: also write the table here (markdown).")
    p.add_argument("--data_root", default="", help="Folder holding the dataset folder (empty: the embedded sample).")
    p.add_argument("--dataset", default="sample_a", help="Dataset name (<data_root>/<dataset>/).")
    p.add_argument("--output_dir", default="", help="Where each run's folder, results.json and results.md go "
                                                    "(default outputs/compare/<dataset>).")
    p.add_argument("--models", default=DEFAULT_MODELS, help=f"Comma-separated models (default {DEFAULT_MODELS}).")
    p.add_argument("--pretrained", default="none", help="Checkpoint for the MISSRec pretrained settings (adds "
                                                        "missrec-id-pt / missrec-noid-pt).")
    p.add_argument("--seeds", type=int, default=1, help="Seeds per model (mean ± standard error when > 1).")
    p.add_argument("--seed", type=int, default=2022, help="First seed (seeds are seed, seed+1, ...).")
    p.add_argument("--epochs", type=int, default=0, help="Maximum epochs of every model (0: each recipe's default).")
    p.add_argument("--metric", default="recall@20", help="Validation metric that picks every model's best epoch.")
    p.add_argument("--max_len", type=int, default=50, help="The sequential models' max_seq_length (for the header; "
                                                            "set it with --finetune_args too if not 50).")
    p.add_argument("--finetune_args", default="", help="Extra options for every sequential run (finetune/run.py).")
    p.add_argument("--baseline_args", default="", help="Extra options for every graph run (baselines/run.py).")
    p.add_argument("--model_args", action="append", default=[], metavar='NAME="OPTIONS"',
                   help="Extra options for one model's runs only, after --finetune_args/--baseline_args (repeatable; "
                        "e.g. --model_args \"mmssl=--epochs 10\").")
    p.add_argument("--rerun", action="store_true", help="Run again even where a run's results.json exists.")
    a = p.parse_args(argv)
    if a.results:
        t = table(a.results)
        print(t)
        if a.out:
            from ..fsutil import atomic_write_text
            atomic_write_text(a.out, t + "\n")
        return t
    return run_all(a)


def main(argv=None) -> int:
    """``missrec-compare`` / baselines/compare.py: exit status 0, or 2 after one ``error:`` line."""
    from ..cli import entry_status, run
    return run(entry_status(compare), argv, exit=False)
