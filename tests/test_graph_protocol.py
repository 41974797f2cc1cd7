"""Graph baselines: the test-time observed graph (--test_graph), a trivially learnable synthetic
graph every model must solve, and the MMSSL- and SLMRec-layout config paths end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from missrec.graph import MODELS
from missrec.graph.data import GraphData
from missrec.graph.evaluate import evaluate_data, evaluate_multi
from missrec.graph.loop import FitArgs, fit, resolve_test_graph, observed_for_test
from missrec.recipes.baselines import popularity

FAST = {"lightgcn": {"batch_size": 64, "lr": 0.01}, "vbpr": {"batch_size": 64, "lr": 0.01},
        "slmrec": {"batch_size": 64, "lr": 0.005, "logq": True},
        "mmssl": {"batch_size": 32, "lr": 2e-3, "m_topk_rate": 0.05}}


def _clustered(n_clusters=4, users_per=20, items_per=15, n_train=6, seed=0, fmt="atomic"):
    """Users and items in clusters; each user's train, valid and test items come from its own
    cluster (distinct), item popularity is flat inside a cluster and features reveal the cluster.
    A model that learns anything collaborative or from features ranks the user's cluster first."""
    rng = np.random.default_rng(seed)
    n_users, n_items = n_clusters * users_per, n_clusters * items_per
    us, its, valid, test = [], [], [], []
    for u in range(n_users):
        c = u // users_per
        pick = c * items_per + rng.choice(items_per, n_train + 2, replace=False)
        us += [u] * n_train
        its += pick[:n_train].tolist()
        valid.append(pick[n_train:n_train + 1])
        test.append(pick[n_train + 1:])
    centre = rng.normal(size=(n_clusters, 8))
    feats = {m: (np.repeat(centre, items_per, 0) + 0.3 * rng.normal(size=(n_items, 8))).astype(np.float32)
             for m in ("image", "text")}
    return GraphData.from_pairs(n_users, n_items, us, its, valid, test, feats, "clusters", {"format": fmt})


@pytest.mark.parametrize("name", ["lightgcn", "vbpr", "slmrec", "mmssl"])
def test_every_model_learns_a_clustered_graph(name):
    data = _clustered()
    torch.manual_seed(0)
    res = fit(MODELS[name](data, FAST[name]), data,
              FitArgs(output_dir="", epochs=8, patience=8, progress=False, plot=False, device="cpu", ks="10", metric="recall@10"))
    tdata = observed_for_test(data, res["test_graph"])
    pop = evaluate_multi(*popularity(tdata), np.arange(data.n_users), data.test,
                         (tdata.train_indptr, tdata.train_indices), ks=(10,))
    # 15 items per cluster, 7 of them seen at test: the other 8 fit in the top 10.
    assert res["test"]["recall@10"] > 0.8 > pop["recall@10"] + 0.4, (res["test"], pop)


def test_valid_observed_graph_holds_train_and_valid():
    data = _clustered()
    both = data.with_valid_observed()
    for u in range(data.n_users):
        assert both.train_items(u).tolist() == sorted(data.train_items(u).tolist() + data.valid[u].tolist())
    assert [t.tolist() for t in both.test] == [t.tolist() for t in data.test]
    assert both.info["graph"] == "train+valid" and "graph" not in data.info
    assert resolve_test_graph("auto", data) == "train+valid"
    assert resolve_test_graph("auto", _clustered(fmt="mmssl")) == "train"
    assert resolve_test_graph("auto", _clustered(fmt="slmrec")) == "train+valid"
    assert resolve_test_graph("train", data) == "train" and observed_for_test(data, "train") is data
    with pytest.raises(ValueError, match="test_graph"):
        resolve_test_graph("valid", data)


@pytest.mark.parametrize("name", ["lightgcn", "vbpr", "slmrec", "mmssl"])
def test_set_graph_equals_a_model_built_on_that_graph(name):
    data = _clustered()
    both = data.with_valid_observed()
    torch.manual_seed(0)
    m = MODELS[name](data, FAST[name])
    m.train_epoch(data, 1, torch.Generator().manual_seed(0), m.configure_optimizers())
    m.eval()
    before = m.embeddings()
    ref = MODELS[name](both, FAST[name])
    ref.load_state_dict(m.state_dict())
    ref.eval()
    m.set_graph(both)
    for a, b in zip(m.embeddings(), ref.embeddings()):
        assert torch.allclose(a, b, atol=1e-6)
    if name != "vbpr":  # VBPR's scores do not depend on the graph
        assert not torch.allclose(m.embeddings()[0], before[0])
    m.set_graph(data)
    for a, b in zip(m.embeddings(), before):
        assert torch.allclose(a, b, atol=1e-6)


