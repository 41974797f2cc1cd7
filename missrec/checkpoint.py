"""Our checkpoint folder: ``config.json`` + ``model.safetensors`` (+ ``interest.safetensors``).

The one place that knows this layout: the detector (:func:`is_checkpoint_folder`), the writer
(:func:`write_files` into a folder being built, :func:`save_checkpoint` for a whole folder,
written to a temp dir and renamed into place) and the readers. It works on plain dicts and
tensors and imports no model code, so every writer (training, finetuning's best model, the .pth
import in missrec/pth.py) can use it; building a model from a folder is ``MISSRec.from_pretrained``.

Training checkpoints add accelerate's state (optimizer, scheduler, RNG) and ``trainer_state.json``
in the same folder (missrec/trainer.py).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import MISSRecConfig
from .fsutil import atomic_dir, atomic_write_json

CONFIG, WEIGHTS, INTEREST = "config.json", "model.safetensors", "interest.safetensors"


def is_checkpoint_folder(path: str | os.PathLike) -> bool:
    p = Path(path)
    return (p / CONFIG).is_file() and (p / WEIGHTS).is_file()


def write_files(folder: str | os.PathLike, config: dict, weights: dict[str, torch.Tensor],
                interest: dict[str, torch.Tensor] | None = None) -> None:
    """Write the checkpoint files into ``folder`` (an existing, usually temporary, folder)."""
    folder = Path(folder)
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(folder / WEIGHTS),
              metadata={"format": "pt"})
    if interest is not None:
        save_file({k: v.detach().contiguous().cpu() for k, v in interest.items()}, str(folder / INTEREST),
                  metadata={"format": "pt"})
    atomic_write_json(folder / CONFIG, config)


def save_checkpoint(path: str | os.PathLike, config: dict, weights: dict[str, torch.Tensor],
                    interest: dict[str, torch.Tensor] | None = None, *, overwrite: bool = True) -> Path:
    """Write a whole checkpoint folder atomically; refuse to replace anything but a checkpoint folder."""
    out = Path(path)
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(f"{out}: exists and is not a folder")
        if any(out.iterdir()):
            if not is_checkpoint_folder(out):
                raise FileExistsError(f"{out}: folder exists, is not empty and is not a checkpoint folder; "
                                      "choose another output folder")
            if not overwrite:
                raise FileExistsError(f"{out}: a checkpoint folder already exists there (use --overwrite)")
    with atomic_dir(out) as tmp:
        write_files(tmp, config, weights, interest)
    return out


def write_model_files(folder: str | os.PathLike, model, items=None) -> None:
    """:func:`write_files` for a model (``config`` + ``state_dict``) and its item table's interests."""
    model = getattr(model, "module", model)
    write_files(folder, model.config.to_dict(), model.state_dict(),
                items.interest_state() if items is not None else None)


def save_model(path: str | os.PathLike, model, items=None) -> Path:
    model = getattr(model, "module", model)
    return save_checkpoint(path, model.config.to_dict(), model.state_dict(),
                           items.interest_state() if items is not None else None)


def read_config(folder: str | os.PathLike) -> MISSRecConfig:
    return MISSRecConfig.load(Path(folder) / CONFIG)


def read_weights(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(folder) / WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    return load_file(str(path))
