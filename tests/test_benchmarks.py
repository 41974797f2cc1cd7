"""Smoke test of benchmarks/: every bench in --quick mode through run_all, on the CPU."""
from __future__ import annotations

import json

import pytest

EXPECTED = {
    "interest_tokens": {"main": ["batch", "length", "ours_ms", "reference_ms", "speedup", "match"]},
    "kmeans": {"main": ["N_items", "vectors", "K", "ours_s", "ours_single_step_s", "reference_s",
                        "speedup_single_step", "speedup_full", "extrapolated"]},
    "train": {"pretrain": ["ours_step_s", "reference_step_s", "speedup", "ours_seq_per_s", "ours_peak_mb",
                           "reference_peak_mb", "matmul_roof_frac"],
              "finetune": ["steps_per_epoch", "ours_epoch_s", "reference_epoch_s", "epoch_speedup",
                           "ours_discovery_s", "ours_peak_mb", "epoch_timing"]},
    "attention": {"main": ["lengths", "mode", "padded_ms", "buckets_ms", "jagged_ms", "flex_ms", "max_abs_diff",
                           "flex_note"]},
    "eval": {"main": ["items", "ours_users_per_s", "reference_users_per_s", "speedup", "ndcg@10_ours",
                      "ndcg@10_reference"]},
    "graph": {"main": ["model", "batches_per_epoch", "s_per_batch", "epoch_s", "eval_s", "peak_gib", "params"]},
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from benchmarks import run_all

    out = tmp_path_factory.mktemp("bench")
    # One thread: on a shared 2-core machine multi-threaded ops stall when the other core is busy.
    summary = run_all.main(["--quick", "--device", "cpu", "--threads", "1", "--out-dir", str(out)])
    return out, summary


def test_run_all_quick_writes_json_tables_and_plots(quick_run):
    from benchmarks import run_all

    out, summary = quick_run
    assert summary["failed"] == [], summary
    assert set(summary["benches"]) == set(run_all.available())
    for name, columns in EXPECTED.items():
        data = json.loads((out / f"{name}.json").read_text())
        assert data["benchmark"] == name and data["quick"] is True
        for key in ("device", "dtype", "torch", "python"):
            assert data["env"][key]
        assert data["env"]["dtype"] == "fp32"  # the CPU default
        for table, cols in columns.items():
            t = data["tables"][table]
            assert set(cols) <= set(t["columns"]), (name, table, t["columns"])
            assert t["rows"], (name, table)
            for row in t["rows"]:
                assert set(t["columns"]) <= set(row)
    for kind in ("items", "batch", "seqlen"):
        png = out / f"scaling_{kind}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 5000
    assert json.loads((out / "summary.json").read_text())["failed"] == []
    assert "| speedup |" in (out / "tables.md").read_text()
    graph = json.loads((out / "graph.json").read_text())["tables"]["main"]["rows"]
    assert [r["model"] for r in graph] == ["lightgcn", "vbpr", "slmrec", "mmssl"]
    assert all(r["epoch_s"] > 0 and r["params"] > 0 for r in graph)


def test_references_agree_with_ours(quick_run):
    out, _ = quick_run
    tokens = json.loads((out / "interest_tokens.json").read_text())
    assert all(r["match"] for r in tokens["tables"]["main"]["rows"])
    ev = json.loads((out / "eval.json").read_text())
    for r in ev["tables"]["main"]["rows"]:
        assert r["ndcg@10_ours"] == pytest.approx(r["ndcg@10_reference"], abs=1e-6)
        assert r["recall@50_ours"] == pytest.approx(r["recall@50_reference"], abs=1e-6)
        assert r["ours_users_per_s"] > 0 and r["reference_users_per_s"] > 0
    att = json.loads((out / "attention.json").read_text())
    for r in att["tables"]["main"]["rows"]:
        assert r["max_abs_diff"] < 1e-4 and r["buckets_ms"] > 0 and r["jagged_ms"] > 0 and r["padded_ms"] > 0
    assert {r["lengths"] for r in att["tables"]["main"]["rows"]} == {"amazon", "uniform", "movielens"}
    km = json.loads((out / "kmeans.json").read_text())
    rows = km["tables"]["main"]["rows"]
    # The quick budget is tiny on purpose, so both the measured and the extrapolated paths run.
    assert any(r["extrapolated"] == "no" for r in rows) and any(r["extrapolated"] != "no" for r in rows)
    from missrec.interest import n_interests

    for r in rows:
        assert r["K"] == n_interests(r["N_items"], r["ratio"]) and r["vectors"] == 2 * r["N_items"]
        assert r["ours_s"] > 0 and r["reference_s"] > 0


def test_reference_kmeans_is_a_single_pass():
    import torch

    from benchmarks.reference import ref_cluster_kmeans

    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(300, 8, generator=g) + 6 * i for i in range(3)])
    labels, centroids = ref_cluster_kmeans(x, 3)
    assert labels.shape == (900,) and centroids.shape == (3, 8)
    assert int(labels.min()) >= 0 and int(labels.max()) < 3
