"""Model hyper-parameters, stored as ``config.json`` beside the weights."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CorruptFileError, read_json
from .fsutil import atomic_write_json


ATTENTION_IMPLS = ("packed", "jagged", "padded")


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
    text_dim: int = 512
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

    def __post_init__(self):
        if self.hidden_size % self.n_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by n_heads {self.n_heads}")
        if self.fusion not in ("dynamic_shared", "static"):
            raise ValueError(f"fusion must be 'dynamic_shared' or 'static', got {self.fusion!r}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention_impl must be one of {', '.join(ATTENTION_IMPLS)}, got {self.attention_impl!r}")
        if self.interest_reg not in ("mean", "original"):
            raise ValueError(f"interest_reg must be 'mean' or 'original', got {self.interest_reg!r}")
        if self.image_dim is not None and self.image_dim <= 0:
            raise ValueError(f"image_dim must be positive or None (no image modality), got {self.image_dim}")
        if self.use_id and self.n_items <= 0:
            raise ValueError("use_id=True needs n_items > 0 (size of the item-ID table)")

    @property
    def modalities(self) -> list[str]:
        """The item modalities the model reads: ["text", "image"], or ["text"] (image_dim None)."""
        return ["text"] if self.image_dim is None else ["text", "image"]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MISSRecConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"config.json: unknown keys {unknown}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "MISSRecConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found (a checkpoint folder needs config.json)")
        d = read_json(path, "checkpoint", fix="save or download it again")
        if not isinstance(d, dict):
            raise CorruptFileError(path, "expected a JSON object of model options")
        try:
            return cls.from_dict(d)
        except (TypeError, ValueError) as e:
            raise CorruptFileError(path, str(e)) from None


# The paper's value of every field that has one (for missing entries of an original checkpoint).
PAPER_DEFAULTS = {f.name: f.default for f in dataclasses.fields(MISSRecConfig) if f.default is not dataclasses.MISSING}
