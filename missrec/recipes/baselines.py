"""Train and evaluate a graph baseline (LightGCN, VBPR, SLMRec, MMSSL) on one dataset.

    python baselines/run.py --model lightgcn                       # embedded sample target "sample_a"
    python baselines/run.py --config baselines/configs/sample_a.yaml --model slmrec
    python baselines/run.py --format mmssl --data_root data/mmssl/sports --model mmssl \\
        --config baselines/configs/mmssl_sports.yaml

Data formats (--format): ``atomic`` (this project's folders: <data_root>/<dataset>/), ``mmssl``
(<data_root> = the folder holding train.json, val.json, test.json, *_feat.npy) and ``slmrec``
(<data_root>/<dataset>.train / .test + features; a validation split is carved from train with
--valid_ratio / --valid_seed and recorded in results.json).

A --config YAML holds option values of this script (``epochs: 200``) plus model
hyper-parameters: a ``model_cfg:`` mapping (applies to whichever --model runs) and/or one mapping
per model name (``slmrec: {lr: 1e-3}``; it wins over model_cfg). ``--model_opts "lr=1e-3,ssl_task=FD"``
overrides single model hyper-parameters from the command line. Every value is read as YAML 1.2
(``1e-3`` is a number) and must have the type of the model's default (missrec/graph/<model>.py).

Model selection uses the validation split only; test is evaluated once, at the best validation
epoch, over the graph --test_graph names (auto: train+valid for the atomic and slmrec layouts,
train for mmssl; see baselines/README.md). Writes results.json, results.md and curves.png to --output_dir (results.json also holds
the popularity baseline on the same splits).
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..args import SEED, DATASET, InvalidOption, check_fields, config_path, coerce_like, one_of, parse, with_defaults, yaml_scalar
from ..cli import entry_status, run
from ..errors import OptionError
from ..graph import MODELS
from ..graph.loop import FitArgs

BaselineFitArgs = with_defaults(FitArgs, "BaselineFitArgs", "The graph training loop's options, with the recipe's defaults.",
                                output_dir="outputs/baselines/{dataset}-{model}",
                                helps={"output_dir": "Where results.json / results.md / curves.png go ({dataset} and {model} "
                                                     "are replaced by --dataset and --model)."})


@dataclass
class DataArgs:
    format: str = field(default="atomic", metadata={"help": "atomic | mmssl | slmrec."})
    data_root: str = field(default="", metadata={"help": "atomic/slmrec: folder holding the dataset; mmssl: the dataset folder itself (empty: the embedded sample)."})
    dataset: str = field(default="sample_a", metadata={"help": "Dataset name (atomic folder / SLMRec file prefix)."})
    model: str = field(default="lightgcn", metadata={"help": "lightgcn | vbpr | slmrec | mmssl."})
    model_opts: str = field(default="", metadata={"help": "Model hyper-parameters overriding the config: 'key=value,key=value' (values parsed as YAML)."})
    valid_ratio: float = field(default=0.1, metadata={"help": "slmrec format: share of each user's train pairs moved to validation."})
    valid_seed: int = field(default=2021, metadata={"help": "slmrec format: seed of the validation split."})
    min_steps: int = field(default=20, metadata={"help": "Fewest optimiser steps an epoch should take: a DEFAULT batch_size that gives fewer on this dataset is lowered to n_train // min_steps (printed); an explicit one is kept with a printed note (0: off)."})
    modalities: str = field(default="", metadata={"help": "Comma-separated feature names to use (empty: all the dataset has; atomic format: text and image, whichever exist)."})

    def __post_init__(self):
        check_fields(self, format=one_of("atomic", "mmssl", "slmrec"), model=one_of(*MODELS.keys()),
                     valid_ratio=((lambda v: 0 < v < 1), "must lie in (0, 1)"), valid_seed=SEED,
                     dataset=DATASET, min_steps=((lambda v: v >= 0), "must be >= 0 (0: off)"))
        parse_opts(self.model_opts)  # key=value syntax, checked here; types once the model is known


def load_data(a: DataArgs):
    from ..graph.data import load_atomic, load_mmssl, load_slmrec

    if a.format == "atomic":
        root = a.data_root
        if not root:
            from ..data.sample import ensure_sample
            root = str(ensure_sample())
        mods = tuple(m for m in a.modalities.split(",") if m) or None  # None: text and image, those present
        return load_atomic(root, a.dataset, modalities=mods)
    if not a.data_root:
        raise OptionError("--data_root", f"required with --format {a.format}")
    if a.format == "mmssl":
        return load_mmssl(a.data_root)
    return load_slmrec(a.data_root, a.dataset, a.valid_ratio, a.valid_seed)


def parse_opts(s: str) -> dict:
    """``"lr=1e-3,ssl_task=FD"`` -> {"lr": 0.001, "ssl_task": "FD"} (values read as YAML 1.2 scalars)."""
    out = {}
    for part in filter(None, (x.strip() for x in s.split(","))):
        if "=" not in part:
            raise InvalidOption("model_opts", f"expected key=value, got {part!r}")
        k, v = part.split("=", 1)
        out[k.strip()] = yaml_scalar(v.strip())
    return out


def model_config(model: str, sections: dict, model_opts: str, config: str | None) -> dict:
    """The model's hyper-parameters: ``model_cfg:`` < the ``<model>:`` section < ``--model_opts``,
    each value converted to the type of the model's default; a wrong type or an unknown name is
    one line naming the file and key (or --model_opts)."""
    defaults = MODELS[model].defaults
    cfg = {}
    for where, values in ((f"{config}: model_cfg", sections.get("model_cfg", {})),
                          (f"{config}: {model}", sections.get(model, {})), ("--model_opts", parse_opts(model_opts))):
        for k, v in values.items():
            if k not in defaults:
                raise OptionError(f"{where}.{k}" if where != "--model_opts" else f"--model_opts {k}",
                                  f"not an option of {model} (known: {', '.join(sorted(defaults))})")
            cfg[k] = coerce_like(f"{where}.{k}" if where != "--model_opts" else f"--model_opts {k}", v, defaults[k])
    return cfg


# Models whose epoch is n_train // batch_size + 1 batches of distinct users (MMSSL's sampler);
# the others take every training pair once, in ceil(n_train / batch_size) batches.
USER_BATCHES = ("mmssl",)


def steps_per_epoch(model: str, n_train: int, batch_size: int) -> int:
    return n_train // batch_size + 1 if model in USER_BATCHES else -(-n_train // batch_size)


def adapt_batch_size(model: str, defaults: dict, cfg: dict, n_train: int, min_steps: int) -> tuple[dict, str]:
    """``(cfg, note)``. A default batch size that gives fewer than ``min_steps`` optimiser steps per
    epoch on ``n_train`` training pairs is a mechanical handicap on a small dataset (VBPR's 2048 on
    the sample's 2,303 pairs is one step an epoch, and early stopping counts epochs): it becomes
    ``max(1, n_train // min_steps)``. A batch size the user gave is kept; the note says why it may
    underperform. ``note`` is empty when nothing applies."""
    if min_steps <= 0 or "batch_size" not in defaults or n_train <= 0:
        return cfg, ""
    given = "batch_size" in cfg
    b = int(cfg["batch_size"] if given else defaults["batch_size"])
    steps = steps_per_epoch(model, n_train, b)
    if steps >= min_steps:
        return cfg, ""
    if given:
        return cfg, (f"note: {model}: batch_size {b} gives {steps} optimiser step(s) per epoch on {n_train:,} "
                     f"training pairs (< --min_steps {min_steps}); kept because it was set explicitly")
    new = max(1, n_train // min_steps)
    return {**cfg, "batch_size": new}, (
        f"note: {model}: default batch_size {b} would give {steps} optimiser step(s) per epoch on {n_train:,} "
        f"training pairs; using batch_size {new} ({steps_per_epoch(model, n_train, new)} steps per epoch; "
        f"--min_steps {min_steps}; set batch_size to override)")


def below_popularity(results: dict, metric: str) -> str:
    """A printed warning when the model's VALIDATION ``metric`` is below popularity's (empty if not)."""
    v, p = results["valid"].get(metric), results["popularity"]["valid"].get(metric)
    if v is None or p is None or v >= p:
        return ""
    return (f"warning: {results['model']}: validation {metric} {v:.4f} is below popularity's {p:.4f} with these "
            f"settings (best epoch {results['best_epoch']} of {results['epochs_run']}); its defaults were not tuned "
            f"for this dataset: choose hyper-parameters on validation (baselines/configs/ has tuned examples)")


def popularity(data) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings scoring every item by its training count (the floor every model should clear)."""
    cnt = np.bincount(data.train_indices, minlength=data.n_items).astype(np.float32)
    return torch.ones(data.n_users, 1), torch.from_numpy(cnt)[:, None]


def run_baseline(argv=None) -> dict:
    """Parse ``argv``, train and test one graph baseline, write the reports; return the results dict."""
    from ..graph.evaluate import evaluate_multi
    from ..graph.loop import fit, resolve_test_graph, observed_for_test

    argv = list(sys.argv[1:] if argv is None else argv)
    dargs, fargs, sections = parse((DataArgs, BaselineFitArgs), argv, description=__doc__,
                                   sections=("model_cfg", *MODELS.keys()))
    cfg = model_config(dargs.model, sections, dargs.model_opts, config_path(argv))
    from ..threads import apply_threads
    apply_threads(fargs.threads)
    if dargs.modalities and dargs.model != "lightgcn":
        cfg.setdefault("modalities", [m for m in dargs.modalities.split(",") if m])
    fargs.output_dir = fargs.output_dir.format(dataset=dargs.dataset, model=dargs.model)
    MODELS[dargs.model].check_cfg(cfg)  # every model option type- and range-checked before the data loads
    if not fargs.output_dir:
        raise OptionError("--output_dir", "must name a folder (the reports are written there)")
    from ..rundir import check_output_dir, claim_output_dir
    check_output_dir(Path(fargs.output_dir), "", fargs.overwrite_output_dir)  # before any work
    data = load_data(dargs)
    print(f"{data.name}: {data.n_users} users, {data.n_items} items, {data.n_train} train / "
          f"{sum(len(v) for v in data.valid)} valid / {sum(len(t) for t in data.test)} test interactions; "
          f"features {', '.join(f'{k} {v.shape[1]}' for k, v in data.features.items())}", flush=True)
    run_lock = claim_output_dir(Path(fargs.output_dir), "", fargs.overwrite_output_dir)  # one run per folder
    cfg, adapted = adapt_batch_size(dargs.model, MODELS[dargs.model].defaults, cfg, data.n_train, dargs.min_steps)
    if adapted:
        print(adapted, flush=True)
    torch.manual_seed(fargs.seed)  # initial weights depend on the seed only
    model = MODELS[dargs.model](data, cfg)
    # The popularity floor, on the same splits and evaluator.
    pu, pi = popularity(data)
    mask = (data.train_indptr, data.train_indices)
    # Test on the same observed graph as the models (--test_graph): counts and mask include it.
    tdata = observed_for_test(data, resolve_test_graph(fargs.test_graph, data))
    tu, ti = popularity(tdata)
    pop = {"valid": evaluate_multi(pu, pi, np.arange(data.n_users), data.valid, mask, fargs.ks_tuple, fargs.ndcg),
           "test": evaluate_multi(tu, ti, np.arange(data.n_users), data.test, (tdata.train_indptr, tdata.train_indices),
                                  fargs.ks_tuple, fargs.ndcg)}
    fargs_out = fargs.output_dir
    fargs.output_dir = ""  # write once, below, with the extra fields
    results = fit(model, data, fargs, name=dargs.model)
    fargs.output_dir = fargs_out
    results["fit"]["output_dir"] = fargs_out
    results["data_args"] = asdict(dargs)
    if adapted:
        results["notes"] = [adapted]
    results["popularity"] = {s: {k: v for k, v in m.items() if k != "users"} for s, m in pop.items()}
    if data.info.get("format") == "slmrec":
        from ..fsutil import atomic_write_json
        Path(fargs_out).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(fargs_out) / "valid_split.json",
                          {"valid_ratio": dargs.valid_ratio, "valid_seed": dargs.valid_seed,
                           "valid": {str(data.info["user_ids"][u]): [int(data.info["item_ids"][i]) for i in v]
                                     for u, v in enumerate(data.valid) if len(v)}})
    below = below_popularity(results, fargs.metric)
    if below:
        results.setdefault("notes", []).append(below)
        print(below, flush=True)
    from ..graph.loop import write_reports
    write_reports(Path(fargs_out), results, fargs.plot)
    t, p = results["test"], results["popularity"]["test"]
    print("test: " + ", ".join(f"{k} {t[k]:.4f}" for k in ("recall@20", "ndcg@20", "precision@20"))
          + f" (best epoch {results['best_epoch']}); popularity recall@20 {p['recall@20']:.4f}; "
          f"results in {Path(fargs_out) / 'results.json'}")
    run_lock.release()
    return results


def main(argv=None) -> int:
    """``missrec-baselines`` / baselines/run.py: exit status 0, or 2 after one ``error:`` line."""
    return run(entry_status(run_baseline), argv, exit=False)
