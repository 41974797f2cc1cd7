"""Reading and writing the UniSRec/MISSRec "atomic file" dataset folder.

One dataset is a folder ``<root>/<name>/`` holding ``<name>.train.inter`` (and ``.valid``,
``.test``), ``<name>.item2index``, ``<name>.user2index``, ``<name>.text`` and raw float32 feature
files (``.feat1CLS`` text, ``.feat3CLS`` image, optional ``.feat2CLS`` word-dropped text).
The authors' released folders load unchanged; ``<name>.meta.json`` is ours and optional.

A pretraining corpus is the same kind of folder whose ``<name>.pt_datasets`` lists its domains
(comma separated); its item/user tokens are ``"<domain_idx>-<idx>"`` and each domain's features
live in ``<domain>.feat1CLS`` etc. inside the corpus folder.

In memory, item *ids* are file indices + 1 so that 0 is the padding id everywhere.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import UserError, not_utf8
from ..fsutil import atomic_path, atomic_write_json, atomic_write_text, sha256_file

INTER_HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token"
TEXT_HEADER = "item_id:token\ttext:token_seq"
SPLITS = ("train", "valid", "test")
FEATURE_SUFFIXES = {"text": "feat1CLS", "text_aug": "feat2CLS", "image": "feat3CLS"}
MAX_LEN = 50


class DataFormatError(UserError):
    """A dataset file is missing or malformed; the message names the file (and line)."""


@dataclass
class Split:
    """Padded sequences of one split.

    ``seq[i, :length[i]]`` are item ids (file index + 1, oldest first), the rest is 0;
    ``target[i]`` is the next item id. ``user`` holds the user tokens as strings.
    """

    user: np.ndarray  # [n] object (str tokens)
    seq: np.ndarray  # [n, max_len] int64
    length: np.ndarray  # [n] int64
    target: np.ndarray  # [n] int64

    def __len__(self) -> int:
        return len(self.target)

    def truncated(self, max_len: int) -> "Split":
        """The same rows keeping only the most recent ``max_len`` items of each history."""
        if self.seq.shape[1] <= max_len:
            return self
        start = np.maximum(self.length - max_len, 0)
        cols = np.minimum(start[:, None] + np.arange(max_len), self.seq.shape[1] - 1)
        length = np.minimum(self.length, max_len)
        seq = np.take_along_axis(self.seq, cols, 1) * (np.arange(max_len) < length[:, None])
        return Split(self.user, seq.astype(np.int64), length.astype(np.int64), self.target)

    @classmethod
    def from_lists(cls, users: Sequence, histories: Sequence[Sequence[int]], targets: Sequence[int],
                   max_len: int = MAX_LEN, id_offset: int = 1) -> "Split":
        """Build from 0-based file indices (``id_offset`` = 1 turns them into ids)."""
        n = len(targets)
        seq = np.zeros((n, max_len), dtype=np.int64)
        length = np.zeros(n, dtype=np.int64)
        for i, h in enumerate(histories):
            h = list(h)[-max_len:]
            seq[i, : len(h)] = np.asarray(h, dtype=np.int64) + id_offset
            length[i] = len(h)
        return cls(np.asarray([str(u) for u in users], dtype=object), seq, length,
                   np.asarray(targets, dtype=np.int64) + id_offset)


def _err(path, msg, line: int | None = None) -> DataFormatError:
    where = f"{path}:{line}" if line is not None else f"{path}"
    return DataFormatError(f"{where}: {msg}")


def _require(path: Path) -> Path:
    if not path.is_file():
        raise _err(path, "file not found")
    return path


class _utf8_lines:
    """``open(path, encoding="utf-8")`` whose decoding errors name the file and the line."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.f = open(self.path, encoding="utf-8")
        return self.f

    def __exit__(self, typ, value, tb):
        self.f.close()
        if isinstance(value, UnicodeDecodeError):
            raise not_utf8(self.path, value) from None
        return False


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise not_utf8(path, e) from None


