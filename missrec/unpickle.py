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

A small file must not be able to exhaust the reader either (see :class:`RestrictedUnpickler`):
every opcode counts against ``MAX_OBJECTS``; every container's nesting height is recorded as it is
built and capped at ``MAX_DEPTH`` before anything can hash it (hashing a tuple nested a million
deep overflows the C stack); the storages a file claims may not add up to more bytes than the file
holds (the legacy format allocates them before reading); ``bytes``/``bytearray`` take no sizes; and
a tensor view must stay inside its storage without repeating any element of it (stride 0,
overlapping strides), so each view has at most as many elements as the file stores.

``torch.load(weights_only=True)`` with stub classes in ``safe_globals`` cannot do this job: it
lists a file's unknown globals for zip files only (not the legacy format), and it re-raises any
error from a stub as one generic message, so a refused ``os.system`` could not be told from a
truncated file.
"""
from __future__ import annotations

import _compat_pickle
import collections
import gc
import io
import os
import pickle
import re
import struct
import tarfile
import types
import zipfile
from pathlib import Path

import numpy as np
import torch

from .errors import UserError

__all__ = ["UnsafePickleError", "PthFormatError", "Placeholder", "RestrictedUnpickler", "restricted_loads",
           "load_pth", "placeholder_state", "check_depth", "INERT_CALLS", "MAX_DEPTH", "MAX_OBJECTS"]

# A checkpoint nests a few levels (RecBole's config: object -> dict -> dict -> list) and holds some
# thousands of objects besides its tensor data; these bounds are far above that.
MAX_DEPTH = 200
MAX_OBJECTS = 1_000_000


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
    # No element of the storage may appear twice in the view: taking the dimensions from the
    # smallest stride up, each stride must step past everything the smaller ones span. (This
    # refuses the rare interleaved views that do not overlap either; torch.save never writes them
    # for parameters.) A view of 1 element repeated a million times would otherwise turn a tiny
    # file into gigabytes once copied.
    span = 1
    for st, s in sorted((st, s) for s, st in zip(size, stride) if s > 1):
        if st < span:
            raise PthFormatError(f"tensor rebuild: view (size {size}, stride {stride}) repeats elements of its "
                                 "storage (a stride of 0 or overlapping strides); a checkpoint stores each "
                                 "value once")
        span += st * (s - 1)
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


def _no_size(args) -> None:
    # bytes(n) / bytearray(n) would allocate n zero bytes: a few bytes of pickle asking for terabytes.
    if args and isinstance(args[0], int):
        raise UnsafePickleError(f"bytes/bytearray of a size ({args[0]}) is not accepted, only of data")


def _bytes(*args):
    _no_size(args)
    return bytes(*args)


def _bytearray(*args):
    _no_size(args)
    return bytearray(*args)


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
    "builtins.set": set, "builtins.frozenset": frozenset, "builtins.bytes": _bytes, "builtins.bytearray": _bytearray,
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


_CONTAINERS = (tuple, list, dict, set, frozenset, Placeholder)


def _children(x):
    if isinstance(x, dict):
        return [*x.keys(), *x.values()]
    if isinstance(x, Placeholder):
        return [x.args, x.kwargs, x.state, x.items, x.list_items]
    return x  # tuple, list, set, frozenset


def _too_deep() -> PthFormatError:
    return PthFormatError(f"data nested more than {MAX_DEPTH} levels deep; a checkpoint nests a few levels "
                          "(this file is damaged or built to crash its reader)")


def check_depth(root) -> None:
    """Refuse an object graph nested deeper than ``MAX_DEPTH``; each object is visited once, and
    a reference back to an object being visited (a cycle) adds no depth."""
    heights: dict[int, int] = {}
    on_path: set[int] = set()
    todo = [(root, False)]
    while todo:
        x, done = todo.pop()
        if done:
            on_path.discard(id(x))
            h = heights[id(x)] = 1 + max((heights.get(id(c), 0) for c in _children(x)), default=0)
            if h > MAX_DEPTH:
                raise _too_deep()
        elif isinstance(x, _CONTAINERS) and id(x) not in heights and id(x) not in on_path:
            on_path.add(id(x))
            todo.append((x, True))
            todo.extend((c, False) for c in _children(x))


# How many stack items each opcode puts into the object it leaves on top of the stack (None: all
# items since the last MARK). Every other opcode pushes a leaf or moves references around.
_FILLS = {**{getattr(pickle, op)[0]: None for op in ("TUPLE", "LIST", "DICT", "APPENDS", "SETITEMS", "ADDITEMS",
                                                       "FROZENSET", "OBJ", "INST")},
          **{getattr(pickle, op)[0]: n for op, n in (
              ("EMPTY_TUPLE", 0), ("EMPTY_LIST", 0), ("EMPTY_DICT", 0), ("EMPTY_SET", 0), ("TUPLE1", 1),
              ("TUPLE2", 2), ("TUPLE3", 3), ("APPEND", 1), ("SETITEM", 2), ("BUILD", 1), ("REDUCE", 2),
              ("NEWOBJ", 2), ("NEWOBJ_EX", 3))}}
# Which of those items the opcode hashes (dict keys, set members).
_HASHED = {pickle.SETITEM[0]: slice(0, 1), pickle.SETITEMS[0]: slice(0, None, 2), pickle.DICT[0]: slice(0, None, 2),
           pickle.ADDITEMS[0]: slice(None), pickle.FROZENSET[0]: slice(None)}


def _bounded(code: int, load):
    """Run one opcode's handler, counting it against MAX_OBJECTS; for opcodes that build or fill a
    container, record the container's height (and a tuple's size) and charge the hashing of the
    keys it takes before anything hashes them."""
    fills, hashed = _FILLS.get(code, -1), _HASHED.get(code)

    def op(self):
        self._n_ops += 1
        if self._n_ops > MAX_OBJECTS:
            raise PthFormatError(f"more than {MAX_OBJECTS} objects in one pickle; a checkpoint holds some thousands "
                                 "(this file is damaged or built to exhaust memory)")
        if fills == -1:
            return load(self)
        added = self.stack[:] if fills is None else self.stack[-fills:] if fills else ()
        if hashed is not None:
            self._charge_hashing(added[hashed])
        load(self)
        top = self.stack[-1]
        if isinstance(top, _CONTAINERS):
            heights = self._heights
            h = 1
            for a in added:
                ha = heights.get(id(a))
                if ha is not None and ha >= h:
                    h = ha + 1
            old = heights.get(id(top))
            if old is None:
                self._keep.append(top)  # alive until the end, so its id is never reused
                if isinstance(top, tuple):
                    self._tuple_size(top)
            if old is None or h > old:
                if h > MAX_DEPTH:
                    raise _too_deep()
                heights[id(top)] = h
    return op


def _hashing(kind):
    """set / frozenset / OrderedDict from the allow-list, charging the hashing of what they take."""
    def bind(unpickler):
        def build(*args, **kwargs):
            if args and isinstance(args[0], (tuple, list, set, frozenset, dict)):
                unpickler._charge_hashing(args[0])
            return kind(*args, **kwargs)
        return build
    return bind


_HASHING = {"builtins.set": _hashing(set), "builtins.frozenset": _hashing(frozenset),
            "collections.OrderedDict": _hashing(collections.OrderedDict)}


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickler that rebuilds tensors and plain data and nothing else (see the module docstring).

    Bounded by the file: at most ``MAX_OBJECTS`` opcodes; containers at most ``MAX_DEPTH`` deep,
    checked as each one is built or filled (so a deep tuple is refused before a dict hashes it)
    and over the whole result at the end (a list filled after it was nested); storages (persistent
    ids) claiming at most ``storage_budget`` bytes in all, when set.
    """

    dispatch = dict(pickle._Unpickler.dispatch)
    storage_budget: int | None = None

    def __init__(self, file, **kwargs):
        super().__init__(file, **kwargs)
        # A length field is read before its bytes: a file object's read(n) allocates n bytes first,
        # so 'BINBYTES8 2**40' in a 100-byte file would ask for a terabyte. No value can be longer
        # than the stream holds.
        try:
            pos = file.tell()
            self._stream_size = file.seek(0, io.SEEK_END)
            file.seek(pos)
        except (AttributeError, OSError, ValueError):
            self._stream_size = None
        if self._stream_size is not None:
            read = self._file_read

            def bounded_read(n=-1):
                self._check_length(n)
                return read(n)
            self._file_read = bounded_read
        self._placeholders: dict[str, type] = {}
        self._n_ops = self._hash_work = 0
        self._heights: dict[int, int] = {}
        self._sizes: dict[int, int] = {}  # tuples: values in it, shared ones counted each time
        self._keep: list = []
        self._storages: dict = {}

    def load(self):
        # Every container stays alive until the end (self._keep): without this the collector
        # would traverse all of them again and again as they accumulate (10x slower).
        collecting = gc.isenabled()
        gc.disable()
        try:
            obj = super().load()
            check_depth(obj)
            return obj
        finally:
            self._heights.clear()
            self._sizes.clear()
            self._keep.clear()
            if collecting:
                gc.enable()

    def _tuple_size(self, t: tuple) -> None:
        """Hashing (or printing) a tuple visits every value in it, inner tuples in full each time
        they appear: ``(x,) * 200`` nested 8 deep is 200**8 values from a few hundred bytes."""
        n = self._sizes[id(t)] = 1 + sum(self._sizes.get(id(v), 1) for v in t)
        if n > MAX_OBJECTS:
            raise PthFormatError(f"a tuple that repeats shared values {n} times; a checkpoint's tuples are small "
                                 "(this file is damaged or built to hang its reader)")

    def _charge_hashing(self, keys) -> None:
        keys = keys.keys() if isinstance(keys, dict) else keys
        self._hash_work += sum(self._sizes.get(id(k), 1) for k in keys)
        if self._hash_work > 10 * MAX_OBJECTS:
            raise PthFormatError(f"hashing its keys takes more than {10 * MAX_OBJECTS} steps; a checkpoint's keys "
                                 "are short (this file is damaged or built to hang its reader)")

    def _check_length(self, n) -> None:
        if self._stream_size is not None and n is not None and n > self._stream_size:
            raise PthFormatError(f"a value claims {n} bytes, more than the {self._stream_size} its stream holds: "
                                 "the file is damaged")

    def load_bytearray8(self):  # as pickle's, with the length checked before bytearray(n) allocates it
        n, = struct.unpack("<Q", self.read(8))
        self._check_length(n)
        b = bytearray(n)
        self.readinto(b)
        self.append(b)

    def load_binpersid(self):
        self._check_storage(self.stack[-1])
        super().load_binpersid()

    def _check_storage(self, pid) -> None:
        """torch's ('storage', type, key, location, numel[, view]) ids: the legacy format allocates
        numel elements before reading them, so a few bytes could ask for terabytes."""
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage")):
            return
        if not isinstance(pid[2], str) or len(pid[2]) > 100:
            raise PthFormatError("a storage key is not a short string")
        numel, dtype = pid[4], getattr(pid[1], "dtype", torch.uint8)
        if type(numel) is not int or numel < 0 or not isinstance(dtype, torch.dtype):
            raise PthFormatError(f"storage {pid[2]!r}: malformed size {str(numel)[:40]}")
        view = pid[5] if len(pid) > 5 else None
        if view is not None and not (isinstance(view, tuple) and len(view) == 3 and isinstance(view[0], str)
                                     and all(type(v) is int and v >= 0 for v in view[1:])
                                     and view[1] + view[2] <= numel):
            raise PthFormatError(f"storage {pid[2]!r}: malformed view, or a view outside its {numel} elements")
        if self.storage_budget is None:
            return
        self._storages.setdefault(pid[2], numel * dtype.itemsize)
        claimed = sum(self._storages.values())
        if claimed > self.storage_budget:
            raise PthFormatError(f"its storages claim {claimed} bytes, more than the whole file holds "
                                 f"({self.storage_budget} bytes): the file is truncated or damaged")

    def find_class(self, module, name):
        if not isinstance(module, str) or not isinstance(name, str):
            raise UnsafePickleError("global names must be strings")
        if self.proto < 3 and self.fix_imports:  # Python-2 spellings (protocol 2 writes __builtin__)
            module, name = _compat_pickle.NAME_MAPPING.get(
                (module, name), (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
        full = f"{module}.{name}"
        if full in _HASHING:
            return _HASHING[full](self)
        if full in _ALLOWED:
            return _ALLOWED[full]
        if full not in self._placeholders:
            if len(self._placeholders) >= 10_000:
                raise PthFormatError("more than 10000 distinct class names; a checkpoint names a few dozen")
            short = re.sub(r"\W", "_", name.rsplit(".", 1)[-1]) or "Placeholder"
            self._placeholders[full] = _PlaceholderMeta(short, (Placeholder,), {"pickle_name": full,
                                                                                 "__module__": __name__})
        return self._placeholders[full]

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, (Placeholder, np.dtype)):
            inst.__setstate__(state)
        elif (type(inst) is collections.OrderedDict and isinstance(state, dict) and len(state) <= 1
              and (not state or "_metadata" in state)):
            # torch's state_dict carries `_metadata` as an attribute. Nothing else: an attribute
            # named e.g. `items` would shadow the method we call later.
            inst.__dict__.update(state)
        else:
            raise UnsafePickleError(f"BUILD (set state) on a {type(inst).__name__} object is not allowed")

    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.BINPERSID[0]] = load_binpersid
    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8
    for _op in ("EXT1", "EXT2", "EXT4"):
        dispatch[getattr(pickle, _op)[0]] = _refuse(_op)
    del _op
    dispatch = {_code: _bounded(_code, _load) for _code, _load in dispatch.items()}


