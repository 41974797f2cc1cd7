"""Model hyper-parameters, stored as ``config.json`` beside the weights."""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CorruptFileError, MissingFileError, OptionError, UserError, read_json
from .fsutil import atomic_write_json


ATTENTION_IMPLS = ("packed", "jagged", "padded")
FUSIONS = ("dynamic_shared", "static")  # the one list: MISSRecConfig and args.ModelArgs check against it
MAX_LAYERS = 256  # per stack; the paper uses 1 + 1 (building a million layers would take hours)
MAX_WIDTH = 1 << 16  # hidden, inner and feature sizes


# ============================================================================ field checks
# Each field of a config: ("int", lo, hi) | ("float", lo, hi, lo_open, hi_open) | ("choice", values)
# | ("bool",) | ("dict",). They run in __post_init__, so config.json is checked key by key before
# any model is built (config.json loaders put the file's name in front of the message).
def check_fields(cfg, spec: dict) -> None:
    for name, rule in spec.items():
        v, kind = getattr(cfg, name), rule[0]
        if kind == "int?" and v is None:  # optional: None means absent (e.g. no image modality)
            continue
        if kind in ("int", "int?"):
            if type(v) is not int:
                raise OptionError(f"config key '{name}' = {_show(v)}: must be a whole number")
            if not rule[1] <= v <= rule[2]:
                raise OptionError(f"config key '{name}' = {v}: must be between {rule[1]} and {rule[2]}")
        elif kind == "float":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise OptionError(f"config key '{name}' = {_show(v)}: must be a finite number")
            lo, hi, lo_open, hi_open = rule[1:]
            if v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi):
                raise OptionError(f"config key '{name}' = {v}: must be in {'(' if lo_open else '['}{lo}, {hi}"
                                 f"{')' if hi_open else ']'}")
        elif kind == "choice" and v not in rule[1]:
            raise OptionError(f"config key '{name}' = {_show(v)}: must be one of {', '.join(map(repr, rule[1]))}")
        elif kind == "bool" and type(v) is not bool:
            raise OptionError(f"config key '{name}' = {_show(v)}: must be true or false")
        elif kind == "dict" and not isinstance(v, dict):
            raise OptionError(f"config key '{name}' = {_show(v)}: must be a JSON object")


def _show(v) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def available_memory() -> int | None:
    """Bytes of memory this machine can still give (MemAvailable of /proc/meminfo), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(n_params: int, what: str = "model") -> None:
    """Refuse a model whose float32 parameters alone exceed the machine's available memory."""
    need = 4 * n_params
    if need < (1 << 28):  # under 256 MB: not worth reading /proc
        return
    have = available_memory()
    if have is not None and need > have:
        raise OptionError(f"a {what} of these sizes has {n_params:,} parameters, {need / 2**30:.1f} GiB in float32 "
                         f"before any training state, more than this machine's available memory "
                         f"({have / 2**30:.1f} GiB); check hidden_size, the layer counts, max_seq_length and n_items")


def encoder_params(layers: int, h: int, inner: int, cross: bool = False) -> int:
    """Parameters of ``layers`` post-LN transformer layers (self-attention [+ cross-attention] + FFN)."""
    attn = 4 * h * h + 4 * h
    return layers * (attn * (2 if cross else 1) + 2 * h * inner + inner + h + 2 * h * (3 if cross else 2))


