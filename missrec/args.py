"""Command-line + YAML configuration: dataclasses parsed by transformers.HfArgumentParser.

``--config FILE.yaml`` supplies defaults; any ``--key value`` on the command line overrides them.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .config import MISSRecConfig

PAPER = MISSRecConfig()  # the defaults below are the model config's, not copies of them


@dataclass
class ModelArgs:
    """Architecture (the paper's sizes by default). Ignored when starting from a checkpoint."""

    hidden_size: int = field(default=PAPER.hidden_size, metadata={"help": "Transformer width (adaptors map CLIP dims to this)."})
    n_heads: int = field(default=PAPER.n_heads, metadata={"help": "Attention heads."})
    inner_size: int = field(default=PAPER.inner_size, metadata={"help": "Feed-forward width."})
    num_encoder_layers: int = field(default=PAPER.num_encoder_layers, metadata={"help": "Interest-encoder layers."})
    num_decoder_layers: int = field(default=PAPER.num_decoder_layers, metadata={"help": "Item-decoder layers."})
    dropout: float = field(default=PAPER.dropout, metadata={"help": "Dropout in the transformer and on the input tokens."})
    max_seq_length: int = field(default=PAPER.max_seq_length, metadata={"help": "Longest history (older items are cut)."})
    temperature: float = field(default=PAPER.temperature, metadata={"help": "Logit temperature tau."})
    fusion: str = field(default=PAPER.fusion, metadata={"help": "Item-side fusion: dynamic_shared (learned) or static (mean)."})


@dataclass
class TrainArgs:
    """The shared training loop's options (pretraining and finetuning)."""

    output_dir: str = field(default="outputs/run", metadata={"help": "Where checkpoints, logs and results go."})
    epochs: int = field(default=100, metadata={"help": "Number of epochs."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many optimiser steps (-1: run all epochs)."})
    train_batch_size: int = field(default=4096, metadata={"help": "GLOBAL batch size (all processes x accumulation)."})
    eval_batch_size: int = field(default=1024, metadata={"help": "Users per evaluation batch (per process)."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam weight decay."})
    adam_beta1: float = field(default=0.9, metadata={"help": "Adam beta1."})
    adam_beta2: float = field(default=0.999, metadata={"help": "Adam beta2."})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "Adam epsilon (a larger one damps updates of parameters whose gradient is float noise)."})
    lr_scheduler: str = field(default="constant", metadata={"help": "constant | linear | cosine (after warmup)."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps."})
    max_grad_norm: float = field(default=0.0, metadata={"help": "Clip gradients to this norm (0: off)."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimiser step (in-batch negatives come from each micro-batch)."})
    seed: int = field(default=2023, metadata={"help": "Seed of initialisation, data order, augmentation and k-means."})
    save_every: int = field(default=10, metadata={"help": "Write checkpoint-<epoch> every this many epochs (and at the end)."})
    save_steps: int = field(default=0, metadata={"help": "Also write checkpoint-step<N> every N steps (0: off)."})
    save_total_limit: int = field(default=0, metadata={"help": "Keep only the newest N checkpoints (0: keep all)."})
    resume_from: str = field(default="", metadata={"help": "Checkpoint folder to resume from, or 'latest' (newest in output_dir)."})
    mixed_precision: str = field(default="auto", metadata={"help": "auto (bf16 on a GPU that has it, else fp32) | no | bf16 | fp16."})
    cpu: bool = field(default=False, metadata={"help": "Train on the CPU even if a GPU is present."})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: auto = OMP_NUM_THREADS if set, else the cores not busy at startup by the 1-minute load average). On a shared CPU more threads than free cores is ~3x slower, not faster."})
    log_with: str = field(default="", metadata={"help": "accelerate tracker, e.g. tensorboard (empty: none)."})
    log_every: int = field(default=10, metadata={"help": "Log the loss every N steps."})
    interest_ratio: float = field(default=0.02, metadata={"help": "Interests K = ceil(ratio x 2 x n_items)."})
    kmeans_iters: int = field(default=20, metadata={"help": "Lloyd iterations per interest discovery."})
    kmeans_init: str = field(default="auto", metadata={"help": "k-means init: auto | k-means++ | random."})
    kmeans_warm_start: bool = field(default=True, metadata={"help": "Start each epoch's k-means from the previous epoch's centroids (converges in a few iterations)."})
    kmeans_compat: bool = field(default=False, metadata={"help": "Reproduce the original's single-step clustering."})
    gamma_reg: float = field(default=1e-4, metadata={"help": "Weight of the interest regulariser."})
    interest_reg: str = field(default="mean", metadata={"help": "Interest regulariser: mean (real tokens, batch mean) | original (the original code's form: all padded slots, summed over the batch)."})
    attention_impl: str = field(default="packed", metadata={"help": "Sequence encoding: packed (real tokens only, attention per length bucket; fastest on a CPU) | jagged (real tokens only, attention on nested jagged tensors: fused varlen kernels on CUDA, unmeasured there) | padded (nn.Transformer on padded batches, the reference). Same results."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars (main process only)."})


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the module docstring's layout and show every option's default."""


def parse(dataclass_types, argv=None, description: str | None = None, defaults_yaml: str | None = None,
          defaults: dict | None = None):
    """Parse ``--config YAML`` + CLI into instances of ``dataclass_types`` (HfArgumentParser).

    Precedence: command line > YAML file > ``defaults`` (a stage's own) > dataclass defaults.
    """
    from transformers import HfArgumentParser

    from .cli import parser_message, fail

    class Parser(HfArgumentParser):
        def error(self, message):
            fail(parser_message(self, message))

    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", default=defaults_yaml)
    known, rest = pre.parse_known_args(argv)

    # allow_abbrev=False: "--epoch 3" must not silently mean --epochs.
    parser = Parser(dataclass_types, description=description, formatter_class=_HelpFormatter,
                    allow_abbrev=False)
    parser.add_argument("--config", default=defaults_yaml,
                        help="YAML file of option values; command-line options override it.")
    if defaults:
        parser.set_defaults(**defaults)
    if known.config:
        path = Path(known.config)
        if not path.is_file():
            parser.error(f"--config {path}: file not found")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            parser.error(f"--config {path}: not valid YAML ({e})")
        if not isinstance(values, dict):
            parser.error(f"--config {path}: expected a mapping of option: value")
        valid = {f.name for t in dataclass_types for f in dataclasses.fields(t)}
        unknown = sorted(set(values) - valid)
        if unknown:
            parser.error(f"--config {path}: unknown options {unknown}")
        values = {k: _yaml_value(path, k, v, dataclass_types) for k, v in values.items()}
        parser.set_defaults(**values)
    else:
        values = {}
    *out, remaining = parser.parse_args_into_dataclasses(args=rest if known.config else argv,
                                                         return_remaining_strings=True)
    if remaining:
        parser.error(f"unrecognized arguments: {' '.join(remaining)}")
    out = out[:len(dataclass_types)]  # drop the namespace holding --config
    on_cli = {a[2:].split("=", 1)[0] for a in (rest if known.config else argv) if a.startswith("--")}
    for obj in out:
        problem = check(obj)
        if problem:
            name, what = problem
            where = f"{known.config}: {name}" if name in values and name not in on_cli else f"--{name}"
            parser.error(f"{where}: {what}")
    return out


# ----------------------------------------------------------------------------- validation
# Checks by field name, so every stage's dataclass (ModelArgs, TrainArgs, PretrainArgs,
# FinetuneArgs) is validated by parse() before any work starts.
def _at_least(lo):
    return lambda v: v >= lo, f"must be an integer >= {lo}"


def _in(*choices):
    return lambda v: v in choices, "must be one of " + " | ".join(choices)


_FIELD_CHECKS = {
    **{k: _at_least(1) for k in ("epochs", "train_batch_size", "hidden_size", "n_heads", "inner_size", "num_encoder_layers",
                                 "num_decoder_layers", "max_seq_length", "eval_batch_size",
                                 "gradient_accumulation_steps", "save_every", "log_every", "kmeans_iters",
                                 "patience")},
    **{k: _at_least(0) for k in ("save_steps", "save_total_limit", "warmup_steps")},
    **{k: (lambda v: v >= 0, "must be >= 0") for k in ("weight_decay", "max_grad_norm", "gamma_reg",
                                                        "lambda_seq", "adam_epsilon")},
    **{k: (lambda v: math.isfinite(v) and v > 0, "must be a finite number > 0")
       for k in ("temperature", "learning_rate", "interest_ratio")},
    **{k: (lambda v: 0 <= v < 1, "must lie in [0, 1)") for k in ("dropout", "adam_beta1", "adam_beta2")},
    "item_keep_prob": (lambda v: 0 < v <= 1, "must lie in (0, 1]"),
    "max_steps": (lambda v: v == -1 or v >= 1, "must be -1 (run all epochs) or a positive number of steps"),
    "fusion": _in("dynamic_shared", "static"),
    "lr_scheduler": _in("constant", "linear", "cosine"),
    "mixed_precision": _in("auto", "no", "bf16", "fp16"),
    "kmeans_init": _in("auto", "k-means++", "random"),
    "augmentation": _in("auto", "item_drop", "word_drop", "both"),
    "mode": _in("transductive", "inductive"),
    "test_graph": _in("auto", "train", "train+valid"),
}


def parse_ks(text: str) -> tuple[int, ...]:
    """``"10,20,50"`` -> (10, 20, 50); anything else is a ValueError saying what is expected."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        ks = tuple(int(p) for p in parts)
    except ValueError:
        ks = ()
    if not ks or min(ks) < 1:
        raise ValueError(f"{text!r} is not a comma-separated list of positive integers (e.g. 10,20,50)")
    return ks


def check(obj) -> tuple[str, str] | None:
    """The first invalid field of a parsed options dataclass as (name, what is wrong), or None."""
    names = [f.name for f in dataclasses.fields(obj)]
    for name in (n for n in names if n in _FIELD_CHECKS):
        ok, what = _FIELD_CHECKS[name]
        value = getattr(obj, name)
        if not ok(value):
            return name, f"{what}, got {value!r}"
    if {"hidden_size", "n_heads"} <= set(names) and obj.hidden_size % obj.n_heads:
        return "n_heads", f"{obj.n_heads} does not divide --hidden_size {obj.hidden_size}"
    if "ks" in names:
        try:
            ks = parse_ks(obj.ks)
        except ValueError as e:
            return "ks", str(e)
        if "metric" in names:
            computed = [f"{m}@{k}" for m in ("recall", "ndcg") for k in ks]
            if obj.metric not in computed:
                return "metric", (f"{obj.metric!r} is not computed; with --ks {obj.ks} the metrics are "
                                  f"{', '.join(computed)} (add its cut-off to --ks)")
    return None


def _yaml_value(path: Path, key: str, value, dataclass_types):
    """A YAML value checked against the field's type (argparse does not convert defaults)."""
    import typing
    for t in dataclass_types:
        hints = typing.get_type_hints(t)
        if key in hints:
            want = hints[key]
            break
    optional = typing.get_origin(want) is typing.Union and type(None) in typing.get_args(want)
    if optional:
        if value is None:
            return None
        want = next(a for a in typing.get_args(want) if a is not type(None))
    if want is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        ok = isinstance(value, bool)
    elif want is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif want is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif want is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        ok = isinstance(value, str)
    else:
        ok = True
    if not ok:
        from .cli import fail
        fail(f"{path}: {key}: expected {'an integer' if want is int else want.__name__}, got {value!r} (see --help)")
    return value
