"""The data every graph baseline trains on: a user x item training graph, held-out items, features.

Three on-disk layouts load into one :class:`GraphData`:

* MMSSL's folder (``train.json`` / ``val.json`` / ``test.json`` = ``{"uid": [items]}`` plus
  ``image_feat.npy``, ``text_feat.npy`` and any other ``<name>_feat.npy``). MMSSL also ships a
  pickled ``train_mat``; it is never read: the matrix is rebuilt from ``train.json``.
* SLMRec's ``<name>.train`` / ``<name>.test`` (CSV ``user,item``, no header) plus
  ``<name>_FeatureVideo_normal.npy`` etc. SLMRec has no validation split: one is carved from the
  training pairs, seeded, and recorded in :attr:`GraphData.info`.
* This project's atomic dataset folders (:func:`missrec.data.atomic.load_dataset`), so the same
  dataset can be given to MISSRec and to the graph models.

Items and users are 0-based here (the atomic layout's item ids are file index + 1; we subtract 1).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..data.atomic import DataFormatError
from ..errors import DataError, OptionError


@dataclass
class GraphData:
    """A training graph in CSR form plus per-user held-out items and per-modality item features.

    ``train_indices[train_indptr[u]:train_indptr[u + 1]]`` are user ``u``'s training items (sorted,
    distinct). ``valid[u]`` / ``test[u]`` hold the user's held-out items (possibly empty).
    ``features[m]`` is a float32 ``[n_items, d_m]`` array per modality. ``info`` records how the
    data was made (source files, a carved validation split's seed and ratio).
    """

    n_users: int
    n_items: int
    train_indptr: np.ndarray
    train_indices: np.ndarray
    valid: list
    test: list
    features: dict = field(default_factory=dict)
    name: str = ""
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.train_indptr = np.asarray(self.train_indptr, dtype=np.int64)
        self.train_indices = np.asarray(self.train_indices, dtype=np.int64)
        if self.train_indptr.shape != (self.n_users + 1,) or self.train_indptr[0] != 0 \
                or self.train_indptr[-1] != len(self.train_indices) or np.any(np.diff(self.train_indptr) < 0):
            raise DataError(f"{self.name}: train_indptr must be a non-decreasing [n_users + 1] array "
                             f"from 0 to len(train_indices)")
        if len(self.train_indices) and (self.train_indices.min() < 0 or self.train_indices.max() >= self.n_items):
            raise DataError(f"{self.name}: train item ids must lie in 0..{self.n_items - 1}")
        for split in ("valid", "test"):
            rows = getattr(self, split)
            if len(rows) != self.n_users:
                raise DataError(f"{self.name}: {split} must hold one item array per user "
                                 f"({self.n_users}), got {len(rows)}")
            rows = [np.asarray(r, dtype=np.int64).reshape(-1) for r in rows]
            for r in rows:
                if len(r) and (r.min() < 0 or r.max() >= self.n_items):
                    raise DataError(f"{self.name}: {split} item ids must lie in 0..{self.n_items - 1}")
            setattr(self, split, rows)
        for k, f in self.features.items():
            if f.ndim != 2 or f.shape[0] != self.n_items:
                raise DataError(f"{self.name}: feature '{k}' must be [n_items={self.n_items}, d], got {f.shape}")

    # -------------------------------------------------------------------------------- building
    @classmethod
    def from_pairs(cls, n_users: int, n_items: int, users, items, valid, test, features=None, name="", info=None):
        """Build from (user, item) training pairs; duplicates are dropped, rows sorted."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        if len(users) and (users.min() < 0 or users.max() >= n_users):
            raise DataError(f"{name}: train user ids must lie in 0..{n_users - 1}")
        if len(items) and (items.min() < 0 or items.max() >= n_items):
            raise DataError(f"{name}: train item ids must lie in 0..{n_items - 1}")
        key = np.unique(users * n_items + items)
        u, i = key // n_items, key % n_items
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(u, minlength=n_users), out=indptr[1:])
        feats = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in (features or {}).items()}
        return cls(n_users, n_items, indptr, i, list(valid), list(test), feats, name, dict(info or {}))

    # -------------------------------------------------------------------------------- views
    @property
    def n_train(self) -> int:
        return len(self.train_indices)

    def user_degrees(self) -> np.ndarray:
        return np.diff(self.train_indptr)

    def train_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(users, items) int64 arrays of every training interaction (user-major, items sorted)."""
        users = np.repeat(np.arange(self.n_users, dtype=np.int64), self.user_degrees())
        return users, self.train_indices.copy()

    def train_items(self, u: int) -> np.ndarray:
        return self.train_indices[self.train_indptr[u]:self.train_indptr[u + 1]]

    def train_csr_torch(self, device=None) -> torch.Tensor:
        """The training matrix R as a coalesced torch sparse COO float tensor ``[n_users, n_items]``."""
        u, i = self.train_pairs()
        idx = torch.from_numpy(np.stack([u, i]))
        r = torch.sparse_coo_tensor(idx, torch.ones(len(u)), (self.n_users, self.n_items), check_invariants=False).coalesce()
        return r.to(device) if device is not None else r

    def with_valid_observed(self) -> "GraphData":
        """The same data with every user's validation items added to the training graph.

        Used at test time under the sequential leave-one-out protocol, where the test item comes
        after the validation item and the test-time history includes it: the models propagate
        over (and the evaluator masks) train + valid, without retraining. ``info["graph"]`` says
        which edges the graph holds."""
        u, i = self.train_pairs()
        vu = np.repeat(np.arange(self.n_users, dtype=np.int64), [len(v) for v in self.valid])
        vi = np.concatenate(self.valid) if self.n_users else np.zeros(0, np.int64)
        return GraphData.from_pairs(self.n_users, self.n_items, np.concatenate([u, vu]), np.concatenate([i, vi]),
                                    self.valid, self.test, self.features, self.name,
                                    {**self.info, "graph": "train+valid"})

    def split(self, name: str) -> list:
        if name not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test', got {name!r}")
        return getattr(self, name)

    def stats(self) -> dict:
        return {"name": self.name, "users": self.n_users, "items": self.n_items, "train": self.n_train,
                "valid": int(sum(len(v) for v in self.valid)), "test": int(sum(len(t) for t in self.test)),
                "features": {k: int(v.shape[1]) for k, v in self.features.items()}}


# ------------------------------------------------------------------------------------ helpers
def _read_npy(path: Path, n_items: int | None = None) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)  # never unpickle: .npy of plain floats only
    except (OSError, ValueError) as e:
        raise DataFormatError(f"{path}: not a plain numeric .npy array ({e})") from None
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise DataFormatError(f"{path}: expected a numeric [n_items, d] array, got {arr.dtype} {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise DataFormatError(f"{path}: holds NaN or infinite values")
    if n_items is not None and arr.shape[0] != n_items:
        raise DataFormatError(f"{path}: {arr.shape[0]} rows, expected one per item ({n_items})")
    return arr


def _read_user_json(path: Path) -> dict[int, list[int]]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFormatError(f"{path}: file not found") from None
    except (OSError, ValueError) as e:
        raise DataFormatError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise DataFormatError(f'{path}: expected a JSON object {{"user id": [item ids]}}')
    out = {}
    for k, v in raw.items():
        try:
            u = int(k)
            items = [int(x) for x in v]
        except (TypeError, ValueError):
            raise DataFormatError(f"{path}: user {k!r}: expected an integer user id and a list of integer item ids") from None
        if u < 0 or any(i < 0 for i in items):
            raise DataFormatError(f"{path}: user {k!r}: ids must be >= 0")
        out[u] = items
    return out


def _per_user(d: dict[int, list[int]], n_users: int) -> list[np.ndarray]:
    rows = [np.zeros(0, dtype=np.int64) for _ in range(n_users)]
    for u, items in d.items():
        rows[u] = np.unique(np.asarray(items, dtype=np.int64))
    return rows


# ------------------------------------------------------------------------------------ MMSSL
MMSSL_FEATURES = {"image": "image_feat.npy", "text": "text_feat.npy"}


def load_mmssl(folder: str | os.PathLike, name: str | None = None) -> GraphData:
    """MMSSL's dataset folder. ``n_items`` = max item id + 1 over the three files (or the feature
    rows, if more); ``n_users`` = max user id + 1 over the three files. Every ``*_feat.npy`` is a
    modality: ``image_feat.npy`` -> "image", ``text_feat.npy`` -> "text", ``audio_feat.npy`` -> "audio"."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataFormatError(f"{folder}: dataset folder not found")
    splits = {s: _read_user_json(folder / f"{s}.json") for s in ("train", "val", "test")}
    users = [u for d in splits.values() for u in d]
    items = [i for d in splits.values() for v in d.values() for i in v]
    if not splits["train"] or not any(splits["train"].values()):
        raise DataFormatError(f"{folder / 'train.json'}: no training interactions")
    n_users = max(users) + 1
    n_items = max(items) + 1
    paths = sorted(folder.glob("*_feat.npy"))
    for key, fn in MMSSL_FEATURES.items():
        if not (folder / fn).is_file():
            raise DataFormatError(f"{folder / fn}: file not found (MMSSL needs image and text features)")
    feats = {}
    for p in paths:
        arr = _read_npy(p)
        if arr.shape[0] < n_items:
            raise DataFormatError(f"{p}: {arr.shape[0]} rows, but the interaction files use item ids up to {n_items - 1}")
        feats[p.name[: -len("_feat.npy")]] = arr
    n_items = max(a.shape[0] for a in feats.values())
    for p in paths:
        if feats[p.name[: -len("_feat.npy")]].shape[0] != n_items:
            raise DataFormatError(f"{p}: {feats[p.name[:-9]].shape[0]} rows, other feature files have {n_items}")
    tu = np.concatenate([np.full(len(v), u, dtype=np.int64) for u, v in splits["train"].items()])
    ti = np.concatenate([np.asarray(v, dtype=np.int64) for v in splits["train"].values()])
    return GraphData.from_pairs(n_users, n_items, tu, ti, _per_user(splits["val"], n_users),
                                _per_user(splits["test"], n_users), feats, name or folder.name,
                                {"format": "mmssl", "folder": str(folder)})


