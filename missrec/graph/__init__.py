"""Graph-based multi-modal recommenders compared with MISSRec: LightGCN, VBPR, SLMRec and MMSSL
(see baselines/README.md). ``MODELS`` maps a name to its :class:`~missrec.graph.base.GraphModel`
class; each model module is imported on first use."""
from __future__ import annotations

import importlib

_HOMES = {"lightgcn": ("lightgcn", "LightGCN"), "vbpr": ("vbpr", "VBPR"), "slmrec": ("slmrec", "SLMRec"),
          "mmssl": ("mmssl", "MMSSL")}


class _Registry(dict):
    """name -> model class, imported lazily (MMSSL's module is large and optional at import time)."""

    def __missing__(self, name):
        if name not in _HOMES:
            raise KeyError(f"unknown graph model {name!r}; known: {', '.join(_HOMES)}")
        mod, cls = _HOMES[name]
        self[name] = getattr(importlib.import_module(f"{__name__}.{mod}"), cls)
        return self[name]

    def __contains__(self, name):
        return name in _HOMES

    def __iter__(self):
        return iter(_HOMES)

    def __len__(self):
        return len(_HOMES)

    def keys(self):
        return list(_HOMES)

    def available(self) -> list[str]:
        """Names whose module imports (MMSSL's is written separately)."""
        out = []
        for n in _HOMES:
            try:
                self[n]
            except ImportError:
                continue
            out.append(n)
        return out


MODELS = _Registry()


def get_model(name: str):
    return MODELS[name]
