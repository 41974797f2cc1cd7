"""Training loop: distributed == single process, resume == uninterrupted, PEFT freezes, outputs."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from _tiny import make_domain
from missrec.items import ItemTable
from missrec.trainer import clean_stale
from missrec.objectives import item_drop

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SMALL = ["--hidden_size", "32", "--n_heads", "2", "--inner_size", "32", "--progress", "false",
         "--train_batch_size", "64", "--save_every", "1"]


def _env(**extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}
    env.pop("MISSREC_KILL_AFTER_STEP", None)
    env.update(extra)
    return env


def _pretrain(data, out, *extra, launcher=None, env=None, check=True):
    cmd = (launcher or [sys.executable]) + [str(ROOT / "pretrain" / "run.py"), "--data_root", str(data),
                                             "--dataset", "tinypt", "--output_dir", str(out), *SMALL, *extra]
    p = subprocess.run(cmd, env=env or _env(), capture_output=True, text=True, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def _weights(folder):
    return load_file(str(Path(folder) / "model.safetensors"))


def test_two_processes_equal_one(data, tmp_path):
    # Dropout off: dropout masks are per-process random streams. Adam's epsilon is raised so that
    # parameters whose exact gradient is zero (attention key biases) are not moved by float noise.
    args = ["--epochs", "2", "--dropout", "0", "--adam_epsilon", "1e-4"]
    launcher = [str(BIN / "accelerate"), "launch", "--config_file", str(ROOT / "launch" / "cpu2.yaml")]
    p = _pretrain(data, tmp_path / "two", *args, launcher=launcher)
    assert "2 process(es)" in p.stdout + p.stderr
    _pretrain(data, tmp_path / "one", *args)
    summ = json.loads((tmp_path / "two" / "pretrain_summary.json").read_text())
    assert summ["num_processes"] == 2
    a, b = _weights(tmp_path / "two" / "checkpoint-2"), _weights(tmp_path / "one" / "checkpoint-2")
    start = _weights(tmp_path / "one" / "checkpoint-1")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert max((a[k] - start[k]).abs().max().item() for k in a) > 1e-3  # training really moved them


def test_killed_run_resumes_to_the_same_weights(data, tmp_path):
    args = ["--epochs", "3", "--save_steps", "3"]
    _pretrain(data, tmp_path / "full", *args)
    # 4 steps per epoch: killed after step 7, the newest checkpoint is checkpoint-step6, in the
    # middle of epoch 2, so the resume continues a half-done epoch (data order, RNG, running loss).
    p = _pretrain(data, tmp_path / "cut", *args, env=_env(MISSREC_KILL_AFTER_STEP="7"), check=False)
    assert p.returncode == 17
    assert not (tmp_path / "cut" / "checkpoint-3").exists()
    p = _pretrain(data, tmp_path / "cut", *args, "--resume_from", "latest")
    assert "checkpoint-step6" in p.stdout + p.stderr
    a, b = _weights(tmp_path / "full" / "checkpoint-3"), _weights(tmp_path / "cut" / "checkpoint-3")
    assert all(torch.equal(a[k], b[k]) for k in a)
    hist = json.loads((tmp_path / "full" / "pretrain_summary.json").read_text())["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]  # the loss falls
    resumed = json.loads((tmp_path / "cut" / "pretrain_summary.json").read_text())["history"]
    assert [h["train_loss"] for h in resumed] == pytest.approx([h["train_loss"] for h in hist], abs=1e-6)


def test_item_drop_keeps_modalities_aligned():
    g = torch.Generator().manual_seed(0)
    n, d, B, L = 30, 8, 16, 10
    items = ItemTable(torch.randn(n + 1, d, generator=g), torch.randn(n + 1, d, generator=g),
                      torch.randn(n + 1, d, generator=g), hidden_size=4)
    length = torch.randint(1, L + 1, (B,), generator=g)
    seq = torch.randint(1, n + 1, (B, L), generator=g) * (torch.arange(L) < length[:, None])
    keep = torch.rand(B, L, generator=g) < 0.6
    new, new_len, index = item_drop(seq, length, keep)
    for b in range(B):
        kept = [int(seq[b, i]) for i in range(int(length[b])) if keep[b, i] or i == 0]
        assert new[b, : new_len[b]].tolist() == kept
        assert (new[b, new_len[b]:] == 0).all()
    real = torch.arange(L) < new_len[:, None]
    for table in (items.text, items.image, items.text_aug):
        regathered = table[seq].gather(1, index.unsqueeze(-1).expand(-1, -1, d))
        assert torch.equal(regathered[real], table[new][real])


def _finetune(data, out, *extra, dataset="tiny", launcher=None, env=None, check=True):
    cmd = (launcher or [sys.executable]) + [str(ROOT / "finetune" / "run.py"), "--data_root", str(data),
                                             "--dataset", dataset, "--output_dir", str(out), *SMALL, *extra]
    p = subprocess.run(cmd, env=env or _env(), capture_output=True, text=True, timeout=300)
    if check:
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


def test_peft_finetune_freezes_and_reports(data, tmp_path):
    _pretrain(data, tmp_path / "pt", "--epochs", "1")
    pre = _weights(tmp_path / "pt" / "checkpoint-1")
    _finetune(data, tmp_path / "ft", "--pretrained", str(tmp_path / "pt" / "checkpoint-1"), "--epochs", "3",
              "--patience", "5")
    best = _weights(tmp_path / "ft" / "best")
    trainable = ("text_adaptor.", "img_adaptor.", "LayerNorm.", "fusion_factor", "item_embedding.")
    for k, v in pre.items():
        if k.startswith(trainable):
            continue
        assert torch.equal(v, best[k]), f"{k} changed although frozen"
    assert not torch.equal(pre["text_adaptor.weight"], best["text_adaptor.weight"])
    assert best["item_embedding.weight"].shape[0] == 31  # transductive: a fresh ID table
    res = json.loads((tmp_path / "ft" / "results.json").read_text())
    assert res["peft"] is True and res["trainable_params"] < res["total_params"]
    assert {"recall@10", "ndcg@10", "recall@50", "ndcg@50"} <= set(res["test"])
    assert 1 <= res["best_epoch"] <= 3  # epochs count from 1
    assert (tmp_path / "ft" / "results.md").read_text().startswith("# tiny")
    assert (tmp_path / "ft" / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_dataset_is_a_clear_error(data, tmp_path):
    cmd = [sys.executable, str(ROOT / "finetune" / "run.py"), "--data_root", str(tmp_path), "--dataset", "nope",
           "--output_dir", str(tmp_path / "o")]
    p = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert "nope" in p.stderr.strip().splitlines()[-1]


def test_recommend_returns_raw_ids(data, tmp_path):
    from missrec.recommend import Recommender
    _finetune(data, tmp_path / "ft", "--epochs", "1", "--mode", "inductive")
    rec = Recommender(str(tmp_path / "ft" / "best"), str(data), "tiny", device="cpu")
    top = rec.recommend(["I1", "I2"], k=5, exclude_history=True)
    assert len(top) == 5 and all(r.startswith("I") for r, _ in top)
    assert "I1" not in [r for r, _ in top] and "I2" not in [r for r, _ in top]
    assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)
    with pytest.raises(ValueError, match="unknown item ids"):
        rec.recommend(["nope"])


def test_two_process_finetune_equals_one(data, tmp_path):
    # 95 training rows in batches of 64: the last batch splits 16/15 across the two processes,
    # which the loop must weight exactly; evaluation is sharded and gathered.
    args = ["--epochs", "2", "--dropout", "0", "--adam_epsilon", "1e-4", "--patience", "5"]
    launcher = [str(BIN / "accelerate"), "launch", "--config_file", str(ROOT / "launch" / "cpu2.yaml")]
    cmd = launcher + [str(ROOT / "finetune" / "run.py"), "--data_root", str(data), "--dataset", "tiny",
                      "--output_dir", str(tmp_path / "two"), *SMALL, *args]
    p = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    _finetune(data, tmp_path / "one", *args)
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    assert two["num_processes"] == 2 and one["num_processes"] == 1
    a, b = _weights(tmp_path / "two" / "best"), _weights(tmp_path / "one" / "best")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert two["best_epoch"] == one["best_epoch"]
    for split in ("valid", "test"):
        for k, v in one[split].items():
            assert abs(two[split][k] - v) < 1e-3, (split, k)


def _tree(folder):
    """Every file under ``folder`` with its bytes: to show that nothing was rewritten."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def _temp_leftovers(folder):
    return sorted(p.name for p in Path(folder).iterdir() if p.name.endswith((".tmp", ".old")))


