import math

import pytest
import torch

from missrec.interest import assign, interest_tokens, kmeans, n_interests


def slow_interest_tokens(text_ids, image_ids):
    rows = []
    for t, v in zip(text_ids.tolist(), image_ids.tolist()):
        rows.append(sorted({x for x in t + v if x != 0}))
    width = max(1, max(len(r) for r in rows))
    return torch.tensor([r + [0] * (width - len(r)) for r in rows])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_interest_tokens_match_slow_reference(seed):
    g = torch.Generator().manual_seed(seed)
    B, L, K = 64, 12, 9
    lengths = torch.randint(1, L + 1, (B,), generator=g)
    real = torch.arange(L)[None, :] < lengths[:, None]
    t = torch.randint(1, K + 1, (B, L), generator=g) * real
    v = torch.randint(1, K + 1, (B, L), generator=g) * real
    assert torch.equal(interest_tokens(t, v), slow_interest_tokens(t, v))


def test_interest_tokens_single_item_and_duplicates():
    t = torch.tensor([[3, 0, 0], [2, 2, 2]])
    v = torch.tensor([[3, 0, 0], [5, 1, 5]])
    assert interest_tokens(t, v).tolist() == [[3, 0, 0], [1, 2, 5]]


def _blobs(n_per=200, k=5, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g) * 10
    x = torch.cat([c + 0.1 * torch.randn(n_per, d, generator=g) for c in centres])
    truth = torch.arange(k).repeat_interleave(n_per)
    return x, truth, centres


def test_kmeans_recovers_separated_blobs():
    x, truth, _ = _blobs()
    res = kmeans(x, 5, n_iter=50, init="k-means++", seed=0)
    # Each true blob maps to exactly one cluster and vice versa.
    pairs = {(int(a), int(b)) for a, b in zip(truth, res.labels)}
    assert len(pairs) == 5
    assert res.inertia < x.shape[0] * 8 * 0.1 ** 2 * 2


def test_kmeans_deterministic_and_seed_sensitive():
    x, _, _ = _blobs(k=8, seed=3)
    a = kmeans(x, 20, n_iter=5, init="random", seed=7)
    b = kmeans(x, 20, n_iter=5, init="random", seed=7)
    c = kmeans(x, 20, n_iter=5, init="random", seed=8)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.centroids, b.centroids)
    assert not torch.equal(a.centroids, c.centroids)


def test_chunked_assignment_equals_unchunked():
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(1000, 16, generator=g), torch.randn(37, 16, generator=g)
    l1, d1 = assign(x, c, budget=37 * 7)  # 7 rows per chunk
    l2, d2 = assign(x, c, budget=1 << 30)
    ref = torch.cdist(x, c).argmin(1)
    assert torch.equal(l1, l2) and torch.equal(l1, ref)
    assert torch.allclose(d1, d2)


def test_empty_clusters_are_reseeded():
    # 3 distinct points, duplicated; random init will pick duplicates and leave clusters empty.
    x = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]).repeat(50, 1)
    res = kmeans(x, 3, n_iter=10, init="random", seed=1)
    assert torch.bincount(res.labels, minlength=3).min() > 0
    assert res.inertia < 1e-6


def test_compat_is_a_single_step():
    x, _, _ = _blobs(k=6, seed=5)
    single = kmeans(x, 6, compat=True, seed=0)
    full = kmeans(x, 6, n_iter=50, seed=0)
    assert single.n_iter == 1
    assert full.inertia <= single.inertia


def test_n_interests():
    assert n_interests(100, 0.02) == 4
    assert n_interests(1, 0.001) == 1
    assert n_interests(4385, 0.5) == math.ceil(4385)


def test_warm_start_from_converged_centroids_stops_at_once():
    x, _, _ = _blobs(k=6, seed=9)
    cold = kmeans(x, 6, n_iter=50, seed=0)
    warm = kmeans(x, 6, n_iter=50, init=cold.centroids, seed=123)
    assert warm.n_iter == 1 and torch.equal(warm.labels, cold.labels)
    with pytest.raises(ValueError, match="warm-start"):
        kmeans(x, 5, init=cold.centroids)