# ----------------------------------------------------------------------------- .inter
def _parse_token(tok: str, path, line: int, domain_items: Sequence[int] | None,
                 offsets: Sequence[int] | None, n_items: int | None) -> int:
    """Token -> 0-based global item index (plain 'idx' or corpus 'domain-idx')."""
    # Only the int() conversions sit in the try: DataFormatError is a ValueError, and the range
    # errors below must not be swallowed and reported as "not an integer".
    if offsets is not None:
        d, sep, i = tok.partition("-")
        try:
            if not sep:
                raise ValueError
            d, i = int(d), int(i)
        except ValueError:
            raise _err(path, f"item token '{tok}' is not '<domain>-<index>'", line) from None
        if not 0 <= d < len(offsets):
            raise _err(path, f"domain {d} of item token '{tok}' out of range (corpus has {len(offsets)} domains)", line)
        if not 0 <= i < domain_items[d]:
            raise _err(path, f"item index {i} of token '{tok}' out of range (domain {d} has {domain_items[d]} items)", line)
        return offsets[d] + i
    try:
        i = int(tok)
    except ValueError:
        raise _err(path, f"item token '{tok}' is not an integer index", line) from None
    if n_items is not None and not 0 <= i < n_items:
        raise _err(path, f"item index {i} out of range [0, {n_items})", line)
    return i


def read_inter(path: str | os.PathLike, n_items: int | None = None, max_len: int = MAX_LEN,
               domain_items: Sequence[int] | None = None) -> Split:
    """Read one ``.inter`` file. ``domain_items`` (items per domain) switches to corpus tokens."""
    path = _require(Path(path))
    offsets = None
    if domain_items is not None:
        offsets = np.concatenate([[0], np.cumsum(domain_items)[:-1]]).tolist()
    users, hists, targets = [], [], []
    for lineno, user, hist, target in inter_rows(path):
        h = [_parse_token(t, path, lineno, domain_items, offsets, n_items) for t in hist.split()]
        users.append(user)
        hists.append(h)
        targets.append(_parse_token(target, path, lineno, domain_items, offsets, n_items))
    return Split.from_lists(users, hists, targets, max_len=max_len)


def inter_rows(path: Path) -> Iterator[tuple[int, str, str, str]]:
    """``(line number, user, history, target)`` of each row of an ``.inter`` file (history and
    target stripped, the history not empty), the header and the field count checked: the one
    reader of the format's rows (read_inter, and the graph loader's streaming reader)."""
    with _utf8_lines(path) as f:
        header = f.readline().rstrip("\n").rstrip("\r")
        if header.split("\t") != INTER_HEADER.split("\t"):
            raise _err(path, f"bad header {header!r}; expected {INTER_HEADER!r}", 1)
        for lineno, line in enumerate(f, start=2):
            line = line.rstrip("\n").rstrip("\r")
            if not line:
                continue
            parts = line.split("\t")
            if len(parts) != 3:
                raise _err(path, f"expected 3 tab-separated fields, got {len(parts)}", lineno)
            user, hist, target = parts[0], parts[1].strip(), parts[2].strip()
            if not hist:
                raise _err(path, "empty history (item_id_list)", lineno)
            yield lineno, user, hist, target