def test_killed_finetune_resumes_to_the_same_best_and_ignores_temp_folders(data, tmp_path):
    args = ["--epochs", "3", "--patience", "5"]
    _finetune(data, tmp_path / "full", *args)
    cut = tmp_path / "cut"
    # 95 rows in batches of 64: 2 steps per epoch, so step 3 is inside epoch 2 and checkpoint-1 is the newest.
    p = _finetune(data, cut, *args, env=_env(MISSREC_KILL_AFTER_STEP="3"), check=False)
    assert p.returncode == 17
    assert sorted(d.name for d in cut.iterdir() if d.name.startswith("checkpoint-")) == ["checkpoint-1"]
    # What a kill in the middle of a later write leaves: a temp checkpoint that claims to be newer,
    # and a half-written best/. Neither may be resumed from or survive the next run.
    shutil.copytree(cut / "checkpoint-1", cut / ".checkpoint-2.tmp")
    state = json.loads((cut / ".checkpoint-2.tmp" / "trainer_state.json").read_text())
    (cut / ".checkpoint-2.tmp" / "trainer_state.json").write_text(json.dumps({**state, "global_step": 999}))
    (cut / ".best.tmp").mkdir()
    (cut / ".best.tmp" / "model.safetensors").write_bytes(b"")
    p = _finetune(data, cut, *args, "--resume_from", "latest")
    assert f"resumed from {cut / 'checkpoint-1'} at epoch 2, step 2" in p.stdout + p.stderr  # epochs count from 1
    assert _temp_leftovers(cut) == []
    assert sorted(d.name for d in cut.iterdir() if d.name.startswith("checkpoint-")) == ["checkpoint-3"]
    a, b = _weights(tmp_path / "full" / "best"), _weights(cut / "best")
    assert all(torch.equal(a[k], b[k]) for k in a)
    full, resumed = (json.loads((d / "results.json").read_text()) for d in (tmp_path / "full", cut))
    for key in ("valid", "test", "best_epoch", "epochs_run", "history"):
        assert resumed[key] == full[key], key


