"""The sequential-model contract (missrec/seqmodel.py), its registry and factory, run choices over a
checkpoint, model options with --pretrained, and SASRec as the reference defines it."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from missrec.checkpoint import save_model
from missrec.config import MISSRecConfig
from missrec.data.atomic import load_dataset
from missrec.errors import OptionError
from missrec.factory import create_model, load_model
from missrec.model import MISSRec
from missrec.model_registry import MODELS
from missrec.sasrec import SASRec, SASRecConfig
from missrec.seqmodel import ModelScorer, SequentialModel


SMALL = {"hidden_size": 32, "n_heads": 2, "inner_size": 32}


def _options(cls) -> dict:
    return {k: v for k, v in SMALL.items() if k in cls.options}


# ----------------------------------------------------------------------------- every registered model
@pytest.mark.parametrize("model_type", list(MODELS))
def test_every_model_keeps_the_contract(data, tmp_path, model_type):
    config_cls, cls = MODELS[model_type]
    assert issubclass(cls, SequentialModel) and cls.config_cls is config_cls and cls.model_type == model_type
    ds = load_dataset(data, "tiny")
    torch.manual_seed(0)
    model = create_model(model_type, ds, options=_options(cls))
    items = model.make_items(ds)
    if "text" in cls.features + cls.optional_features:  # MISSRec: interest discovery first
        model.on_epoch_start(items, 0, _kmeans_args(), None, seed=0)
    batch = {k: torch.from_numpy(getattr(ds.splits["train"], k)[:8]) for k in ("seq", "length", "target")}
    terms = model.loss(batch, items)
    assert set(terms) <= {"ce", "reg"} and torch.isfinite(terms["ce"])
    model.eval()
    scorer = ModelScorer(model, items)
    u = scorer.encode(batch["seq"], batch["length"])
    every = scorer.score(u, torch.arange(1, ds.n_items + 1))
    assert every.shape == (8, ds.n_items)
    torch.testing.assert_close(model.score_all(u, items), every)
    torch.testing.assert_close(scorer.score_pairs(u, batch["target"]), every.gather(1, batch["target"][:, None] - 1)[:, 0])
    # Saved and loaded through the factory: the same class, the same scores.
    model.save_pretrained(tmp_path / "ckpt", items)
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["model_type"] == model_type
    back = load_model(tmp_path / "ckpt").eval()
    assert type(back) is cls
    back.load_item_state(items, tmp_path / "ckpt")
    torch.testing.assert_close(ModelScorer(back, items).score(u, torch.arange(1, ds.n_items + 1)), every)


def _kmeans_args():
    from missrec.args import TrainArgs
    return TrainArgs(interest_ratio=0.5, kmeans_iters=3)


def test_unknown_model_and_foreign_option_are_one_line_errors(data, tmp_path, monkeypatch):
    from missrec.recipes import finetune

    monkeypatch.setattr("missrec.data.atomic.load_dataset", lambda *a, **k: pytest.fail("data read"))
    with pytest.raises(OptionError, match=r"^--model: unknown model 'bert4rec'; known: missrec, sasrec"):
        finetune.finetune(["--data_root", str(data), "--dataset", "tiny", "--model", "bert4rec"])
    with pytest.raises(OptionError, match=r"^--num_decoder_layers: --model sasrec has no such option"):
        finetune.finetune(["--data_root", str(data), "--dataset", "tiny", "--model", "sasrec", "--num_decoder_layers", "2"])


# ----------------------------------------------------------------------------- run choices
def _missrec_ckpt(folder, **cfg):
    torch.manual_seed(0)
    c = MISSRecConfig(**SMALL, text_dim=16, image_dim=16, **cfg)
    save_model(folder, MISSRec(c))
    return folder


def test_a_checkpoints_run_choices_hold_unless_overridden(tmp_path):
    ckpt = _missrec_ckpt(tmp_path / "ckpt", interest_reg="original", attention_impl="padded")
    said = []
    m = load_model(ckpt, runtime={"interest_reg": None, "attention_impl": None}, announce=said.append)
    assert (m.config.interest_reg, m.config.attention_impl) == ("original", "padded")
    assert not any("overrides" in s for s in said) and "interest_reg original" in said[-1]
    said = []
    m = load_model(ckpt, runtime={"interest_reg": "mean", "attention_impl": None}, announce=said.append)
    assert (m.config.interest_reg, m.config.attention_impl) == ("mean", "padded")
    assert said[0] == f"{ckpt}: --interest_reg mean overrides the checkpoint's original"
    # The stored choice is the file's: loading never wrote to it.
    assert json.loads((ckpt / "config.json").read_text())["interest_reg"] == "original"


def test_pretrained_with_original_regulariser_finetunes_with_it(data, tmp_path, capsys):
    from missrec.recipes.finetune import finetune
    from missrec.recipes.pretrain import pretrain

    small = ["--hidden_size", "32", "--n_heads", "2", "--inner_size", "32", "--progress", "false"]
    pretrain(["--data_root", str(data), "--dataset", "tinypt", "--output_dir", str(tmp_path / "pt"), *small,
              "--epochs", "1", "--interest_reg", "original"])
    ckpt = tmp_path / "pt" / "checkpoint-1"
    assert json.loads((ckpt / "config.json").read_text())["interest_reg"] == "original"
    common = ["--data_root", str(data), "--dataset", "tiny", "--pretrained", str(ckpt), "--epochs", "1",
              "--progress", "false", "--plot", "false"]
    capsys.readouterr()
    finetune(common + ["--output_dir", str(tmp_path / "a")])
    out = capsys.readouterr().out
    assert json.loads((tmp_path / "a" / "best" / "config.json").read_text())["interest_reg"] == "original"
    assert "interest_reg original" in out and "overrides" not in out
    finetune(common + ["--output_dir", str(tmp_path / "b"), "--interest_reg", "mean"])
    out = capsys.readouterr().out
    assert json.loads((tmp_path / "b" / "best" / "config.json").read_text())["interest_reg"] == "mean"
    assert "--interest_reg mean overrides the checkpoint's original" in out


@pytest.mark.parametrize("argv", [["--interest_reg", "foo"], ["--attention_impl", "fast"]])
def test_bad_run_choice_is_refused_before_any_data_is_read(tmp_path, monkeypatch, capsys, argv):
    from missrec.cli import run
    from missrec.recipes.finetune import finetune

    monkeypatch.setattr("missrec.data.atomic.load_dataset", lambda *a, **k: pytest.fail("data read"))
    monkeypatch.setattr("missrec.data.sample.ensure_sample", lambda *a, **k: pytest.fail("sample generated"))
    with pytest.raises(SystemExit):
        run(finetune, argv)
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {argv[0]}: must be one of") and "\n" not in err
    (tmp_path / "c.yaml").write_text(f"{argv[0][2:]}: {argv[1]}\n")
    with pytest.raises(SystemExit):
        run(finetune, ["--config", str(tmp_path / "c.yaml")])
    assert f"c.yaml: {argv[0][2:]}: must be one of" in capsys.readouterr().err


# ----------------------------------------------------------------------------- model options over a checkpoint
def test_conflicting_architecture_option_with_pretrained_names_the_checkpoints_value(data, tmp_path):
    from missrec.recipes.finetune import finetune

    ckpt = _missrec_ckpt(tmp_path / "ckpt")
    for opt, value, stored in (("hidden_size", "64", 32), ("n_heads", "4", 2), ("inner_size", "64", 32),
                               ("num_encoder_layers", "2", 1), ("num_decoder_layers", "2", 1)):
        with pytest.raises(OptionError, match=rf"^--{opt}: {value} conflicts with --pretrained .*ckpt, "
                                              rf"whose {opt} is {stored}; drop --{opt}"):
            finetune(["--data_root", str(data), "--dataset", "tiny", "--pretrained", str(ckpt), f"--{opt}", value,
                      "--output_dir", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


def test_dropout_and_length_given_with_pretrained_apply_and_are_printed(data, tmp_path):
    ckpt = _missrec_ckpt(tmp_path / "ckpt", max_seq_length=20, dropout=0.2)
    ds = load_dataset(data, "tiny")
    said = []
    m = load_model(ckpt, for_data=ds, mode="inductive", announce=said.append,
                   options={"dropout": 0.3, "max_seq_length": 10, "hidden_size": 32})
    assert (m.config.dropout, m.config.max_seq_length, m.dropout.p) == (0.3, 10, 0.3)
    assert m.position_embedding.weight.shape[0] == 10
    stored = load_model(ckpt).position_embedding.weight
    torch.testing.assert_close(m.position_embedding.weight, stored[:10])  # positions count from the oldest item
    assert said[:2] == [f"{ckpt}: --dropout 0.3 overrides the checkpoint's 0.2",
                        f"{ckpt}: --max_seq_length 10 overrides the checkpoint's 20"]
    assert said[2].startswith(f"model missrec (from {ckpt}): hidden_size 32, n_heads 2") and "dropout 0.3" in said[2]
    # Nothing given: the checkpoint's values, printed as such.
    said = []
    m = load_model(ckpt, for_data=ds, mode="inductive", announce=said.append)
    assert (m.config.dropout, m.config.max_seq_length) == (0.2, 20) and "max_seq_length 20" in said[0]


# ----------------------------------------------------------------------------- SASRec as the reference defines it
def _sasrec(**kw):
    torch.manual_seed(0)
    return SASRec(SASRecConfig(n_items=500, **kw))


def test_sasrec_layers_start_independent_with_std_002():
    m = _sasrec(hidden_size=64, num_layers=3)
    layers = m.encoder["layers"]
    names = [n for n, p in layers[0].named_parameters() if p.dim() == 2]
    assert {"self_attn.in_proj_weight", "self_attn.out_proj.weight", "linear1.weight", "linear2.weight"} <= set(names)
    for n in names:
        ws = [dict(layer.named_parameters())[n] for layer in layers]
        for a in range(len(ws)):
            for b in range(a + 1, len(ws)):
                assert not torch.equal(ws[a], ws[b]), n
        for w in ws:
            assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002, (n, w.std().item())
    assert all(torch.count_nonzero(layer.self_attn.in_proj_bias) == 0 for layer in layers)


def test_sasrec_ffn_has_no_dropout_between_activation_and_second_linear():
    m = _sasrec(dropout=0.5).train()
    seen = {}
    layer = m.encoder["layers"][0]
    layer.linear1.register_forward_hook(lambda mod, i, o: seen.__setitem__("h", o))
    layer.linear2.register_forward_hook(lambda mod, i, o: seen.__setitem__("in", i[0]))
    m.encode(torch.randint(1, 500, (4, 12)), torch.full((4,), 12))
    torch.testing.assert_close(seen["in"], torch.nn.functional.gelu(seen["h"]), rtol=0, atol=0)
    # nn.TransformerEncoderLayer (the former layer) drops out there: the same check fails on it.
    old = nn.TransformerEncoderLayer(64, 2, 256, 0.5, activation="gelu", batch_first=True).train()
    old.linear1.register_forward_hook(lambda mod, i, o: seen.__setitem__("h", o))
    old.linear2.register_forward_hook(lambda mod, i, o: seen.__setitem__("in", i[0]))
    old(torch.randn(4, 12, 64))
    assert not torch.equal(seen["in"], torch.nn.functional.gelu(seen["h"]))


def test_sasrec_options_change_the_built_model(data):
    ds = load_dataset(data, "tiny", require_features=())
    m = create_model("sasrec", ds, options={"hidden_size": 48, "n_heads": 4, "inner_size": 96,
                                            "num_encoder_layers": 3, "dropout": 0.1, "max_seq_length": 7})
    c = m.config
    assert (c.hidden_size, c.n_heads, c.inner_size, c.num_layers, c.dropout, c.max_seq_length) == (48, 4, 96, 3, 0.1, 7)
    assert m.item_embedding.weight.shape == (31, 48) and m.position_embedding.weight.shape == (7, 48)
    assert len(m.encoder["layers"]) == 3 and m.encoder["layers"][0].linear1.out_features == 96
    assert m.encoder["layers"][0].self_attn.num_heads == 4 and m.dropout.p == 0.1
    d = create_model("sasrec", ds)
    assert (d.config.hidden_size, d.config.num_layers, d.config.dropout) == (64, 2, 0.5)
    for bad in ("num_decoder_layers", "temperature", "fusion"):
        with pytest.raises(OptionError, match=rf"^--{bad}: --model sasrec has no such option"):
            create_model("sasrec", ds, options={bad: 1})


def test_a_sasrec_checkpoint_of_the_former_layout_loads_and_scores_the_same(tmp_path):
    """Checkpoints written with nn.TransformerEncoder (and a 'temperature' key) still load."""
    from missrec.checkpoint import save_checkpoint

    torch.manual_seed(0)
    emb, pos = nn.Embedding(21, 32, padding_idx=0), nn.Embedding(8, 32)
    layer = nn.TransformerEncoderLayer(32, 2, 64, 0.5, activation="gelu", layer_norm_eps=1e-12, batch_first=True)
    enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    for p in enc.parameters():  # distinct layers, as trained weights would be
        nn.init.normal_(p, 0, 0.1)
    ln = nn.LayerNorm(32, eps=1e-12)
    old = nn.ModuleDict({"item_embedding": emb, "position_embedding": pos, "encoder": enc, "LayerNorm": ln}).eval()
    config = {"n_items": 20, "hidden_size": 32, "n_heads": 2, "num_layers": 2, "inner_size": 64, "dropout": 0.5,
              "hidden_act": "gelu", "layer_norm_eps": 1e-12, "initializer_range": 0.02, "max_seq_length": 8,
              "model_type": "sasrec", "source": {}, "temperature": 1.0}
    save_checkpoint(tmp_path / "old", config, old.state_dict())
    m = load_model(tmp_path / "old").eval()
    seq, length = torch.tensor([[3, 4, 5, 0], [7, 0, 0, 0]]), torch.tensor([3, 1])
    with torch.no_grad():
        x = ln(emb(seq) + pos.weight[:4])
        out = enc(x, mask=torch.triu(torch.ones(4, 4, dtype=torch.bool), 1))
        want = out[torch.arange(2), length - 1]
        torch.testing.assert_close(m.encode(seq, length), want)
