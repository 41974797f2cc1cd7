"""The ranking-metrics core (missrec/ranking.py) shared by the sequential and graph evaluators, and
``--ndcg legacy`` against a step-by-step re-statement of MMSSL's evaluation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from missrec.evaluate import metrics_from_ranks
from missrec.graph.evaluate import evaluate_multi, metrics_from_multi_ranks
from missrec.ranking import per_user_metrics, ranking_metrics


# ---------------------------------------------------------------------------------------------
# MMSSL's evaluation, re-stated in our own words from HKUDS/MMSSL utility/batch_test.py
# (test_one_user, ranklist_by_sorted/ranklist_by_heapq, get_performance, test_torch) and
# utility/metrics.py (precision_at_k, recall_at_k, dcg_at_k with method 1, ndcg_at_k, hit_at_k).
def _mmssl_dcg(rel, k):
    # Gains of the first k positions, position j (0-based) discounted by log2(j + 2).
    rel = [float(x) for x in rel[:k]]
    return sum(x / math.log2(j + 2) for j, x in enumerate(rel)) if rel else 0.0


def _mmssl_user(scores, train_items, gt, ks):
    # Candidates: every item the user did not train on (validation items stay candidates).
    candidates = [i for i in range(len(scores)) if i not in train_items]
    # The retrieved list: the max(ks) highest-scoring candidates, best first.
    top = sorted(candidates, key=lambda i: -scores[i])[:max(ks)]
    # Binary relevance of that list against the user's held-out items.
    rel = [1 if i in gt else 0 for i in top]
    out = {}
    for k in ks:
        cut = rel[:k]
        out[f"precision@{k}"] = float(np.mean(cut))
        out[f"recall@{k}"] = sum(cut) / len(gt)
        # Ideal DCG: the SAME retrieved list with its hits moved to the front, then cut at k.
        ideal = _mmssl_dcg(sorted(rel, reverse=True), k)
        out[f"ndcg@{k}"] = 0.0 if not ideal else _mmssl_dcg(rel, k) / ideal
        out[f"hit@{k}"] = 1.0 if sum(cut) > 0 else 0.0
    return out


def _mmssl_evaluate(scores, train, truth, ks):
    # Users evaluated: those with held-out items; each adds its metrics / (number of such users).
    users = [u for u in range(len(truth)) if len(truth[u])]
    total = {}
    for u in users:
        for key, v in _mmssl_user(scores[u], set(train[u]), set(truth[u].tolist()), ks).items():
            total[key] = total.get(key, 0.0) + v / len(users)
    return total
# ---------------------------------------------------------------------------------------------


def _random_case(seed, n_users=40, n_items=90, d=8, max_truth=12):
    rng = np.random.default_rng(seed)
    ue = rng.normal(size=(n_users, d))
    ie = rng.normal(size=(n_items, d))
    train = [np.sort(rng.choice(n_items, size=rng.integers(0, 15), replace=False)) for _ in range(n_users)]
    truth = []
    for u in range(n_users):
        free = np.setdiff1d(np.arange(n_items), train[u])
        n = rng.integers(0, max_truth)
        gt = rng.choice(free, size=n, replace=False)
        if u % 7 == 3 and len(train[u]):  # a held-out item that is also a train item: never retrieved
            gt = np.r_[gt, train[u][0]]
        truth.append(np.unique(gt).astype(np.int64))
    return ue, ie, train, truth


@pytest.mark.parametrize("seed,ks", [(0, (10, 20, 50)), (1, (5, 20)), (2, (3,)), (3, (10, 20, 50))])
def test_legacy_ndcg_equals_mmssl_restatement(seed, ks):
    ue, ie, train, truth = _random_case(seed)
    scores = ue @ ie.T
    want = _mmssl_evaluate(scores, train, truth, ks)
    indptr = np.r_[0, np.cumsum([len(t) for t in train])]
    indices = np.concatenate(train).astype(np.int64)
    got = evaluate_multi(torch.from_numpy(ue), torch.from_numpy(ie), np.arange(len(truth)), truth,
                         (indptr, indices), ks=ks, ndcg="legacy", batch_size=7, chunk_size=13)
    for key, v in want.items():
        assert abs(got[key] - v) <= 1e-9, (key, got[key], v)
    assert got["users"] == sum(len(t) > 0 for t in truth)
    # Standard NDCG differs from MMSSL's whenever a user has hits beyond K within max(ks).
    std = evaluate_multi(torch.from_numpy(ue), torch.from_numpy(ie), np.arange(len(truth)), truth,
                         (indptr, indices), ks=ks, ndcg="standard")
    assert all(std[f"recall@{k}"] == got[f"recall@{k}"] for k in ks)
    assert any(abs(std[f"ndcg@{k}"] - got[f"ndcg@{k}"]) > 1e-6 for k in ks)


def test_legacy_ideal_dcg_counts_hits_within_the_largest_k():
    # One user, 3 targets at ranks 2, 15, 40; Ks 10/20/50: MMSSL's ideal DCG@10 is over
    # min(3 hits in the top 50, 10) = 3 ideal hits, not the 1 hit within the top 10.
    m = metrics_from_multi_ranks(np.array([3]), np.array([2, 15, 40]), ks=(10, 20, 50), ndcg="legacy")
    idcg3 = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg@10"] == pytest.approx((1 / math.log2(3)) / idcg3, abs=1e-12)
    assert m["ndcg@20"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(16)) / idcg3, abs=1e-12)
    # Evaluated alone at K=10, the top-10 list has one hit: ideal DCG of 1 hit.
    m10 = metrics_from_multi_ranks(np.array([3]), np.array([2, 15, 40]), ks=(10,), ndcg="legacy")
    assert m10["ndcg@10"] == pytest.approx(1 / math.log2(3), abs=1e-12)


def test_one_core_for_both_evaluators():
    rng = np.random.default_rng(5)
    ranks = rng.integers(1, 200, size=300)
    seq = metrics_from_ranks(torch.from_numpy(ranks), (10, 50))
    graph = metrics_from_multi_ranks(np.ones(300, np.int64), ranks, (10, 50))
    assert list(seq) == ["recall@10", "ndcg@10", "recall@50", "ndcg@50"]
    for k, v in seq.items():
        assert graph[k] == v
    # One target per user: legacy and standard NDCG coincide.
    assert ranking_metrics(ranks, ks=(10, 50), ndcg="legacy") == ranking_metrics(ranks, ks=(10, 50))
    per = per_user_metrics(ranks, ks=(10,), names=("ndcg",))
    assert np.allclose(per["ndcg@10"], np.where(ranks <= 10, 1 / np.log2(ranks + 1.0), 0.0))
    with pytest.raises(ValueError, match="1-based"):
        ranking_metrics([0, 3])
    with pytest.raises(ValueError, match="no targets"):
        ranking_metrics(np.zeros(0), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="ndcg must be"):
        ranking_metrics([1], ndcg="mmssl")
