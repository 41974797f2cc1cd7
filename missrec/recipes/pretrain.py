"""Pretrain MISSRec on a mixture of source domains.

    accelerate launch pretrain/run.py                      # the embedded sample, CPU-sized
    accelerate launch --config_file launch/gpu8.yaml pretrain/run.py --config pretrain/configs/fhckm.yaml
    python pretrain/run.py --data_root DIR --dataset FHCKM_mm_full --epochs 100 ...

With no --config and no --data_root the embedded sample is generated (first use) and
missrec/recipes/pretrain_sample.yaml (shipped with the package) supplies the defaults.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

SAMPLE_CONFIG = Path(__file__).resolve().with_name("pretrain_sample.yaml")


@dataclass
class PretrainArgs:
    data_root: str = field(default="", metadata={"help": "Folder holding the corpus folder (empty: the embedded sample, generated on first use)."})
    dataset: str = field(default="sample_pt", metadata={"help": "Corpus name: <data_root>/<dataset>/<dataset>.pt_datasets lists its domains."})
    lambda_seq: float = field(default=1e-3, metadata={"help": "Weight of the sequence-sequence contrastive loss."})
    augmentation: str = field(default="auto", metadata={"help": "Augmented view: item_drop | word_drop (.feat2CLS) | both | auto (both when .feat2CLS exists)."})
    item_keep_prob: float = field(default=0.8, metadata={"help": "Item drop: keep each position with this probability (first always kept)."})
    mask_false_negatives: bool = field(default=False, metadata={"help": "Mask in-batch negatives whose target equals the row's target."})
    init_from: str = field(default="", metadata={"help": "Start from this checkpoint's weights (folder, .pth, registry name or Hub id)."})


def main(argv=None):
    from missrec.args import ModelArgs, TrainArgs, parse
    from missrec.config import MISSRecConfig
    from missrec.data.atomic import load_dataset
    from missrec.items import ItemTable
    from missrec.model import MISSRec
    from missrec.tasks import PretrainTask
    from missrec.trainer import Trainer, make_accelerator

    argv = list(sys.argv[1:] if argv is None else argv)
    use_sample = not any(a.startswith(("--config", "--data_root")) for a in argv)
    margs, targs, pargs = parse((ModelArgs, TrainArgs, PretrainArgs), argv, description=__doc__,
                                defaults_yaml=str(SAMPLE_CONFIG) if use_sample else None)
    acc = make_accelerator(targs)
    if not pargs.data_root:
        from missrec.data.sample import ensure_sample
        with acc.main_process_first():
            pargs.data_root = str(ensure_sample())
    with acc.main_process_first():
        ds = load_dataset(pargs.data_root, pargs.dataset, splits=("train",), max_len=margs.max_seq_length,
                          require_features=("text",))
    if ds.domains is None:
        acc.print(f"note: {pargs.dataset} has no .pt_datasets file; pretraining on it as a single domain")
    from accelerate.utils import set_seed
    set_seed(targs.seed)
    # No image features (.feat3CLS absent): a text-only model (image_dim None), not invented image rows.
    idim = ds.features["image"].shape[1] if "image" in ds.features else None
    if pargs.init_from:
        model = MISSRec.from_pretrained(pargs.init_from)
    else:
        cfg = MISSRecConfig(**asdict(margs), text_dim=ds.features["text"].shape[1],
                            image_dim=idim, use_id=False, n_items=0)
        model = MISSRec(cfg)
    if model.config.image_dim is None:
        acc.print(f"{pargs.dataset}: text features only" + (" (the model has no image modality; the corpus' "
                  "image features are not used)" if idim else f" ({pargs.dataset} has no .feat3CLS): a text-only model"))
    model.config.source = {"pretrained_on": pargs.dataset, "domains": ds.domains or [pargs.dataset]}
    items = ItemTable.from_dataset(ds, model.config.hidden_size, device=acc.device,
                                   image_dim=model.config.image_dim, text_only=model.config.image_dim is None)
    acc.print(f"corpus {pargs.dataset}: {len(ds.domains or [1])} domain(s), {items.n_items} items, "
              f"{len(ds.splits['train'])} training sequences; {sum(p.numel() for p in model.parameters()):,} parameters; "
              f"{acc.num_processes} process(es) on {acc.device}, mixed precision {acc.mixed_precision}")
    task = PretrainTask(model, items, ds.splits["train"], targs, pargs)
    trainer = Trainer(targs, task, acc)
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
    return state


def cli(argv=None) -> int:
    """Console-script entry: one-line errors; exit status 0 (main's return value is for callers)."""
    from missrec.cli import run
    run(main, argv)
    return 0

