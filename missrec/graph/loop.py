"""Training loop of the graph baselines: epochs, validation every ``eval_every`` epochs, model
selection on the VALIDATION split only, early stopping, and one test evaluation at the best
validation epoch (best weights kept in memory).

Everything a model's ``embeddings()`` depends on must live in its ``state_dict`` (parameters,
persistent buffers, or ``get_extra_state``): that is what is kept for the best epoch.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..args import OUTPUT_DIR, SEED, at_least, check_fields, check_metric, one_of, parse_ks
from ..reports import write_reports as _write_reports
from .data import GraphData
from .evaluate import evaluate_data
from ..errors import DataError, OptionError
from .base import check_finite


@dataclass
class FitArgs:
    """Options of :func:`fit` (shared by every graph model)."""

    output_dir: str = field(default="outputs/baselines", metadata={"help": "Where results.json / results.md / curves.png go (empty: write nothing)."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "baselines/run.py: start over in an --output_dir that holds files, moving them aside to <output_dir>.old-<date>-<time>; without it such a folder is refused."})
    epochs: int = field(default=1000, metadata={"help": "Maximum number of epochs."})
    patience: int = field(default=8, metadata={"help": "Stop after this many validations without a better validation metric."})
    eval_every: int = field(default=1, metadata={"help": "Validate every N epochs."})
    metric: str = field(default="recall@20", metadata={"help": "Validation metric that picks the best epoch."})
    ks: str = field(default="10,20,50", metadata={"help": "Cut-offs K (comma separated)."})
    ndcg: str = field(default="standard", metadata={"help": "standard (ideal DCG over min(|GT|, K)) | legacy (MMSSL's: over min(hits within the top max(ks), K))."})
    eval_batch_size: int = field(default=1024, metadata={"help": "Users per evaluation batch."})
    test_graph: str = field(default="auto", metadata={"help": "Observed graph at test time: train | train+valid (each user's validation items added to the propagation graph and the masked items, no retraining) | auto (train+valid for the atomic and slmrec layouts, whose validation items precede or belong to the test-time history; train for mmssl, as its original)."})
    seed: int = field(default=2022, metadata={"help": "Seed of initialisation and sampling."})
    device: str = field(default="auto", metadata={"help": "auto (cuda if available) | cpu | cuda[:N]."})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: auto = OMP_NUM_THREADS if set, else the cores not busy at startup by the 1-minute load average)."})
    plot: bool = field(default=True, metadata={"help": "Write curves.png."})
    progress: bool = field(default=True, metadata={"help": "Print one line per epoch."})

    def __post_init__(self):
        one = at_least(1)
        check_fields(self, epochs=one, patience=one, eval_every=one, eval_batch_size=one,
                     ndcg=one_of("standard", "legacy"), test_graph=one_of("auto", *TEST_GRAPHS),
                     seed=SEED, output_dir=OUTPUT_DIR)
        check_metric(self.metric, self.ks, kinds=("recall", "precision", "ndcg", "hit"))

    @property
    def ks_tuple(self) -> tuple[int, ...]:
        return parse_ks(self.ks)


TEST_GRAPHS = ("train", "train+valid")


def resolve_test_graph(choice: str, data: GraphData) -> str:
    """``--test_graph auto`` by data layout: atomic (sequential leave-one-out: the test item follows
    the validation item, whose interaction is in the test-time history) and slmrec (its
    validation split is carved from the original training pairs, which the original propagated
    over and masked at test) -> ``train+valid``; mmssl (val/test are disjoint random holdouts,
    and its batch_test.py keeps validation items as test candidates) -> ``train``."""
    if choice == "auto":
        return "train" if data.info.get("format") == "mmssl" else "train+valid"
    if choice not in TEST_GRAPHS:
        raise OptionError(f"--test_graph: expected auto, train or train+valid, got {choice!r}")
    return choice


def observed_for_test(data: GraphData, test_graph: str) -> GraphData:
    """The data the test split is evaluated on (graph and mask) under ``test_graph``."""
    return data.with_valid_observed() if test_graph == "train+valid" else data


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def fit(model, data: GraphData, args: FitArgs, name: str | None = None) -> dict:
    """Train ``model`` on ``data``; return (and write, if ``args.output_dir``) the results dict."""
    ks = args.ks_tuple  # --metric and --ks were checked when FitArgs was made
    if not any(len(v) for v in data.valid):
        raise DataError(f"{data.name}: no validation items (model selection needs a validation split)")
    test_graph = resolve_test_graph(args.test_graph, data)
    device = resolve_device(args.device)
    model.to(device)
    gen = torch.Generator().manual_seed(args.seed)
    optimizers = model.configure_optimizers()
    name = name or type(model).__name__.lower()
    best_val, best_epoch, best_state, bad, history = -math.inf, 0, None, 0, []
    train_time = 0.0
    epoch = 0
    for epoch in range(1, args.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        stats = {k: float(v) for k, v in model.train_epoch(data, epoch, gen, optimizers).items()}
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        train_time += dt
        check_finite(stats, epoch)
        row = {"epoch": epoch, "train_loss": stats.get("loss", float("nan")), "train_seconds": dt,
               **{f"train_{k}": v for k, v in stats.items() if k != "loss"}}
        if epoch % args.eval_every == 0 or epoch == args.epochs:
            val = evaluate_data(model, data, "valid", ks, args.ndcg, args.eval_batch_size)
            row.update({f"valid_{k}": v for k, v in val.items() if k != "users"})
            if val[args.metric] > best_val:
                best_val, best_epoch, bad = val[args.metric], epoch, 0
                best_state = {k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in model.state_dict().items()}
            else:
                bad += 1
        history.append(row)
        if args.progress:
            print(f"[{name}] epoch {epoch}: loss {row['train_loss']:.4f} ({dt:.1f}s)"
                  + (f", valid {args.metric} {row['valid_' + args.metric]:.4f}" if f"valid_{args.metric}" in row else "")
                  + (" *" if best_epoch == epoch else ""), flush=True)
        if bad >= args.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    valid = evaluate_data(model, data, "valid", ks, args.ndcg, args.eval_batch_size)
    tdata = observed_for_test(data, test_graph)
    if tdata is not data:
        model.set_graph(tdata)
    test = evaluate_data(model, tdata, "test", ks, args.ndcg, args.eval_batch_size)
    if tdata is not data:
        model.set_graph(data)
        if best_state is not None:
            model.load_state_dict(best_state)  # graph-derived state (MMSSL's modality graphs) back on R
    info = {k: v for k, v in data.info.items() if k not in ("user_ids", "item_ids")}
    results = {"dataset": data.name, "model": name, "metric": args.metric, "ndcg": args.ndcg, "test_graph": test_graph,
               "valid": {k: v for k, v in valid.items() if k != "users"},
               "test": {k: v for k, v in test.items() if k != "users"},
               "valid_users": valid["users"], "test_users": test["users"],
               "best_epoch": best_epoch, "epochs_run": epoch, "seconds_per_epoch": train_time / max(epoch, 1),
               "params": int(sum(p.numel() for p in model.parameters())), "cfg": dict(model.cfg),
               "fit": asdict(args), "data": data.stats(), "data_info": info, "device": str(device),
               "history": history}
    if args.output_dir:
        write_reports(Path(args.output_dir), results, args.plot)
    return results


def write_reports(out: Path, results: dict, plot: bool = True) -> None:
    """results.json (full precision), results.md (valid/test table) and curves.png, each written atomically."""
    _write_reports(out, results, results["history"], plot=plot,
          title=f"{results['dataset']} — {results['model']} (NDCG: {results['ndcg']})",
          footer=f"test graph: {results.get('test_graph', 'train')}; "
                 f"best epoch (by valid {results['metric']}): {results['best_epoch']} of {results['epochs_run']}; "
                 f"{results['params']:,} parameters; {results['seconds_per_epoch']:.2f} s/epoch on {results['device']}")
