"""SASRec baseline: causal encoder, trained and evaluated through the shared finetuning path."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from missrec.factory import load_model
from missrec.data.atomic import Split, write_dataset
from missrec.sasrec import SASRec, SASRecConfig


def _successor_dataset(root, n_items=30, n_users=60, seed=0):
    """Every user walks the catalogue: next item = previous + 1 (mod n). No features at all."""
    rng = np.random.default_rng(seed)
    rows = {"train": ([], [], []), "valid": ([], [], []), "test": ([], [], [])}
    for u in range(n_users):
        start, n = int(rng.integers(n_items)), int(rng.integers(6, 12))
        s = [(start + k) % n_items for k in range(n)]
        for t in range(1, n - 2):
            for r, v in zip(rows["train"], (str(u), s[:t], s[t])):
                r.append(v)
        for split, cut in (("valid", n - 2), ("test", n - 1)):
            for r, v in zip(rows[split], (str(u), s[:cut], s[cut])):
                r.append(v)
    splits = {k: Split.from_lists(*v) for k, v in rows.items()}
    return write_dataset(root, "walk", item_ids=[f"m{i}" for i in range(n_items)], splits=splits,
                         user_ids=[str(u) for u in range(n_users)])


def test_defaults_are_the_usual_sasrec():
    c = SASRecConfig(n_items=10)
    assert (c.hidden_size, c.num_layers, c.n_heads, c.dropout, c.inner_size) == (64, 2, 2, 0.5, 256)


def test_attention_is_causal():
    torch.manual_seed(0)
    m = SASRec(SASRecConfig(n_items=20, max_seq_length=8)).eval()
    seq = torch.tensor([[3, 5, 7, 9, 11, 0, 0, 0]])
    changed = seq.clone()
    changed[0, 3:5] = torch.tensor([1, 2])
    for n in (1, 2, 3):
        u1 = m.encode(seq, torch.tensor([n]))
        u2 = m.encode(changed, torch.tensor([n]))
        torch.testing.assert_close(u1, u2)  # later items (and padding) never reach position n - 1
    u1 = m.encode(seq, torch.tensor([5]))
    u2 = m.encode(changed, torch.tensor([5]))
    assert not torch.allclose(u1, u2)


def test_trains_with_the_shared_loop_beats_popularity_and_reloads(tmp_path):
    from missrec.recipes.finetune import finetune
    from missrec.baselines import PopularityScorer
    from missrec.data.atomic import load_dataset
    from missrec.evaluate import evaluate
    from missrec.seqmodel import ModelScorer

    _successor_dataset(tmp_path)
    out = tmp_path / "out"
    res = finetune(["--data_root", str(tmp_path), "--dataset", "walk", "--model", "sasrec", "--epochs", "15",
                    "--train_batch_size", "64", "--learning_rate", "5e-3", "--patience", "40", "--output_dir", str(out),
                    "--progress", "false", "--plot", "false", "--seed", "1"])
    assert res["model"] == "sasrec"
    ds = load_dataset(tmp_path, "walk", require_features=())
    pop = evaluate(PopularityScorer.from_split(ds.splits["train"], ds.n_items), ds.splits["test"], ds.n_items,
                   progress=False)
    assert res["test"]["recall@10"] > 0.8 > pop["recall@10"] + 0.3
    losses = [h["train_loss"] for h in res["history"]]
    assert losses[-1] < 0.5 * losses[0]
    # The best checkpoint is a SASRec again (config.json model_type) and scores exactly as tested.
    assert json.loads((out / "best" / "config.json").read_text())["model_type"] == "sasrec"
    model = load_model(out / "best").eval()
    assert isinstance(model, SASRec)
    again = evaluate(ModelScorer(model), ds.splits["test"], ds.n_items, progress=False)
    assert again == pytest.approx(res["test"], abs=1e-6)
    # missrec-recommend serves it too (the walk goes on: after m3 m4 comes m5).
    from missrec.recommend import Recommender
    rec = Recommender(str(out / "best"), str(tmp_path), "walk", device="cpu")
    assert rec.recommend(["m3", "m4"], k=1)[0][0] == "m5"


def test_sasrec_refuses_pretrained(tmp_path):
    from missrec.recipes.finetune import finetune

    _successor_dataset(tmp_path)
    from missrec.errors import UserError
    with pytest.raises(UserError, match="--pretrained: --model sasrec trains from scratch"):
        finetune(["--data_root", str(tmp_path), "--dataset", "walk", "--model", "sasrec", "--pretrained", "x/y"])


def test_table_prints_sasrec_beside_missrec_and_popularity(tmp_path, capsys):
    from missrec.recipes.table import run_table as table
    from tests._tiny import make_domain

    make_domain(tmp_path, "tiny")
    rows = table(["--data_root", str(tmp_path), "--dataset", "tiny", "--settings", "noid-scratch,sasrec",
                  "--epochs", "1", "--hidden_size", "32", "--n_heads", "2", "--inner_size", "32",
                  "--output_dir", str(tmp_path / "out"), "--progress", "false", "--plot", "false"])
    assert [r["setting"] for r in rows] == ["noid-scratch", "sasrec"]
    lines = (tmp_path / "out" / "table.md").read_text().splitlines()
    assert lines[0].endswith("| time |")
    assert lines[2].startswith("| tiny | ✗ | ✗ | ") and lines[3].startswith("| tiny | SASRec (ID only) | ✗ | ")
    assert lines[4].startswith("| tiny | popularity | — | ") and len(lines) == 5
    for line, r in zip(lines[2:4], rows):
        assert f"| {r['test']['recall@10']:.4f} | {r['test']['ndcg@10']:.4f} |" in line and line.endswith(" s |")
    from missrec.errors import UserError
    with pytest.raises(UserError, match="need --pretrained"):
        table(["--data_root", str(tmp_path), "--dataset", "tiny", "--settings", "id-pt"])