def restricted_loads(data: bytes):
    """Restricted-unpickle bytes (no persistent ids: those only occur inside torch.save files)."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


def _pickle_module(storage_budget: int):
    """What torch.load calls `pickle_module`: it uses .Unpickler (subclassed for storage names and
    persistent ids) and .load (the legacy format's small header pickles)."""
    unpickler = type("RestrictedUnpickler", (RestrictedUnpickler,), {"storage_budget": storage_budget})
    return types.SimpleNamespace(__name__="missrec.unpickle", Unpickler=unpickler,
                                 load=lambda f, **kw: unpickler(f, **kw).load())


def _check_zip(path: Path) -> None:
    """torch.save writes every record stored (uncompressed); a compressed record could expand far
    beyond the file (a zip bomb) before any of our checks sees it."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise PthFormatError(f"{path}: not a torch.save checkpoint, or a damaged one ({e})") from None
    packed = [i.filename for i in infos if i.compress_type != zipfile.ZIP_STORED]
    if packed:
        raise PthFormatError(f"{path}: compressed records {packed[:3]}; torch.save stores them uncompressed "
                             "(re-save the checkpoint with torch.save)")
    size = path.stat().st_size
    if sum(i.file_size for i in infos) > size:
        raise PthFormatError(f"{path}: its records claim more bytes than the file holds ({size}): the file is "
                             "truncated or damaged")


def load_pth(path: str | os.PathLike):
    """Read a ``torch.save`` file with the restricted unpickler; tensors come back on the CPU."""
    path = Path(path)
    if path.is_dir():
        raise PthFormatError(f"{path}: is a folder; expected an original MISSRec .pth file (a checkpoint folder "
                             "of ours, with config.json and model.safetensors, needs no conversion)")
    if not path.is_file():
        raise PthFormatError(f"{path}: file not found (expected an original MISSRec .pth file)")
    is_zip = zipfile.is_zipfile(path)
    if not is_zip and tarfile.is_tarfile(path):
        raise PthFormatError(f"{path}: this is torch's pre-0.4 tar checkpoint format, which is not supported")
    if is_zip:
        _check_zip(path)
    try:
        # weights_only=False only lets us pass our own unpickler; what it may call is its allow-list.
        return torch.load(path, map_location="cpu", pickle_module=_pickle_module(path.stat().st_size),
                          weights_only=False)
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: refused, nothing in it was run: {e}. Use a checkpoint from a source you "
                                "trust") from None
    except PthFormatError as e:
        raise PthFormatError(f"{path}: {e}") from None
    except Exception as e:  # torch raises many types for damaged files; the caller needs one
        first = str(e).splitlines()[0][:300] if str(e) else ""
        if "%ld" in first:  # torch's legacy reader prints its format string unfilled
            first = "a storage's data in the file is not the size its header claims"
        raise PthFormatError(f"{path}: not a torch.save checkpoint, or a damaged one ({type(e).__name__}: "
                             f"{first})") from None
