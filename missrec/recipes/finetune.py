"""Finetune MISSRec on one downstream dataset and evaluate it by full ranking.

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

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

TEST_RANKS = "test_ranks.npy"
# An epoch checkpoint every epoch (only the newest kept) makes --resume_from latest lose at most one epoch.
FINETUNE_DEFAULTS = {"epochs": 300, "train_batch_size": 512, "eval_batch_size": 1024, "interest_ratio": 0.5,
                     "save_every": 1, "save_total_limit": 1, "output_dir": "outputs/finetune"}


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
    model: str = field(default="missrec", metadata={"help": "missrec, or sasrec: the ID-only SASRec baseline (hidden 64, 2 layers, 2 heads, dropout 0.5; only max_seq_length of the model options applies)."})

    @property
    def ks_tuple(self):
        return tuple(int(k) for k in self.ks.split(",") if k.strip())


def build_model(margs, fargs, ds, n_items):
    from missrec.config import MISSRecConfig
    from missrec.errors import UserError
    from missrec.model import MISSRec

    if fargs.model == "sasrec":
        from missrec.sasrec import SASRec, SASRecConfig
        if fargs.pretrained.lower() != "none":
            raise UserError("--pretrained", "--model sasrec trains from scratch; drop --pretrained")
        return SASRec(SASRecConfig(n_items=n_items, max_seq_length=margs.max_seq_length))
    use_id = fargs.mode == "transductive"
    tdim = ds.features["text"].shape[1]
    # No image features (a text-only catalogue): a text-only model, image_dim None (from scratch).
    idim = ds.features["image"].shape[1] if "image" in ds.features else None
    if fargs.pretrained.lower() != "none":
        model = MISSRec.from_pretrained(fargs.pretrained, dataset=ds.folder, use_id=use_id, n_items=n_items if use_id else 0)
        c = model.config
        # A checkpoint with an image adaptor on a text-only dataset reads zero image rows (as before);
        # a text-only checkpoint ignores the dataset's image features.
        if c.text_dim != tdim or (c.image_dim is not None and idim is not None and c.image_dim != idim):
            raise UserError(fargs.pretrained, f"expects text/image features of dims {c.text_dim}/{c.image_dim}, "
                                              f"but {ds.folder} has {tdim}/{idim} (extract them with the same encoder)")
        return model
    cfg = MISSRecConfig(**asdict(margs), text_dim=tdim, image_dim=idim, use_id=use_id, n_items=n_items if use_id else 0)
    return MISSRec(cfg)


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


def main(argv=None):
    from missrec.args import ModelArgs, TrainArgs, parse
    from missrec.data.atomic import load_dataset
    from missrec.items import ItemTable
    from missrec.errors import OptionError
    from missrec.model import load_model
    from missrec.tasks import FinetuneTask
    from missrec.trainer import EarlyStopping, Trainer, make_accelerator

    margs, targs, fargs = parse((ModelArgs, TrainArgs, FinetuneArgs), argv, description=__doc__,
                                defaults=FINETUNE_DEFAULTS)
    if fargs.model not in ("missrec", "sasrec"):
        raise OptionError("--model", f"must be missrec or sasrec, got {fargs.model!r}")
    if fargs.peft is None:
        fargs.peft = fargs.pretrained.lower() != "none"
    acc = make_accelerator(targs)
    if not fargs.data_root:
        from missrec.data.sample import ensure_sample
        with acc.main_process_first():
            fargs.data_root = str(ensure_sample())
    with acc.main_process_first():
        ds = load_dataset(fargs.data_root, fargs.dataset, max_len=margs.max_seq_length,
                          require_features=() if fargs.model == "sasrec" else ("text",))
    n_items = ds.n_items
    from accelerate.utils import set_seed
    set_seed(targs.seed)  # fresh weights (a new model, or a new ID table) depend on the seed only
    with acc.main_process_first():  # downloads / .pth conversion happen once
        model = build_model(margs, fargs, ds, n_items)
    trainable, total = model.set_peft(fargs.peft)
    acc.print(f"{fargs.dataset}: {n_items} items, {len(ds.splits['train'])} train / {len(ds.splits['valid'])} valid / "
              f"{len(ds.splits['test'])} test rows; mode {fargs.mode}, pretrained {fargs.pretrained}, "
              f"peft {fargs.peft}: {trainable:,} trainable of {total:,} parameters")
    if fargs.model == "sasrec":
        from missrec.sasrec import SASRecTask, id_only_items
        items, task_cls = id_only_items(n_items, acc.device), SASRecTask
    else:
        text_only = model.config.image_dim is None
        if text_only:
            acc.print(f"{fargs.dataset}: text features only, a text-only model"
                      + (" (the dataset's image features are not used)" if "image" in ds.features else ""))
        elif "image" not in ds.features:
            acc.print(f"{fargs.dataset}: no image features ({fargs.dataset}.feat3CLS absent): zero rows for all "
                      f"{n_items} items (the checkpoint has an image adaptor)")
        items = ItemTable.from_dataset(ds, model.config.hidden_size, device=acc.device, image_dim=model.config.image_dim,
                                       text_only=text_only)
        task_cls = FinetuneTask
    out = Path(targs.output_dir)
    task = task_cls(model, items, ds.splits, targs, fargs)
    trainer = Trainer(targs, task, acc, EarlyStopping(f"valid_{fargs.metric}", fargs.patience, out / "best"))
    state = trainer.train()

    # Test with the best checkpoint (weights and the interest clusters of that epoch).
    best = load_model(out / "best").to(acc.device)
    items.load_interest(out / "best" / "interest.safetensors")
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
        write_model_card(out / "best", results)  # the model card, now with the test metrics
        t = results["test"]
        acc.print("test: " + ", ".join(f"{k} {v:.4f}" for k, v in t.items()) + f"  (best epoch {state.best_epoch}); "
                  f"results in {out / 'results.json'}")
    return results


def cli(argv=None) -> int:
    """Console-script entry: one-line errors; exit status 0 (main's return value is for callers)."""
    from missrec.cli import run
    run(main, argv)
    return 0