# ------------------------------------------------------------------------------------ SLMRec
SLMREC_FEATURES = {"visual": "FeatureVideo_normal", "audio": "FeatureAudio_avg_normal", "text": "FeatureText_stl_normal"}


def _read_pairs(path: Path, sep: str) -> np.ndarray:
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(sep)
            try:
                rows.append((int(parts[0]), int(parts[1])))
            except (ValueError, IndexError):
                raise DataFormatError(f"{path}:{n}: expected 'user{sep}item' (integers), got {line[:60]!r}") from None
    if not rows:
        raise DataFormatError(f"{path}: no interactions")
    return np.asarray(rows, dtype=np.int64)


def carve_validation(users: np.ndarray, items: np.ndarray, ratio: float, seed: int) -> np.ndarray:
    """Boolean mask of the training pairs moved to validation: per user with >= 2 pairs,
    ``max(1, round(ratio * n))`` of them (at most n - 1), chosen by a seeded permutation."""
    if not 0.0 <= ratio < 1.0:
        raise OptionError(f"valid_ratio must lie in [0, 1), got {ratio}")
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(users)), users))  # users grouped, random order inside
    su = users[order]
    start = np.r_[0, np.flatnonzero(np.diff(su)) + 1]
    counts = np.diff(np.r_[start, len(su)])
    take = np.where(counts >= 2, np.minimum(np.maximum(1, np.rint(ratio * counts)), counts - 1), 0).astype(np.int64)
    if ratio == 0.0:
        take[:] = 0
    pos = np.arange(len(su)) - np.repeat(start, counts)
    mask = np.zeros(len(users), dtype=bool)
    mask[order] = pos < np.repeat(take, counts)
    return mask


