"""Options of every recipe: dataclasses parsed by transformers.HfArgumentParser, one typed YAML loader.

* One source per setting: an option's default is its dataclass field's default. A recipe whose
  defaults differ derives a subclass with :func:`with_defaults`, so ``--help`` shows the values
  that apply to that recipe.
* ``--config FILE.yaml`` supplies values; any ``--key value`` on the command line overrides them.
  YAML is read by :func:`load_yaml` (YAML 1.2 numbers: ``1e-3`` and ``1E5`` are floats) and every
  value is converted to its field's type by :func:`coerce` (a wrong type is one line naming the
  file and key).
* Each options dataclass validates its own fields in ``__post_init__`` (:func:`check_fields`), so a
  bad value is refused when it is parsed, before any work starts.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from .config import ATTENTION_IMPLS, FUSIONS, MISSRecConfig
from .errors import OptionError

PAPER = MISSRecConfig()  # the help below quotes the model config's defaults, never copies them


def _model_help(text: str, name: str) -> str:
    return (f"{text} Default: the model's own (MISSRec {getattr(PAPER, name)}; other models: their config "
            "class, missrec/model_registry.py), or with --pretrained the checkpoint's.")


# ----------------------------------------------------------------------------- typed YAML
class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: ``1e-3``, ``5E4``, ``-2e+5`` are numbers.

    PyYAML resolves YAML 1.1, whose float pattern needs a dot (``1.0e-3``), so ``1e-3`` would be
    the string "1e-3". The extra resolver is tried after the int one, so ``10`` stays an integer.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def load_yaml(path: str | Path, what: str = "--config") -> dict:
    """A YAML mapping from ``path``; a missing, malformed or non-mapping file is one line naming it."""
    path = Path(path)
    if not path.is_file():
        raise OptionError(f"{what} {path}", "file not found")
    try:
        values = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader) or {}
    except yaml.YAMLError as e:
        raise OptionError(f"{what} {path}", f"not valid YAML ({' '.join(str(e).split())})") from None
    except UnicodeDecodeError:
        raise OptionError(f"{what} {path}", "not UTF-8 text") from None
    if not isinstance(values, dict):
        raise OptionError(f"{what} {path}", "expected a mapping of option: value")
    return values


def yaml_scalar(text: str):
    """One value written as YAML (``--model_opts lr=1e-3``), read by the same loader as the files."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return text


def coerce(where: str, value, want):
    """``value`` (from YAML or ``key=value``) as type ``want``; else an OptionError naming ``where``.

    ``want`` is a type (``int``, ``float``, ``bool``, ``str``, ``Optional[...]``, ``list``) or None
    (anything goes). An int is accepted as a float; a number is accepted as a string (``ks: 10``).
    """
    if want is None or want is typing.Any:
        return value
    args = typing.get_args(want)
    if typing.get_origin(want) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        want = next(a for a in args if a is not type(None))
    origin = typing.get_origin(want) or want
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if want is bool:
        ok = isinstance(value, bool)
    elif want is int:  # 1e5 is an integer; 1.5 is not
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif want is float:
        ok, value = number, float(value) if number else value
    elif want is str:
        ok, value = isinstance(value, str) or number, value if isinstance(value, str) else str(value)
    elif origin in (list, tuple):
        ok = isinstance(value, (list, tuple))
    else:
        ok = True
    if not ok:
        name = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(want, "a list")
        raise OptionError(where, f"expected {name}, got {value!r}")
    return value


def coerce_like(where: str, value, default):
    """:func:`coerce` to the type of ``default`` (a graph model's hyper-parameter; None: any type)."""
    return coerce(where, value, None if default is None else type(default))


# ----------------------------------------------------------------------------- checks
class InvalidOption(OptionError):
    """A field of an options dataclass holds a bad value; ``name`` is the field."""

    def __init__(self, name: str, what: str):
        self.name, self.what = name, what
        super().__init__(f"--{name}", what)


def at_least(lo):
    return (lambda v: v >= lo), f"must be an integer >= {lo}"


NON_NEGATIVE = (lambda v: v >= 0), "must be >= 0"
POSITIVE = (lambda v: math.isfinite(v) and v > 0), "must be a finite number > 0"
FRACTION = (lambda v: 0 <= v < 1), "must lie in [0, 1)"


