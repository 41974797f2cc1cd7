"""finetune --zero_shot: the pretrained model evaluated on a target as it is, and missrec-transfer's
noid-zeroshot setting."""
from __future__ import annotations

import json

import numpy as np
import pytest

from missrec.evaluate import metrics_from_ranks
from missrec.recipes.finetune import finetune, main as finetune_main
from missrec.recipes.pretrain import pretrain
from missrec.recipes import transfer

SMALL = ["--hidden_size", "32", "--n_heads", "2", "--inner_size", "32", "--progress", "false",
         "--train_batch_size", "64"]


@pytest.fixture(scope="module")
def ckpt(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("zs") / "pt"
    pretrain(["--data_root", str(data), "--dataset", "tinypt", "--output_dir", str(out), "--epochs", "1", *SMALL])
    return out / "checkpoint-1"


def _ft(data, ckpt, out, *extra):
    return finetune(["--data_root", str(data), "--dataset", "tiny", "--mode", "inductive", "--pretrained", str(ckpt),
                     "--output_dir", str(out), "--plot", "false", *SMALL, *extra])


def test_zero_shot_scores_the_pretrained_model_unchanged(data, ckpt, tmp_path):
    zs = _ft(data, ckpt, tmp_path / "zs", "--zero_shot", "true")
    saved = json.loads((tmp_path / "zs" / "results.json").read_text())
    assert saved["zero_shot"] is True and saved["epochs_run"] == 0 and saved["history"] == []
    assert not (tmp_path / "zs" / "best").exists()  # nothing trained, nothing saved
    ranks = np.load(tmp_path / "zs" / "test_ranks.npy", allow_pickle=False)
    assert metrics_from_ranks(ranks, (10, 20, 50)) == pytest.approx(saved["test"], abs=1e-6)
    # A finetuning run that cannot move the weights (one step at learning rate 1e-30, validated at its
    # end) discovers the same interests at its start and so scores exactly what zero-shot scored.
    still = _ft(data, ckpt, tmp_path / "lr0", "--learning_rate", "1e-30", "--max_steps", "1")
    assert still["test"] == pytest.approx(zs["test"], abs=1e-6)
    assert still["valid"] == pytest.approx(zs["valid"], abs=1e-6)
    # ...while real finetuning changes the scores.
    moved = _ft(data, ckpt, tmp_path / "ft", "--epochs", "2", "--learning_rate", "0.01")
    assert moved["valid"] != pytest.approx(zs["valid"], abs=1e-6)


@pytest.mark.parametrize("extra, needle", [
    (["--mode", "inductive"], "--zero_shot: evaluates a pretrained model as it is"),
    (["--mode", "transductive", "--pretrained", "x"], "--zero_shot: needs --mode inductive"),
])
def test_zero_shot_option_errors_are_one_line(data, tmp_path, capsys, extra, needle):
    assert finetune_main(["--data_root", str(data), "--dataset", "tiny", "--zero_shot", "true",
                          "--output_dir", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert not (tmp_path / "o").exists()


def test_transfer_adds_the_zero_shot_setting(data, ckpt, tmp_path, capsys):
    out = tmp_path / "tr"
    res = transfer.transfer(["--data_root", str(data), "--dataset", "tiny", "--pretrained", str(ckpt),
                             "--settings", "noid-scratch,noid-pt,noid-zeroshot", "--seeds", "0",
                             "--output_dir", str(out), "--epochs", "1", "--plot", "false", *SMALL])
    assert set(res["per_setting"]) == {"noid-scratch", "noid-pt", "noid-zeroshot"}
    zs = json.loads((out / "runs" / "noid-zeroshot-seed0" / "results.json").read_text())
    assert zs["zero_shot"] is True
    assert res["per_setting"]["noid-zeroshot"]["ndcg@10"]["mean"] == pytest.approx(zs["test"]["ndcg@10"])
    assert "noid" in res["paired_pretrained_minus_scratch"]  # pt vs scratch pairing unaffected
    assert "| noid-zeroshot |" in (out / "results.md").read_text()
    # A finished run copied into another transfer folder is reused there (its --output_dir aside).
    import shutil
    other = tmp_path / "tr2"
    shutil.copytree(out / "runs" / "noid-scratch-seed0", other / "runs" / "noid-scratch-seed0")
    capsys.readouterr()
    again = transfer.transfer(["--data_root", str(data), "--dataset", "tiny", "--settings", "noid-scratch",
                               "--seeds", "0", "--output_dir", str(other), "--epochs", "1", "--plot", "false", *SMALL])
    assert again["per_setting"]["noid-scratch"] == res["per_setting"]["noid-scratch"]
    assert again["runs"][0]["dir"] == str(other / "runs" / "noid-scratch-seed0")
    assert "== noid-scratch seed 0: reusing" in capsys.readouterr().out