def load_slmrec(folder: str | os.PathLike, name: str, valid_ratio: float = 0.1, seed: int = 2021,
                sep: str = ",") -> GraphData:
    """SLMRec's ``<name>.train`` / ``<name>.test`` pairs and ``<name>_Feature*.npy`` features.

    Ids are remapped over train then test in order of first appearance (as SLMRec does); feature
    rows are indexed by the raw item id. A validation split is carved from train
    (:func:`carve_validation`) and recorded in ``info``."""
    folder = Path(folder)
    tr = _read_pairs(folder / f"{name}.train", sep)
    te = _read_pairs(folder / f"{name}.test", sep)
    both = np.concatenate([tr, te])
    raw_users, uidx = np.unique(both[:, 0], return_index=True)
    raw_items, iidx = np.unique(both[:, 1], return_index=True)
    # Order of first appearance, like pandas' unique().
    user_order = raw_users[np.argsort(uidx, kind="stable")]
    item_order = raw_items[np.argsort(iidx, kind="stable")]
    umap = {int(r): k for k, r in enumerate(user_order)}
    imap = {int(r): k for k, r in enumerate(item_order)}
    n_users, n_items = len(umap), len(imap)
    tu = np.fromiter((umap[int(x)] for x in tr[:, 0]), np.int64, len(tr))
    ti = np.fromiter((imap[int(x)] for x in tr[:, 1]), np.int64, len(tr))
    eu = np.fromiter((umap[int(x)] for x in te[:, 0]), np.int64, len(te))
    ei = np.fromiter((imap[int(x)] for x in te[:, 1]), np.int64, len(te))
    key = np.unique(tu * n_items + ti)  # duplicate pairs would leak into validation otherwise
    tu, ti = key // n_items, key % n_items
    vmask = carve_validation(tu, ti, valid_ratio, seed)
    feats = {}
    for key_, stem in SLMREC_FEATURES.items():
        p = folder / f"{name}_{stem}.npy"
        if p.is_file():
            arr = _read_npy(p)
            if arr.shape[0] <= int(item_order.max()):
                raise DataFormatError(f"{p}: {arr.shape[0]} rows, but raw item ids reach {int(item_order.max())}")
            feats[key_] = arr[item_order]
    if not feats:
        raise DataFormatError(f"{folder}: no feature file {name}_{{{','.join(SLMREC_FEATURES.values())}}}.npy")

    def rows(u, i):
        out = [[] for _ in range(n_users)]
        for a, b in zip(u.tolist(), i.tolist()):
            out[a].append(b)
        return [np.asarray(sorted(set(r)), dtype=np.int64) for r in out]

    info = {"format": "slmrec", "folder": str(folder), "valid_ratio": valid_ratio, "valid_seed": seed,
            "valid_pairs": int(vmask.sum()), "user_ids": [int(x) for x in user_order],
            "item_ids": [int(x) for x in item_order]}
    return GraphData.from_pairs(n_users, n_items, tu[~vmask], ti[~vmask], rows(tu[vmask], ti[vmask]), rows(eu, ei),
                                feats, name, info)


