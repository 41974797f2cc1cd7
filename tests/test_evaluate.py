"""Full-ranking evaluator and baselines, checked against hand-computed ranks and metrics."""
import json
import math
import threading

import numpy as np
import pytest
import torch

from missrec.baselines import PopularityScorer, RandomScorer, SuccessorScorer, item_counts
from missrec.data.atomic import Split
from missrec.fsutil import atomic_write_json
from missrec.evaluate import (compute_ranks, evaluate, evaluate_ranks, metrics_from_ranks, round_metrics,
                              )


class MatrixScorer:
    """Scores from a fixed [B, n_items + 1] matrix (column 0 = padding id); rows are found by their
    (unique) history, so batching and sharding cannot mix rows up."""

    def __init__(self, scores, split):
        self.S = torch.as_tensor(scores, dtype=torch.float32)
        self.seq = torch.as_tensor(split.seq)
        self.len = torch.as_tensor(split.length)
        assert len({(tuple(s), l) for s, l in zip(split.seq.tolist(), split.length.tolist())}) == len(split)

    def encode(self, seq, length):
        match = (seq[:, None, :] == self.seq[None]).all(-1) & (length[:, None] == self.len[None])
        assert bool((match.sum(1) == 1).all())
        return match.float().argmax(1)

    def score(self, rows, ids):
        return self.S[rows][:, ids]

    def score_pairs(self, rows, ids):
        return self.S[rows, ids]


def _split(histories, targets):
    return Split.from_lists(list(range(len(targets))), histories, targets, max_len=6, id_offset=0)


# Items 1..6; column 0 is padding and gets a huge score that must never count.
S = np.array([
    [100.0, 0.9, 0.1, 0.5, 0.5, 0.3, 0.7],  # target 3 (0.5): 0.9, 0.7 beat it, item 4 ties -> rank 4
    [100.0, 0.9, 0.1, 0.5, 0.5, 0.3, 0.7],  # target 1 (0.9): best, no tie -> rank 1
    [100.0, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2],  # constant scorer: everything ties -> rank 6 (last)
    [100.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0],  # target 6 (5.0): best -> rank 1
])
HIST = [[1, 6, 3], [2], [5, 5], [4, 2]]
TARGETS = [3, 1, 2, 6]


def _t(split):
    return torch.as_tensor(split.seq), torch.as_tensor(split.length), torch.as_tensor(split.target)


def test_ranks_ties_count_against_target_and_padding_is_never_ranked():
    sp = _split(HIST, TARGETS)
    ranks = compute_ranks(MatrixScorer(S, sp), *_t(sp), n_items=6)
    assert ranks.tolist() == [4, 1, 6, 1]


def test_history_masking_removes_history_items_but_not_the_target():
    sp = _split(HIST, TARGETS)
    ranks = compute_ranks(MatrixScorer(S, sp), *_t(sp), n_items=6, mask_history=True)
    # row 0: items 1 and 6 (the two that beat the target) are in the history, 3 is the target -> only
    # the tie with item 4 is left: rank 2. row 2: item 5 (twice in the history) drops out of the
    # 5 ties -> rank 5. row 3: history items 4 and 2 score below the target: unchanged.
    assert ranks.tolist() == [2, 1, 5, 1]
    # Masking a history that contains the target itself must not drop the target.
    sp2 = _split([[3, 4]], [3])
    assert compute_ranks(MatrixScorer(S[:1], sp2), *_t(sp2), n_items=6, mask_history=True).tolist() == [3]


@pytest.mark.parametrize("chunk", [1, 2, 4, 5, 6, 1000])
@pytest.mark.parametrize("mask", [False, True])
def test_chunking_gives_identical_ranks(chunk, mask):
    sp = _split(HIST, TARGETS)
    full = compute_ranks(MatrixScorer(S, sp), *_t(sp), n_items=6, mask_history=mask)
    part = compute_ranks(MatrixScorer(S, sp), *_t(sp), n_items=6, mask_history=mask, chunk_size=chunk)
    assert part.tolist() == full.tolist()


