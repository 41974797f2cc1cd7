"""Graph baselines at real size: an atomic folder the size of MovieLens-100k (943 users, 1,682
items, ~100k training rows whose histories are complete, i.e. long) loads in memory proportional
to the interactions, and every graph model trains an epoch on it."""
from __future__ import annotations

import resource
import tracemalloc

import numpy as np
import pytest
import torch

from benchmarks.bench_graph_load import SIZES, write_leave_one_out
from missrec.data.atomic import INTER_HEADER, write_index_map
from missrec.graph import MODELS
from missrec.graph.data import load_atomic

def write_ml100k_size(root, name="ml100k_size", seed=0, dim=32, window=0):
    """Leave-one-out atomic folder of ML-100k's size: 943 users, 1,682 items, ~100k interactions,
    user lengths 20..737; complete histories (``window=0``) or the last ``window`` items."""
    return write_leave_one_out(root, name, **SIZES["ml-100k"], window=window, dim=dim, seed=seed)


@pytest.fixture(scope="module")
def ml100k_size(tmp_path_factory):
    return write_ml100k_size(tmp_path_factory.mktemp("ml100k"))


def test_ml100k_size_loads_in_memory_proportional_to_interactions(ml100k_size):
    folder, seqs = ml100k_size
    rows = sum(len(s) - 3 for s in seqs)
    assert rows > 90_000 and max(len(s) for s in seqs) > 400  # ~100k rows, long histories
    tracemalloc.start()
    try:
        g = load_atomic(folder.parent, folder.name)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Padding the train rows to their longest history alone would take rows x 700 x 8 B > 500 MB;
    # the graph itself is ~100k int64 pairs (+ 2 x 1682 x 32 float32 features).
    assert peak < 64 * 2**20, f"peak traced memory {peak / 2**20:.1f} MiB"
    assert (g.n_users, g.n_items) == (943, 1682)
    assert g.n_train == sum(len(s) - 2 for s in seqs)
    for u in (0, 1, 942):
        s = seqs[u]
        assert g.train_items(u).tolist() == sorted(s[:-2].tolist())
        assert g.valid[u].tolist() == [s[-2]] and g.test[u].tolist() == [s[-1]]


def test_capped_histories_give_the_same_graph(tmp_path):
    """The converters cap histories (last max_len items): same graph as complete histories."""
    full, seqs = write_ml100k_size(tmp_path / "a", "d", seed=1)
    capped, seqs2 = write_ml100k_size(tmp_path / "b", "d", seed=1, window=50)
    a, b = load_atomic(full.parent, "d"), load_atomic(capped.parent, "d")
    assert np.array_equal(a.train_indptr, b.train_indptr) and np.array_equal(a.train_indices, b.train_indices)
    assert all(np.array_equal(x, y) for x, y in zip(a.test, b.test))


def test_rows_out_of_order_and_bad_tokens(tmp_path):
    """Histories that do not continue the user's previous row are parsed, not skipped; bad tokens
    fail with the file and line."""
    folder = tmp_path / "t"
    folder.mkdir()
    lines = {"train": ["0\t3 1\t2", "0\t5\t4", "1\t2\t3", "0\t3 1 2\t0"], "valid": ["0\t9 8\t6", "1\t2 3\t7"],
             "test": ["0\t1\t6", "1\t3\t4"]}
    for s, rows in lines.items():
        (folder / f"t.{s}.inter").write_text(INTER_HEADER + "\n" + "\n".join(rows) + "\n")
    write_index_map(folder / "t.item2index", [str(i) for i in range(10)])
    g = load_atomic(tmp_path, "t", modalities=())
    assert g.train_items(0).tolist() == [0, 1, 2, 3, 4, 5, 8, 9]
    assert g.train_items(1).tolist() == [2, 3]
    assert [v.tolist() for v in g.valid] == [[6], [7]] and [t.tolist() for t in g.test] == [[6], [4]]
    (folder / "t.valid.inter").write_text(INTER_HEADER + "\n0\t3 1 2 x\t6\n")
    from missrec.data.atomic import DataFormatError
    with pytest.raises(DataFormatError, match=r"t\.valid\.inter:2: item token 'x'"):
        load_atomic(tmp_path, "t", modalities=())
    (folder / "t.valid.inter").write_text(INTER_HEADER + "\n0\t3 1\t10\n")
    with pytest.raises(DataFormatError, match=r"t\.valid\.inter:2: item index 10 out of range"):
        load_atomic(tmp_path, "t", modalities=())


# Small dims keep one full epoch over ~100k pairs to seconds on one CPU core: large batches where
# a batch costs one graph pass (LightGCN, VBPR; MMSSL: n_train // batch + 1 batches of all users,
# its discriminator bounded as in benchmarks/bench_graph.py), small ones for SLMRec, whose
# in-batch softmax costs batch^2 per batch.
SMALL = {"lightgcn": {"embed_dim": 16, "n_layers": 2, "batch_size": 8192},
         "vbpr": {"embed_dim": 8, "visual_dim": 8, "batch_size": 8192},
         "slmrec": {"embed_dim": 8, "n_layers": 1, "batch_size": 512},
         "mmssl": {"embed_size": 16, "batch_size": 8192, "d_max_items": 512, "d_hidden_cap": 128}}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SMALL))
def test_every_graph_model_trains_an_epoch_at_ml100k_size(ml100k_size, name):
    from missrec.graph.evaluate import evaluate_data

    folder, _ = ml100k_size
    data = load_atomic(folder.parent, folder.name)
    torch.manual_seed(0)
    model = MODELS[name](data, SMALL[name])
    stats = model.train_epoch(data, 1, torch.Generator().manual_seed(0), model.configure_optimizers())
    assert np.isfinite(stats["loss"])
    m = evaluate_data(model, data, "valid", ks=(20,))
    assert m["users"] == 943 and 0.0 <= m["recall@20"] <= 1.0
    # Whole test process (torch, data, model, one epoch): far within a laptop's memory.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < 4 * 2**20  # KiB on Linux
