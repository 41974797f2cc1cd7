"""Read ``torch.save`` files (zip and legacy formats) without running anything from them.

``torch.load`` does the file handling (records, storages, byte order, map_location); we hand it
:class:`RestrictedUnpickler` as ``pickle_module``. Every callable a pickle can call or construct
reaches the unpickler through ``find_class`` (GLOBAL, STACK_GLOBAL, INST), and ours never
imports anything. It returns

* an allow-list: torch's tensor rebuild functions (behind a check that each view stays inside its
  storage), ``OrderedDict``, ``set``, ``bytes``, ``torch.device``/``Size``/dtypes, and validating
  stand-ins for latin-1 bytes and numpy scalars;
* for every other name a :class:`Placeholder` class that only records ``module.qualname``. Calling
  it (REDUCE, INST) raises :class:`UnsafePickleError` naming it, except for a few RecBole enums
  (``INERT_CALLS``) that become inert records of their value; constructing it without a call
  (NEWOBJ, how plain objects such as RecBole's Config are pickled) gives an inert instance.

We subclass the pure-Python ``pickle._Unpickler`` because we also own two opcodes the C
unpickler does not let us override: BUILD (sets state) runs only on placeholders, numpy dtypes and
a state_dict's ``_metadata``; EXT1/2/4 are refused, since copyreg's process-wide extension cache
could hand out objects that never passed ``find_class``.

``torch.load(weights_only=True)`` with stub classes in ``safe_globals`` cannot do this job: it
lists a file's unknown globals for zip files only (not the legacy format), and it re-raises any
error from a stub as one generic message, so a refused ``os.system`` could not be told from a
truncated file.
"""
from __future__ import annotations

import _compat_pickle
import collections
import io
import os
import pickle
import re
import tarfile
import types
import zipfile
from pathlib import Path

import numpy as np
import torch

from .errors import UserError

__all__ = ["UnsafePickleError", "PthFormatError", "Placeholder", "RestrictedUnpickler", "restricted_loads",
           "load_pth", "placeholder_state", "INERT_CALLS"]


class UnsafePickleError(pickle.UnpicklingError, UserError):
    """The pickle tried to call (or build) something that is not on the allow-list."""


class PthFormatError(UserError):
    """The file is not a readable torch.save checkpoint (names the file and what was wrong)."""


# ============================================================================ placeholders
# Classes that pickle rebuilds by *calling* them with plain values: enums (Enum.__reduce_ex__ is
# ``(cls, (value,))``). RecBole's Config holds several.
INERT_CALLS = frozenset(f"recbole.utils.enum_type.{n}" for n in (
    "ModelType", "KGDataLoaderState", "EvaluatorType", "InputType", "FeatureType", "FeatureSource"))
_PLAIN = (int, float, str, bool, bytes, type(None))


def _short(args) -> str:
    text = repr(tuple(args))
    return text if len(text) <= 80 else text[:77] + "...)"


class _PlaceholderMeta(type):
    def __call__(cls, *args, **kwargs):  # REDUCE / INST with arguments: the pickle wants to run it
        if cls.pickle_name in INERT_CALLS and args and not kwargs and all(isinstance(a, _PLAIN) for a in args):
            return cls.__new__(cls, *args)
        raise UnsafePickleError(
            f"refusing to call {cls.pickle_name}{_short(args)}: not on the allow-list of missrec.unpickle; a checkpoint "
            "only needs tensors and plain data, so this file may be trying to run code")

    def __repr__(cls):
        return f"<placeholder class {cls.pickle_name}>"


class Placeholder(metaclass=_PlaceholderMeta):
    """Inert stand-in for an object of a class we do not import.

    ``pickle_name`` is ``module.qualname`` of the original class; ``args``/``kwargs`` what its
    constructor would have received, ``state`` what BUILD gave it, ``items``/``list_items`` what
    SETITEM(S)/APPEND(S) added. Nothing is ever called.
    """

    pickle_name = "?"

    def __new__(cls, *args, **kwargs):  # NEWOBJ / NEWOBJ_EX call cls.__new__ directly
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state, obj.items, obj.list_items = args, kwargs, None, {}, []
        return obj

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):
        self.items[key] = value

    def append(self, value):
        self.list_items.append(value)

    def extend(self, values):
        self.list_items.extend(values)

    def __repr__(self):
        return f"<placeholder {self.pickle_name} args={self.args!r}>"


