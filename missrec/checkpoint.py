"""Our checkpoint folder: ``config.json`` + ``model.safetensors`` (+ ``interest.safetensors``).

Training checkpoints add accelerate's state (optimizer, scheduler, RNG) and ``trainer_state.json``
in the same folder; a folder is always written to a temp dir and renamed into place.
"""
from __future__ import annotations

import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

from .config import MISSRecConfig
from .errors import UserError, reading
from .fsutil import atomic_dir

# Config fields that fix parameter shapes or the meaning of the weights: a resumed run must match.
SHAPE_FIELDS = ("hidden_size", "n_heads", "inner_size", "num_encoder_layers", "num_decoder_layers",
                "max_seq_length", "fusion", "text_dim", "image_dim", "use_id", "n_items")


def write_model_files(folder: str | Path, model, items=None) -> None:
    """Write config/weights/interest into an existing (temporary) folder."""
    folder = Path(folder)
    model = getattr(model, "module", model)
    model.config.save(folder / "config.json")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    if items is not None:
        save_file(items.interest_state(), str(folder / "interest.safetensors"))


def save_model(path: str | Path, model, items=None) -> None:
    with atomic_dir(path) as tmp:
        write_model_files(tmp, model, items)


def resolve_checkpoint(name_or_path: str | Path, dataset: str | Path | None = None) -> Path:
    """A local checkpoint folder, or whatever missrec.hub can turn into one (.pth, registry, Hub id).

    ``dataset`` (a dataset folder) lets an original transductive .pth map its item rows to ours.
    """
    p = Path(name_or_path)
    if p.is_dir() and (p / "config.json").is_file():
        return p
    if p.is_dir():
        raise FileNotFoundError(f"{p}: not a checkpoint folder (no config.json)")
    from . import hub
    return Path(hub.resolve(str(name_or_path), dataset=dataset))


def load_model(name_or_path: str | Path, dataset: str | Path | None = None, **overrides):
    """Build a MISSRec from a checkpoint; ``overrides`` change config fields (e.g. use_id, n_items).

    Weights whose shapes no longer fit (e.g. an ID table for another catalogue) are an error;
    weights absent from the file (e.g. a new ID table) keep their fresh initialisation.
    """
    from .model import MISSRec
    folder = resolve_checkpoint(name_or_path, dataset)
    cfg = MISSRecConfig.load(folder / "config.json")
    d = cfg.to_dict()
    d.update(overrides)
    model = MISSRec(MISSRecConfig.from_dict(d))
    wpath = folder / "model.safetensors"
    if not wpath.is_file():
        raise FileNotFoundError(f"{wpath}: not found")
    state = load_tensors(wpath)
    if overrides.get("use_id") is not None and "item_embedding.weight" in state:
        own = model.state_dict().get("item_embedding.weight")
        if own is None:
            state.pop("item_embedding.weight")  # inductive use of a transductive checkpoint
        else:
            new = _catalogue_of(dataset)
            why = _other_catalogue(folder, cfg, tuple(state["item_embedding.weight"].shape), tuple(own.shape), new)
            if why:
                state.pop("item_embedding.weight")
                print(f"note: {folder}: {why}; its item-ID table starts fresh (the rest of the model is reused)",
                      file=sys.stderr)
            if new:
                model.config.catalogue = new
    if not model.config.use_id:
        model.config.catalogue = {}
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        raise ValueError(f"{wpath}: unexpected weights {unexpected[:8]}")
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise ValueError(f"{wpath}: '{k}' has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}")
    missing = sorted(set(own) - set(state))
    allowed_missing = {"item_embedding.weight"}
    if set(missing) - allowed_missing:
        raise ValueError(f"{wpath}: missing weights {sorted(set(missing) - allowed_missing)[:8]}")
    model.load_state_dict(state, strict=False)
    model.checkpoint_path = folder
    return model


def load_tensors(path: str | Path) -> dict:
    """``safetensors.torch.load_file`` whose failures (truncated, empty, not safetensors) name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    with reading(path, "safetensors file", fix="download or save the checkpoint again"):
        return load_file(str(path))


def _catalogue_of(dataset) -> dict | None:
    """The catalogue record of a single-domain dataset folder (None when it has no item2index)."""
    if dataset is None:
        return None
    from .data.atomic import catalogue, read_index_map
    folder = Path(dataset)
    index = folder / f"{folder.name}.item2index"
    return catalogue(folder.name, read_index_map(index)) if index.is_file() else None


def describe_catalogue(c: dict) -> str:
    return f"{c.get('name', '?')} ({c.get('n_items', '?')} items, item list sha256 {str(c.get('items_sha256', '?'))[:12]})"


def _other_catalogue(folder: Path, cfg: MISSRecConfig, have: tuple, want: tuple, new: dict | None) -> str | None:
    """Why a checkpoint's ID table cannot serve this dataset, or None when it can."""
    old = cfg.catalogue or {}
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


def check_resumable(folder: str | Path, model) -> None:
    """Refuse to resume ``folder`` into a model of another shape, naming the differing options."""
    folder = Path(folder)
    saved = MISSRecConfig.load(folder / "config.json")
    now = getattr(model, "module", model).config
    diff = [f for f in SHAPE_FIELDS if getattr(saved, f) != getattr(now, f)]
    if diff:
        parts = ", ".join(f"--{f} {getattr(saved, f)} (this run: {getattr(now, f)})" for f in diff)
        raise UserError(folder, f"was trained with {parts}: resume with the same options, or use another "
                                "--output_dir to start a new run")
    if saved.use_id and saved.catalogue and now.catalogue and saved.catalogue != now.catalogue:
        raise UserError(folder, f"was trained on {describe_catalogue(saved.catalogue)}, this run's data is "
                                f"{describe_catalogue(now.catalogue)}: resume with the same dataset, or use "
                                "another --output_dir")