def write_inter(path: str | os.PathLike, split: Split, domain_items: Sequence[int] | None = None) -> None:
    """Write a split back in the upstream layout (ids -> 0-based tokens)."""
    length = np.asarray(split.length)
    real = np.arange(split.seq.shape[1])[None, :] < length[:, None]
    ids_used = np.concatenate([np.asarray(split.seq)[real], np.asarray(split.target)])
    n = int(ids_used.max(initial=0))
    if len(ids_used) and int(ids_used.min()) < 1:
        raise DataFormatError(f"{path}: item id 0 (padding) or negative inside a history or target")
    # One token string per id, built once: rows then only join look-ups (fast for big corpora).
    idx = np.arange(n)
    if domain_items is None:
        vocab = [""] + [str(i) for i in idx.tolist()]
    else:
        offsets = np.concatenate([[0], np.cumsum(domain_items)])
        if n > offsets[-1]:
            raise DataFormatError(f"{path}: item id {n} beyond the corpus's {int(offsets[-1])} items")
        d = np.searchsorted(offsets, idx, side="right") - 1
        vocab = [""] + [f"{a}-{b}" for a, b in zip(d.tolist(), (idx - offsets[d]).tolist())]

    lines = [INTER_HEADER]
    for u, s, k, t in zip(split.user, np.asarray(split.seq).tolist(), length.tolist(),
                          np.asarray(split.target).tolist()):
        lines.append(f"{u}\t{' '.join([vocab[x] for x in s[:k]])}\t{vocab[t]}")
    atomic_write_text(path, "\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- index maps, text
def read_index_map(path: str | os.PathLike) -> list[str]:
    """``raw_id\\tindex`` lines -> list of raw ids in index order (indices must be 0..n-1)."""
    path = _require(Path(path))
    pairs = []
    with _utf8_lines(path) as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if not line:
                continue
            parts = line.split("\t")
            if len(parts) != 2:
                raise _err(path, "expected 'raw_id<TAB>index'", lineno)
            try:
                pairs.append((int(parts[1]), parts[0]))
            except ValueError:
                raise _err(path, f"index {parts[1]!r} is not an integer", lineno) from None
    pairs.sort()
    if [i for i, _ in pairs] != list(range(len(pairs))):
        raise _err(path, "indices must be exactly 0..n-1, each once")
    ids = [r for _, r in pairs]
    if len(set(ids)) != len(ids):  # two indices for one raw id: its interactions would be split silently
        _duplicate_id(path)
    return ids


def _duplicate_id(path: Path) -> None:
    """Raise the error naming the first line whose raw id already appeared (and that earlier line)."""
    first: dict[str, int] = {}
    with _utf8_lines(path) as f:
        for lineno, line in enumerate(f, start=1):
            raw = line.rstrip("\n").rstrip("\r").split("\t")[0]
            if not line.strip():
                continue
            if raw in first:
                raise _err(path, f"raw id {raw!r} appears twice (lines {first[raw]} and {lineno}); each raw id "
                                 f"needs exactly one index: remove the duplicate and renumber", lineno)
            first[raw] = lineno


def write_index_map(path: str | os.PathLike, raw_ids: Sequence[str]) -> None:
    atomic_write_text(path, "".join(f"{r}\t{i}\n" for i, r in enumerate(raw_ids)))


def read_text(path: str | os.PathLike) -> dict[str, str]:
    path = _require(Path(path))
    out = {}
    with _utf8_lines(path) as f:
        header = f.readline().rstrip("\n").rstrip("\r")
        if header.split("\t") != TEXT_HEADER.split("\t"):
            raise _err(path, f"bad header {header!r}; expected {TEXT_HEADER!r}", 1)
        for lineno, line in enumerate(f, start=2):
            line = line.rstrip("\n").rstrip("\r")
            if not line:
                continue
            raw, sep, text = line.partition("\t")
            if not sep:
                raise _err(path, "expected 'item_id<TAB>text'", lineno)
            out[raw] = text
    return out


def write_text(path: str | os.PathLike, raw_ids: Sequence[str], texts: Sequence[str]) -> None:
    clean = (t.replace("\t", " ").replace("\n", " ").replace("\r", " ") for t in texts)
    atomic_write_text(path, TEXT_HEADER + "\n" + "".join(f"{r}\t{t}\n" for r, t in zip(raw_ids, clean)))


# ----------------------------------------------------------------------------- features
def read_features(path: str | os.PathLike, n_items: int | None = None, dim: int | None = None,
                  check_finite: bool = True) -> np.memmap:
    """Memory-map a raw float32 ``[n_items, dim]`` feature file (no copy)."""
    path = _require(Path(path))
    size = path.stat().st_size
    if size == 0 or size % 4:
        raise _err(path, f"size {size} bytes is not a positive multiple of 4 (float32)")
    n_floats = size // 4
    if dim is None:
        if not n_items:
            raise _err(path, "cannot infer the feature dimension: give n_items or a meta.json")
        if n_floats % n_items:
            raise _err(path, f"{n_floats} floats do not split into {n_items} rows (one per item)")
        dim = n_floats // n_items
    if n_floats % dim:
        raise _err(path, f"size {size} bytes is not a multiple of the row size {dim * 4} bytes (dim {dim})")
    rows = n_floats // dim
    if n_items is not None and rows != n_items:
        raise _err(path, f"has {rows} rows of dim {dim} but the dataset has {n_items} items")
    arr = np.memmap(path, dtype="<f4", mode="r", shape=(rows, dim))
    if check_finite:
        step = max(1, (1 << 24) // max(dim, 1))
        for s in range(0, rows, step):
            block = np.asarray(arr[s:s + step])
            if not np.isfinite(block).all():
                r = s + int(np.argwhere(~np.isfinite(block))[0][0])
                raise _err(path, f"non-finite value in row {r} (item index {r})")
    return arr


def write_features(path: str | os.PathLike, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array, dtype="<f4")
    if array.ndim != 2:
        raise ValueError(f"{path}: features must be 2-D [n_items, dim], got shape {array.shape}")
    with atomic_path(path) as tmp:
        array.tofile(tmp)


# ----------------------------------------------------------------------------- meta.json
def read_meta(path: str | os.PathLike) -> dict | None:
    path = Path(path)
    if not path.is_file():
        return None
    try:
        meta = json.loads(_read_utf8(path))
    except json.JSONDecodeError as e:
        raise _err(path, f"not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise _err(path, "expected a JSON object")
    _check_meta(path, meta)
    return meta


def _whole(v, lo: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _check_meta(path: Path, meta: dict) -> None:
    """Type- and range-check the fields the loaders use, naming the key (before any allocation)."""
    def short(v) -> str:
        r = repr(v)
        return r if len(r) <= 60 else r[:57] + "..."
    for key in ("n_items", "n_users"):
        if meta.get(key) is not None and not _whole(meta[key], 0):
            raise _err(path, f"{key}: expected a whole number >= 0, got {short(meta[key])}; correct it "
                             f"(it is the line count of the .{key[2:-1]}2index file)")
    if "dims" in meta:
        dims = meta["dims"]
        if not isinstance(dims, dict):
            raise _err(path, f"dims: expected an object of feature file suffix: dimension (e.g. "
                             f"{{\"feat1CLS\": 512}}), got {short(dims)}")
        for suffix, d in dims.items():
            if not _whole(d, 1):
                raise _err(path, f"dims: {suffix}: expected a whole number >= 1 (the feature width), got {short(d)}")


# ----------------------------------------------------------------------------- whole folders
@dataclass
class AtomicDataset:
    """One dataset folder, loaded. Features are memory-mapped ``[n_items, d]`` arrays (file rows)."""

    name: str
    folder: Path
    item_ids: list[str]
    user_ids: list[str] | None
    splits: dict[str, Split]
    features: dict[str, np.memmap]  # keys: "text", "image", optional "text_aug"
    meta: dict | None = None
    domains: list[str] | None = None  # pretraining corpora only
    domain_items: list[int] | None = None

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def path(self, suffix: str) -> Path:
        return self.folder / f"{self.name}.{suffix}"

    def catalogue(self) -> dict:
        return catalogue(self.name, self.item_ids)


def catalogue(name: str, item_ids: Sequence[str]) -> dict:
    """What a transductive checkpoint records about the items its ID table was trained on."""
    digest = hashlib.sha256("\n".join(item_ids).encode("utf-8")).hexdigest()
    return {"name": name, "n_items": len(item_ids), "items_sha256": digest}


def dataset_folder(root: str | os.PathLike, name: str) -> Path:
    folder = Path(root) / name
    if not folder.is_dir():
        raise DataFormatError(f"{folder}: dataset folder not found")
    return folder


def load_dataset(root: str | os.PathLike, name: str, splits: Sequence[str] = SPLITS,
                 max_len: int = MAX_LEN, check_finite: bool = True,
                 require_features: Sequence[str] = ("text", "image")) -> AtomicDataset:
    """Load ``<root>/<name>/`` (a single domain, or a corpus if ``<name>.pt_datasets`` exists)."""
    folder = dataset_folder(root, name)
    meta_path = folder / f"{name}.meta.json"
    meta = read_meta(meta_path)
    pt = folder / f"{name}.pt_datasets"
    if pt.is_file():
        return _load_corpus(folder, name, pt, splits, max_len, check_finite, require_features, meta)

    item_ids = read_index_map(folder / f"{name}.item2index")
    n_items = len(item_ids)
    if meta is not None and meta.get("n_items") is not None and meta["n_items"] != n_items:
        raise _err(meta_path, f"n_items {meta['n_items']} != {n_items} lines in {name}.item2index")
    up = folder / f"{name}.user2index"
    user_ids = read_index_map(up) if up.is_file() else None
    loaded = {s: read_inter(folder / f"{name}.{s}.inter", n_items=n_items, max_len=max_len)
              for s in splits if s == "train" or (folder / f"{name}.{s}.inter").is_file()}
    for s in splits:
        if s not in loaded:
            raise _err(folder / f"{name}.{s}.inter", "file not found")
    feats = {}
    dims = (meta or {}).get("dims", {})
    for key, suffix in FEATURE_SUFFIXES.items():
        p = folder / f"{name}.{suffix}"
        if not p.is_file():
            if key in require_features:
                raise _err(p, "file not found")
            continue
        feats[key] = read_features(p, n_items=n_items, dim=dims.get(suffix), check_finite=check_finite)
    _require_rows(folder, name, loaded)
    return AtomicDataset(name, folder, item_ids, user_ids, loaded, feats, meta)


def _require_rows(folder: Path, name: str, loaded: dict[str, Split]) -> None:
    # An empty split would otherwise surface only after a full training epoch (or as zero metrics).
    for s, split in loaded.items():
        if len(split) == 0:
            raise _err(folder / f"{name}.{s}.inter", "has no rows (only the header): every split needs at "
                                                     "least one user; re-create the split files")


def _load_corpus(folder, name, pt, splits, max_len, check_finite, require_features, meta) -> AtomicDataset:
    domains = [d.strip() for d in _read_utf8(pt).replace("\n", ",").split(",") if d.strip()]
    if not domains:
        raise _err(pt, "lists no domains (expected comma-separated names)")
    dims = (meta or {}).get("dims", {})
    per_domain: dict[str, list[np.memmap]] = {}
    domain_items = []
    for d in domains:
        n_d = None
        ip = folder / f"{d}.item2index"
        if ip.is_file():
            n_d = len(read_index_map(ip))
        for key, suffix in FEATURE_SUFFIXES.items():
            p = folder / f"{d}.{suffix}"
            if not p.is_file():
                if key in require_features:
                    raise _err(p, f"file not found (features of corpus domain '{d}')")
                continue
            dim = dims.get(suffix, 512 if n_d is None else None)
            arr = read_features(p, n_items=n_d, dim=dim, check_finite=check_finite)
            n_d = arr.shape[0]
            per_domain.setdefault(key, []).append(arr)
        if n_d is None:
            raise _err(folder / f"{d}.item2index", "file not found (cannot size the domain)")
        domain_items.append(n_d)
    for key in ("text", "image"):
        # A modality some domains have and others lack is an error, not silently dropped.
        have = [d for d in domains if (folder / f"{d}.{FEATURE_SUFFIXES[key]}").is_file()]
        if have and len(have) < len(domains):
            lack = next(d for d in domains if d not in have)
            raise _err(folder / f"{lack}.{FEATURE_SUFFIXES[key]}",
                       f"file not found, while domain '{have[0]}' has {key} features (every domain of a corpus "
                       f"needs the same feature files)")
    feats = {k: _ConcatRows(v) for k, v in per_domain.items() if len(v) == len(domains)}
    item_ids = [f"{di}-{i}" for di, n in enumerate(domain_items) for i in range(n)]
    loaded = {}
    for s in splits:
        p = folder / f"{name}.{s}.inter"
        if s == "train" or p.is_file():
            loaded[s] = read_inter(p, max_len=max_len, domain_items=domain_items)
    _require_rows(folder, name, loaded)
    return AtomicDataset(name, folder, item_ids, None, loaded, feats, meta, domains, domain_items)


class _ConcatRows:
    """Row-concatenation of several memmaps without copying them (gather by global row)."""

    def __init__(self, parts: list[np.ndarray]):
        self.parts = parts
        self.offsets = np.concatenate([[0], np.cumsum([p.shape[0] for p in parts])])
        dims = {p.shape[1] for p in parts}
        if len(dims) != 1:
            raise DataFormatError(f"corpus domains have different feature dims {sorted(dims)}")
        self.shape = (int(self.offsets[-1]), dims.pop())
        self.dtype = np.float32

    def __len__(self):
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        out = np.concatenate([np.asarray(p) for p in self.parts], axis=0)
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, rows):
        rows = np.asarray(rows)
        out = np.empty(rows.shape + (self.shape[1],), dtype=np.float32)
        dom = np.searchsorted(self.offsets, rows, side="right") - 1
        for d, part in enumerate(self.parts):
            m = dom == d
            if m.any():
                out[m] = part[rows[m] - self.offsets[d]]
        return out


def write_dataset(root: str | os.PathLike, name: str, *, item_ids: Sequence[str],
                  splits: dict[str, Split], user_ids: Sequence[str] | None = None,
                  texts: Sequence[str] | None = None, features: dict[str, np.ndarray] | None = None,
                  encoder: dict | None = None, extra_meta: dict | None = None) -> Path:
    """Write a single-domain dataset folder (each file atomically) plus ``<name>.meta.json``."""
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    n_items = len(item_ids)
    for s, split in splits.items():
        if len(split) and (split.target.max() > n_items or split.seq.max() > n_items):
            raise DataFormatError(f"{name}.{s}.inter: item id beyond the {n_items} items")
        write_inter(folder / f"{name}.{s}.inter", split)
    write_index_map(folder / f"{name}.item2index", item_ids)
    if user_ids is not None:
        write_index_map(folder / f"{name}.user2index", user_ids)
    if texts is not None:
        write_text(folder / f"{name}.text", item_ids, texts)
    for key, arr in (features or {}).items():
        if arr.shape[0] != n_items:
            raise DataFormatError(f"{name}.{FEATURE_SUFFIXES[key]}: {arr.shape[0]} rows for {n_items} items")
        write_features(folder / f"{name}.{FEATURE_SUFFIXES[key]}", arr)
    write_meta(folder, name, n_items=n_items, n_users=None if user_ids is None else len(user_ids),
               encoder=encoder, extra=extra_meta)
    return folder


def write_meta(folder: str | os.PathLike, name: str, *, n_items: int, n_users: int | None = None,
               encoder: dict | None = None, extra: dict | None = None) -> dict:
    """(Re)write ``<name>.meta.json`` from the feature files present: dims and SHA-256 of each."""
    folder = Path(folder)
    meta_path = folder / f"{name}.meta.json"
    meta = read_meta(meta_path) or {}
    meta.update({"format": "missrec-atomic/1", "name": name, "n_items": int(n_items)})
    if n_users is not None:
        meta["n_users"] = int(n_users)
    dims, sums = {}, {}
    for suffix in FEATURE_SUFFIXES.values():
        p = folder / f"{name}.{suffix}"
        if p.is_file():
            dims[suffix] = p.stat().st_size // 4 // max(n_items, 1)
            sums[suffix] = sha256_file(p)
    meta["dims"], meta["sha256"] = dims, sums
    if encoder is not None:
        meta["encoder"] = encoder
    meta.update(extra or {})
    atomic_write_json(meta_path, meta)
    return meta