def _is_placeholder_type(x) -> bool:
    return isinstance(x, type) and issubclass(x, Placeholder) and x is not Placeholder


def placeholder_state(obj) -> dict | None:
    """The ``__dict__``-like state a placeholder received via BUILD, if it is a dict."""
    state = obj.state if isinstance(obj, Placeholder) else None
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
        state = state[0]
    return state if isinstance(state, dict) else None


# ============================================================================ allow-listed callables
def _ints(x, what: str) -> tuple[int, ...]:
    if not isinstance(x, (tuple, list)) or not all(type(v) is int and v >= 0 for v in x):
        raise PthFormatError(f"{what}: expected non-negative integers, got {x!r}")
    return tuple(x)


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None,
                    dtype=None):
    """torch's own rebuild, after checking the view stays inside its storage (torch's check is
    in bytes; ours names elements). Hooks are dropped: a state_dict never needs them."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise PthFormatError(f"tensor rebuild: expected a storage from the file, got {type(storage).__name__}")
    offset = _ints((offset,), "tensor offset")[0]
    size, stride = _ints(size, "tensor size"), _ints(stride, "tensor stride")
    if len(size) != len(stride) or not isinstance(requires_grad, bool) or not isinstance(metadata, (dict, type(None))):
        raise PthFormatError(f"tensor rebuild: malformed arguments (size {size}, stride {stride})")
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise PthFormatError(f"tensor rebuild: dtype {dtype!r} is not a torch dtype")
    n = storage._untyped_storage.nbytes() // (dtype or storage.dtype).itemsize
    last = offset + sum((s - 1) * st for s, st in zip(size, stride))
    if all(size) and last >= n:
        raise PthFormatError(f"tensor rebuild: view (offset {offset}, size {size}, stride {stride}) "
                             f"reaches element {last} of a storage of {n} elements")
    if dtype is None:
        return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
                                               collections.OrderedDict(), metadata)
    return torch._utils._rebuild_tensor_v3(storage, offset, size, stride, requires_grad,
                                           collections.OrderedDict(), dtype, metadata)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
    return _rebuild_tensor(storage, offset, size, stride, requires_grad, backward_hooks, metadata, dtype)


def _rebuild_parameter(data, *_):
    if not isinstance(data, torch.Tensor):
        raise PthFormatError(f"parameter rebuild: expected a tensor, got {type(data).__name__}")
    return data  # a state_dict needs the values only: no Parameter, no attributes from the file


def _rebuild_from_type_v2(func, new_type, args, state):
    # Tensor subclasses: rebuild the plain tensor with an allow-listed function, ignore the subclass.
    if func not in (_rebuild_tensor, _rebuild_tensor_v3, _rebuild_parameter) or not isinstance(args, tuple):
        raise UnsafePickleError(f"refusing to call {func!r} inside torch._tensor._rebuild_from_type_v2")
    return func(*args)


def _codecs_encode(text, encoding="utf-8", *rest):
    # Protocol-2 pickles store bytes as _codecs.encode(str, 'latin1'); other codecs could import.
    if rest or not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("_codecs.encode: only (str, 'latin1') is accepted")
    return text.encode("latin1")


def _np_dtype(code, align=False, copy=True):
    if not isinstance(code, str) or not re.fullmatch(r"[<>=|]?(b1|[iu][1248]|f[248]|c(8|16))", code):
        raise UnsafePickleError(f"numpy.dtype({code!r}): only plain numeric dtypes are accepted")
    return np.dtype(code)


def _np_scalar(dtype, data=None):
    if not (isinstance(dtype, np.dtype) and dtype.kind in "biufc" and isinstance(data, bytes)
            and len(data) == dtype.itemsize):
        raise UnsafePickleError("numpy scalar: only numeric scalars with raw bytes are accepted")
    return np.frombuffer(data, dtype=dtype)[0].item()  # a plain Python number


def _reconstructor(cls, base=None, state=None):
    # Protocol 0/1 form of "object.__new__(cls)" (+ base-class init state).
    if _is_placeholder_type(cls):
        return cls.__new__(cls, *(() if state is None else (state,)))
    raise UnsafePickleError(f"copyreg._reconstructor: refusing to construct {cls!r}")


_ALLOWED = {
    "collections.OrderedDict": collections.OrderedDict, "torch.device": torch.device, "torch.Size": torch.Size,
    "torch._utils._rebuild_tensor": _rebuild_tensor, "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3, "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
    # These only iterate what the pickle gave them, and everything it gave passed find_class.
    "builtins.set": set, "builtins.frozenset": frozenset, "builtins.bytes": bytes, "builtins.bytearray": bytearray,
    "_codecs.encode": _codecs_encode, "copyreg._reconstructor": _reconstructor, "numpy.dtype": _np_dtype,
    "numpy.core.multiarray.scalar": _np_scalar, "numpy._core.multiarray.scalar": _np_scalar,
    # vars(), not getattr(): torch's module __getattr__ imports submodules lazily.
    **{f"torch.{k}": v for k, v in vars(torch).items() if isinstance(v, torch.dtype)},
}


# ============================================================================ the unpickler
def _refuse(opcode: str):
    def load(self):
        raise UnsafePickleError(f"pickle opcode {opcode} is not supported by the restricted unpickler")
    return load


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickler that rebuilds tensors and plain data and nothing else (see the module docstring)."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, **kwargs):
        super().__init__(file, **kwargs)
        self._placeholders: dict[str, type] = {}

    def find_class(self, module, name):
        if not isinstance(module, str) or not isinstance(name, str):
            raise UnsafePickleError("global names must be strings")
        if self.proto < 3 and self.fix_imports:  # Python-2 spellings (protocol 2 writes __builtin__)
            module, name = _compat_pickle.NAME_MAPPING.get(
                (module, name), (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
        full = f"{module}.{name}"
        if full in _ALLOWED:
            return _ALLOWED[full]
        if full not in self._placeholders:
            short = re.sub(r"\W", "_", name.rsplit(".", 1)[-1]) or "Placeholder"
            self._placeholders[full] = _PlaceholderMeta(short, (Placeholder,), {"pickle_name": full,
                                                                                 "__module__": __name__})
        return self._placeholders[full]

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, (Placeholder, np.dtype)):
            inst.__setstate__(state)
        elif type(inst) is collections.OrderedDict and isinstance(state, dict) and set(state) <= {"_metadata"}:
            # torch's state_dict carries `_metadata` as an attribute. Nothing else: an attribute
            # named e.g. `items` would shadow the method we call later.
            inst.__dict__.update(state)
        else:
            raise UnsafePickleError(f"BUILD (set state) on a {type(inst).__name__} object is not allowed")

    dispatch[pickle.BUILD[0]] = load_build
    for _op in ("EXT1", "EXT2", "EXT4"):
        dispatch[getattr(pickle, _op)[0]] = _refuse(_op)
    del _op


def restricted_loads(data: bytes):
    """Restricted-unpickle bytes (no persistent ids: those only occur inside torch.save files)."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