def test_random_matrix_chunked_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    B, N = 37, 53
    scores = torch.randint(0, 7, (B, N + 1), generator=g).float()  # many ties on purpose
    hists = [torch.randint(1, N + 1, (1 + i % 5,), generator=g).tolist() + [i + 1] for i in range(B)]
    targets = torch.randint(1, N + 1, (B,), generator=g).tolist()
    sp = _split(hists, targets)
    for mask in (False, True):
        expect = []
        for b in range(B):
            t = targets[b]
            hist = set(hists[b]) - {t} if mask else set()
            others = [j for j in range(1, N + 1) if j != t and j not in hist]
            expect.append(1 + sum(float(scores[b, j]) >= float(scores[b, t]) for j in others))
        got = compute_ranks(MatrixScorer(scores, sp), *_t(sp), n_items=N, chunk_size=8, mask_history=mask)
        assert got.tolist() == expect


def test_nan_scores_never_help():
    sp = _split([[1], [2]], [2, 3])
    m = np.array([[0, 1.0, float("nan"), 0.5], [0, float("nan"), 0.2, 0.1]])
    # row 0: NaN target ranks last (3); row 1: the NaN item is -inf and does not beat 0.1 -> rank 2.
    assert compute_ranks(MatrixScorer(m, sp), *_t(sp), n_items=3).tolist() == [3, 2]


def test_target_out_of_range_is_refused():
    sp = _split([[1]], [0])
    with pytest.raises(ValueError, match="padding"):
        compute_ranks(MatrixScorer(S[:1], sp), *_t(sp), n_items=6)


def test_metrics_by_hand():
    m = metrics_from_ranks(torch.tensor([4, 1, 6, 1]), ks=(1, 3, 5))
    assert m["recall@1"] == pytest.approx(2 / 4)
    assert m["recall@3"] == pytest.approx(2 / 4)
    assert m["recall@5"] == pytest.approx(3 / 4)
    assert m["ndcg@1"] == pytest.approx(2 / 4)
    # rank 4 -> 1/log2(5) = 0.430676558; ranks 1 -> 1; rank 6 is outside 5.
    assert m["ndcg@5"] == pytest.approx((0.43067655807339306 + 2.0) / 4)
    m = metrics_from_ranks([1, 2, 3, 11], ks=(10,))
    assert m["recall@10"] == pytest.approx(0.75)
    # 1 + 1/log2(3) + 1/log2(4) + 0
    assert m["ndcg@10"] == pytest.approx((1 + 0.6309297535714575 + 0.5) / 4)
    assert set(metrics_from_ranks([1]).keys()) == {f"{n}@{k}" for n in ("recall", "ndcg") for k in (10, 20, 50)}
    with pytest.raises(ValueError):
        metrics_from_ranks([])
    with pytest.raises(ValueError):
        metrics_from_ranks([0, 1])


def test_constant_scorer_is_the_worst_possible():
    n = 30
    sp = _split([[i % n + 1] for i in range(10)], [(3 * i) % n + 1 for i in range(10)])
    flat = np.zeros((10, n + 1))
    m = evaluate(MatrixScorer(flat, sp), sp, n, ks=(10, 29), progress=False)
    assert m == {"recall@10": 0.0, "ndcg@10": 0.0, "recall@29": 0.0, "ndcg@29": 0.0}


def test_evaluate_batches_equal_one_big_batch():
    g = torch.Generator().manual_seed(1)
    N, B = 40, 23
    hists = [[i + 1] + torch.randint(1, N + 1, (i % 4,), generator=g).tolist() for i in range(B)]
    targets = torch.randint(1, N + 1, (B,), generator=g).tolist()
    sp = _split(hists, targets)
    sc = MatrixScorer(torch.rand(B, N + 1, generator=g), sp)
    ref = compute_ranks(sc, *_t(sp), n_items=N)
    for bs in (1, 4, 7, 100):
        assert evaluate_ranks(sc, sp, N, batch_size=bs, chunk_size=9, progress=False).tolist() == ref.tolist()
    assert evaluate(sc, sp, N, batch_size=5, progress=False) == metrics_from_ranks(ref)