def test_clean_stale_removes_unfinished_writes_and_restores_a_swapped_out_folder(tmp_path):
    for name in (".checkpoint-4.tmp", ".checkpoint-step8.old", "checkpoint-step8", ".best.old", ".best.tmp",
                 ".keep.tmp", "checkpoint-2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text(name)
    clean_stale(tmp_path, r"checkpoint-(?:\d+|step\d+)")
    clean_stale(tmp_path, "best")
    # .best.old: killed between moving best/ aside and renaming the new one in, so it comes back.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".keep.tmp", "best", "checkpoint-2", "checkpoint-step8"]
    assert (tmp_path / "best" / "f").read_text() == ".best.old"
    assert (tmp_path / "checkpoint-step8" / "f").read_text() == "checkpoint-step8"


def _diverged_step(p) -> int:
    last = p.stderr.strip().splitlines()[-1]
    m = re.fullmatch(r"error: training diverged at step (\d+) \(epoch \d+\): loss .*", last)
    assert m, p.stderr[-2000:]
    return int(m[1])


def test_huge_learning_rate_stops_at_the_bad_step_and_keeps_the_last_checkpoint(data, tmp_path):
    out = tmp_path / "ft"
    p = _finetune(data, out, "--epochs", "2", "--learning_rate", "1e12", "--save_steps", "1", check=False)
    assert p.returncode == 2
    step = _diverged_step(p)
    assert step >= 2  # step 1 starts from the finite initial weights
    assert (out / f"checkpoint-step{step - 1}").is_dir() and not (out / f"checkpoint-step{step}").exists()
    good = _weights(out / f"checkpoint-step{step - 1}")
    assert all(torch.isfinite(v).all() for v in good.values())
    assert not (out / "results.json").exists() and _temp_leftovers(out) == []


def test_two_processes_stop_together_on_a_huge_learning_rate(data, tmp_path):
    launcher = [str(BIN / "accelerate"), "launch", "--config_file", str(ROOT / "launch" / "cpu2.yaml")]
    p = _finetune(data, tmp_path / "two", "--epochs", "2", "--learning_rate", "1e12", launcher=launcher, check=False)
    assert p.returncode != 0
    assert p.stderr.count("error: training diverged at step") == 2  # both processes, same step, no hang


def test_huge_feature_row_stops_training_and_leaves_checkpoint_and_best_untouched(tmp_path):
    # 512-d features as CLIP gives: one item's text row of 1e20 overflows the adaptor's norm.
    make_domain(tmp_path, name="big", dim=512)
    out = tmp_path / "ft"
    _finetune(tmp_path, out, "--epochs", "1", dataset="big")
    before = _tree(out)
    feat = tmp_path / "big" / "big.feat1CLS"
    rows = np.fromfile(feat, dtype="<f4").reshape(30, 512)
    rows[5] = 1e20
    rows.tofile(feat)
    p = _finetune(tmp_path, out, "--epochs", "3", "--resume_from", "latest", dataset="big", check=False)
    assert p.returncode == 2
    assert _diverged_step(p) == 3  # the first step of epoch 2, after resuming from checkpoint-1
    assert _tree(out) == before  # checkpoint-1, best/ and the reports: not a byte changed, nothing added


@pytest.mark.parametrize("option", [["--epochs", "0"], ["--train_batch_size", "0"], ["--train_batch_size", "-512"]])
def test_bad_training_sizes_fail_before_any_work(data, tmp_path, option):
    p = _finetune(data, tmp_path / "ft", *option, check=False)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1].startswith(f"error: {option[0]}: must be an integer >= 1, got {option[1]}")
    assert not (tmp_path / "ft").exists() and p.stdout == ""


def test_training_options_are_checked_when_parsed(tmp_path, capsys):
    from missrec.args import ModelArgs, TrainArgs, parse

    def rejected(argv, needle):
        with pytest.raises(SystemExit) as e:
            parse((ModelArgs, TrainArgs), argv)
        assert e.value.code == 2
        assert needle in capsys.readouterr().err

    rejected(["--train_batch_size", "-512"], "--train_batch_size: must be an integer >= 1, got -512")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 1.5\n")
    rejected(["--config", str(cfg)], "epochs: expected an integer, got 1.5")
    rejected(["--learning_rate", "nan"], "--learning_rate")
    assert parse((ModelArgs, TrainArgs), ["--epochs", "2"])[1].epochs == 2
