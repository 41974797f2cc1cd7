"""Import the original MISSRec ``.pth`` checkpoints without running anything from them.

The authors' files are ``torch.save``'d dicts ``{"config": <recbole Config>, "epoch": int,
"state_dict": OrderedDict, "optimizer": ..., ["cur_step", "best_valid_score", "other_parameter"]}``.
``torch.load(weights_only=False)`` would import RecBole and execute whatever the pickle asks
for, so we never call it. Instead :class:`RestrictedUnpickler` interprets the pickle itself:

* ``find_class`` never imports anything. A short allow-list maps names to *our own* inert
  re-implementations (tensor rebuilding from the file's raw storages, OrderedDict, set, bytes,
  numpy scalars, torch dtypes/devices). Every other name becomes a :class:`Placeholder` type
  that only records its ``module.qualname``.
* Calling something (``REDUCE``, ``INST``/``OBJ`` with arguments, ``copyreg`` helpers) is allowed
  only for the allow-listed re-implementations and for a few known enum classes (which become
  inert placeholder instances recording their value). Anything else, e.g. ``os.system``,
  ``builtins.eval``, ``subprocess.Popen``, raises :class:`UnsafePickleError` naming the callable
  before anything is called.
* Object construction without a call (``NEWOBJ``/``NEWOBJ_EX``, ``copyreg.__newobj__`` /
  ``_reconstructor``) of a non-allow-listed class yields an inert :class:`Placeholder` instance;
  ``BUILD`` stores its state on the placeholder (never calls ``__setstate__`` of a real class).

We subclass ``pickle._Unpickler`` (the pure-Python reference implementation behind
``pickle.Unpickler``) rather than the C ``pickle.Unpickler`` because the C version only lets us
override ``find_class``/``persistent_load``; we also need to own REDUCE/BUILD/NEWOBJ.

Both torch formats are read: the zip format (torch >= 1.6: ``<archive>/data.pkl`` + one raw
record ``<archive>/data/<key>`` per storage) and the legacy stream format (magic number,
protocol, sys-info, the object pickle, the storage-key list, then each storage as an int64
element count followed by its bytes).

The second half maps an original state_dict onto our checkpoint folder (config.json +
model.safetensors + interest.safetensors, DESIGN section 7): parameter names are the same, the
dataset-sized buffers are dropped (after checking them against the dataset when one is given),
and item-indexed tables are permuted from RecBole's internal item order to ours (see
:func:`recbole_item_tokens`).
"""
from __future__ import annotations

import _compat_pickle
import collections
import io
import json
import math
import os
import pickle
import re
import struct
import sys
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from .fsutil import sha256_file

__all__ = [
    "UnsafePickleError", "PthFormatError", "PthConversionError", "Placeholder", "RestrictedUnpickler",
    "restricted_loads", "load_pth", "placeholder_state", "OriginalCheckpoint", "read_original",
    "ConvertedCheckpoint", "convert_original", "write_converted", "convert_pth", "recbole_item_tokens",
    "is_checkpoint_folder",
]

TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
TORCH_LEGACY_PROTOCOL = 1001


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle tried to call (or build) something that is not on the allow-list."""


class PthFormatError(ValueError):
    """The file is not a readable torch.save checkpoint (names the file and what was wrong)."""


class PthConversionError(ValueError):
    """The checkpoint was read but cannot be mapped onto our model (names keys/shapes)."""


# ============================================================================ placeholders
class _PlaceholderMeta(type):
    """Metaclass of placeholder types: *calling* one is refused (REDUCE on an unknown name)."""

    def __call__(cls, *args, **kwargs):
        raise UnsafePickleError(
            f"refusing to call {cls.pickle_name}(...): the pickle wants to run a callable that is not on "
            "the allow-list of missrec.pth (a checkpoint only needs tensors and plain data)")

    def __repr__(cls):
        return f"<placeholder class {cls.pickle_name}>"


class Placeholder(metaclass=_PlaceholderMeta):
    """Inert stand-in for an object of a class we do not import.

    ``pickle_name`` is ``module.qualname`` of the original class; ``args``/``kwargs`` what its
    constructor would have received, ``state`` what ``__setstate__``/``BUILD`` would have
    received, ``items``/``list_items`` what SETITEM(S)/APPEND(S) added. Nothing is ever called.
    """

    pickle_name = "?"

    def __setitem__(self, key, value):
        self.items[key] = value

    def append(self, value):
        self.list_items.append(value)

    def extend(self, values):
        self.list_items.extend(values)

    def __repr__(self):
        return f"<placeholder {self.pickle_name} args={self.args!r}>"


def _new_placeholder(cls: type, args: tuple = (), kwargs: dict | None = None) -> Placeholder:
    obj = object.__new__(cls)  # bypasses the refusing metaclass __call__ on purpose
    obj.args = tuple(args)
    obj.kwargs = dict(kwargs or {})
    obj.state = None
    obj.items = {}
    obj.list_items = []
    return obj


def _is_placeholder_type(x) -> bool:
    return isinstance(x, type) and issubclass(x, Placeholder) and x is not Placeholder


def placeholder_state(obj) -> dict | None:
    """The ``__dict__``-like state a placeholder received via BUILD, if it is a dict."""
    if not isinstance(obj, Placeholder):
        return None
    state = obj.state
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
        state = state[0]
    return state if isinstance(state, dict) else None


# ============================================================================ storages
class _StorageKind:
    """What ``torch.FloatStorage`` etc. resolve to: a marker carrying the dtype, not callable."""

    def __init__(self, name: str, dtype: torch.dtype, untyped: bool = False):
        self.name, self.dtype, self.untyped = name, dtype, untyped

    def __repr__(self):
        return f"<storage kind {self.name}>"


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
}


class _Storage:
    """A storage read from the file: a flat 1-D tensor of its dtype (shared by all its views)."""

    def __init__(self, flat: torch.Tensor, kind: _StorageKind):
        self.flat, self.kind = flat, kind


def _byteswap_(flat: torch.Tensor) -> torch.Tensor:
    """Big-endian file on a little-endian machine (or vice versa): swap each scalar's bytes."""
    size = flat.element_size()
    if flat.is_complex():
        size //= 2  # real and imaginary parts are swapped separately
    if size == 1 or flat.numel() == 0:
        return flat
    raw = flat.view(torch.uint8).view(-1, size).flip(1).contiguous().view(-1)
    return raw.view(flat.dtype)


def _int(x, what: str, minimum: int = 0) -> int:
    if type(x) is not int or x < minimum:
        raise PthFormatError(f"{what}: expected an integer >= {minimum}, got {x!r}")
    return x


def _int_tuple(x, what: str) -> tuple[int, ...]:
    if not isinstance(x, (tuple, list)):
        raise PthFormatError(f"{what}: expected a tuple of integers, got {type(x).__name__}")
    return tuple(_int(v, what) for v in x)


