"""Our checkpoint folder: ``config.json`` + ``model.safetensors`` (+ ``interest.safetensors``).

Training checkpoints add accelerate's state (optimizer, scheduler, RNG) and ``trainer_state.json``
in the same folder; a folder is always written to a temp dir and renamed into place.
"""
from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file, save_file

from .config import MISSRecConfig
from .fsutil import atomic_dir


def write_model_files(folder: str | Path, model, items=None) -> None:
    """Write config/weights/interest into an existing (temporary) folder."""
    folder = Path(folder)
    model = getattr(model, "module", model)
    model.config.save(folder / "config.json")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    if items is not None:
        save_file(items.interest_state(), str(folder / "interest.safetensors"))
    from .modelcard import write_model_card
    write_model_card(folder)  # README.md: the Hub's model card


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


def _model_type(folder: Path) -> str:
    import json
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type", "missrec")
    except (OSError, ValueError, AttributeError):
        return "missrec"  # MISSRecConfig.load reports what is wrong with the file


def load_model(name_or_path: str | Path, dataset: str | Path | None = None, **overrides):
    """Build a MISSRec from a checkpoint; ``overrides`` change config fields (e.g. use_id, n_items).

    Weights whose shapes no longer fit (e.g. an ID table for another catalogue) are an error;
    weights absent from the file (e.g. a new ID table) keep their fresh initialisation.
    """
    from .model import MISSRec
    folder = resolve_checkpoint(name_or_path, dataset)
    if _model_type(folder) == "sasrec":
        from .sasrec import load_sasrec
        return load_sasrec(folder, **overrides)
    cfg = MISSRecConfig.load(folder / "config.json")
    d = cfg.to_dict()
    d.update(overrides)
    model = MISSRec(MISSRecConfig.from_dict(d))
    wpath = folder / "model.safetensors"
    if not wpath.is_file():
        raise FileNotFoundError(f"{wpath}: not found")
    state = load_file(str(wpath))
    if overrides.get("use_id") is not None and "item_embedding.weight" in state:
        own = model.state_dict().get("item_embedding.weight")
        if own is None or own.shape != state["item_embedding.weight"].shape:
            state.pop("item_embedding.weight")  # the ID table belongs to another catalogue
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
