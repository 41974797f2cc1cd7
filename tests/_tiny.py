"""Tiny random datasets for model/training tests (structure does not matter here, only shapes)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from missrec.data.atomic import Split, write_features, write_index_map, write_inter, write_dataset


def _sequences(rng, n_users, n_items, lo=3, hi=12):
    return [rng.integers(0, n_items, size=rng.integers(lo, hi)).tolist() for _ in range(n_users)]


def _splits(seqs, users, max_len=50):
    tr, va, te = ([], [], []), ([], [], []), ([], [], [])
    for u, s in zip(users, seqs):
        for t in range(1, len(s) - 2):
            tr[0].append(u); tr[1].append(s[max(0, t - max_len):t]); tr[2].append(s[t])
        va[0].append(u); va[1].append(s[:-2][-max_len:]); va[2].append(s[-2])
        te[0].append(u); te[1].append(s[:-1][-max_len:]); te[2].append(s[-1])
    return {k: Split.from_lists(*v, max_len=max_len) for k, v in zip(("train", "valid", "test"), (tr, va, te))}


def make_domain(root, name="tiny", n_items=30, n_users=25, dim=16, seed=0, aug=False) -> Path:
    rng = np.random.default_rng(seed)
    seqs = _sequences(rng, n_users, n_items)
    feats = {"text": rng.normal(size=(n_items, dim)).astype(np.float32),
             "image": rng.normal(size=(n_items, dim)).astype(np.float32)}
    feats["image"][0] = 0  # a missing modality
    if aug:
        feats["text_aug"] = feats["text"] + 0.1 * rng.normal(size=(n_items, dim)).astype(np.float32)
    return write_dataset(root, name, item_ids=[f"I{i}" for i in range(n_items)],
                         user_ids=[f"U{u}" for u in range(n_users)],
                         splits=_splits(seqs, [str(u) for u in range(n_users)]),
                         texts=[f"item {i}" for i in range(n_items)], features=feats)


def make_corpus(root, name="tinypt", n_domains=2, n_items=30, n_users=40, dim=16, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    domains = [f"dom{d}" for d in range(n_domains)]
    (folder / f"{name}.pt_datasets").write_text(",".join(domains))
    users, seqs = [], []
    for d, dom in enumerate(domains):
        write_index_map(folder / f"{dom}.item2index", [f"{dom}-I{i}" for i in range(n_items)])
        for key, suf in (("text", "feat1CLS"), ("image", "feat3CLS"), ("aug", "feat2CLS")):
            write_features(folder / f"{dom}.{suf}", rng.normal(size=(n_items, dim)).astype(np.float32))
        for u in range(n_users):
            users.append(f"{d}-{u}")
            seqs.append([d * n_items + i for i in _sequences(rng, 1, n_items)[0]])
    sp = _splits(seqs, users)
    domain_items = [n_items] * n_domains
    write_inter(folder / f"{name}.train.inter", sp["train"], domain_items=domain_items)
    write_inter(folder / f"{name}.valid.inter", sp["valid"], domain_items=domain_items)
    return folder