# ============================================================================ allow-listed callables
class _SafeCall:
    """An allow-listed callable: our own re-implementation, validating its arguments."""

    def __init__(self, name: str, fn: Callable):
        self.name, self.fn = name, fn

    def __call__(self, *args):
        return self.fn(*args)

    def __repr__(self):
        return f"<allow-listed {self.name}>"


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                    metadata=None, dtype: torch.dtype | None = None):
    if not isinstance(storage, _Storage):
        raise PthFormatError(f"tensor rebuild: expected a storage from the file, got {type(storage).__name__}")
    offset = _int(storage_offset, "tensor storage offset")
    size = _int_tuple(size, "tensor size")
    stride = _int_tuple(stride, "tensor stride")
    if len(size) != len(stride):
        raise PthFormatError(f"tensor rebuild: size {size} and stride {stride} differ in length")
    flat = storage.flat
    if dtype is not None and dtype != flat.dtype:
        if not isinstance(dtype, torch.dtype):
            raise PthFormatError(f"tensor rebuild: dtype {dtype!r} is not a torch dtype")
        if flat.numel() * flat.element_size() % torch.empty((), dtype=dtype).element_size():
            raise PthFormatError("tensor rebuild: storage size is not a multiple of the element size")
        flat = flat.view(dtype)
    if any(s == 0 for s in size):
        t = torch.empty(size, dtype=flat.dtype)
    else:
        # Check the view stays inside the storage ourselves, so a crafted file cannot read past it.
        last = offset + sum((s - 1) * st for s, st in zip(size, stride))
        if last >= flat.numel():
            raise PthFormatError(f"tensor rebuild: view (offset {offset}, size {size}, stride {stride}) "
                                 f"reaches element {last} of a storage of {flat.numel()} elements")
        # as_strided counts the offset from the start of the underlying storage, and `flat` may
        # itself be a slice of it (legacy storage views).
        t = flat.as_strided(size, stride, flat.storage_offset() + offset)
    if requires_grad is True and (t.is_floating_point() or t.is_complex()):
        t.requires_grad_(True)
    return t


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
    return _rebuild_tensor(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata, dtype=dtype)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if not isinstance(data, torch.Tensor):
        raise PthFormatError(f"parameter rebuild: expected a tensor, got {type(data).__name__}")
    return data  # a state_dict needs the values only; nn.Parameter wrapping is irrelevant here


def _rebuild_from_type_v2(func, new_type, args, state):
    # Tensor subclasses: rebuild the plain tensor with an allow-listed function, ignore the subclass.
    if not isinstance(func, _SafeCall):
        raise UnsafePickleError(f"refusing to call {getattr(func, 'pickle_name', type(func).__name__)} "
                                "inside torch._tensor._rebuild_from_type_v2")
    if not isinstance(args, tuple):
        raise PthFormatError("torch._tensor._rebuild_from_type_v2: arguments must be a tuple")
    return func(*args)


def _ordered_dict(*args):
    if args == () or args == ([],):
        return collections.OrderedDict()
    if len(args) == 1 and isinstance(args[0], list) and all(isinstance(p, (tuple, list)) and len(p) == 2
                                                             for p in args[0]):
        return collections.OrderedDict(args[0])
    raise UnsafePickleError("collections.OrderedDict: only () or a list of pairs is accepted")


def _device(*args):
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    if len(args) == 2 and isinstance(args[0], str) and (args[1] is None or type(args[1]) is int):
        return args[0] if args[1] is None else f"{args[0]}:{args[1]}"
    raise PthFormatError(f"torch.device: unexpected arguments {args!r}")


def _size(*args):
    if len(args) == 1:
        return _int_tuple(args[0], "torch.Size")
    raise PthFormatError(f"torch.Size: unexpected arguments {args!r}")


def _hashable_items(args, what):
    if args == ():
        return []
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        try:
            for v in args[0]:
                hash(v)
        except TypeError:
            raise PthFormatError(f"{what}: unhashable element") from None
        return list(args[0])
    raise UnsafePickleError(f"{what}: only a list of values is accepted")


def _bytes(*args):
    if args == ():
        return b""
    if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
        return bytes(args[0])
    if len(args) == 1 and isinstance(args[0], list) and all(type(v) is int and 0 <= v < 256 for v in args[0]):
        return bytes(args[0])
    raise UnsafePickleError("builtins.bytes: unexpected arguments")


def _bytearray(*args):
    return bytearray(_bytes(*args))


def _codecs_encode(text, encoding="utf-8", *rest):
    # Protocol-2 pickles store bytes as _codecs.encode(str, 'latin1').
    if rest or not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("_codecs.encode: only (str, 'latin1') is accepted")
    return text.encode("latin1")


_NP_DTYPE_RE = re.compile(r"^[<>=|]?(b1|[iu][1248]|f[248]|c(8|16))$")


class _NumpyDType:
    """What ``numpy.dtype('f8', ...)`` becomes: a validated type code plus a byte order."""

    def __init__(self, code: str):
        self.code = code
        self.order = "="

    def build(self, state):
        if isinstance(state, tuple) and len(state) >= 2 and state[1] in ("<", ">", "|", "="):
            self.order = state[1]
        else:
            raise PthFormatError(f"numpy.dtype state {state!r} not understood")

    def to_numpy(self) -> np.dtype:
        dt = np.dtype(self.code)
        return dt.newbyteorder(self.order) if self.order in "<>" else dt


def _np_dtype(code, align=False, copy=True):
    if not isinstance(code, str) or not _NP_DTYPE_RE.match(code):
        raise UnsafePickleError(f"numpy.dtype({code!r}): only plain numeric dtypes are accepted")
    return _NumpyDType(code)


def _np_scalar(dtype, data=None):
    if not isinstance(dtype, _NumpyDType) or not isinstance(data, bytes):
        raise UnsafePickleError("numpy scalar: only numeric scalars with raw bytes are accepted")
    dt = dtype.to_numpy()
    if len(data) != dt.itemsize:
        raise PthFormatError(f"numpy scalar: {len(data)} bytes for dtype {dt}")
    return np.frombuffer(data, dtype=dt)[0].item()  # a plain Python number


def _reconstructor(cls, base=None, state=None):
    # Protocol 0/1 form of "object.__new__(cls)" (+ base-class init state).
    if _is_placeholder_type(cls):
        return _new_placeholder(cls, () if state is None else (state,))
    raise UnsafePickleError(f"copyreg._reconstructor: refusing to construct {_describe(cls)}")


def _newobj(cls, *args):
    if _is_placeholder_type(cls):
        return _new_placeholder(cls, args)
    if isinstance(cls, _SafeCall) and cls.fn is _ordered_dict:
        return collections.OrderedDict()
    raise UnsafePickleError(f"copyreg.__newobj__: refusing to construct {_describe(cls)}")


