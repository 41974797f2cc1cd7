"""Every sequential model by its ``model_type`` (config.json's key): ``{model_type: (ConfigCls, ModelCls)}``.

A model is one module implementing missrec/seqmodel.py's contract plus one line here
(docs/EXTENDING.md). Everything that builds, trains, evaluates, serves or describes a model finds
it through :data:`MODELS` (see missrec/factory.py); nothing else names a model type.
"""
from __future__ import annotations

from .errors import OptionError
from .gru4rec import GRU4Rec
from .model import MISSRec
from .sasrec import SASRec

MODELS = {cls.model_type: (cls.config_cls, cls) for cls in (
    MISSRec,
    SASRec,
    GRU4Rec,
)}


def model_class(model_type: str, where: str = "--model"):
    """The model class registered as ``model_type``; an unknown name is an OptionError naming ``where``."""
    if model_type not in MODELS:
        raise OptionError(where, f"unknown model {model_type!r}; known: {', '.join(MODELS)}")
    return MODELS[model_type][1]
