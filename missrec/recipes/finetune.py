"""Finetune a sequential model (MISSRec by default; --model: any of missrec/model_registry.py) on one
downstream dataset and evaluate it by full ranking.

    python finetune/run.py                                  # embedded sample target "sample_a", from scratch
    python finetune/run.py --pretrained outputs/pretrain-sample/checkpoint-3 --mode inductive
    accelerate launch finetune/run.py --config finetune/configs/scientific.yaml --pretrained PATH

--pretrained takes a checkpoint folder of ours, an original MISSRec .pth (converted on the fly),
a name from checkpoints/registry.json or a Hugging Face Hub repo id; "none" trains from scratch.
With a pretrained model, parameter-efficient finetuning is the default: only the modality
adaptors, the input LayerNorm, the fusion scalar and (transductive) the item-ID table train.

Writes to --output_dir: best/ (checkpoint), results.json, results.md, curves.png, test_ranks.npy
(each test row's rank, for per-user paired comparisons), and the newest
checkpoint-<epoch>/ (optimizer + trainer state), so --resume_from latest continues a killed run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from missrec.args import DATASET, TrainArgs, at_least, check_fields, check_metric, one_of, parse_ks, with_defaults
from missrec.cli import entry_status, run
from missrec.errors import OptionError

TEST_RANKS = "test_ranks.npy"
# An epoch checkpoint every epoch (only the newest kept) makes --resume_from latest lose at most one epoch.
FinetuneTrainArgs = with_defaults(TrainArgs, "FinetuneTrainArgs", "The training loop's options, with finetuning's defaults.",
                                  output_dir="outputs/finetune", epochs=300, train_batch_size=512, interest_ratio=0.5,
                                  save_every=1, save_total_limit=1)


@dataclass
class FinetuneArgs:
    data_root: str = field(default="", metadata={"help": "Folder holding the dataset folder (empty: the embedded sample)."})
    dataset: str = field(default="sample_a", metadata={"help": "Dataset name: <data_root>/<dataset>/<dataset>.train.inter etc."})
    mode: str = field(default="transductive", metadata={"help": "transductive (item-ID embeddings + modalities) or inductive (modalities only)."})
    pretrained: str = field(default="none", metadata={"help": "Checkpoint folder | original .pth | registry name | Hub repo id | none (from scratch)."})
    peft: Optional[bool] = field(default=None, metadata={"help": "Parameter-efficient finetuning (freeze transformer + position embedding). Default: on when --pretrained is given."})
    patience: int = field(default=10, metadata={"help": "Early stop after this many epochs without a better validation metric."})
    metric: str = field(default="ndcg@10", metadata={"help": "Validation metric that picks the best epoch."})
    ks: str = field(default="10,20,50", metadata={"help": "Cut-offs K for Recall@K / NDCG@K (comma separated)."})
    mask_history: bool = field(default=False, metadata={"help": "Exclude each user's history items from the ranking (the paper does not)."})
    plot: bool = field(default=True, metadata={"help": "Write curves.png (train loss and validation metric per epoch)."})
    zero_shot: bool = field(default=False, metadata={"help": "Train nothing: evaluate the --pretrained checkpoint on the target as it is (interest discovery on the target's items, then valid and test), the zero-shot transfer baseline. Needs --mode inductive (item-ID embeddings would be untrained)."})
    model: str = field(default="missrec", metadata={"help": "A model type of missrec/model_registry.py: missrec, or an ID-only baseline: sasrec (hidden 64, 2 layers, 2 heads, inner 256, dropout 0.5 by default) or gru4rec (embedding 64, GRU hidden 128, 1 layer, dropout 0.3). Model options set explicitly apply to it; an option it has not is refused."})

    def __post_init__(self):
        check_fields(self, mode=one_of("transductive", "inductive"), patience=at_least(1), dataset=DATASET)
        check_metric(self.metric, self.ks)
        if self.zero_shot and self.pretrained.lower() == "none":
            raise OptionError("--zero_shot", "evaluates a pretrained model as it is: give --pretrained CHECKPOINT")
        if self.zero_shot and self.mode != "inductive":
            raise OptionError("--zero_shot", "needs --mode inductive: a transductive model's item-ID embeddings "
                                             "would be untrained")

    @property
    def ks_tuple(self):
        return parse_ks(self.ks)


def build_model(options: dict, targs, fargs, ds, ckpt, announce=None):
    """The run's model: ``--model`` fresh, or the ``--pretrained`` checkpoint ``ckpt`` fitted to ``ds``;
    ``options``: the explicit model options (missrec/args.py:ModelArgs.given)."""
    from missrec.factory import create_model, load_model

    if ckpt is None:
        return create_model(fargs.model, ds, options=options, runtime=targs.runtime(), mode=fargs.mode,
                            announce=announce)
    return load_model(ckpt, dataset=ds.folder, for_data=ds, mode=fargs.mode, options=options,
                      runtime=targs.runtime(), announce=announce)


def open_pretrained(fargs, data_folder):
    """The ``--pretrained`` checkpoint (resolved once), or None; it must be a model that transfers."""
    from missrec.errors import UserError
    from missrec.factory import open_checkpoint
    from missrec.model_registry import model_class

    cls = model_class(fargs.model)
    if fargs.pretrained.lower() == "none":
        return None
    if not cls.transfers:
        raise UserError("--pretrained", f"--model {fargs.model} trains from scratch; drop --pretrained")
    ckpt = open_checkpoint(fargs.pretrained, dataset=data_folder)
    if ckpt.model_cls is not cls:
        raise UserError("--pretrained", f"{fargs.pretrained} holds a {ckpt.model_cls.model_type} model, "
                                        f"not --model {fargs.model}")
    return ckpt


def write_test_ranks(path: Path, ranks) -> None:
    """Each test row's 1-based rank (int64 .npy, test-split row order = one row per user): per-user
    metrics for paired comparisons (missrec.evaluate.per_row_metrics, missrec/recipes/transfer.py)."""
    import numpy as np

    from missrec.fsutil import atomic_path
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(ranks, dtype=np.int64), allow_pickle=False)


def write_reports(out: Path, results: dict, history: list, plot: bool) -> None:
    from missrec.reports import write_reports as write
    write(out, results, history, plot=plot,
          title=f"{results['dataset']} — {results['mode']}, pretrained: {results['pretrained']}, peft: {results['peft']}",
          footer=f"best epoch: {results['best_epoch']} of {results['epochs_run']}; "
                 f"trainable parameters {results['trainable_params']:,} of {results['total_params']:,}")


def finetune(argv=None, *, drop_foreign_options: bool = False) -> dict:
    """Parse ``argv``, train, test the best epoch, write the reports; return the results dict.

    ``drop_foreign_options``: model options the model has not are dropped with a note instead of
    refused (finetune/table.py runs several models with one set of options)."""
    from missrec.args import ModelArgs, parse
    from missrec.data.atomic import FEATURE_SUFFIXES, dataset_folder, load_dataset
    from missrec.factory import history_length, load_model
    from missrec.model_registry import model_class
    from missrec.tasks import FinetuneTask
    from missrec.trainer import EarlyStopping, Trainer, make_accelerator

    margs, targs, fargs = parse((ModelArgs, FinetuneTrainArgs, FinetuneArgs), argv, description=__doc__)
    cls = model_class(fargs.model)
    options = margs.given()
    foreign = [k for k in options if k not in cls.options]
    if foreign and drop_foreign_options:
        print(f"note: --model {fargs.model} has no {', '.join('--' + k for k in foreign)}; not used for it")
        options = {k: v for k, v in options.items() if k in cls.options}
    cls.config_fields(options)  # an option the model has not is refused before any data is read
    if fargs.peft is None:
        fargs.peft = fargs.pretrained.lower() != "none"
    acc = make_accelerator(targs)
    if not fargs.data_root:
        from missrec.data.sample import ensure_sample
        with acc.main_process_first():
            fargs.data_root = str(ensure_sample())
    with acc.main_process_first():  # downloads / .pth conversion happen once
        ckpt = open_pretrained(fargs, dataset_folder(fargs.data_root, fargs.dataset))
    with acc.main_process_first():
        ds = load_dataset(fargs.data_root, fargs.dataset, max_len=history_length(cls, options, ckpt),
                          require_features=cls.features)
    n_items = ds.n_items
    from accelerate.utils import set_seed
    set_seed(targs.seed)  # fresh weights (a new model, or a new ID table) depend on the seed only
    model = build_model(options, targs, fargs, ds, ckpt, announce=acc.print)
    if model.uses_item_ids:
        model.config.catalogue = ds.catalogue()  # checkpoints record whose items the ID table holds
    trainable, total = model.set_peft(fargs.peft)
    acc.print(f"{fargs.dataset}: {n_items} items, {len(ds.splits['train'])} train / {len(ds.splits['valid'])} valid / "
              f"{len(ds.splits['test'])} test rows; model {fargs.model}, mode {fargs.mode}, pretrained {fargs.pretrained}, "
              f"peft {fargs.peft}: {trainable:,} trainable of {total:,} parameters")
    for line in model.data_notes(ds):
        acc.print(f"{fargs.dataset}: {line}")
    items = model.make_items(ds, acc.device)
    out = Path(targs.output_dir)
    task = FinetuneTask(model, items, ds.splits, targs, fargs, n_items=n_items)
    if fargs.zero_shot:
        return _zero_shot(task, acc, targs, fargs, out, trainable, total, ds)
    from missrec.rundir import run_settings
    trainer = Trainer(targs, task, acc, EarlyStopping(f"valid_{fargs.metric}", fargs.patience, out / "best"),
                      settings=run_settings(margs.effective(model), targs, fargs))
    state = trainer.train()

    # Test with the best checkpoint (weights and, for MISSRec, the interest clusters of that epoch).
    best = load_model(out / "best").to(acc.device)
    best.load_item_state(items, out / "best")
    task.model = best
    valid = task.evaluate("valid", acc)
    test, test_ranks = task.evaluate("test", acc, return_ranks=True)  # the one read of the test split
    results = {"dataset": fargs.dataset, "model": fargs.model, "mode": fargs.mode, "pretrained": fargs.pretrained, "peft": fargs.peft,
               "metric": fargs.metric, "valid": valid, "test": test, "test_ranks": TEST_RANKS,
               "best_epoch": state.best_epoch, "epochs_run": state.epoch, "trainable_params": trainable,
               "total_params": total, "history": state.history, "num_processes": acc.num_processes,
               "throughput": trainer.throughput, "features": (ds.meta or {}).get("encoder")}
    if acc.is_main_process:
        write_test_ranks(out / TEST_RANKS, test_ranks)
        write_reports(out, results, state.history, fargs.plot)
        from missrec.modelcard import write_model_card
        write_model_card(out / "best", results, type(best))  # the model card, now with the test metrics
        t = results["test"]
        acc.print("test: " + ", ".join(f"{k} {v:.4f}" for k, v in t.items()) + f"  (best epoch {state.best_epoch}); "
                  f"results in {out / 'results.json'}")
    trainer.close()
    return results


def _zero_shot(task, acc, targs, fargs, out: Path, trainable: int, total: int, ds) -> dict:
    """--zero_shot: the pretrained model as it is, on the target (no training step, no checkpoint)."""
    import time

    from missrec import rundir
    rundir.check_output_dir(out, "", targs.overwrite_output_dir)
    lock = rundir.claim_output_dir(out, "", targs.overwrite_output_dir) if acc.is_main_process else None
    try:
        t0 = time.perf_counter()
        # The interests of the target's items (MISSRec: k-means over the pretrained adaptors' vectors),
        # as at the start of a finetuning run's first epoch.
        info = task.on_epoch_start(0, acc)
        if info:
            acc.print(f"zero-shot: interests K={info['k']}, k-means {info['n_iter']} iterations, inertia {info['inertia']:.4g}")
        valid = task.evaluate("valid", acc)
        test, test_ranks = task.evaluate("test", acc, return_ranks=True)  # the one read of the test split
        results = {"dataset": fargs.dataset, "model": fargs.model, "mode": fargs.mode, "pretrained": fargs.pretrained,
                   "peft": fargs.peft, "zero_shot": True, "metric": fargs.metric, "valid": valid, "test": test,
                   "test_ranks": TEST_RANKS, "best_epoch": 0, "epochs_run": 0, "trainable_params": trainable,
                   "total_params": total, "history": [], "num_processes": acc.num_processes,
                   "throughput": {"seconds": time.perf_counter() - t0, "steps": 0, "sequences": 0},
                   "features": (ds.meta or {}).get("encoder")}
        if acc.is_main_process:
            write_test_ranks(out / TEST_RANKS, test_ranks)
            write_reports(out, results, [], plot=False)
            acc.print("zero-shot test: " + ", ".join(f"{k} {v:.4f}" for k, v in test.items())
                      + f"; results in {out / 'results.json'}")
    finally:
        if lock is not None:
            lock.release()
    return results


def main(argv=None) -> int:
    """``missrec-finetune`` / finetune/run.py: exit status 0, or 2 after one ``error:`` line."""
    return run(entry_status(finetune), argv, exit=False)