# ------------------------------------------------------------------------------------ atomic
def _covers(known: str, hist: str) -> bool:
    """Whether the tokens of ``hist`` are the last tokens of ``known`` (whole tokens only)."""
    n = len(known) - len(hist)
    return known.endswith(hist) and (n == 0 or (n > 0 and known[n - 1] == " "))


class _EdgeBuffer:
    """Training keys ``user * n_items + item``, de-duplicated whenever more than ``flush`` have
    accumulated, so memory stays proportional to the distinct interactions."""

    def __init__(self, n_items: int, flush: int = 1 << 20):
        self.n_items, self.flush = n_items, flush
        self.parts: list[np.ndarray] = []
        self.pending: list[int] = []
        self.size = 0

    def add_one(self, user: int, item: int) -> None:
        self.pending.append(user * self.n_items + item)
        self.size += 1
        if self.size > self.flush:
            self._compact()

    def add(self, user: int, items: np.ndarray) -> None:
        self.parts.append(user * self.n_items + items)
        self.size += len(items)
        if self.size > self.flush:
            self._compact()

    def _compact(self) -> None:
        self.parts = [self.keys()]
        self.pending = []
        self.size = len(self.parts[0])
        self.flush = max(self.flush, 2 * self.size)

    def keys(self) -> np.ndarray:
        parts = self.parts + [np.asarray(self.pending, dtype=np.int64)]
        return np.unique(np.concatenate(parts))


class _InterTokens:
    """Item tokens of one ``.inter`` file -> 0-based item indices, every token checked as
    :func:`missrec.data.atomic.read_inter` checks it (errors name the file and line)."""

    def __init__(self, path: Path, n_items: int, domain_items: Sequence[int] | None):
        from ..data.atomic import _parse_token

        self.path, self.n_items, self.domain_items, self._parse = path, n_items, domain_items, _parse_token
        self.offsets = None if domain_items is None else np.r_[0, np.cumsum(domain_items)[:-1]].tolist()

    def one(self, tok: str, line: int) -> int:
        if self.offsets is None:
            try:
                i = int(tok)
                if 0 <= i < self.n_items:
                    return i
            except ValueError:
                pass
        return self._parse(tok, self.path, line, self.domain_items, self.offsets, self.n_items)

    def items(self, text: str, line: int) -> np.ndarray:
        toks = text.split()
        if self.offsets is None:
            try:
                out = np.array(toks, dtype=np.int64)  # C-speed parse; any bad token -> exact error below
                if not len(out) or (out.min() >= 0 and out.max() < self.n_items):
                    return out
            except (ValueError, OverflowError):
                pass
        return np.array([self._parse(t, self.path, line, self.domain_items, self.offsets, self.n_items)
                         for t in toks], dtype=np.int64)


