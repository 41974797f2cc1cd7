"""Pretrain MISSRec on a mixture of source domains.

    accelerate launch pretrain/run.py                      # the embedded sample, CPU-sized
    accelerate launch --config_file launch/gpu8.yaml pretrain/run.py --config pretrain/configs/fhckm.yaml
    python pretrain/run.py --data_root DIR --dataset FHCKM_mm_full --epochs 100 ...

The defaults shown by --help are those of a run on your own data (--data_root): the paper's
model sizes, the same as finetuning's (max_seq_length 50, dropout 0.5, inner_size 256), so a
checkpoint pretrained with them finetunes with no change of settings. With no --config and no
--data_root the embedded sample is generated (first use) and its CPU-sized recipe
missrec/recipes/pretrain_sample.yaml (shipped with the package) supplies the values instead.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from missrec.args import DATASET, NON_NEGATIVE, check_fields, one_of
from missrec.cli import entry_status, run

SAMPLE_CONFIG = Path(__file__).resolve().with_name("pretrain_sample.yaml")


@dataclass
class PretrainArgs:
    data_root: str = field(default="", metadata={"help": "Folder holding the corpus folder (empty: the embedded sample, generated on first use)."})
    dataset: str = field(default="sample_pt", metadata={"help": "Corpus name: <data_root>/<dataset>/<dataset>.pt_datasets lists its domains."})
    lambda_seq: float = field(default=1e-3, metadata={"help": "Weight of the sequence-sequence contrastive loss."})
    augmentation: str = field(default="auto", metadata={"help": "Augmented view: item_drop | word_drop (.feat2CLS) | both | auto (both when .feat2CLS exists)."})
    item_keep_prob: float = field(default=0.8, metadata={"help": "Item drop: keep each position with this probability (first always kept)."})
    mask_false_negatives: bool = field(default=False, metadata={"help": "Mask in-batch negatives whose target equals the row's target."})
    negatives: str = field(default="in_batch", metadata={"help": "Negatives of the sequence-item contrast: in_batch (the paper's: the other rows' targets, sampled by popularity, so popular items are over-penalised) | all_items (softmax over every item of the corpus, as finetuning does; a [batch, items] score table per step)."})
    init_from: str = field(default="", metadata={"help": "Start from this checkpoint's weights (folder, .pth, registry name or Hub id)."})

    def __post_init__(self):
        check_fields(self, lambda_seq=NON_NEGATIVE, augmentation=one_of("auto", "item_drop", "word_drop", "both"),
                     negatives=one_of("in_batch", "all_items"),
                     item_keep_prob=((lambda v: 0 < v <= 1), "must lie in (0, 1]"), dataset=DATASET)


def pretrain(argv=None):
    """Parse ``argv`` and pretrain; return the final training state."""
    from missrec.args import ModelArgs, TrainArgs, parse
    from missrec.data.atomic import load_dataset
    from missrec.factory import create_model, history_length, load_model, open_checkpoint
    from missrec.errors import UserError
    from missrec.model import MISSRec
    from missrec.tasks import PretrainTask
    from missrec.trainer import Trainer, make_accelerator

    argv = list(sys.argv[1:] if argv is None else argv)
    use_sample = not any(a.startswith(("--config", "--data_root", "-h", "--help")) for a in argv)
    margs, targs, pargs = parse((ModelArgs, TrainArgs, PretrainArgs), argv, description=__doc__,
                                defaults_yaml=str(SAMPLE_CONFIG) if use_sample else None)
    acc = make_accelerator(targs)
    if use_sample:
        acc.print(f"the embedded sample: settings from {SAMPLE_CONFIG} (hidden {margs.hidden_size}, "
                  f"max_seq_length {margs.max_seq_length}, {targs.epochs} epochs); --data_root DIR runs on your "
                  "data with the defaults that --help shows")
    if not pargs.data_root:
        from missrec.data.sample import ensure_sample
        with acc.main_process_first():
            pargs.data_root = str(ensure_sample())
    ckpt = None
    if pargs.init_from:
        with acc.main_process_first():
            ckpt = open_checkpoint(pargs.init_from)
        if ckpt.model_cls is not MISSRec:
            raise UserError("--init_from", f"{pargs.init_from} holds a {ckpt.model_cls.model_type} model; "
                                           "pretraining is MISSRec's")
    with acc.main_process_first():
        ds = load_dataset(pargs.data_root, pargs.dataset, splits=("train",),
                          max_len=history_length(MISSRec, margs.given(), ckpt), require_features=())
    if ds.domains is None:
        acc.print(f"note: {pargs.dataset} has no .pt_datasets file; pretraining on it as a single domain")
    from accelerate.utils import set_seed
    set_seed(targs.seed)
    if ckpt is not None:
        MISSRec.check_feature_dims(ckpt.config, ds, pargs.init_from)
        model = load_model(ckpt, options=margs.given(), runtime=targs.runtime(), announce=acc.print)
    else:  # pretraining learns no item-ID table: the inductive model
        model = create_model("missrec", ds, options=margs.given(), runtime=targs.runtime(), mode="inductive",
                             announce=acc.print)
    model.config.source = {"pretrained_on": pargs.dataset, "domains": ds.domains or [pargs.dataset]}
    for line in model.data_notes(ds):  # e.g. a text-only corpus: a text-only model
        acc.print(f"{pargs.dataset}: {line}")
    if model.config.text_dim is None:
        # An image-only model has no text: a word-drop view cannot be made; say what the view is.
        if pargs.augmentation in ("word_drop", "both"):
            raise UserError("--augmentation", f"{pargs.augmentation} drops words of the item texts, and this "
                                              "image-only model has none; use item_drop (or auto)")
        acc.print(f"{pargs.dataset}: augmentation {pargs.augmentation}: item drop (keep probability "
                  f"{pargs.item_keep_prob}); an image-only model has no text for word drop")
    items = model.make_items(ds, acc.device)
    acc.print(f"corpus {pargs.dataset}: {len(ds.domains or [1])} domain(s), {items.n_items} items, "
              f"{len(ds.splits['train'])} training sequences; {sum(p.numel() for p in model.parameters()):,} parameters; "
              f"{acc.num_processes} process(es) on {acc.device}, mixed precision {acc.mixed_precision}")
    task = PretrainTask(model, items, ds.splits["train"], targs, pargs)
    from missrec.rundir import run_settings
    trainer = Trainer(targs, task, acc, settings=run_settings(margs.effective(model), targs, pargs))
    state = trainer.train()
    if acc.is_main_process:
        summary = {"global_step": state.global_step, "epochs_done": state.epoch, "history": state.history,
                   "throughput": trainer.throughput, "num_processes": acc.num_processes, "device": str(acc.device)}
        Path(targs.output_dir).mkdir(parents=True, exist_ok=True)
        from missrec.fsutil import atomic_write_json
        atomic_write_json(Path(targs.output_dir) / "pretrain_summary.json", summary)
        tp = trainer.throughput
        acc.print(f"done: {state.global_step} steps; {tp['steps_per_s']:.2f} steps/s, {tp['sequences_per_s']:.1f} sequences/s "
                  f"(incl. interest discovery); "
                  f"checkpoints in {targs.output_dir}")
    trainer.close()
    return state


def main(argv=None) -> int:
    """``missrec-pretrain`` / pretrain/run.py: exit status 0, or 2 after one ``error:`` line."""
    return run(entry_status(pretrain), argv, exit=False)
