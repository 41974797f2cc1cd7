"""Graph baselines' building blocks: sparse normalisation/propagation against dense references,
the multi-item evaluator against hand-computed metrics, the three data layouts, the samplers."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from missrec.evaluate import compute_ranks, metrics_from_ranks
from missrec.graph.base import lightgcn_layers, sample_bpr_batches
from missrec.graph.data import DataFormatError, GraphData, carve_validation, load_atomic, load_mmssl, load_slmrec
from missrec.graph.evaluate import evaluate_multi
from missrec.graph.sparse import from_pairs, normalized_adjacency, propagate, row_normalized, transpose


def _tiny_r():
    # 3 users x 4 items; item 3 has no interactions, user 2 one.
    dense = torch.tensor([[1., 1., 0., 0.], [0., 1., 1., 0.], [1., 0., 0., 0.]])
    return dense, dense.to_sparse()


def test_symmetric_adjacency_matches_dense_reference():
    dense, r = _tiny_r()
    a = torch.zeros(7, 7)
    a[:3, 3:] = dense
    a[3:, :3] = dense.T
    deg = a.sum(1)
    dinv = torch.where(deg > 0, deg.pow(-0.5), torch.zeros_like(deg))
    want = dinv[:, None] * a * dinv[None, :]
    got = normalized_adjacency(r)
    assert torch.allclose(got.to_dense(), want)
    x = torch.randn(7, 5)
    assert torch.allclose(propagate(got, x), want @ x, atol=1e-6)
    # LightGCN: mean of layers 0..L
    ref = (x + want @ x + want @ want @ x) / 3
    assert torch.allclose(lightgcn_layers(got, x, 2), ref, atol=1e-6)
    mean = normalized_adjacency(r, "mean").to_dense()
    assert torch.allclose(mean, torch.where(deg[:, None] > 0, a / deg.clamp(min=1)[:, None], a))
    with pytest.raises(ValueError):
        normalized_adjacency(r, "bogus")
    with pytest.raises(TypeError):
        normalized_adjacency(dense)


def test_one_sided_normalisation_matches_dense_reference():
    dense, r = _tiny_r()
    du = dense.sum(1) + 1e-8
    assert torch.allclose(row_normalized(r).to_dense(), du.pow(-0.5)[:, None] * dense)
    di = dense.sum(0) + 1e-8
    assert torch.allclose(row_normalized(transpose(r)).to_dense(), di.pow(-0.5)[:, None] * dense.T)
    m = from_pairs(torch.tensor([0, 0, 2]), torch.tensor([1, 1, 3]), (3, 4))
    assert m.to_dense()[0, 1] == 2 and m.to_dense()[2, 3] == 1 and m._nnz() == 2


def _hand_metrics(scores, truth, masked, k, legacy=False, kmax=None):
    """Straight from the definitions: sort, cut at K, count (legacy: the ideal DCG is over the hits
    within the top ``kmax`` = max(ks), cut at K, as MMSSL's batch_test.py + metrics.py)."""
    out = {"recall": [], "precision": [], "ndcg": [], "hit": []}
    for u, gt in enumerate(truth):
        if not len(gt):
            continue
        s = scores[u].copy()
        s[list(masked[u])] = -np.inf
        ranked = [i for i in np.argsort(-s, kind="stable") if i not in masked[u]]
        order = ranked[:k]
        rel = [1.0 if i in set(gt) else 0.0 for i in order]
        hits = sum(rel)
        dcg = sum(r / math.log2(j + 2) for j, r in enumerate(rel))
        hits_kmax = sum(1 for i in ranked[:kmax or k] if i in set(gt))
        n_ideal = min(hits_kmax, k) if legacy else min(len(gt), k)
        idcg = sum(1 / math.log2(j + 2) for j in range(n_ideal))
        out["recall"].append(hits / len(gt))
        out["precision"].append(hits / k)
        out["ndcg"].append(dcg / idcg if idcg else 0.0)
        out["hit"].append(float(hits > 0))
    return {f"{m}@{k}": float(np.mean(v)) for m, v in out.items()}


@pytest.mark.parametrize("legacy", [False, True])
def test_multi_item_metrics_match_hand_computation(legacy):
    rng = np.random.default_rng(0)
    n_users, n_items, d = 12, 40, 6
    ue, ie = rng.normal(size=(n_users, d)).astype(np.float32), rng.normal(size=(n_items, d)).astype(np.float32)
    scores = ue @ ie.T
    masked = [set(rng.choice(n_items, size=rng.integers(0, 6), replace=False).tolist()) for _ in range(n_users)]
    truth = []
    for u in range(n_users):
        free = [i for i in range(n_items) if i not in masked[u]]
        truth.append(np.sort(rng.choice(free, size=rng.integers(0, 5), replace=False)).astype(np.int64))
    indptr = np.r_[0, np.cumsum([len(m) for m in masked])]
    indices = np.concatenate([sorted(m) for m in masked]).astype(np.int64)
    got = evaluate_multi(torch.from_numpy(ue), torch.from_numpy(ie), np.arange(n_users), truth, (indptr, indices),
                         ks=(3, 5, 10), ndcg="legacy" if legacy else "standard", batch_size=5)
    for k in (3, 5, 10):
        want = _hand_metrics(scores, truth, masked, k, legacy, kmax=10)
        for key, v in want.items():
            assert got[key] == pytest.approx(v, abs=1e-9), key
    assert got["users"] == sum(len(t) > 0 for t in truth)


def test_legacy_ndcg_is_inflated_on_a_known_case():
    # One user, GT {0, 1}; item 0 ranked 2nd, item 1 outside the top 2.
    ue = torch.tensor([[1.0]])
    ie = torch.tensor([[0.5], [-1.0], [0.9], [0.0]])
    truth = [np.array([0, 1])]
    std = evaluate_multi(ue, ie, [0], truth, None, ks=(2,))
    leg = evaluate_multi(ue, ie, [0], truth, None, ks=(2,), ndcg="legacy")
    dcg = 1 / math.log2(3)
    assert std["ndcg@2"] == pytest.approx(dcg / (1 + 1 / math.log2(3)))
    assert leg["ndcg@2"] == pytest.approx(dcg / 1.0)
    assert std["recall@2"] == 0.5 and std["precision@2"] == 0.5 and std["hit@2"] == 1.0


def test_single_target_equals_the_project_evaluator():
    """With one held-out item per user and no mask, recall/ndcg equal missrec.evaluate's."""
    rng = np.random.default_rng(1)
    ue, ie = torch.randn(20, 4), torch.randn(30, 4)
    tgt = rng.integers(0, 30, size=20)

    class Dot:
        def encode(self, seq, length):
            return ue[seq[:, 0]]

        def score(self, u, ids):
            return u @ ie[ids - 1].T

        def score_pairs(self, u, ids):
            return (u * ie[ids - 1]).sum(-1)

    seq = torch.arange(20)[:, None]
    ranks = compute_ranks(Dot(), seq, torch.ones(20, dtype=torch.long), torch.from_numpy(tgt + 1), 30, chunk_size=7)
    want = metrics_from_ranks(ranks, (5, 10))
    got = evaluate_multi(ue, ie, np.arange(20), [np.array([t]) for t in tgt], None, ks=(5, 10), chunk_size=7)
    for k in ("recall@5", "ndcg@5", "recall@10", "ndcg@10"):
        assert got[k] == pytest.approx(want[k])


def test_constant_scores_and_masked_truth_never_hit():
    ue, ie = torch.ones(2, 1), torch.ones(10, 1)
    got = evaluate_multi(ue, ie, [0, 1], [np.array([3]), np.array([4, 5])], None, ks=(5,))
    assert got["recall@5"] == 0.0  # ties count against the target
    ie = torch.arange(10, dtype=torch.float32)[:, None]
    masked = (np.array([0, 1, 1]), np.array([9]))  # user 0 has item 9 in train
    got = evaluate_multi(ue[:1], ie, [0], [np.array([9])], masked, ks=(5,))
    assert got["recall@5"] == 0.0


# ------------------------------------------------------------------------------ loaders
def test_load_mmssl_rebuilds_train_and_reads_every_feature(tmp_path):
    (tmp_path / "train.json").write_text(json.dumps({"0": [0, 1, 1], "1": [2], "2": [3, 0]}))
    (tmp_path / "val.json").write_text(json.dumps({"0": [2], "1": [], "2": [4]}))
    (tmp_path / "test.json").write_text(json.dumps({"0": [3, 4], "1": [0]}))
    rng = np.random.default_rng(0)
    for m, d in (("image", 8), ("text", 4), ("audio", 3)):
        np.save(tmp_path / f"{m}_feat.npy", rng.normal(size=(5, d)).astype(np.float32))
    (tmp_path / "train_mat").write_bytes(b"\x80\x04not to be unpickled")
    g = load_mmssl(tmp_path)
    assert (g.n_users, g.n_items, g.n_train) == (3, 5, 5)
    assert g.train_items(0).tolist() == [0, 1] and g.train_items(2).tolist() == [0, 3]
    assert [v.tolist() for v in g.valid] == [[2], [], [4]] and g.test[0].tolist() == [3, 4]
    assert sorted(g.features) == ["audio", "image", "text"] and g.features["audio"].shape == (5, 3)
    u, i = g.train_pairs()
    assert torch.equal(g.train_csr_torch().to_dense()[torch.from_numpy(u), torch.from_numpy(i)], torch.ones(5))
    np.save(tmp_path / "text_feat.npy", rng.normal(size=(4, 4)).astype(np.float32))
    with pytest.raises(DataFormatError, match="text_feat.npy"):
        load_mmssl(tmp_path)
    (tmp_path / "val.json").write_text("{not json")
    with pytest.raises(DataFormatError, match="val.json"):
        load_mmssl(tmp_path)


def test_load_slmrec_remaps_and_carves_a_seeded_validation(tmp_path):
    rng = np.random.default_rng(0)
    pairs = [(u, i) for u in range(10, 40) for i in rng.choice(np.arange(100, 120), size=6, replace=False)]
    (tmp_path / "toy.train").write_text("\n".join(f"{u},{i}" for u, i in pairs) + "\n")
    (tmp_path / "toy.test").write_text("\n".join(f"{u},{100 + u % 20}" for u in range(10, 40)) + "\n")
    feat = rng.normal(size=(120, 5)).astype(np.float32)
    np.save(tmp_path / "toy_FeatureVideo_normal.npy", feat)
    g = load_slmrec(tmp_path, "toy", valid_ratio=0.2, seed=3)
    assert g.n_users == 30 and g.n_items == 20
    assert g.info["user_ids"][0] == 10 and g.n_train + sum(len(v) for v in g.valid) == len(pairs)
    # Features follow the raw item ids.
    assert np.allclose(g.features["visual"][0], feat[g.info["item_ids"][0]])
    assert all(len(v) == 1 for v in g.valid)  # round(0.2 * 6) = 1 per user
    for u in range(g.n_users):
        assert not set(g.valid[u]) & set(g.train_items(u))
    again = load_slmrec(tmp_path, "toy", valid_ratio=0.2, seed=3)
    other = load_slmrec(tmp_path, "toy", valid_ratio=0.2, seed=4)
    assert [v.tolist() for v in again.valid] == [v.tolist() for v in g.valid]
    assert [v.tolist() for v in other.valid] != [v.tolist() for v in g.valid]
    (tmp_path / "toy.test").write_text("10;100\n")
    with pytest.raises(DataFormatError, match="toy.test:1"):
        load_slmrec(tmp_path, "toy")


def test_carve_validation_keeps_a_train_item_per_user():
    users = np.array([0, 1, 1, 2, 2, 2, 2])
    m = carve_validation(users, np.arange(7), 0.5, 0)
    assert m[0] == False and m[1:3].sum() == 1 and m[3:].sum() == 2


def test_load_atomic_graph_is_each_users_items_before_the_last_two(tmp_path):
    from _tiny import make_domain

    from missrec.data.atomic import load_dataset

    make_domain(tmp_path, "tiny", n_items=30, n_users=25)
    g = load_atomic(tmp_path, "tiny")
    ds = load_dataset(tmp_path, "tiny")
    va, te = ds.splits["valid"], ds.splits["test"]
    users = {t: k for k, t in enumerate(g.info["user_ids"])}
    for r in range(len(va)):
        u = users[str(va.user[r])]
        assert set(g.train_items(u).tolist()) == set((va.seq[r, :va.length[r]] - 1).tolist())
        assert g.valid[u].tolist() == [va.target[r] - 1]
    for r in range(len(te)):
        assert g.test[users[str(te.user[r])]].tolist() == [te.target[r] - 1]
    assert g.features["text"].shape == (30, 16) and g.features["image"].shape == (30, 16)


def test_graphdata_rejects_bad_shapes():
    with pytest.raises(ValueError, match="train item ids"):
        GraphData.from_pairs(2, 3, [0, 1], [0, 3], [[], []], [[], []])
    with pytest.raises(ValueError, match="one item array per user"):
        GraphData.from_pairs(2, 3, [0, 1], [0, 2], [[]], [[], []])
    with pytest.raises(ValueError, match="feature"):
        GraphData.from_pairs(2, 3, [0], [0], [[], []], [[], []], {"image": np.zeros((2, 4))})


# ------------------------------------------------------------------------------ samplers
def _toy_data():
    rng = np.random.default_rng(0)
    u = np.repeat(np.arange(50), 5)
    i = np.concatenate([rng.choice(20, 5, replace=False) for _ in range(50)])
    return GraphData.from_pairs(50, 20, u, i, [np.zeros(0)] * 50, [np.zeros(0)] * 50)


@pytest.mark.parametrize("mode", ["pairs", "users"])
def test_samplers_draw_true_positives_and_negatives(mode):
    g = _toy_data()
    train = set(zip(*map(np.ndarray.tolist, g.train_pairs())))
    batches = sample_bpr_batches(g, 64, torch.Generator().manual_seed(0), mode=mode)
    for u, p, q in batches:
        assert all((a, b) in train for a, b in zip(u.tolist(), p.tolist()))
        assert not any((a, b) in train for a, b in zip(u.tolist(), q.tolist()))
        if mode == "users":
            assert len(set(u.tolist())) == len(u) == 50
    if mode == "pairs":
        assert sorted(zip(torch.cat([b[0] for b in batches]).tolist(), torch.cat([b[1] for b in batches]).tolist())) \
            == sorted(train)
    else:
        assert len(batches) == g.n_train // 64 + 1
    again = sample_bpr_batches(g, 64, torch.Generator().manual_seed(0), mode=mode)
    assert all(torch.equal(a, b) for x, y in zip(batches, again) for a, b in zip(x, y))


def test_compare_table_puts_graph_and_missrec_rows_together(tmp_path):
    from missrec.recipes.compare import table

    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "results.json").write_text(json.dumps({"dataset": "d", "model": "lightgcn",
                                                             "test": {"recall@20": 0.3}, "popularity": {"test": {"recall@20": 0.2}}}))
    (tmp_path / "m.json").write_text(json.dumps({"dataset": "d", "mode": "transductive", "pretrained": "none",
                                                 "test": {"recall@20": 0.4, "ndcg@10": 0.1}}))
    t = table([tmp_path / "g", tmp_path / "m.json"])
    assert "| lightgcn | " in t and "| MISSRec (id, scratch) |" in t and "| popularity |" in t and "0.4000" in t
    (tmp_path / "o.json").write_text(json.dumps({"dataset": "other", "model": "vbpr", "test": {}}))
    with pytest.raises(ValueError, match="several datasets"):
        table([tmp_path / "g", tmp_path / "o.json"])