SEED = (lambda v: 0 <= v < 2 ** 32), f"must be a whole number in 0..{2 ** 32 - 1} (numpy's seed range)"
DATASET = ((lambda v: bool(str(v).strip()) and "/" not in str(v) and str(v) not in (".", "..")),
           "must name a dataset folder under --data_root (not empty, no '/'), e.g. sample_a")


def _is_folder_or_free(path: str) -> bool:
    """True when ``path`` is empty, a folder, or can become one (its nearest existing ancestor is a folder)."""
    if not path:
        return True
    for p in (Path(path), *Path(path).parents):
        if p.exists():
            return p.is_dir()
    return True


OUTPUT_DIR = _is_folder_or_free, "is an existing file (or inside one): give a folder"


def one_of(*choices):
    return (lambda v: v in choices), "must be one of " + " | ".join(choices)


def check_fields(obj, **rules) -> None:
    """Raise :class:`InvalidOption` for the first field of ``obj`` that breaks its rule."""
    for name, (ok, what) in rules.items():
        value = getattr(obj, name)
        if value is not None and not ok(value):  # None: an optional option left unset
            raise InvalidOption(name, f"{what}, got {value!r}")


def parse_ks(text: str) -> tuple[int, ...]:
    """``"10,20,50"`` -> (10, 20, 50): the one reader of every recipe's ``--ks``."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        ks = tuple(int(p) for p in parts)
    except ValueError:
        ks = ()
    if not ks or min(ks) < 1:
        raise InvalidOption("ks", f"{text!r} is not a comma-separated list of positive integers (e.g. 10,20,50)")
    return ks


def check_metric(metric: str, ks_text: str, kinds=("recall", "ndcg")) -> None:
    """``metric`` (e.g. ndcg@10) must be one the evaluator computes with these cut-offs."""
    computed = [f"{m}@{k}" for m in kinds for k in parse_ks(ks_text)]
    if metric not in computed:
        raise InvalidOption("metric", f"{metric!r} is not computed; with --ks {ks_text} the metrics are "
                                      f"{', '.join(computed)} (add its cut-off to --ks)")


# ----------------------------------------------------------------------------- shared options
@dataclass
class ModelArgs:
    """Model options. Unset (None) means the model's own default, or with a checkpoint its value: an
    explicit option that conflicts with a checkpoint's architecture is an error, others apply
    (missrec/factory.py). A model refuses an option it has not (missrec/seqmodel.py ``options``)."""

    hidden_size: Optional[int] = field(default=None, metadata={"help": _model_help("Hidden width (MISSRec: its adaptors map the feature dims to this).", "hidden_size")})
    n_heads: Optional[int] = field(default=None, metadata={"help": _model_help("Attention heads.", "n_heads")})
    inner_size: Optional[int] = field(default=None, metadata={"help": _model_help("Feed-forward width.", "inner_size")})
    num_encoder_layers: Optional[int] = field(default=None, metadata={"help": _model_help("Encoder layers (MISSRec: interest encoder; SASRec: its layers; GRU4Rec: GRU layers).", "num_encoder_layers")})
    num_decoder_layers: Optional[int] = field(default=None, metadata={"help": _model_help("Item-decoder layers (MISSRec only).", "num_decoder_layers")})
    dropout: Optional[float] = field(default=None, metadata={"help": _model_help("Dropout.", "dropout")})
    max_seq_length: Optional[int] = field(default=None, metadata={"help": _model_help("Longest history (older items are cut).", "max_seq_length")})
    temperature: Optional[float] = field(default=None, metadata={"help": _model_help("Logit temperature tau (MISSRec only).", "temperature")})
    fusion: Optional[str] = field(default=None, metadata={"help": _model_help("Item-side fusion: dynamic_shared (learned) or static (mean) (MISSRec only).", "fusion")})

    def given(self) -> dict:
        """The options set explicitly (on the command line or in the YAML file)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def effective(self, model) -> "ModelArgs":
        """These options with the unset ones filled from ``model``'s config (what the run really uses:
        a run's recorded settings compare values, not "unset")."""
        cls, c = type(model), model.config
        fill = {k: getattr(c, f) for k, f in getattr(cls, "options", {}).items()
                if getattr(self, k, None) is None and hasattr(c, f)}
        return dataclasses.replace(self, **fill)

    def __post_init__(self):
        one = at_least(1)
        check_fields(self, hidden_size=one, n_heads=one, inner_size=one, num_encoder_layers=one,
                     num_decoder_layers=one, max_seq_length=one, dropout=FRACTION, temperature=POSITIVE,
                     fusion=one_of(*FUSIONS))
        if None not in (self.hidden_size, self.n_heads) and self.hidden_size % self.n_heads:
            raise InvalidOption("n_heads", f"{self.n_heads} does not divide --hidden_size {self.hidden_size}")


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
    resume_from: str = field(default="", metadata={"help": "Checkpoint folder to resume from, or 'latest' (newest in output_dir). Refused when the checkpoint's run settings (data, model, metric, optimiser options) differ from this run's."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Start over in an --output_dir that holds files: they are moved aside to <output_dir>.old-<date>-<time> (nothing is deleted). Without it such a folder is refused unless --resume_from is given."})
    resume_inexact: bool = field(default=False, metadata={"help": "Resume even when the checkpoint lacks accelerate's RNG state files or interest.safetensors (printing what is lost); without it such a checkpoint is refused."})
    mixed_precision: str = field(default="auto", metadata={"help": "auto (bf16 on a GPU that has it, else fp32) | no | bf16 | fp16."})
    cpu: bool = field(default=False, metadata={"help": "Train on the CPU even if a GPU is present."})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: auto = OMP_NUM_THREADS if set, else the cores not busy at startup by the 1-minute load average). On a shared CPU more threads than free cores is ~3x slower, not faster."})
    log_with: str = field(default="", metadata={"help": "accelerate tracker, e.g. tensorboard (empty: none)."})
    log_every: int = field(default=10, metadata={"help": "Log every N steps (step, epoch, loss and its parts, lr, sequences/s) to <output_dir>/train_log.jsonl, and to stdout when --progress is false."})
    interest_ratio: float = field(default=0.02, metadata={"help": "Interests K = ceil(ratio x 2 x n_items)."})
    kmeans_iters: int = field(default=20, metadata={"help": "Lloyd iterations per interest discovery."})
    kmeans_init: str = field(default="auto", metadata={"help": "k-means init: auto | k-means++ | random."})
    kmeans_warm_start: bool = field(default=True, metadata={"help": "Start each epoch's k-means from the previous epoch's centroids (converges in a few iterations)."})
    kmeans_compat: bool = field(default=False, metadata={"help": "Reproduce the original's single-step clustering."})
    gamma_reg: float = field(default=1e-4, metadata={"help": "Weight of the interest regulariser."})
    interest_reg: Optional[str] = field(default=None, metadata={"help": "MISSRec's interest regulariser: mean (real tokens, batch mean) | original (the original code's form: all padded slots, summed over the batch). Default: a checkpoint's stored choice, else mean; an explicit value overrides a checkpoint's (printed)."})
    attention_impl: Optional[str] = field(default=None, metadata={"help": "MISSRec's sequence encoding (default: a checkpoint's stored choice, else packed): packed (real tokens only, attention per length bucket; fastest on a CPU) | jagged (real tokens only, attention on nested jagged tensors: fused varlen kernels on CUDA, unmeasured there) | padded (nn.Transformer on padded batches, the reference). Same results."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars (main process only)."})

    def __post_init__(self):
        one = at_least(1)
        check_fields(self, epochs=one, train_batch_size=one, eval_batch_size=one, gradient_accumulation_steps=one,
                     save_every=one, log_every=one, kmeans_iters=one, save_steps=at_least(0),
                     save_total_limit=at_least(0), warmup_steps=at_least(0), weight_decay=NON_NEGATIVE,
                     max_grad_norm=NON_NEGATIVE, gamma_reg=NON_NEGATIVE, adam_epsilon=NON_NEGATIVE,
                     learning_rate=POSITIVE, interest_ratio=POSITIVE, adam_beta1=FRACTION, adam_beta2=FRACTION,
                     max_steps=((lambda v: v == -1 or v >= 1), "must be -1 (run all epochs) or a positive number of steps"),
                     lr_scheduler=one_of("constant", "linear", "cosine"),
                     mixed_precision=one_of("auto", "no", "bf16", "fp16"),
                     kmeans_init=one_of("auto", "k-means++", "random"), seed=SEED, output_dir=OUTPUT_DIR,
                     interest_reg=one_of("mean", "original"), attention_impl=one_of(*ATTENTION_IMPLS))

    def runtime(self) -> dict:
        """The run's choices a model may take (None: the checkpoint's or the model's default)."""
        return {"interest_reg": self.interest_reg, "attention_impl": self.attention_impl}



def with_defaults(cls, name: str, doc: str | None = None, helps: dict | None = None, **defaults):
    """A subclass of the options dataclass ``cls`` whose fields ``defaults`` have other defaults.

    Checks and help texts are the parent's (``helps`` replaces the text of some fields); ``--help`` of a recipe parsing the subclass shows the
    recipe's defaults. Made in the calling module (its ``__module__``), like a class statement.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(defaults) - set(fields))
    if unknown:
        raise TypeError(f"with_defaults: {cls.__name__} has no fields {unknown}")
    module = sys._getframe(1).f_globals.get("__name__", __name__)
    return dataclasses.make_dataclass(
        name, [(k, hints[k], field(default=v, metadata={**fields[k].metadata, **({"help": helps[k]} if k in (helps or {}) else {})}))
               for k, v in defaults.items()],
        bases=(cls,), namespace={"__doc__": doc or cls.__doc__, "__module__": module})


# ----------------------------------------------------------------------------- the parser
def config_path(argv: list[str]) -> str | None:
    """The value of ``--config`` in ``argv`` (last one wins), or None."""
    path = None
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        elif a.startswith("--config="):
            path = a.split("=", 1)[1]
    return path


def _options_on_cli(argv: list[str]) -> set[str]:
    return {a[2:].split("=", 1)[0].replace("-", "_") for a in argv if a.startswith("--")}


def _type_of(dataclass_types, key: str):
    for t in dataclass_types:
        hints = typing.get_type_hints(t)
        if key in hints:
            return hints[key]
    return None


def parse(dataclass_types, argv=None, description: str | None = None, defaults_yaml: str | None = None,
          sections: typing.Iterable[str] = ()):
    """Parse ``--config YAML`` + the command line into instances of ``dataclass_types``.

    Precedence: command line > YAML file (``--config``, else ``defaults_yaml``) > the dataclasses'
    defaults. ``sections`` names YAML keys that hold mappings for the caller (the graph baselines'
    ``model_cfg:`` and per-model sections); with any, the result ends with ``{name: mapping}``.
    Every error is one ``error:`` line (exit status 2) naming the option, or the file and key.
    """
    from transformers import HfArgumentParser

    from .cli import fail, parser_message

    class Parser(HfArgumentParser):
        def error(self, message):
            fail(parser_message(self, message))

    argv = list(sys.argv[1:] if argv is None else argv)
    sections = tuple(sections)
    # allow_abbrev=False: "--epoch 3" must not silently mean --epochs.
    parser = Parser(dataclass_types, description=description, formatter_class=_HelpFormatter, allow_abbrev=False)
    _hide_dashed_aliases(parser)
    config = config_path(argv) or defaults_yaml
    parser.add_argument("--config", default=config,
                        help="YAML file of option values; command-line options override it.")
    values, found = {}, {}
    if config:
        try:
            values = load_yaml(config)
            found = {k: values.pop(k) for k in sections if k in values}
            for k, v in found.items():
                if not isinstance(v, dict):
                    raise OptionError(f"{config}: {k}", "must be a mapping of name: value")
            valid = {f.name for t in dataclass_types for f in dataclasses.fields(t)}
            unknown = sorted(set(values) - valid)
            if unknown:
                raise OptionError(f"--config {config}", f"unknown options {unknown}")
            values = {k: coerce(f"{config}: {k}", v, _type_of(dataclass_types, k)) for k, v in values.items()}
        except OptionError as e:
            parser.error(str(e))
        parser.set_defaults(**values)
    try:
        *out, remaining = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True,
                                                             look_for_args_file=False)
    except InvalidOption as e:
        where = f"{config}: {e.name}" if e.name in values and e.name not in _options_on_cli(argv) else f"--{e.name}"
        parser.error(f"{where}: {e.what}")
    if remaining:
        parser.error(f"unrecognized arguments: {' '.join(remaining)}")
    out = out[:len(dataclass_types)]  # drop the namespace holding --config
    return (*out, found) if sections else out


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the module docstring's layout and show every option's default."""


def _hide_dashed_aliases(parser) -> None:
    """HfArgumentParser also accepts ``--output-dir`` for ``--output_dir``: keep that, but show and
    suggest only the underscore names (one spelling per option)."""
    for action in parser._actions:
        names = action.option_strings
        action.option_strings = [s for s in names if not (s.startswith("--") and "-" in s[2:]
                                                          and s[:2] + s[2:].replace("-", "_") in names)]
