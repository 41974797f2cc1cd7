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
    modalities: str = field(default="", metadata={"help": "Comma-separated feature names to use (empty: all the dataset has)."})

    def __post_init__(self):
        check_fields(self, format=one_of("atomic", "mmssl", "slmrec"), model=one_of(*MODELS.keys()),
                     valid_ratio=((lambda v: 0 < v < 1), "must lie in (0, 1)"), valid_seed=SEED,
                     dataset=DATASET)
        parse_opts(self.model_opts)  # key=value syntax, checked here; types once the model is known


def load_data(a: DataArgs):
    from ..graph.data import load_atomic, load_mmssl, load_slmrec

    if a.format == "atomic":
        root = a.data_root
        if not root:
            from ..data.sample import ensure_sample
            root = str(ensure_sample())
        mods = tuple(m for m in a.modalities.split(",") if m) or ("text", "image")
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
    results["popularity"] = {s: {k: v for k, v in m.items() if k != "users"} for s, m in pop.items()}
    if data.info.get("format") == "slmrec":
        from ..fsutil import atomic_write_json
        Path(fargs_out).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(fargs_out) / "valid_split.json",
                          {"valid_ratio": dargs.valid_ratio, "valid_seed": dargs.valid_seed,
                           "valid": {str(data.info["user_ids"][u]): [int(data.info["item_ids"][i]) for i in v]
                                     for u, v in enumerate(data.valid) if len(v)}})
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