class _ThreadAccelerator:
    """Stands in for accelerate.Accelerator in one thread per 'process': gather concatenates every
    process's tensor in process order, and (like the real collective) demands equal shapes."""

    def __init__(self, rank, world, box, barrier):
        self.process_index, self.num_processes = rank, world
        self.is_main_process = rank == 0
        self.device = torch.device("cpu")
        self.box, self.barrier = box, barrier

    def gather(self, t):
        self.box[self.process_index] = t
        self.barrier.wait()
        assert len({tuple(x.shape) for x in self.box}) == 1, "collective with unequal shapes"
        out = torch.cat(list(self.box))
        self.barrier.wait()
        return out

    gather_for_metrics = gather


@pytest.mark.parametrize("world,bs", [(2, 4), (3, 4), (4, 16), (5, 1)])
def test_distributed_sharding_returns_each_row_once_in_order(world, bs):
    g = torch.Generator().manual_seed(2)
    N, B = 25, 19
    hists = [[i + 1] for i in range(B)]
    targets = torch.randint(1, N + 1, (B,), generator=g).tolist()
    sp = _split(hists, targets)
    sc = MatrixScorer(torch.randint(0, 5, (B, N + 1), generator=g).float(), sp)
    ref = evaluate_ranks(sc, sp, N, batch_size=bs, progress=False)
    box, barrier, results = [None] * world, threading.Barrier(world), [None] * world

    def run(r):
        results[r] = evaluate_ranks(sc, sp, N, batch_size=bs, progress=False,
                                    accelerator=_ThreadAccelerator(r, world, box, barrier))

    threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    for r in range(world):
        assert results[r].tolist() == ref.tolist()


# ----------------------------------------------------------------------------- baselines
def _train():
    # Two users' prefix rows (leave-one-out layout): u0 items 1 2 3 2 (train part), u1 items 4 2 3.
    return Split.from_lists(["0", "0", "0", "1", "1"], [[1], [1, 2], [1, 2, 3], [4], [4, 2]],
                            [2, 3, 2, 2, 3], max_len=5, id_offset=0)


def test_popularity_counts_each_training_interaction_once():
    tr = _train()
    # interactions: item1 x1, item2 x3, item3 x2, item4 x1, item5 x0
    assert item_counts(tr, 5).tolist() == [0, 1, 3, 2, 1, 0]
    assert item_counts(tr, 5, "none").tolist() == [0, 0, 3, 2, 0, 0]
    # every history position: 1 appears 3x, 2 x3, 3 x1, 4 x2
    assert item_counts(tr, 5, "all").tolist() == [0, 3, 6, 3, 2, 0]
    with pytest.raises(ValueError):
        item_counts(tr, 3)
    pop = PopularityScorer.from_split(tr, 5)
    sp = _split([[5], [1, 5]], [2, 1])
    # scores [_,1,3,2,1,0]: target 2 is best -> 1; target 1 (score 1) ties with item 4 -> rank 4
    assert compute_ranks(pop, *_t(sp), n_items=5).tolist() == [1, 4]


def test_successor_counts_with_popularity_tiebreak():
    tr = _train()
    succ = SuccessorScorer(tr, 5)
    # pairs (last -> next): 1->2, 2->3 (x2), 3->2, 4->2
    u = succ.encode(torch.tensor([[1, 2, 0], [9, 4, 0], [5, 0, 0]]), torch.tensor([2, 2, 1]))
    assert u.tolist() == [2, 4, 5]
    s = succ.score(u, torch.arange(1, 6)).double()
    tie = torch.tensor([1, 3, 2, 1, 0], dtype=torch.float64) / 4.0  # pop / (max pop + 1)
    assert torch.allclose(s[0], torch.tensor([0, 0, 2, 0, 0.0], dtype=torch.float64) + tie)
    assert torch.allclose(s[1], torch.tensor([0, 1, 0, 0, 0.0], dtype=torch.float64) + tie)
    assert torch.allclose(s[2], tie)  # last item 5 never seen: pure popularity
    pairs = succ.score_pairs(u, torch.tensor([3, 2, 1]))
    assert torch.allclose(pairs, s[[0, 1, 2], [2, 1, 0]])


