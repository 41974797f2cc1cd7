"""GRU4Rec, the model added as one file + one registry line: trained, evaluated, saved, served and
tabled through the same contract as MISSRec and SASRec."""
from __future__ import annotations

import json

import pytest
import torch

from missrec.errors import OptionError
from missrec.factory import create_model, load_model
from missrec.gru4rec import GRU4Rec, GRU4RecConfig
from tests.test_sasrec import _successor_dataset


def test_defaults_are_recboles():
    c = GRU4RecConfig(n_items=10)
    assert (c.embedding_size, c.hidden_size, c.num_layers, c.dropout) == (64, 128, 1, 0.3)
    m = GRU4Rec(c)
    assert m.gru_layers.input_size == 64 and m.gru_layers.hidden_size == 128 and not m.gru_layers.bias
    assert (m.dense.in_features, m.dense.out_features) == (128, 64)


def test_user_vector_is_read_at_the_last_real_position():
    torch.manual_seed(0)
    m = GRU4Rec(GRU4RecConfig(n_items=20)).eval()
    seq = torch.tensor([[3, 5, 7, 0, 0], [3, 5, 7, 9, 11]])
    u = m.encode(seq, torch.tensor([3, 3]))
    torch.testing.assert_close(u[0], u[1])  # what follows position 3 (padding or items) never counts
    assert not torch.allclose(u[1], m.encode(seq[1:], torch.tensor([5]))[0])


def test_options_apply_and_foreign_ones_are_refused(tmp_path):
    from missrec.data.atomic import load_dataset

    _successor_dataset(tmp_path)
    ds = load_dataset(tmp_path, "walk", require_features=())
    m = create_model("gru4rec", ds, options={"hidden_size": 32, "num_encoder_layers": 2, "dropout": 0.1,
                                             "max_seq_length": 9})
    assert (m.gru_layers.hidden_size, m.gru_layers.num_layers, m.emb_dropout.p, m.config.max_seq_length) == (32, 2, 0.1, 9)
    with pytest.raises(OptionError, match=r"^--n_heads: --model gru4rec has no such option"):
        create_model("gru4rec", ds, options={"n_heads": 2})


def test_trains_beats_popularity_reloads_and_is_served(tmp_path):
    from missrec.baselines import PopularityScorer
    from missrec.data.atomic import load_dataset
    from missrec.evaluate import evaluate
    from missrec.recipes.finetune import finetune
    from missrec.recommend import Recommender
    from missrec.seqmodel import ModelScorer

    _successor_dataset(tmp_path)
    out = tmp_path / "out"
    res = finetune(["--data_root", str(tmp_path), "--dataset", "walk", "--model", "gru4rec", "--epochs", "15",
                    "--train_batch_size", "64", "--learning_rate", "5e-3", "--patience", "40", "--output_dir", str(out),
                    "--progress", "false", "--plot", "false", "--seed", "1"])
    assert res["model"] == "gru4rec"
    ds = load_dataset(tmp_path, "walk", require_features=())
    pop = evaluate(PopularityScorer.from_split(ds.splits["train"], ds.n_items), ds.splits["test"], ds.n_items,
                   progress=False)
    assert res["test"]["recall@10"] > 0.8 > pop["recall@10"] + 0.3
    assert json.loads((out / "best" / "config.json").read_text())["model_type"] == "gru4rec"
    assert "# GRU4Rec" in (out / "best" / "README.md").read_text()
    model = load_model(out / "best").eval()
    assert isinstance(model, GRU4Rec)
    again = evaluate(ModelScorer(model), ds.splits["test"], ds.n_items, progress=False)
    assert again == pytest.approx(res["test"], abs=1e-6)
    rec = Recommender(str(out / "best"), str(tmp_path), "walk", device="cpu")
    assert rec.recommend(["m3", "m4"], k=1)[0][0] == "m5"


def test_refuses_pretrained(tmp_path):
    from missrec.errors import UserError
    from missrec.recipes.finetune import finetune

    _successor_dataset(tmp_path)
    with pytest.raises(UserError, match="--pretrained: --model gru4rec trains from scratch"):
        finetune(["--data_root", str(tmp_path), "--dataset", "walk", "--model", "gru4rec", "--pretrained", "x/y"])


def test_table_prints_gru4rec_beside_sasrec(tmp_path, capsys):
    from missrec.recipes.table import run_table as table
    from tests._tiny import make_domain

    make_domain(tmp_path, "tiny")
    rows = table(["--data_root", str(tmp_path), "--dataset", "tiny", "--settings", "sasrec,gru4rec", "--epochs", "1",
                  "--hidden_size", "32", "--n_heads", "2", "--inner_size", "32", "--output_dir", str(tmp_path / "out"), "--progress", "false", "--plot", "false"])
    assert [r["setting"] for r in rows] == ["sasrec", "gru4rec"]
    # One set of options for every row: GRU4Rec has no heads nor FFN, so those are left out for it.
    assert "note: --model gru4rec has no --n_heads, --inner_size; not used for it" in capsys.readouterr().out
    lines = (tmp_path / "out" / "table.md").read_text().splitlines()
    assert lines[2].startswith("| tiny | SASRec (ID only) | ✗ | ") and lines[3].startswith("| tiny | GRU4Rec (ID only) | ✗ | ")
    assert f"| {rows[1]['test']['recall@10']:.4f} | {rows[1]['test']['ndcg@10']:.4f} |" in lines[3]
