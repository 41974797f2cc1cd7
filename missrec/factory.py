"""Build a sequential model: fresh (:func:`create_model`) or from a checkpoint (:func:`load_model`).

Loading resolves the name once (missrec/hub.py:resolve: a folder, an original .pth, a registry name
or a Hub repo id) -> reads config.json once -> finds the class by its ``model_type``
(missrec/model_registry.py) -> builds it -> loads the weights with one strict key and shape check.
The model modules themselves import no loading code.

Settings of a run over a checkpoint: options that fix the architecture (the class's
``architecture``) come from the checkpoint, and an explicit conflicting one is an error naming the
option and the checkpoint's value; other explicit model options (dropout, max_seq_length, ...) and
the run's choices (``runtime_fields``: MISSRec's interest_reg and attention_impl) override the stored
values, and each override is announced. Nothing given: the checkpoint's values hold.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .checkpoint import CONFIG, WEIGHTS, read_config_dict, read_weights
from .errors import CorruptFileError, OptionError, UserError
from .hub import resolve
from .model_registry import model_class


@dataclass
class Checkpoint:
    """A resolved checkpoint: its folder, its config.json as stored, and its model class."""

    spec: str  # what the user named (for messages)
    folder: Path
    config: dict
    model_cls: type


def open_checkpoint(name_or_path, *, dataset=None) -> Checkpoint:
    """Resolve ``name_or_path`` once (``dataset``: the folder an original transductive .pth maps its
    item rows to) and read its config.json once."""
    folder = resolve(name_or_path, dataset=dataset)
    config = read_config_dict(folder)
    cls = model_class(config.get("model_type", "missrec"), where=f"{folder / CONFIG}: model_type")
    return Checkpoint(str(name_or_path), Path(folder), config, cls)


def _config(cls, d: dict, where):
    try:
        return cls.config_cls.from_dict(d)
    except (TypeError, ValueError) as e:  # the field checks' OptionErrors too: name the file they came from
        raise CorruptFileError(where, str(e)) from None


def _with_runtime(cls, d: dict, runtime: dict | None, notes: list, stored: bool) -> dict:
    for name in cls.runtime_fields:
        value = (runtime or {}).get(name)
        if value is None or value == d.get(name):
            continue
        if stored:
            notes.append(f"--{name} {value} overrides the checkpoint's {d.get(name)}")
        d[name] = value
    return d


def create_model(model_type: str, ds, *, options: dict | None = None, runtime: dict | None = None,
                 mode: str = "transductive", announce=None):
    """A fresh ``model_type`` for dataset ``ds`` from the run's explicit model options and choices."""
    cls = model_class(model_type)
    try:
        config = cls.config_for(ds, dict(options or {}), mode=mode)
        config = cls.config_cls.from_dict(_with_runtime(cls, config.to_dict(), runtime, [], stored=False))
    except UserError:
        raise
    except (TypeError, ValueError) as e:
        raise OptionError(f"--model {model_type}", str(e)) from None
    model = cls(config)
    if announce:
        announce(describe(model))
    return model


def load_model(source, *, dataset=None, for_data=None, mode: str = "transductive", options: dict | None = None,
               runtime: dict | None = None, overrides: dict | None = None, announce=None):
    """The model of checkpoint ``source`` (a :class:`Checkpoint` or anything :func:`open_checkpoint` takes).

    ``for_data``: a dataset the model will be finetuned on (the class's ``adapt_config`` fits the
    config to it, e.g. MISSRec's ID table for ``mode``); ``options``: the run's explicit model options
    (command-line names); ``runtime``: the run's choices (None = the checkpoint's); ``overrides``:
    config fields set by the caller. Stored weights whose shapes no longer fit are an error, except
    what the class's ``prepare_state`` adapts; weights absent from the file that it allows keep their
    fresh initialisation.
    """
    ckpt = source if isinstance(source, Checkpoint) else open_checkpoint(source, dataset=dataset)
    cls, notes = ckpt.model_cls, []
    d = dict(ckpt.config)
    if for_data is not None:
        d = cls.adapt_config(d, for_data, mode=mode, source=ckpt.spec)
    d.update(overrides or {})
    for name, value in (options or {}).items():
        (field, _), = cls.config_fields({name: value}).items()
        if value == d.get(field):
            continue
        if field in cls.architecture:
            raise OptionError(f"--{name}", f"{value} conflicts with --pretrained {ckpt.spec}, whose {field} is "
                                           f"{d.get(field)}; drop --{name} (a checkpoint fixes the architecture)")
        notes.append(f"--{name} {value} overrides the checkpoint's {d.get(field)}")
        d[field] = value
    d = _with_runtime(cls, d, runtime, notes, stored=True)
    model = cls(_config(cls, d, ckpt.folder / CONFIG))
    _load_weights(model, ckpt, dataset)
    if announce:
        for n in notes:
            announce(f"{ckpt.spec}: {n}")
        announce(describe(model, f" (from {ckpt.spec})"))
    return model


def _load_weights(model, ckpt: Checkpoint, dataset) -> None:
    """Load the stored weights with one strict key and shape check."""
    state = read_weights(ckpt.folder)
    wpath = ckpt.folder / WEIGHTS
    may_miss = model.prepare_state(state, ckpt.config, ckpt.folder, dataset)
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        raise CorruptFileError(wpath, f"unexpected weights {unexpected[:8]} for a {model.model_type} model")
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise CorruptFileError(wpath, f"'{k}' has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}")
    missing = sorted(set(own) - set(state) - may_miss)
    if missing:
        raise CorruptFileError(wpath, f"missing weights {missing[:8]}")
    model.load_state_dict(state, strict=False)


def describe(model, origin: str = "") -> str:
    """One line with the values a model uses: its options and run choices."""
    c, cls = model.config, type(model)
    names = list(dict.fromkeys([*cls.options.values(), *cls.runtime_fields]))
    values = ", ".join(f"{n} {getattr(c, n)}" for n in names if hasattr(c, n))
    return f"model {cls.model_type}{origin}: {values}"


def history_length(model_cls, options: dict, ckpt: Checkpoint | None) -> int:
    """The longest history a run keeps: the explicit option, else the checkpoint's, else the model's default."""
    explicit = (options or {}).get("max_seq_length")
    if explicit is not None:
        return explicit
    if ckpt is not None and ckpt.config.get("max_seq_length"):
        return int(ckpt.config["max_seq_length"])
    return model_cls.option_default("max_seq_length")


def from_pretrained(name_or_path, dataset=None, **overrides):
    """:func:`load_model` with config fields as keywords, e.g. ``from_pretrained(path, use_id=False, n_items=0)``."""
    return load_model(name_or_path, dataset=dataset, overrides=overrides)