def _newobj_ex(cls, args=(), kwargs=None):
    if _is_placeholder_type(cls):
        return _new_placeholder(cls, tuple(args), kwargs)
    raise UnsafePickleError(f"copyreg.__newobj_ex__: refusing to construct {_describe(cls)}")


def _describe(x) -> str:
    if _is_placeholder_type(x):
        return x.pickle_name
    if isinstance(x, _SafeCall):
        return x.name
    return type(x).__name__


_SAFE_FUNCTIONS: dict[tuple[str, str], Callable] = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "device"): _device,
    ("torch", "Size"): _size,
    ("builtins", "set"): lambda *a: set(_hashable_items(a, "builtins.set")),
    ("builtins", "frozenset"): lambda *a: frozenset(_hashable_items(a, "builtins.frozenset")),
    ("builtins", "bytes"): _bytes,
    ("builtins", "bytearray"): _bytearray,
    ("_codecs", "encode"): _codecs_encode,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("copyreg", "__newobj__"): _newobj,
    ("copyreg", "__newobj_ex__"): _newobj_ex,
    ("numpy", "dtype"): _np_dtype,
    ("numpy.core.multiarray", "scalar"): _np_scalar,
    ("numpy._core.multiarray", "scalar"): _np_scalar,
}

# Classes that pickle reconstructs by *calling* them with plain values: enums (Enum.__reduce_ex__
# is ``(cls, (value,))``). RecBole's Config holds several. They become inert placeholders.
DEFAULT_INERT_CALLS = frozenset({
    "recbole.utils.enum_type.ModelType", "recbole.utils.enum_type.KGDataLoaderState",
    "recbole.utils.enum_type.EvaluatorType", "recbole.utils.enum_type.InputType",
    "recbole.utils.enum_type.FeatureType", "recbole.utils.enum_type.FeatureSource",
})

_PLAIN = (int, float, str, bool, bytes, type(None))


def _torch_constants() -> dict[tuple[str, str], Any]:
    out = {}
    for name in dir(torch):
        v = getattr(torch, name, None)
        if isinstance(v, torch.dtype):
            out[("torch", name)] = v
    for name, dt in _STORAGE_DTYPES.items():
        out[("torch", name)] = _StorageKind(name, dt)
        out[("torch.cuda", name)] = _StorageKind(name, dt)
    for mod in ("torch", "torch.storage"):
        out[(mod, "UntypedStorage")] = _StorageKind("UntypedStorage", torch.uint8, untyped=True)
        out[(mod, "_UntypedStorage")] = _StorageKind("UntypedStorage", torch.uint8, untyped=True)
    return out


_TORCH_CONSTANTS = _torch_constants()


# ============================================================================ the unpickler
def _refuse_opcode(name):
    def load(self):
        raise UnsafePickleError(f"pickle opcode {name} is not supported by the restricted unpickler")
    return load


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickler that rebuilds tensors and plain data and nothing else (see module docstring).

    ``persistent_load`` resolves torch's storage references; ``inert_calls`` names classes
    (``module.qualname``) that may be "called" with plain arguments to make an inert placeholder.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, *, persistent_load: Callable | None = None,
                 inert_calls: Iterable[str] = DEFAULT_INERT_CALLS, encoding: str = "utf-8"):
        super().__init__(file, encoding=encoding)
        self._persistent = persistent_load
        self._inert_calls = frozenset(inert_calls)
        self._placeholder_types: dict[str, type] = {}

    # -- names
    def find_class(self, module, name):
        if not isinstance(module, str) or not isinstance(name, str):
            raise UnsafePickleError("global names must be strings")
        if self.proto < 3 and self.fix_imports:  # Python-2 spellings (protocol 2 writes __builtin__)
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        key = (module, name)
        if key in _SAFE_FUNCTIONS:
            return _SafeCall(f"{module}.{name}", _SAFE_FUNCTIONS[key])
        if key in _TORCH_CONSTANTS:
            return _TORCH_CONSTANTS[key]
        full = f"{module}.{name}"
        cls = self._placeholder_types.get(full)
        if cls is None:
            short = re.sub(r"\W", "_", name.rsplit(".", 1)[-1]) or "Placeholder"
            cls = _PlaceholderMeta(short, (Placeholder,), {"pickle_name": full, "__module__": __name__})
            self._placeholder_types[full] = cls
        return cls

    def persistent_load(self, pid):
        if self._persistent is None:
            raise PthFormatError("the pickle references an external storage but this is not a torch.save file")
        return self._persistent(pid)

    # -- calls
    def _call(self, func, args):
        if not isinstance(args, tuple):
            raise UnsafePickleError("REDUCE arguments must be a tuple")
        if isinstance(func, _SafeCall):
            return func(*args)
        if _is_placeholder_type(func):
            if func.pickle_name in self._inert_calls and all(isinstance(a, _PLAIN) for a in args):
                return _new_placeholder(func, args)
            raise UnsafePickleError(
                f"refusing to call {func.pickle_name}{_short_args(args)}: not on the allow-list; a checkpoint "
                "only needs tensors and plain data, so this file may be trying to run code")
        raise UnsafePickleError(f"refusing to call a {type(func).__name__} object ({func!r})")

    def load_reduce(self):
        stack = self.stack
        args = stack.pop()
        stack[-1] = self._call(stack[-1], args)

    def _instantiate(self, klass, args):  # INST / OBJ (protocols 0 and 1)
        if _is_placeholder_type(klass) and not args:
            self.append(_new_placeholder(klass))
        else:
            self.append(self._call(klass, tuple(args)))

    def load_newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        if not isinstance(args, tuple):
            _bad("NEWOBJ arguments")
        self.append(_newobj(cls, *args))

    def load_newobj_ex(self):
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        if not isinstance(args, tuple) or not isinstance(kwargs, dict):
            _bad("NEWOBJ_EX arguments")
        self.append(_newobj_ex(cls, args, kwargs))

    def load_build(self):
        stack = self.stack
        state = stack.pop()
        inst = stack[-1]
        if isinstance(inst, Placeholder):
            inst.state = state
        elif isinstance(inst, _NumpyDType):
            inst.build(state)
        elif isinstance(inst, collections.OrderedDict) and isinstance(state, dict):
            # torch's state_dict carries its `_metadata` as an attribute of the OrderedDict. Nothing
            # else: an instance attribute named e.g. `items` would shadow the method we call later.
            for k, v in state.items():
                if k != "_metadata":
                    raise UnsafePickleError(f"BUILD on OrderedDict with attribute {k!r} refused")
                setattr(inst, k, v)
        else:
            raise UnsafePickleError(f"BUILD (set state) on a {type(inst).__name__} object is not allowed")

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    # The extension registry is process-global and its cache can hold real objects that never
    # passed through find_class; no checkpoint uses it.
    for _op in ("EXT1", "EXT2", "EXT4"):
        dispatch[getattr(pickle, _op)[0]] = _refuse_opcode(_op)
    del _op


def _bad(what):
    raise UnsafePickleError(f"malformed {what}")