@dataclass
class MISSRecConfig:
    """The paper's configuration by default.

    These defaults are the one copy of the paper's hyper-parameters: ``args.ModelArgs`` (the
    command line) and the original-checkpoint import (``PAPER_DEFAULTS``) read them from here.
    """

    hidden_size: int = 300
    n_heads: int = 4
    inner_size: int = 256
    num_encoder_layers: int = 1
    num_decoder_layers: int = 1
    dropout: float = 0.5
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    max_seq_length: int = 50
    text_dim: int | None = 512  # None: an image-only model (no text modality, no text_adaptor)
    image_dim: int | None = 512  # None: a text-only model (no image modality, no img_adaptor)
    temperature: float = 0.07
    # Transductive mode adds an item-ID table of n_items + 1 rows (row 0 = padding).
    use_id: bool = False
    n_items: int = 0
    fusion: str = "dynamic_shared"  # "dynamic_shared" | "static" (plain mean of the two modality scores)
    # How sequences are encoded (same weights, same results): "packed" runs the transformer on
    # real tokens only with attention per length bucket, "jagged" the same with attention on torch
    # nested jagged tensors (fused varlen kernels on CUDA; slower on a CPU, see benchmarks/RESULTS.md),
    # "padded" through nn.Transformer on padded batches (the reference).
    attention_impl: str = "packed"
    interest_reg: str = "mean"  # "mean" (real tokens, batch mean) | "original" (the original's exact form)
    model_type: str = "missrec"
    source: dict = field(default_factory=dict)
    # Transductive only: the items the ID table was trained on ({name, n_items, items_sha256} of
    # AtomicDataset.catalogue()), so the table is never reused for another item list.
    catalogue: dict = field(default_factory=dict)

    FIELDS = {
        "hidden_size": ("int", 1, MAX_WIDTH), "n_heads": ("int", 1, MAX_WIDTH), "inner_size": ("int", 1, MAX_WIDTH),
        "num_encoder_layers": ("int", 1, MAX_LAYERS), "num_decoder_layers": ("int", 1, MAX_LAYERS),
        "dropout": ("float", 0.0, 1.0, False, True), "hidden_act": ("choice", ("gelu", "relu")),
        "layer_norm_eps": ("float", 0.0, 1.0, True, False), "initializer_range": ("float", 0.0, 10.0, False, False),
        "max_seq_length": ("int", 1, 1 << 20), "text_dim": ("int?", 1, MAX_WIDTH), "image_dim": ("int?", 1, MAX_WIDTH),
        "temperature": ("float", 0.0, 1e6, True, False), "use_id": ("bool",), "n_items": ("int", 0, 1 << 40),
        "fusion": ("choice", FUSIONS), "attention_impl": ("choice", ATTENTION_IMPLS),
        "interest_reg": ("choice", ("mean", "original")), "model_type": ("choice", ("missrec",)),
        "source": ("dict",), "catalogue": ("dict",),
    }

    def n_parameters(self) -> int:
        """The model's parameter count (missrec/model.py), computed without building it."""
        h = self.hidden_size
        return (encoder_params(self.num_encoder_layers, h, self.inner_size) + 2 * h
                + encoder_params(self.num_decoder_layers, h, self.inner_size, cross=True) + 2 * h
                + self.max_seq_length * h + 2 * h  # position table, input LayerNorm
                + (0 if self.text_dim is None else (self.text_dim + 1) * h)  # text adaptor
                + (0 if self.image_dim is None else (self.image_dim + 1) * h)  # image adaptor
                + (1 if len(self.modalities) == 2 else 0)  # fusion scalar (two modalities only)
                + ((self.n_items + 1) * h if self.use_id else 0))

    def __post_init__(self):
        check_fields(self, self.FIELDS)
        if self.text_dim is None and self.image_dim is None:
            raise OptionError("config keys 'text_dim' and 'image_dim' are both null: a MISSRec model reads at least "
                              "one item modality (text, image or both)")
        check_memory(self.n_parameters(), "MISSRec model")
        if self.hidden_size % self.n_heads:
            raise OptionError(f"hidden_size {self.hidden_size} is not divisible by n_heads {self.n_heads}")
        if self.fusion not in FUSIONS:
            raise OptionError(f"fusion must be one of {', '.join(FUSIONS)}, got {self.fusion!r}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise OptionError(f"attention_impl must be one of {', '.join(ATTENTION_IMPLS)}, got {self.attention_impl!r}")
        if self.interest_reg not in ("mean", "original"):
            raise OptionError(f"interest_reg must be 'mean' or 'original', got {self.interest_reg!r}")
        if self.use_id and self.n_items <= 0:
            raise OptionError("use_id=True needs n_items > 0 (size of the item-ID table)")

    @property
    def modalities(self) -> list[str]:
        """The item modalities the model reads: ["text", "image"], ["text"] (image_dim None, text-only)
        or ["image"] (text_dim None, image-only)."""
        return [m for m, d in (("text", self.text_dim), ("image", self.image_dim)) if d is not None]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MISSRecConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserError(f"config.json: unknown keys {unknown}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "MISSRecConfig":
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"{path}: not found (a checkpoint folder needs config.json)")
        d = read_json(path, "checkpoint", fix="save or download it again")
        if not isinstance(d, dict):
            raise CorruptFileError(path, "expected a JSON object of model options")
        try:
            return cls.from_dict(d)
        except (TypeError, ValueError) as e:
            raise CorruptFileError(path, str(e)) from None


# The paper's value of every field that has one (for missing entries of an original checkpoint).
PAPER_DEFAULTS = {f.name: f.default for f in dataclasses.fields(MISSRecConfig) if f.default is not dataclasses.MISSING}
