"""Text-only data (no .feat3CLS): a text-only model (image_dim None) pretrains, finetunes and transfers;
the absent modality is recorded as absent in config.json and the model card; checkpoints with an
image adaptor keep working on text-only targets (zero image rows)."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from missrec.config import MISSRecConfig
from missrec.model import MISSRec
from tests._modality import check_one_modality_model
from tests._tiny import make_corpus, make_domain

SMALL = ["--hidden_size", "32", "--n_heads", "2", "--inner_size", "32", "--progress", "false",
         "--train_batch_size", "64"]
FT = ["--plot", "false"]


def _text_only(folder):
    for p in folder.glob("*.feat3CLS"):
        p.unlink()
    return folder


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("textonly")
    _text_only(make_corpus(root))
    _text_only(make_domain(root))
    make_domain(root, "tinymm", seed=1)  # text + image
    return root


def test_text_only_model_scores_with_text_alone():
    torch.manual_seed(0)
    n, d = 20, 8
    cfg = MISSRecConfig(hidden_size=16, n_heads=2, inner_size=16, text_dim=d, image_dim=None, dropout=0.0)
    model = MISSRec(cfg).eval()
    assert model.img_adaptor is None and cfg.modalities == ["text"]
    assert not any(k.startswith(("img_adaptor", "fusion_factor")) for k in model.state_dict())
    check_one_modality_model(model, "text", n, d)


def test_text_only_pretrain_then_finetune_in_all_settings(root, tmp_path, capsys):
    from missrec.recipes.finetune import finetune
    from missrec.recipes.pretrain import pretrain

    pretrain(["--data_root", str(root), "--dataset", "tinypt", "--output_dir", str(tmp_path / "pt"),
              "--epochs", "1", *SMALL])
    assert "a text-only model" in capsys.readouterr().out
    ckpt = tmp_path / "pt" / "checkpoint-1"
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["image_dim"] is None and cfg["text_dim"] == 16
    assert not any(k.startswith("img_adaptor") for k in load_file(str(ckpt / "model.safetensors")))
    card = (ckpt / "README.md").read_text()
    assert "text features of dim 16; no image features." in card and "image features of dim" not in card
    for pretrained in ("none", str(ckpt)):
        for mode in ("transductive", "inductive"):
            out = tmp_path / f"ft-{mode}-{pretrained != 'none'}"
            res = finetune(["--data_root", str(root), "--dataset", "tiny", "--mode", mode, "--pretrained", pretrained,
                            "--epochs", "1", "--output_dir", str(out), *SMALL, *FT])
            assert 0 <= res["test"]["ndcg@10"] <= 1
            best = json.loads((out / "best" / "config.json").read_text())
            assert best["image_dim"] is None
            assert "no image features." in (out / "best" / "README.md").read_text()
    # A text-only checkpoint on a target that has images: they are not used (said so), no error.
    res = finetune(["--data_root", str(root), "--dataset", "tinymm", "--pretrained", str(ckpt), "--epochs", "1",
                    "--output_dir", str(tmp_path / "ft-mm"), *SMALL, *FT])
    assert "the dataset's image features are not used" in capsys.readouterr().out
    assert json.loads((tmp_path / "ft-mm" / "best" / "config.json").read_text())["image_dim"] is None


def test_checkpoint_with_an_image_adaptor_finetunes_on_a_text_only_target(root, tmp_path, capsys):
    from missrec.recipes.finetune import finetune

    old = MISSRec(MISSRecConfig(hidden_size=32, n_heads=2, inner_size=32, text_dim=16, image_dim=16))
    old.save_pretrained(tmp_path / "old")
    res = finetune(["--data_root", str(root), "--dataset", "tiny", "--pretrained", str(tmp_path / "old"),
                    "--epochs", "1", "--output_dir", str(tmp_path / "ft"), *SMALL, *FT])
    assert "zero rows for all 30 items" in capsys.readouterr().out
    assert 0 <= res["test"]["recall@10"] <= 1
    best = json.loads((tmp_path / "ft" / "best" / "config.json").read_text())
    assert best["image_dim"] == 16
    assert "image features of dim 16." in (tmp_path / "ft" / "best" / "README.md").read_text()


def test_text_only_checkpoint_with_a_stray_fusion_factor_loads(tmp_path):
    from safetensors.torch import save_file

    model = MISSRec(MISSRecConfig(hidden_size=16, n_heads=2, inner_size=16, text_dim=8, image_dim=None))
    model.save_pretrained(tmp_path / "ck")
    weights = load_file(str(tmp_path / "ck" / "model.safetensors"))
    save_file({**weights, "fusion_factor": torch.tensor(0.0)}, str(tmp_path / "ck" / "model.safetensors"))
    from missrec.factory import from_pretrained
    again = from_pretrained(tmp_path / "ck")
    assert again.fusion_factor is None
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in weights.items())
