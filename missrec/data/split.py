"""The evaluation protocol's data side, once: k-core filtering and the leave-one-out split.

The Amazon and MovieLens converters (missrec/features/amazon.py, missrec/features/movielens.py)
and the embedded sample (missrec/data/sample.py) all split through :func:`leave_one_out`, so every
dataset folder follows the same protocol (they agree row for row:
tests/test_settings.py::test_sample_and_both_converters_split_alike):

* each user's items in time order ``items[0..n-1]``;
* train: one row per prefix of ``items[:-2]`` with at least one item (targets ``items[1..n-3]``);
* valid: history ``items[:-2]``, target ``items[-2]`` (users with >= 3 items);
* test: history ``items[:-1]``, target ``items[-1]`` (users with >= 2 items);
* every history keeps its last ``max_len`` items.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from .atomic import MAX_LEN

SPLITS = ("train", "valid", "test")


def kcore(users: np.ndarray, items: np.ndarray, k: int, n_users: int | None = None,
          n_items: int | None = None) -> tuple[np.ndarray, int]:
    """Mask of the interactions in the k-core (every kept user and item has >= k of them), iterated
    to a fixed point, and the number of rounds that took. ``users``/``items`` are 0-based indices."""
    users, items = np.asarray(users), np.asarray(items)
    n_users = int(users.max(initial=-1)) + 1 if n_users is None else n_users
    n_items = int(items.max(initial=-1)) + 1 if n_items is None else n_items
    mask = np.ones(len(users), dtype=bool)
    rounds = 0
    while True:
        rounds += 1
        cu = np.bincount(users[mask], minlength=n_users)
        ci = np.bincount(items[mask], minlength=n_items)
        new = mask & (cu[users] >= k) & (ci[items] >= k)
        if new.sum() == mask.sum():
            return mask, rounds
        mask = new


@dataclass
class Rows:
    """One split's rows over a flat item array: row r is user ``user[r]``, history
    ``items[start[r]:start[r] + length[r]]`` and target ``items[target[r]]`` (positions in the array)."""

    user: np.ndarray
    start: np.ndarray
    length: np.ndarray
    target: np.ndarray

    def __len__(self) -> int:
        return len(self.user)


def leave_one_out(bounds: Sequence[int], max_len: int) -> dict[str, Rows]:
    """The leave-one-out rows of the sequences ``items[bounds[u]:bounds[u + 1]]`` (user u, oldest
    first), per split, ordered by user and then by position (see the module docstring)."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    bounds = np.asarray(bounds, dtype=np.int64)
    lens = np.diff(bounds)
    users = np.arange(len(lens))
    n_train = np.maximum(lens - 3, 0)
    tr_user = np.repeat(users, n_train)
    tr_k = np.arange(n_train.sum()) - np.repeat(np.cumsum(n_train) - n_train, n_train) + 1
    out = {}
    for split, user, k in (("train", tr_user, tr_k), ("valid", users[lens >= 3], lens[lens >= 3] - 2),
                           ("test", users[lens >= 2], lens[lens >= 2] - 1)):
        h = np.minimum(k, max_len)
        out[split] = Rows(user=user, start=bounds[user] + k - h, length=h, target=bounds[user] + k)
    return out


def split_rows(seq: Sequence[int], max_len: int = MAX_LEN) -> Iterator[tuple[str, list, object]]:
    """One sequence's rows as ``(split, history, target)``: train rows, then valid, then test."""
    seq = list(seq)
    rows = leave_one_out([0, len(seq)], max_len)
    for split in SPLITS:
        r = rows[split]
        for s, h, t in zip(r.start.tolist(), r.length.tolist(), r.target.tolist()):
            yield split, seq[s:s + h], seq[t]


def padded(items: np.ndarray, rows: Rows, max_len: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``rows`` as padded arrays ``(seq [R, max_len], length [R], target [R])``: ``seq[r, :length[r]]``
    is the history plus ``offset`` (0-based indices -> ids), the rest 0."""
    items = np.asarray(items, dtype=np.int64)
    pos = np.arange(max_len)[None, :]
    inside = pos < rows.length[:, None]
    src = np.clip(rows.start[:, None] + pos, 0, max(len(items) - 1, 0))
    seq = np.where(inside, items[src] + offset, 0) if len(items) else np.zeros((len(rows), max_len), np.int64)
    return seq.astype(np.int64), rows.length.astype(np.int64), (items[rows.target] + offset).astype(np.int64)


def write_rows(files: dict, items: np.ndarray, bounds: Sequence[int], max_len: int, user_tok, item_tok) -> dict:
    """Write the leave-one-out rows as ``user<TAB>history<TAB>target`` lines to ``files[split]`` (the
    splits present); ``user_tok(u)`` / ``item_tok(i)`` give the tokens. Returns rows written per split."""
    items = np.asarray(items)
    rows = leave_one_out(bounds, max_len)
    for split, f in files.items():
        r = rows[split]
        for u, s, h, t in zip(r.user.tolist(), r.start.tolist(), r.length.tolist(), r.target.tolist()):
            hist = " ".join(item_tok(x) for x in items[s:s + h].tolist())
            f.write(f"{user_tok(u)}\t{hist}\t{item_tok(int(items[t]))}\n")
    return {split: len(rows[split]) for split in files}
