"""The one comparison command (missrec/recipes/compare.py) and the batch-size adaptation of the
graph baselines' defaults (missrec/recipes/baselines.py)."""
from __future__ import annotations

import json
import math

import pytest

from missrec.recipes.baselines import adapt_batch_size, steps_per_epoch
from missrec.recipes.compare import _model_list, summarize
from missrec.recipes.compare import compare as main

TINY_SEQ = "--hidden_size 32 --n_heads 2 --inner_size 32 --train_batch_size 256 --eval_batch_size 512"


@pytest.mark.slow
def test_compare_runs_every_model_kind_on_the_sample_and_collects_on_rerun(tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["--dataset", "sample_a", "--models", "missrec-id,sasrec,lightgcn", "--seeds", "2", "--epochs", "1",
            "--output_dir", str(out), "--finetune_args", TINY_SEQ, "--baseline_args", "--eval_batch_size 512"]
    res = main(argv)
    # A long graph run is never silent: one line per epoch (the sequential runs log every --log_every steps).
    assert "[lightgcn] epoch 1: loss" in capsys.readouterr().out
    assert res["models"] == ["missrec-id", "sasrec", "lightgcn", "popularity"]
    assert res["seeds"] == [2022, 2023]
    saved = json.loads((out / "results.json").read_text())
    md = (out / "results.md").read_text()
    assert "leave-one-out by time" in md and "full ranking of all 500 items" in md and "Mean ± s.e. over 2 seeds" in md
    for name in ("missrec-id", "sasrec", "lightgcn", "popularity"):
        assert f"| {name} |" in md
        s = saved["summary"][name]
        assert 0.0 <= s["recall@50"]["mean"] <= 1.0 and s["recall@10"]["mean"] <= s["recall@50"]["mean"]
    for r in saved["runs"]:
        if r["model"] != "popularity":
            assert r["best_epoch"] == 1 and r["params"] > 0 and r["wall_seconds"] > 0
            assert r["test"]["recall@20"] is not None
    assert saved["summary"]["lightgcn"]["recall@20"]["n"] == 2
    # The sequential runs masked the history, the graph runs observed train + valid at test.
    ft = json.loads((out / "sasrec" / "seed2022" / "results.json").read_text())
    g = json.loads((out / "lightgcn" / "seed2023" / "results.json").read_text())
    assert g["test_graph"] == "train+valid" and g["metric"] == "recall@20" and ft["metric"] == "recall@20"
    # Again: every run is collected from its folder, nothing retrains.
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/results.json")}
    assert len(stamps) == 6
    again = main(argv)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert [r["test"] for r in again["runs"]] == [r["test"] for r in res["runs"]]


def test_model_list_and_errors():
    assert _model_list("missrec-id,sasrec", "none") == ["missrec-id", "sasrec"]
    assert _model_list("missrec-id,missrec-noid,gru4rec", "ckpt") == \
        ["missrec-id", "missrec-id-pt", "missrec-noid", "missrec-noid-pt", "gru4rec"]
    with pytest.raises(ValueError, match="listed twice"):
        _model_list("sasrec,sasrec", "none")
    with pytest.raises(ValueError, match="needs --pretrained"):
        main(["--models", "missrec-id-pt", "--output_dir", "unused"])
    with pytest.raises(ValueError, match="unknown MISSRec setting"):
        main(["--models", "missrec-big", "--output_dir", "unused"])


def test_model_args_reach_only_their_model_and_bad_ones_are_one_line_errors(tmp_path):
    out = tmp_path / "cmp"
    res = main(["--dataset", "sample_a", "--models", "lightgcn,vbpr", "--epochs", "1", "--output_dir", str(out),
                "--baseline_args", "--eval_batch_size 512", "--model_args", "lightgcn=--epochs 2 --patience 5"])
    runs = {r["model"]: r for r in res["runs"]}
    assert runs["lightgcn"]["epochs_run"] == 2 and runs["vbpr"]["epochs_run"] == 1
    for bad, msg in (("sasrec=--epochs 2", "not in --models"), ("lightgcn", "expected NAME="),
                     ("lightgcn=--seed 'x", "--model_args lightgcn")):
        with pytest.raises(ValueError, match=msg):
            main(["--dataset", "sample_a", "--models", "lightgcn", "--output_dir", str(tmp_path / "x"),
                  "--model_args", bad])
    with pytest.raises(ValueError, match="given twice"):
        main(["--dataset", "sample_a", "--models", "lightgcn", "--output_dir", str(tmp_path / "x"),
              "--model_args", "lightgcn=--epochs 2", "--model_args", "lightgcn=--epochs 3"])


def test_summary_is_mean_and_standard_error():
    runs = [{"test": {"recall@10": v}, "best_epoch": e, "wall_seconds": 1.0, "params": 10}
            for v, e in ((0.1, 3), (0.2, 5), (0.3, 4))]
    s = summarize(runs)
    assert s["recall@10"]["mean"] == pytest.approx(0.2)
    assert s["recall@10"]["se"] == pytest.approx(0.1 / math.sqrt(3))
    assert s["best_epoch"]["mean"] == 4 and s["params"]["se"] == 0.0
    one = summarize(runs[:1])
    assert one["recall@10"]["se"] is None


def test_default_batch_size_adapts_to_a_small_dataset_and_explicit_one_is_kept():
    # VBPR's default 2048 on the sample's 2,303 training pairs: 2 steps an epoch.
    defaults = {"batch_size": 2048}
    cfg, note = adapt_batch_size("vbpr", defaults, {}, 2303, 20)
    assert cfg["batch_size"] == 115 and steps_per_epoch("vbpr", 2303, 115) >= 20
    assert "default batch_size 2048 would give 2 optimiser step(s)" in note and "using batch_size 115" in note
    cfg, note = adapt_batch_size("vbpr", defaults, {"batch_size": 1024}, 2303, 20)
    assert cfg == {"batch_size": 1024} and "kept because it was set explicitly" in note
    # Enough steps (a real dataset), or the check off: nothing changes.
    assert adapt_batch_size("lightgcn", defaults, {}, 97_171, 20) == ({}, "")
    assert adapt_batch_size("vbpr", defaults, {}, 2303, 0) == ({}, "")
    # MMSSL's epoch is n_train // batch + 1 user batches.
    assert steps_per_epoch("mmssl", 2303, 1024) == 3
    cfg, _ = adapt_batch_size("mmssl", {"batch_size": 1024}, {}, 2303, 20)
    assert steps_per_epoch("mmssl", 2303, cfg["batch_size"]) >= 20


def test_baselines_run_prints_and_records_the_adapted_batch_size(tmp_path, capsys):
    from missrec.recipes.baselines import run_baseline as run

    res = run(["--model", "vbpr", "--epochs", "1", "--output_dir", str(tmp_path), "--plot", "false",
               "--progress", "false", "--model_opts", "embed_dim=8,visual_dim=8"])
    out = capsys.readouterr().out
    assert "note: vbpr: default batch_size 2048 would give" in out
    assert res["cfg"]["batch_size"] < 2048 and res["notes"][0].startswith("note: vbpr")
    assert json.loads((tmp_path / "results.json").read_text())["notes"] == res["notes"]


def test_a_model_below_popularity_on_validation_is_warned():
    from missrec.recipes.baselines import below_popularity

    r = {"model": "vbpr", "valid": {"recall@20": 0.15}, "popularity": {"valid": {"recall@20": 0.26}},
         "best_epoch": 20, "epochs_run": 28}
    w = below_popularity(r, "recall@20")
    assert w.startswith("warning: vbpr: validation recall@20 0.1500 is below popularity's 0.2600")
    r["valid"]["recall@20"] = 0.3
    assert below_popularity(r, "recall@20") == ""
