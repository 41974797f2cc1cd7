"""Our checkpoint folder: ``config.json`` + ``model.safetensors`` (+ ``interest.safetensors``)
and ``README.md``, the model card the Hugging Face Hub shows (missrec/modelcard.py).

The one place that knows this layout: the detector (:func:`is_checkpoint_folder`), the writer
(:func:`write_files` into a folder being built, :func:`save_checkpoint` for a whole folder,
written to a temp dir and renamed into place) and the readers. It works on plain dicts and
tensors and imports no model code, so every writer (training, finetuning's best model, the .pth
import in missrec/pth.py) can use it; building a model from a folder is missrec/factory.py.

Training checkpoints add accelerate's state (optimizer, scheduler, RNG) and ``trainer_state.json``
in the same folder (missrec/trainer.py).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from .config import MISSRecConfig
from .errors import CorruptFileError, MissingFileError, OutputExistsError, UserError, read_json, reading
from .fsutil import atomic_dir, atomic_write_json, save_safetensors
from .modelcard import write_model_card

CONFIG, WEIGHTS, INTEREST = "config.json", "model.safetensors", "interest.safetensors"

# Config fields that fix parameter shapes or the meaning of the weights: a resumed run must match.
SHAPE_FIELDS = ("hidden_size", "n_heads", "inner_size", "num_encoder_layers", "num_decoder_layers",
                "max_seq_length", "fusion", "text_dim", "image_dim", "use_id", "n_items")


def is_checkpoint_folder(path: str | os.PathLike) -> bool:
    p = Path(path)
    return (p / CONFIG).is_file() and (p / WEIGHTS).is_file()


def write_files(folder: str | os.PathLike, config: dict, weights: dict[str, torch.Tensor],
                interest: dict[str, torch.Tensor] | None = None, model_cls=None) -> None:
    """Write the checkpoint files into ``folder`` (an existing, usually temporary, folder).

    ``model_cls`` (the model's class, see missrec/seqmodel.py) gives the model card its description.
    """
    folder = Path(folder)
    save_safetensors({k: v.detach().contiguous().cpu() for k, v in weights.items()}, folder / WEIGHTS,
                     metadata={"format": "pt"})
    if interest is not None:
        save_safetensors({k: v.detach().contiguous().cpu() for k, v in interest.items()}, folder / INTEREST,
                         metadata={"format": "pt"})
    atomic_write_json(folder / CONFIG, config)
    write_model_card(folder, model_cls=model_cls)  # every checkpoint is Hub-ready; finetuning refreshes it with test metrics


def save_checkpoint(path: str | os.PathLike, config: dict, weights: dict[str, torch.Tensor],
                    interest: dict[str, torch.Tensor] | None = None, *, overwrite: bool = True,
                    model_cls=None) -> Path:
    """Write a whole checkpoint folder atomically; refuse to replace anything but a checkpoint folder."""
    out = Path(path)
    if out.exists():
        if not out.is_dir():
            raise OutputExistsError(f"{out}: exists and is not a folder")
        if any(out.iterdir()):
            if not is_checkpoint_folder(out):
                raise OutputExistsError(f"{out}: folder exists, is not empty and is not a checkpoint folder; "
                                      "choose another output folder")
            if not overwrite:
                raise OutputExistsError(f"{out}: a checkpoint folder already exists there (use --overwrite)")
    with atomic_dir(out) as tmp:
        write_files(tmp, config, weights, interest, model_cls)
    return out


def write_model_files(folder: str | os.PathLike, model, items=None) -> None:
    """:func:`write_files` for a model (``config`` + ``state_dict``) and its item table's interests."""
    model = getattr(model, "module", model)
    write_files(folder, model.config.to_dict(), model.state_dict(), _interest(items), type(model))


def save_model(path: str | os.PathLike, model, items=None) -> Path:
    model = getattr(model, "module", model)
    return save_checkpoint(path, model.config.to_dict(), model.state_dict(), _interest(items),
                           model_cls=type(model))


def _interest(items) -> dict | None:
    """The item context's state to save beside the weights (MISSRec's interest clusters), if any."""
    return items.interest_state() if items is not None else None


def read_config(folder: str | os.PathLike) -> MISSRecConfig:
    return MISSRecConfig.load(Path(folder) / CONFIG)


def read_weights(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    return load_tensors(Path(folder) / WEIGHTS)


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``safetensors.torch.load_file`` whose failures (truncated, empty, not safetensors) name the file."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: not found")
    with reading(path, "safetensors file", fix="download or save the checkpoint again"):
        return load_file(str(path))

def catalogue_of(dataset) -> dict | None:
    """The catalogue record of a single-domain dataset folder (None when it has no item2index)."""
    if dataset is None:
        return None
    from .data.atomic import catalogue, read_index_map
    folder = Path(dataset)
    index = folder / f"{folder.name}.item2index"
    return catalogue(folder.name, read_index_map(index)) if index.is_file() else None


def describe_catalogue(c: dict) -> str:
    return f"{c.get('name', '?')} ({c.get('n_items', '?')} items, item list sha256 {str(c.get('items_sha256', '?'))[:12]})"


def other_catalogue(folder: Path, old: dict, have: tuple, want: tuple, new: dict | None) -> str | None:
    """Why a checkpoint's ID table (trained on catalogue ``old``) cannot serve this dataset, or None when it can."""
    old = old or {}
    if have != want:
        was = describe_catalogue(old) if old else f"{have[0] - 1} items"
        return f"its item-ID table was trained on {was}, this dataset has {want[0] - 1} items"
    if new and old and old.get("items_sha256") != new.get("items_sha256"):
        return (f"its item-ID table was trained on {describe_catalogue(old)}, this dataset is "
                f"{describe_catalogue(new)}: same item count, different items")
    if new and not old:
        print(f"note: {folder}: the checkpoint does not record which items its ID table was trained on; "
              f"reusing it because the item count ({want[0] - 1}) matches", file=sys.stderr)
    return None


def read_config_dict(folder: str | os.PathLike) -> dict:
    """A checkpoint's config.json as stored (the factory's one read of it, missrec/factory.py)."""
    path = Path(folder) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (a checkpoint folder needs config.json)")
    d = read_json(path, "checkpoint", fix="save or download it again")
    if not isinstance(d, dict):
        raise CorruptFileError(path, "expected a JSON object of model options")
    return d


def check_resumable(folder: str | Path, model) -> None:
    """Refuse to resume ``folder`` into a model of another shape, naming the differing options."""
    folder = Path(folder)
    model = getattr(model, "module", model)
    now = model.config
    kind = getattr(now, "model_type", "missrec")
    saved = read_config_dict(folder)
    was = saved.get("model_type", "missrec")
    if was != kind:
        raise UserError(folder, f"holds a {was} model, this run trains {kind}: use another --output_dir")
    fields = getattr(model, "fixed_fields", None) or SHAPE_FIELDS
    diff = [f for f in fields if hasattr(now, f) and saved.get(f) != getattr(now, f)]
    if diff:
        parts = ", ".join(f"--{f} {saved.get(f)} (this run: {getattr(now, f)})" for f in diff)
        raise UserError(folder, f"was trained with {parts}: resume with the same options, or use another "
                                "--output_dir to start a new run")
    old_cat, new_cat = saved.get("catalogue") or {}, getattr(now, "catalogue", None) or {}
    if old_cat and new_cat and old_cat != new_cat:
        raise UserError(folder, f"was trained on {describe_catalogue(old_cat)}, this run's data is "
                                f"{describe_catalogue(new_cat)}: resume with the same dataset, or use "
                                "another --output_dir")