def read_atomic_graph(folder: Path, name: str, n_items: int, domain_items: Sequence[int] | None = None):
    """Stream ``<name>.{train,valid,test}.inter`` into user ids, training keys and held-out items.

    Returns ``(user_tokens, train_keys, valid, test)``: user tokens in order of first appearance
    (train, valid, test), the sorted distinct keys ``user * n_items + item`` of the training graph
    (every item of the train rows' histories and targets and of the valid rows' histories), and
    per user the sorted held-out valid / test items.

    Nothing is padded. A history is parsed only when its items are not already known: the
    layout's rows of one user follow each other (history + target of one row = the next row's
    history, or that with its oldest items dropped when histories are capped), so per user we
    keep the last row's ``"history target"`` string and skip a history that is its tail (a string
    comparison, whole tokens only); any other history is parsed. Keys are de-duplicated as they
    accumulate. Time is linear in the files' size, memory in the distinct interactions."""
    from ..data.atomic import _err, _require, inter_rows

    users: dict[str, int] = {}
    edges = _EdgeBuffer(n_items)
    held: dict[str, list[tuple[int, int]]] = {"valid": [], "test": []}
    known: dict[int, str] = {}  # user -> tokens (space-joined) all of which are training edges
    for split in ("train", "valid", "test"):
        path = _require(folder / f"{name}.{split}.inter")
        tokens = _InterTokens(path, n_items, domain_items)
        rows = 0
        for lineno, user, hist, target in inter_rows(path):
            u = users.setdefault(user, len(users))
            t = tokens.one(target, lineno)
            rows += 1
            if split == "test":  # its history holds the validation target: not a training edge
                tokens.items(hist, lineno)  # still checked
                held[split].append((u, t))
                continue
            prev = known.get(u)
            if prev is None or not _covers(prev, hist):
                edges.add(u, tokens.items(hist, lineno))
            if split == "train":
                edges.add_one(u, t)
                known[u] = f"{hist} {target}"
            else:
                held[split].append((u, t))
        if rows == 0:
            raise _err(path, "has no rows (only the header): every split needs at least one user; "
                             "re-create the split files")
    out = {}
    for split, pairs in held.items():
        rows_ = [[] for _ in range(len(users))]
        for u, i in pairs:
            rows_[u].append(i)
        out[split] = [np.unique(np.asarray(r, dtype=np.int64)) for r in rows_]
    return list(users), edges.keys(), out["valid"], out["test"]


def load_atomic(root: str | os.PathLike, name: str, max_len: int | None = None,
                modalities: Sequence[str] | None = ("text", "image")) -> GraphData:
    """One of this project's dataset folders. The training graph holds every item of the train
    rows (histories and targets) and of the validation rows' histories: with the leave-one-out
    layout that is each user's ``items[:-2]``, i.e. exactly what MISSRec trains on, including
    users too short to have a train row. Valid/test targets are the held-out items.

    The ``.inter`` files are streamed (:func:`read_atomic_graph`), never padded into
    ``[rows, max_len]`` arrays: memory is proportional to the interactions. ``max_len`` is
    accepted for compatibility and ignored (every history item is an edge). ``modalities=None``
    loads whichever of ``text`` and ``image`` the folder has (``text_aug``, the pretraining
    augmentation, is never a modality unless named)."""
    from ..data.atomic import load_dataset

    require = tuple(modalities) if modalities is not None else ()
    ds = load_dataset(root, name, splits=(), require_features=require)  # item map, meta, features only
    user_tokens, keys, valid, test = read_atomic_graph(ds.folder, name, ds.n_items, ds.domain_items)
    n_users, n_items = len(user_tokens), ds.n_items
    mods = require if modalities is not None else tuple(m for m in ("text", "image") if m in ds.features)
    feats = {m: np.asarray(ds.features[m], dtype=np.float32) for m in mods}
    return GraphData.from_pairs(n_users, n_items, keys // n_items, keys % n_items, valid, test,
                                feats, name, {"format": "atomic", "folder": str(ds.folder), "user_ids": user_tokens})