def test_random_scorer_is_reproducible_and_near_k_over_n():
    a, b = RandomScorer(1000, seed=3), RandomScorer(1000, seed=3)
    assert torch.equal(a.table, b.table) and not torch.equal(a.table, RandomScorer(1000, seed=4).table)
    g = np.random.default_rng(0)
    sp = Split.from_lists(list(range(2000)), g.integers(1, 1001, (2000, 3)).tolist(), g.integers(1, 1001, 2000),
                          max_len=3, id_offset=0)
    m = evaluate(a, sp, 1000, ks=(50,), progress=False)
    assert abs(m["recall@50"] - 0.05) < 0.02


# ----------------------------------------------------------------------------- output helpers
def test_round_and_write_results(tmp_path):
    d = {"test": {"recall@10": 0.123456, "n": 3}, "valid": {"ndcg@10": 1 / 3}}
    r = round_metrics(d, 4)
    assert r == {"test": {"recall@10": 0.1235, "n": 3}, "valid": {"ndcg@10": 0.3333}}
    p = tmp_path / "out" / "results.json"
    atomic_write_json(p, r)
    assert json.loads(p.read_text()) == r
    assert [x.name for x in p.parent.iterdir()] == ["results.json"]  # no temp file left behind
    assert math.isclose(json.loads(p.read_text())["valid"]["ndcg@10"], 0.3333)


# ----------------------------------------------------------------------------- real accelerate, 2 CPU processes
def _dist_worker(rank, world, port, out):
    import os

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    assert acc.num_processes == world
    sp, n = _dist_case()
    r = evaluate_ranks(RandomScorer(n, 1), sp, n, batch_size=8, chunk_size=7, accelerator=acc, progress=False)
    torch.save(r, f"{out}/ranks{rank}.pt")


def _dist_case():
    g = np.random.default_rng(0)
    n = 50
    return Split.from_lists(list(range(103)), g.integers(1, n + 1, (103, 4)).tolist(), g.integers(1, n + 1, 103),
                            max_len=4, id_offset=0), n


@pytest.mark.slow
def test_accelerate_two_processes_equal_single_process(tmp_path):
    import socket
    import time

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.spawn(_dist_worker, args=(2, port, str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("distributed evaluation did not finish in 120 s")
    sp, n = _dist_case()
    ref = evaluate_ranks(RandomScorer(n, 1), sp, n, batch_size=8, progress=False)
    for r in range(2):
        assert torch.load(tmp_path / f"ranks{r}.pt").tolist() == ref.tolist()


def test_module_scorer_runs_in_eval_mode_and_is_restored():
    class Drop(torch.nn.Module):
        def __init__(self, n):
            super().__init__()
            self.table = torch.nn.Parameter(torch.arange(n + 1, dtype=torch.float32))
            self.drop = torch.nn.Dropout(0.5)

        def encode(self, seq, length):
            return int(seq.shape[0])

        def score(self, b, ids):
            return self.drop(self.table[ids]).expand(b, -1)

        def score_pairs(self, b, ids):
            return self.drop(self.table[ids])

    n = 20
    m = Drop(n).train()
    sp = _split([[i + 1] for i in range(8)], [n - i for i in range(8)])  # targets 20..13: ranks 1..8
    ranks = evaluate_ranks(m, sp, n, progress=False)
    assert ranks.tolist() == list(range(1, 9))
    assert m.training