# What torch.load calls `pickle_module`: it uses .Unpickler (subclassed for storage names and
# persistent ids) and .load (the legacy format's small header pickles).
_PICKLE_MODULE = types.SimpleNamespace(__name__="missrec.unpickle", Unpickler=RestrictedUnpickler,
                                       load=lambda f, **kw: RestrictedUnpickler(f, **kw).load())


def load_pth(path: str | os.PathLike):
    """Read a ``torch.save`` file with the restricted unpickler; tensors come back on the CPU."""
    path = Path(path)
    if path.is_dir():
        raise PthFormatError(f"{path}: is a folder; expected an original MISSRec .pth file (a checkpoint folder "
                             "of ours, with config.json and model.safetensors, needs no conversion)")
    if not path.is_file():
        raise PthFormatError(f"{path}: file not found (expected an original MISSRec .pth file)")
    if not zipfile.is_zipfile(path) and tarfile.is_tarfile(path):
        raise PthFormatError(f"{path}: this is torch's pre-0.4 tar checkpoint format, which is not supported")
    try:
        # weights_only=False only lets us pass our own unpickler; what it may call is its allow-list.
        return torch.load(path, map_location="cpu", pickle_module=_PICKLE_MODULE, weights_only=False)
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: refused, nothing in it was run: {e}. Use a checkpoint from a source you "
                                "trust") from None
    except PthFormatError as e:
        raise PthFormatError(f"{path}: {e}") from None
    except Exception as e:  # torch raises many types for damaged files; the caller needs one
        raise PthFormatError(f"{path}: not a torch.save checkpoint, or a damaged one ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from None
