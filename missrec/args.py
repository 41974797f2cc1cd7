"""Command-line + YAML configuration: dataclasses parsed by transformers.HfArgumentParser.

``--config FILE.yaml`` supplies defaults; any ``--key value`` on the command line overrides them.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass
class ModelArgs:
    """Architecture (the paper's sizes by default). Ignored when starting from a checkpoint."""

    hidden_size: int = field(default=300, metadata={"help": "Transformer width (adaptors map CLIP dims to this)."})
    n_heads: int = field(default=4, metadata={"help": "Attention heads."})
    inner_size: int = field(default=256, metadata={"help": "Feed-forward width."})
    num_encoder_layers: int = field(default=1, metadata={"help": "Interest-encoder layers."})
    num_decoder_layers: int = field(default=1, metadata={"help": "Item-decoder layers."})
    dropout: float = field(default=0.5, metadata={"help": "Dropout in the transformer and on the input tokens."})
    max_seq_length: int = field(default=50, metadata={"help": "Longest history (older items are cut)."})
    temperature: float = field(default=0.07, metadata={"help": "Logit temperature tau."})
    fusion: str = field(default="dynamic_shared", metadata={"help": "Item-side fusion: dynamic_shared (learned) or static (mean)."})


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
    resume_from: str = field(default="", metadata={"help": "Checkpoint folder to resume from, or 'latest' (newest in output_dir)."})
    mixed_precision: str = field(default="auto", metadata={"help": "auto (bf16 on a GPU that has it, else fp32) | no | bf16 | fp16."})
    cpu: bool = field(default=False, metadata={"help": "Train on the CPU even if a GPU is present."})
    log_with: str = field(default="", metadata={"help": "accelerate tracker, e.g. tensorboard (empty: none)."})
    log_every: int = field(default=10, metadata={"help": "Log the loss every N steps."})
    interest_ratio: float = field(default=0.02, metadata={"help": "Interests K = ceil(ratio x 2 x n_items)."})
    kmeans_iters: int = field(default=20, metadata={"help": "Lloyd iterations per interest discovery."})
    kmeans_init: str = field(default="auto", metadata={"help": "k-means init: auto | k-means++ | random."})
    kmeans_warm_start: bool = field(default=True, metadata={"help": "Start each epoch's k-means from the previous epoch's centroids (converges in a few iterations)."})
    kmeans_compat: bool = field(default=False, metadata={"help": "Reproduce the original's single-step clustering."})
    gamma_reg: float = field(default=1e-4, metadata={"help": "Weight of the interest regulariser."})
    interest_reg: str = field(default="mean", metadata={"help": "Interest regulariser: mean (real tokens, batch mean) | original (the original code's form: all padded slots, summed over the batch)."})
    attention_impl: str = field(default="packed", metadata={"help": "Sequence encoding: packed (real tokens only, faster) | padded (nn.Transformer on padded batches, the reference). Same results."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars (main process only)."})


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the module docstring's layout and show every option's default."""


def parse(dataclass_types, argv=None, description: str | None = None, defaults_yaml: str | None = None,
          defaults: dict | None = None):
    """Parse ``--config YAML`` + CLI into instances of ``dataclass_types`` (HfArgumentParser).

    Precedence: command line > YAML file > ``defaults`` (a stage's own) > dataclass defaults.
    """
    from transformers import HfArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=defaults_yaml)
    known, rest = pre.parse_known_args(argv)

    parser = HfArgumentParser(dataclass_types, description=description,
                              formatter_class=_HelpFormatter)
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
        parser.set_defaults(**values)
    out = parser.parse_args_into_dataclasses(args=rest if known.config else argv, return_remaining_strings=False)
    return out[:-1] if len(out) > len(dataclass_types) else out