def test_fit_tests_on_the_valid_observed_graph_and_selects_on_valid():
    data = _clustered()
    # One user's test item repeats its validation item: seen at test time, it can never be a hit.
    data.test[0] = data.valid[0].copy()
    args = FitArgs(output_dir="", epochs=3, patience=3, progress=False, plot=False, device="cpu", ks="10", metric="recall@10")
    torch.manual_seed(0)
    model = MODELS["lightgcn"](data, FAST["lightgcn"])
    res = fit(model, data, args)
    assert res["test_graph"] == "train+valid"
    # After fit the model is back on the training graph with the best weights: valid reproduces.
    assert evaluate_data(model, data, "valid", (10,))["recall@10"] == pytest.approx(res["valid"]["recall@10"])
    both = data.with_valid_observed()
    model.set_graph(both)
    assert evaluate_data(model, both, "test", (10,))["recall@10"] == pytest.approx(res["test"]["recall@10"])
    ue, ie = model.embeddings()
    from missrec.graph.evaluate import multi_ranks
    _, ranks = multi_ranks(ue, ie, np.array([0]), data.test, (both.train_indptr, both.train_indices))
    assert ranks.tolist() == [data.n_items + 1]
    torch.manual_seed(0)
    plain = fit(MODELS["lightgcn"](data, FAST["lightgcn"]), data, FitArgs(**{**args.__dict__, "test_graph": "train"}))
    assert plain["test_graph"] == "train" and plain["valid"] == res["valid"] and plain["test"] != res["test"]


# ------------------------------------------------------------------ the other layouts, end to end
def _write_mmssl(folder, data):
    folder.mkdir()
    for name, rows in (("train", [data.train_items(u) for u in range(data.n_users)]), ("val", data.valid),
                       ("test", data.test)):
        (folder / f"{name}.json").write_text(json.dumps({str(u): [int(i) for i in r] for u, r in enumerate(rows)}))
    for m, f in data.features.items():
        np.save(folder / f"{m}_feat.npy", f)


def _write_slmrec(folder, data):
    folder.mkdir()
    u, i = data.train_pairs()
    # raw ids shifted so the loader's remapping is exercised
    (folder / "toy.train").write_text("".join(f"{a + 100},{b + 7}\n" for a, b in zip(u, i)))
    (folder / "toy.test").write_text("".join(f"{a + 100},{int(b) + 7}\n" for a in range(data.n_users) for b in data.test[a]))
    np.save(folder / "toy_FeatureVideo_normal.npy", np.concatenate([np.zeros((7, 8), np.float32), data.features["image"]]))
    np.save(folder / "toy_FeatureText_stl_normal.npy", np.concatenate([np.zeros((7, 8), np.float32), data.features["text"]]))


@pytest.mark.parametrize("layout", ["mmssl", "slmrec"])
def test_layout_configs_run_end_to_end(tmp_path, layout):
    from missrec.recipes.baselines import run_baseline as main

    data = _clustered()
    root = tmp_path / "data"
    out = tmp_path / "out"
    if layout == "mmssl":
        _write_mmssl(root, data)
        argv = ["--config", "baselines/configs/mmssl_sports.yaml", "--data_root", str(root), "--model_opts", "batch_size=32"]
    else:
        _write_slmrec(root, data)
        argv = ["--config", "baselines/configs/slmrec_defaults.yaml", "--data_root", str(root), "--dataset", "toy",
                "--model", "slmrec", "--model_opts", "batch_size=128"]
    res = main(argv + ["--output_dir", str(out), "--epochs", "2", "--progress", "false", "--plot", "false"])
    assert res["epochs_run"] == 2 and res["data_info"]["format"] == layout
    assert res["test_graph"] == ("train" if layout == "mmssl" else "train+valid")
    for split in ("valid", "test"):
        assert all(np.isfinite(v) for v in res[split].values())
    saved = json.loads((out / "results.json").read_text())
    assert saved["test_graph"] == res["test_graph"] and saved["model"] == layout
    if layout == "slmrec":
        split = json.loads((out / "valid_split.json").read_text())
        assert split["valid_seed"] == 2021 and sum(len(v) for v in split["valid"].values()) == res["data"]["valid"]
        assert res["cfg"]["lr"] == 0.01 and res["cfg"]["ssl_task"] == "FAC"  # the original's defaults
    else:
        assert res["cfg"]["T"] == 2 and res["cfg"]["m_topk_rate"] == 0.02  # the sports block