def _short_args(args) -> str:
    text = repr(args)
    return text if len(text) <= 80 else text[:77] + "...)"


def restricted_loads(data: bytes, **kwargs):
    """Restricted-unpickle bytes (no persistent ids unless ``persistent_load`` is given)."""
    return RestrictedUnpickler(io.BytesIO(data), **kwargs).load()


# ============================================================================ torch.save files
def load_pth(path: str | os.PathLike, inert_calls: Iterable[str] = DEFAULT_INERT_CALLS):
    """Read a ``torch.save`` file with the restricted unpickler; tensors come back on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise PthFormatError(f"{path}: file not found")
    try:
        if zipfile.is_zipfile(path):
            return _load_zip(path, inert_calls)
        if _is_tar(path):
            raise PthFormatError(f"{path}: this is torch's pre-0.4 tar checkpoint format, which is not supported")
        return _load_legacy(path, inert_calls)
    except (UnsafePickleError, PthFormatError) as e:
        msg = str(e)
        if msg.startswith(str(path)):
            raise
        raise type(e)(f"{path}: {msg}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, zipfile.BadZipFile, struct.error, RuntimeError) as e:
        raise PthFormatError(f"{path}: not a readable torch.save checkpoint ({type(e).__name__}: {e})") from None


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except (OSError, tarfile.TarError):
        return False


def _load_zip(path: Path, inert_calls):
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise PthFormatError("a zip file without exactly one '<archive>/data.pkl' record is not a "
                                 "torch.save checkpoint")
        prefix = pkl[0][: -len("data.pkl")]
        big = False
        if f"{prefix}byteorder" in names:
            order = zf.read(f"{prefix}byteorder").decode("ascii", "replace").strip()
            if order not in ("little", "big"):
                raise PthFormatError(f"unknown byteorder record {order!r}")
            big = order == "big"
        swap = big != (sys.byteorder == "big")
        cache: dict[str, _Storage] = {}

        def persistent_load(pid):
            if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
                raise PthFormatError(f"unexpected persistent id {_short_args(pid)}")
            _, kind, key, _location, numel = pid
            if not isinstance(kind, _StorageKind):
                raise UnsafePickleError(f"storage type {_describe(kind)} is not a torch storage type")
            if not isinstance(key, str) or not re.fullmatch(r"[\w.-]+", key):
                raise PthFormatError(f"bad storage key {key!r}")
            if key in cache:
                return cache[key]
            record = f"{prefix}data/{key}"
            try:
                info = zf.getinfo(record)
            except KeyError:
                raise PthFormatError(f"missing storage record {record!r}") from None
            elem = torch.empty((), dtype=kind.dtype).element_size()
            numel = _int(numel, "storage size")  # elements (bytes for UntypedStorage, elem = 1)
            if info.file_size != numel * elem:
                raise PthFormatError(f"storage record {record!r} has {info.file_size} bytes, "
                                     f"expected {numel} x {elem}")
            raw = bytearray(zf.read(record))
            flat = torch.frombuffer(raw, dtype=kind.dtype) if raw else torch.empty(0, dtype=kind.dtype)
            if swap:
                flat = _byteswap_(flat)
            cache[key] = _Storage(flat, kind)
            return cache[key]

        with zf.open(pkl[0]) as f:
            return RestrictedUnpickler(f, persistent_load=persistent_load, inert_calls=inert_calls).load()


def _load_legacy(path: Path, inert_calls):
    file_size = path.stat().st_size
    with open(path, "rb") as f:
        # The very first pickle goes through the restricted unpickler too: a plain malicious
        # pickle is refused here rather than being mistaken for a non-torch file.
        magic = RestrictedUnpickler(f, inert_calls=inert_calls).load()
        if magic != TORCH_LEGACY_MAGIC:
            raise PthFormatError("not a torch.save checkpoint (neither torch's zip format nor its legacy "
                                 "format: the first pickle is not torch's magic number)")
        proto = RestrictedUnpickler(f).load()
        if proto != TORCH_LEGACY_PROTOCOL:
            raise PthFormatError(f"unsupported legacy torch protocol {proto!r}")
        sys_info = RestrictedUnpickler(f).load()
        little = not (isinstance(sys_info, dict) and sys_info.get("little_endian") is False)
        swap = little != (sys.byteorder == "little")
        roots: dict[str, _Storage] = {}
        views: dict[str, _Storage] = {}

        def persistent_load(pid):
            if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
                kind = pid[0] if isinstance(pid, tuple) and pid else pid
                raise PthFormatError(f"unsupported persistent id {kind!r} (only tensor storages are supported; "
                                     "whole pickled nn.Modules are not)")
            _, kind, root_key, _location, numel, view_meta = pid
            if not isinstance(kind, _StorageKind):
                raise UnsafePickleError(f"storage type {_describe(kind)} is not a torch storage type")
            if not isinstance(root_key, str):
                raise PthFormatError(f"bad storage key {root_key!r}")
            numel = _int(numel, "storage size")
            elem = torch.empty((), dtype=kind.dtype).element_size()
            if root_key not in roots:
                if numel * elem > file_size:
                    raise PthFormatError(f"storage {root_key} claims {numel * elem} bytes, more than the file holds")
                roots[root_key] = _Storage(torch.zeros(numel, dtype=kind.dtype), kind)
            root = roots[root_key]
            if view_meta is None:
                return root
            if not (isinstance(view_meta, tuple) and len(view_meta) == 3):
                raise PthFormatError(f"bad storage view {view_meta!r}")
            view_key, offset, view_size = view_meta
            offset, view_size = _int(offset, "view offset"), _int(view_size, "view size")
            if offset + view_size > root.flat.numel():
                raise PthFormatError(f"storage view {view_key} runs past its storage")
            if view_key not in views:
                views[view_key] = _Storage(root.flat[offset: offset + view_size], kind)
            return views[view_key]

        result = RestrictedUnpickler(f, persistent_load=persistent_load, inert_calls=inert_calls).load()
        keys = RestrictedUnpickler(f).load()
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise PthFormatError("legacy storage key list is malformed")
        for key in keys:
            if key not in roots:
                raise PthFormatError(f"legacy storage {key!r} is listed but never referenced")
            flat = roots[key].flat
            header = f.read(8)
            if len(header) != 8:
                raise PthFormatError(f"truncated file: storage {key!r} is missing")
            (count,) = struct.unpack("<q" if little else ">q", header)
            if count != flat.numel():
                raise PthFormatError(f"storage {key!r} holds {count} elements, expected {flat.numel()}")
            nbytes = count * flat.element_size()
            raw = bytearray(f.read(nbytes))
            if len(raw) != nbytes:
                raise PthFormatError(f"truncated file: storage {key!r} is incomplete")
            if nbytes:
                data = torch.frombuffer(raw, dtype=flat.dtype)
                flat.copy_(_byteswap_(data) if swap else data)
        return result


# ============================================================================ original checkpoints
def _jsonable(x, depth: int = 0):
    """A JSON-safe summary of unpickled data (for provenance only)."""
    if depth > 8:
        return "..."
    if isinstance(x, bool) or x is None or isinstance(x, (int, str)):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else str(x)
    if isinstance(x, bytes):
        return f"<{len(x)} bytes>"
    if isinstance(x, torch.Tensor):
        return f"<tensor {list(x.shape)} {str(x.dtype).replace('torch.', '')}>"
    if isinstance(x, torch.dtype):
        return str(x)
    if isinstance(x, (list, tuple, set, frozenset)):
        return [_jsonable(v, depth + 1) for v in list(x)[:200]]
    if isinstance(x, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in list(x.items())[:500]}
    if _is_placeholder_type(x):
        return f"<class {x.pickle_name}>"
    if isinstance(x, Placeholder):
        if x.args and len(x.args) == 1:
            return f"{x.pickle_name}({_jsonable(x.args[0], depth + 1)!r})"
        return f"<{x.pickle_name}>"
    return f"<{type(x).__name__}>"


@dataclass
class OriginalCheckpoint:
    """What we take from an original ``.pth``: tensors, the RecBole config values, provenance."""

    path: Path
    sha256: str
    state_dict: dict[str, torch.Tensor]
    config: dict
    epoch: int | None
    extra: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def read_original(path: str | os.PathLike) -> OriginalCheckpoint:
    """Read an original MISSRec/RecBole ``.pth`` (or a bare state_dict) safely."""
    path = Path(path)
    obj = load_pth(path)
    notes: list[str] = []
    if isinstance(obj, dict) and "state_dict" in obj:
        sd = obj["state_dict"]
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd, obj = obj, {}
        notes.append("file holds a bare state_dict (no RecBole config): hyper-parameters not in the tensor "
                     "shapes take the paper's defaults")
    else:
        keys = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
        raise PthFormatError(f"{path}: expected a dict with a 'state_dict' entry (an original MISSRec checkpoint), "
                             f"found {keys}")
    if not isinstance(sd, dict):
        raise PthFormatError(f"{path}: 'state_dict' is a {type(sd).__name__}, expected a dict of tensors")
    bad = [k for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise PthFormatError(f"{path}: state_dict entries that are not named tensors: {bad[:8]}")
    state = dict(sd)
    if state and all(k.startswith("module.") for k in state):  # saved from a DDP wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
        notes.append("stripped the 'module.' prefix of a DistributedDataParallel state_dict")

    config: dict = {}
    cfg = obj.get("config")
    if isinstance(cfg, dict):
        config = cfg
    elif isinstance(cfg, Placeholder):
        st = placeholder_state(cfg) or {}
        final = st.get("final_config_dict")
        if isinstance(final, dict):
            config = final
        else:
            notes.append(f"the pickled config ({cfg.pickle_name}) carries no readable final_config_dict")
    elif cfg is not None:
        notes.append(f"ignored a 'config' entry of type {type(cfg).__name__}")
    epoch = obj.get("epoch")
    extra = {k: _jsonable(obj[k]) for k in ("cur_step", "best_valid_score", "global_step") if k in obj}
    return OriginalCheckpoint(path=path, sha256=sha256_file(path), state_dict=state, config=config,
                              epoch=epoch if type(epoch) is int else None, extra=extra, notes=notes)


# ============================================================================ RecBole item order
def _dataset_name(folder: Path) -> str:
    if (folder / f"{folder.name}.item2index").is_file():
        return folder.name
    found = sorted(folder.glob("*.item2index"))
    if len(found) == 1:
        return found[0].name[: -len(".item2index")]
    if not found:
        raise PthConversionError(f"{folder}: not a dataset folder (no <name>.item2index)")
    raise PthConversionError(f"{folder}: several *.item2index files; name the dataset folder <name>/")


def recbole_item_tokens(folder: str | os.PathLike, name: str | None = None,
                        splits: tuple[str, ...] = ("train", "valid", "test")) -> list[str]:
    """Item tokens in RecBole's internal id order (index 0 = '[PAD]') for a benchmark-split dataset.

    RecBole (the 1.x line MISSRec pins, recbole==1.2.0, with ``benchmark_filename: [train,
    valid, test]`` and ``alias_of_item_id: [item_id_list]``) loads the three ``.inter`` files
    with every token as a string, concatenates them in that order, skips filtering, and remaps
    ``item_id`` and its alias ``item_id_list`` together: ``pd.factorize`` over the target column
    of all rows followed by all history tokens flattened row by row, ids in order of first
    appearance, shifted by one so that '[PAD]' is 0. We reproduce exactly that.
    """
    folder = Path(folder)
    name = name or _dataset_name(folder)
    targets: list[str] = []
    histories: list[str] = []
    for split in splits:
        path = folder / f"{name}.{split}.inter"
        if not path.is_file():
            raise PthConversionError(f"{path}: file not found (needed to recover RecBole's item order)")
        with open(path, encoding="utf-8") as f:
            header = f.readline().rstrip("\r\n").split("\t")
            fields = [h.split(":", 1)[0] for h in header]
            try:
                ti, hi = fields.index("item_id"), fields.index("item_id_list")
            except ValueError:
                raise PthConversionError(f"{path}:1: header lacks item_id / item_id_list columns") from None
            for lineno, line in enumerate(f, start=2):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue  # pandas skips blank lines too
                parts = line.split("\t")
                if len(parts) != len(header):
                    raise PthConversionError(f"{path}:{lineno}: expected {len(header)} fields, got {len(parts)}")
                targets.append(parts[ti])
                histories.extend(t for t in parts[hi].split(" ") if t)
    return ["[PAD]"] + list(dict.fromkeys(targets + histories))


# ============================================================================ key mapping
_ATTN = {"in_proj_weight": lambda H, I: (3 * H, H), "in_proj_bias": lambda H, I: (3 * H,),
         "out_proj.weight": lambda H, I: (H, H), "out_proj.bias": lambda H, I: (H,)}
_FFN = {"linear1.weight": lambda H, I: (I, H), "linear1.bias": lambda H, I: (I,),
        "linear2.weight": lambda H, I: (H, I), "linear2.bias": lambda H, I: (H,)}
_NORM = {f"{n}.{p}": (lambda H, I: (H,)) for n in ("norm1", "norm2", "norm3") for p in ("weight", "bias")}
ENCODER_LAYER_PARAMS = {**{f"self_attn.{k}": v for k, v in _ATTN.items()}, **_FFN,
                        **{k: v for k, v in _NORM.items() if not k.startswith("norm3")}}
DECODER_LAYER_PARAMS = {**{f"self_attn.{k}": v for k, v in _ATTN.items()},
                        **{f"multihead_attn.{k}": v for k, v in _ATTN.items()}, **_FFN, **_NORM}
_LAYER_RE = re.compile(r"^trm_model\.(encoder|decoder)\.layers\.(\d+)\.(.+)$")
_TOP_LEVEL = {"position_embedding.weight", "trm_model.encoder.norm.weight", "trm_model.encoder.norm.bias",
              "trm_model.decoder.norm.weight", "trm_model.decoder.norm.bias", "LayerNorm.weight",
              "LayerNorm.bias", "fusion_factor", "text_adaptor.weight", "text_adaptor.bias",
              "img_adaptor.weight", "img_adaptor.bias", "item_embedding.weight"}
# Buffers of the original finetune model that hold dataset tables, not model parameters.
_FEATURE_TABLES = {"plm_embedding.weight": "feat1CLS", "img_embedding.weight": "feat3CLS"}
_DROPPED = {"plm_embedding_empty_mask", "img_embedding_empty_mask"}
_INTEREST = {"plm_interest_lookup_table": "text_interest", "img_interest_lookup_table": "image_interest",
             "interest_embeddings": "interest_embeddings"}

PAPER_DEFAULTS = {"n_heads": 4, "dropout": 0.5, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
                  "initializer_range": 0.02, "temperature": 0.07}


@dataclass
class ConvertedCheckpoint:
    config: dict
    model: dict[str, torch.Tensor]
    interest: dict[str, torch.Tensor] | None
    notes: list[str]


def _check_shape(key: str, t: torch.Tensor, expected: tuple[int, ...], errors: list[str]) -> None:
    if tuple(t.shape) != tuple(expected):
        errors.append(f"'{key}' has shape {list(t.shape)}, expected {list(expected)}")


def _classify_keys(src, sd, allow_unknown: bool, notes: list[str]) -> dict[str, tuple[str, int, str]]:
    """Layer keys -> (stack, index, param); unknown keys are an error unless allowed (then noted)."""
    layer_keys, unknown = {}, []
    for k in sd:
        m = _LAYER_RE.match(k)
        if m and m.group(3) in (ENCODER_LAYER_PARAMS if m.group(1) == "encoder" else DECODER_LAYER_PARAMS):
            layer_keys[k] = (m.group(1), int(m.group(2)), m.group(3))
        elif not (k in _TOP_LEVEL or k in _FEATURE_TABLES or k in _DROPPED or k in _INTEREST):
            unknown.append(k)
    if unknown:
        if not allow_unknown:
            raise PthConversionError(
                f"{src}: state_dict keys that MISSRec does not have: {sorted(unknown)}. This is probably not a "
                "MISSRec checkpoint (or a variant with extra modules); pass --allow-unknown to drop them")
        notes.append(f"dropped unknown keys (--allow-unknown): {sorted(unknown)}")
    return layer_keys


def _architecture(src, sd, layer_keys) -> dict:
    """Sizes from the tensor shapes; every shape is checked against them."""
    required = ["position_embedding.weight", "LayerNorm.weight", "LayerNorm.bias", "trm_model.encoder.norm.weight",
                "trm_model.encoder.norm.bias", "trm_model.decoder.norm.weight", "trm_model.decoder.norm.bias"]
    missing = [k for k in required if k not in sd]
    missing += [f"{m}.weight/bias" for m in ("text_adaptor", "img_adaptor")
                if f"{m}.weight" not in sd or f"{m}.bias" not in sd]
    if missing:
        raise PthConversionError(f"{src}: missing {missing}. Only the text+image MISSRec (modal_type img_text) "
                                 "is supported")
    pos = sd["position_embedding.weight"]
    if pos.dim() != 2:
        raise PthConversionError(f"{src}: 'position_embedding.weight' must be 2-D, got {list(pos.shape)}")
    max_len, H = tuple(pos.shape)
    arch = {"max_seq_length": max_len, "hidden_size": H, "text_dim": sd["text_adaptor.weight"].shape[-1],
            "image_dim": sd["img_adaptor.weight"].shape[-1]}

    layers = {"encoder": {}, "decoder": {}}
    for k, (stack, i, p) in layer_keys.items():
        layers[stack].setdefault(i, {})[p] = k
    errors: list[str] = []
    for stack, params in (("encoder", ENCODER_LAYER_PARAMS), ("decoder", DECODER_LAYER_PARAMS)):
        idx = sorted(layers[stack])
        if not idx or idx != list(range(len(idx))):
            errors.append(f"{stack} layers {idx} are not numbered 0..n-1 (need at least one)")
            continue
        arch[f"num_{stack}_layers"] = len(idx)
        for i in idx:
            absent = sorted(set(params) - set(layers[stack][i]))
            if absent:
                errors.append(f"trm_model.{stack}.layers.{i} lacks {absent}")
    if errors:
        raise PthConversionError(f"{src}: " + "; ".join(errors))
    inner = arch["inner_size"] = sd["trm_model.encoder.layers.0.linear1.weight"].shape[0]
    for k, (stack, _, p) in layer_keys.items():
        params = ENCODER_LAYER_PARAMS if stack == "encoder" else DECODER_LAYER_PARAMS
        _check_shape(k, sd[k], params[p](H, inner), errors)
    for k in required[1:] + ["text_adaptor.bias", "img_adaptor.bias"]:
        _check_shape(k, sd[k], (H,), errors)
    _check_shape("text_adaptor.weight", sd["text_adaptor.weight"], (H, arch["text_dim"]), errors)
    _check_shape("img_adaptor.weight", sd["img_adaptor.weight"], (H, arch["image_dim"]), errors)
    if errors:
        raise PthConversionError(f"{src}: " + "; ".join(errors))
    return arch


def _hyperparameters(src, conf: dict, arch: dict, notes: list[str]) -> dict:
    """What the shapes do not reveal, from the pickled RecBole config (paper defaults otherwise)."""
    errors: list[str] = []

    def get(key, ours, default):
        v = conf.get(key)
        if v is None:
            notes.append(f"{ours} = {default!r} (paper default: the checkpoint's config has no '{key}')")
            return default
        if isinstance(default, float):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                errors.append(f"config '{key}' = {_jsonable(v)!r} is not a number")
                return default
            return float(v)
        if type(v) is not type(default):
            errors.append(f"config '{key}' = {_jsonable(v)!r} is not a {type(default).__name__}")
            return default
        return v

    hp = {"n_heads": get("n_heads", "n_heads", PAPER_DEFAULTS["n_heads"]),
          "dropout": get("hidden_dropout_prob", "dropout", PAPER_DEFAULTS["dropout"]),
          "hidden_act": get("hidden_act", "hidden_act", PAPER_DEFAULTS["hidden_act"]),
          "layer_norm_eps": get("layer_norm_eps", "layer_norm_eps", PAPER_DEFAULTS["layer_norm_eps"]),
          "initializer_range": get("initializer_range", "initializer_range", PAPER_DEFAULTS["initializer_range"]),
          "temperature": get("temperature", "temperature", PAPER_DEFAULTS["temperature"])}
    if hp["n_heads"] <= 0 or arch["hidden_size"] % hp["n_heads"]:
        errors.append(f"n_heads {hp['n_heads']} does not divide hidden size {arch['hidden_size']}")
    if hp["hidden_act"] not in ("gelu", "relu"):
        errors.append(f"hidden_act {hp['hidden_act']!r} is not supported (gelu or relu)")
    if conf.get("seq_mm_fusion") not in (None, "add"):
        errors.append(f"seq_mm_fusion={_jsonable(conf['seq_mm_fusion'])!r} is not supported "
                      "(ours adds the modality embeddings: 'add')")
    if conf.get("modal_type") not in (None, "img_text"):
        errors.append(f"modal_type={_jsonable(conf['modal_type'])!r} is not supported (only 'img_text')")
    if errors:
        raise PthConversionError(f"{src}: " + "; ".join(errors))
    for key, ours in (("hidden_size", "hidden_size"), ("inner_size", "inner_size"), ("plm_size", "text_dim"),
                      ("img_size", "image_dim"), ("MAX_ITEM_LIST_LENGTH", "max_seq_length")):
        if conf.get(key) is not None and conf.get(key) != arch[ours]:
            notes.append(f"config says {key}={_jsonable(conf.get(key))!r} but the tensors say {arch[ours]}; "
                         "the tensors win")
    n_layers = conf.get("n_layers")
    if type(n_layers) is int and n_layers != arch["num_encoder_layers"] + arch["num_decoder_layers"]:
        notes.append(f"config says n_layers={n_layers} but the state_dict has {arch['num_encoder_layers']} encoder "
                     f"+ {arch['num_decoder_layers']} decoder layers; the tensors win")
    return hp


def _fusion(src, sd, conf, notes) -> tuple[str, torch.Tensor]:
    item_fusion = conf.get("item_mm_fusion")
    factor = sd.get("fusion_factor")
    if factor is None:
        if item_fusion not in (None, "static"):
            raise PthConversionError(f"{src}: item_mm_fusion={_jsonable(item_fusion)!r} but the state_dict has "
                                     "no 'fusion_factor'")
        notes.append("no fusion_factor: static fusion (plain mean of the modality scores); stored fusion_factor=0")
        return "static", torch.zeros(())
    if factor.dim() != 0:
        raise PthConversionError(f"{src}: 'fusion_factor' has shape {list(factor.shape)}: per-item fusion "
                                 "('dynamic_instance') is not supported, only one shared scalar")
    return ("static" if item_fusion == "static" else "dynamic_shared"), factor


def _stage(sd, conf, notes) -> str:
    stage = conf.get("train_stage")
    if stage not in ("pretrain", "inductive_ft", "transductive_ft"):
        stage = ("transductive_ft" if "item_embedding.weight" in sd
                 else "inductive_ft" if "plm_embedding.weight" in sd else "pretrain")
        notes.append(f"train_stage inferred from the tensors: {stage}")
    return stage


def _item_rows(src, sd, use_id: bool) -> int | None:
    """Rows of the original's item-indexed tables (RecBole's item count incl. [PAD]), all equal."""
    rows = None
    for k in ("item_embedding.weight", "plm_embedding.weight", "img_embedding.weight", "plm_interest_lookup_table",
              "img_interest_lookup_table", "plm_embedding_empty_mask", "img_embedding_empty_mask"):
        if k not in sd or (k == "item_embedding.weight" and not use_id):
            continue
        if sd[k].dim() != (2 if k.endswith(".weight") else 1):
            raise PthConversionError(f"{src}: '{k}' has shape {list(sd[k].shape)}")
        if rows is None:
            rows = sd[k].shape[0]
        elif sd[k].shape[0] != rows:
            raise PthConversionError(f"{src}: '{k}' has {sd[k].shape[0]} rows, other item tables have {rows}")
    return rows


def _item_tables(src, sd, dataset, use_id: bool, skip_feature_check: bool, notes: list[str]):
    """Put item-indexed tables in our order. Returns (n_items, ID table or None, interest or None, dataset)."""
    rows = _item_rows(src, sd, use_id)
    interest_src = {ours: sd[k] for k, ours in _INTEREST.items() if k in sd}
    if interest_src and len(interest_src) != len(_INTEREST):
        raise PthConversionError(f"{src}: incomplete interest state: has {sorted(interest_src)}")
    id_table = sd["item_embedding.weight"] if use_id else None
    if dataset is None or rows is None:
        if use_id:
            raise PthConversionError(
                f"{src}: this is a transductive checkpoint: its item-ID table is in RecBole's internal item order, "
                "which depends on the dataset it was trained on. Pass --dataset DIR (the dataset folder, e.g. "
                ".../Scientific_mm_full) so the rows can be put in our order (id = file index + 1)")
        if dataset is not None:
            notes.append(f"--dataset {dataset} not needed: this checkpoint has no item-indexed tables")
        if rows is None:
            return 0, None, None, None
        notes.append(f"n_items = {rows - 1} from the original's item tables (RecBole counts only items that occur "
                     "in the .inter files; pass --dataset to take it from item2index)")
        if interest_src:
            notes.append("interest state not converted: its per-item cluster ids are in RecBole's item order; "
                         "pass --dataset to keep it (finetuning recomputes it anyway)")
        return rows - 1, None, None, None

    from .data.atomic import read_index_map
    folder = Path(dataset)
    name = _dataset_name(folder)
    n_items = len(read_index_map(folder / f"{name}.item2index"))
    tokens = recbole_item_tokens(folder, name)
    if len(tokens) != rows:
        raise PthConversionError(
            f"{src}: the checkpoint's item tables have {rows} rows but {folder}'s .inter files hold "
            f"{len(tokens) - 1} distinct items (+ padding): this is not the dataset it was trained on")
    try:
        file_idx = torch.tensor([int(t) for t in tokens[1:]], dtype=torch.long)
    except ValueError:
        raise PthConversionError(f"{folder}: item tokens must be integer file indices") from None
    if len(file_idx) and (int(file_idx.min()) < 0 or int(file_idx.max()) >= n_items):
        raise PthConversionError(f"{folder}: an item token is outside 0..{n_items - 1} (item2index)")
    if n_items > len(file_idx):
        notes.append(f"{n_items - len(file_idx)} items of item2index never occur in the .inter files: the original "
                     "had no rows for them (their ID rows and interest ids are left at 0)")
    if skip_feature_check:
        notes.append("feature-table check skipped (--skip-feature-check)")
    else:
        _verify_feature_tables(src, sd, folder, name, n_items, file_idx, notes)
    ours = torch.cat([torch.zeros(1, dtype=torch.long), file_idx + 1])  # our id of RecBole id r

    def permute(t: torch.Tensor) -> torch.Tensor:
        out = torch.zeros((n_items + 1,) + tuple(t.shape[1:]), dtype=t.dtype)
        out[ours] = t
        return out

    interest = None
    if interest_src:
        interest = {"interest_embeddings": interest_src["interest_embeddings"].float(),
                    "text_interest": permute(interest_src["text_interest"].long()),
                    "image_interest": permute(interest_src["image_interest"].long())}
    return n_items, (permute(id_table) if use_id else None), interest, str(folder)


def _check_interest(src, interest: dict, H: int) -> None:
    emb = interest["interest_embeddings"]
    if emb.dim() != 2 or emb.shape[1] != H:
        raise PthConversionError(f"{src}: 'interest_embeddings' has shape {list(emb.shape)}, expected [K+1, {H}]")
    for k in ("text_interest", "image_interest"):
        v = interest[k]
        if len(v) and (int(v.min()) < 0 or int(v.max()) >= emb.shape[0]):
            raise PthConversionError(f"{src}: {k} ids fall outside 0..{emb.shape[0] - 1}")


def convert_original(orig: OriginalCheckpoint, dataset: str | os.PathLike | None = None,
                     allow_unknown: bool = False, skip_feature_check: bool = False) -> ConvertedCheckpoint:
    """Map an original checkpoint onto our config/model/interest tensors (nothing written)."""
    src, sd, conf = orig.path, orig.state_dict, orig.config
    notes = list(orig.notes)
    layer_keys = _classify_keys(src, sd, allow_unknown, notes)
    arch = _architecture(src, sd, layer_keys)
    hp = _hyperparameters(src, conf, arch, notes)
    fusion, fusion_factor = _fusion(src, sd, conf, notes)
    stage = _stage(sd, conf, notes)

    use_id = "item_embedding.weight" in sd and stage == "transductive_ft" and conf.get("id_type", "id") != "none"
    if "item_embedding.weight" in sd and not use_id:
        notes.append(f"dropped item_embedding.weight: unused by the original (train_stage={stage}, "
                     f"id_type={_jsonable(conf.get('id_type'))!r})")
    if use_id and tuple(sd["item_embedding.weight"].shape[1:]) != (arch["hidden_size"],):
        raise PthConversionError(f"{src}: 'item_embedding.weight' has shape "
                                 f"{list(sd['item_embedding.weight'].shape)}, expected [n, {arch['hidden_size']}]")
    n_items, id_table, interest, dataset_dir = _item_tables(src, sd, dataset, use_id, skip_feature_check, notes)
    if interest is not None:
        _check_interest(src, interest, arch["hidden_size"])

    model = {k: sd[k] for k in _TOP_LEVEL - {"fusion_factor", "item_embedding.weight"}}
    model.update({k: sd[k] for k in layer_keys})
    model["fusion_factor"] = fusion_factor
    if id_table is not None:
        model["item_embedding.weight"] = id_table
    casted = sorted(k for k, v in model.items() if v.is_floating_point() and v.dtype != torch.float32)
    if casted:
        notes.append(f"cast to float32: {casted}")
    model = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in model.items()}
    if interest is not None:
        interest = {k: v.detach().contiguous().clone() for k, v in interest.items()}

    source = {
        "format": "missrec-original-pth", "file": src.name, "sha256": orig.sha256, "epoch": orig.epoch,
        "train_stage": stage, "original_dataset": _jsonable(conf.get("dataset")), "dataset_dir": dataset_dir,
        "item_order": ("RecBole internal ids permuted to file index + 1 (missrec.pth.recbole_item_tokens)"
                       if dataset_dir else None),
        "extra": orig.extra, "notes": notes, "original_config": _jsonable(conf),
    }
    config = {"model_type": "missrec", **{k: int(v) for k, v in arch.items()}, **hp,
              "use_id": bool(use_id), "n_items": int(n_items), "fusion": fusion, "source": source}
    return ConvertedCheckpoint(config=config, model=model, interest=interest, notes=notes)


def _verify_feature_tables(src, sd, folder: Path, name: str, n_items: int, file_idx: torch.Tensor,
                           notes: list[str]) -> None:
    """The original keeps the dataset's features in RecBole order: row r = feature[int(token_r)].

    Comparing them with the dataset's files checks both that this is the right dataset and that
    our reconstruction of RecBole's item order is right.
    """
    from .data.atomic import read_features
    for key, suffix in _FEATURE_TABLES.items():
        if key not in sd:
            continue
        path = folder / f"{name}.{suffix}"
        if not path.is_file():
            notes.append(f"{path.name} absent: could not cross-check {key}")
            continue
        table = sd[key].float()
        feats = read_features(path, n_items=n_items, dim=table.shape[1], check_finite=False)
        expected = torch.from_numpy(np.asarray(feats[file_idx.numpy()], dtype=np.float32))
        got = table[1:]
        diff = (got - expected).abs()
        bad_rows = int((diff.amax(dim=1) > 1e-6).sum()) if len(got) else 0
        pad_ok = bool((table[0] == 0).all())
        if bad_rows or not pad_ok:
            raise PthConversionError(
                f"{src}: '{key}' does not match {path} under RecBole's item order: {bad_rows} of {len(got)} rows "
                f"differ (max |diff| {float(diff.max()) if len(got) else 0:.3g}){'' if pad_ok else ', padding row not 0'}. "
                "Either --dataset is not the dataset this checkpoint was finetuned on, or its features were "
                "re-extracted; pass --skip-feature-check to convert anyway")
        notes.append(f"checked: {key} equals {path.name} row for row under the recovered item order")


# ============================================================================ writing
def is_checkpoint_folder(path: str | os.PathLike) -> bool:
    p = Path(path)
    return (p / "config.json").is_file() and (p / "model.safetensors").is_file()


def write_converted(conv: ConvertedCheckpoint, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write config.json + model.safetensors (+ interest.safetensors) atomically into ``out_dir``."""
    from safetensors.torch import save_file

    from .fsutil import atomic_dir
    out = Path(out_dir)
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(f"{out}: exists and is not a folder")
        if any(out.iterdir()):
            if not (out / "config.json").is_file():
                raise FileExistsError(f"{out}: folder exists, is not empty and is not a checkpoint folder; "
                                      "choose another output folder")
            if not overwrite:
                raise FileExistsError(f"{out}: a checkpoint folder already exists there (use --overwrite)")
    with atomic_dir(out) as tmp:
        save_file(conv.model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if conv.interest is not None:
            save_file(conv.interest, str(tmp / "interest.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(conv.config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def convert_pth(in_path: str | os.PathLike, out_dir: str | os.PathLike, dataset: str | os.PathLike | None = None,
                allow_unknown: bool = False, skip_feature_check: bool = False, overwrite: bool = False
                ) -> tuple[Path, ConvertedCheckpoint]:
    """Read an original ``.pth`` safely, map it, write our folder. Returns (folder, conversion)."""
    orig = read_original(in_path)
    conv = convert_original(orig, dataset=dataset, allow_unknown=allow_unknown,
                            skip_feature_check=skip_feature_check)
    return write_converted(conv, out_dir, overwrite=overwrite), conv
