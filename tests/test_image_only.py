"""Image-only data (no .feat1CLS): an image-only model (text_dim None, no text_adaptor) pretrains,
finetunes in both modes and recommends; the absent modality is recorded as absent in config.json,
the model card and the features' meta.json; the word-drop view (text) is refused; checkpoints move
between image-only and text+image data by the text-only rules (dims of the modalities read must
match, one-line error naming the checkpoint otherwise)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from missrec.config import MISSRecConfig
from missrec.errors import CorruptFileError, UserError
from missrec.model import MISSRec
from tests._modality import check_one_modality_model
from tests._tiny import make_corpus, make_domain

SMALL = ["--hidden_size", "32", "--n_heads", "2", "--inner_size", "32", "--progress", "false",
         "--train_batch_size", "64"]
FT = ["--plot", "false"]


def _drop(folder, *suffixes):
    for suffix in suffixes:
        for p in folder.glob(f"*.{suffix}"):
            p.unlink()
    return folder


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("imageonly")
    _drop(make_corpus(root), "feat1CLS", "feat2CLS")  # no text, so no word-drop view either
    _drop(make_domain(root), "feat1CLS")
    make_domain(root, "tinymm", seed=1)  # text + image
    _drop(make_domain(root, "tinytxt", seed=2), "feat3CLS")  # text only
    return root


@pytest.fixture(scope="module")
def pretrained(root, tmp_path_factory):
    """An image-only checkpoint pretrained one epoch on the image-only corpus, and what it printed."""
    import contextlib
    import io

    from missrec.recipes.pretrain import pretrain

    out = tmp_path_factory.mktemp("pt")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        pretrain(["--data_root", str(root), "--dataset", "tinypt", "--output_dir", str(out), "--epochs", "1", *SMALL])
    return out / "checkpoint-1", buf.getvalue()


def test_image_only_model_scores_with_images_alone():
    torch.manual_seed(0)
    n, d = 20, 8
    cfg = MISSRecConfig(hidden_size=16, n_heads=2, inner_size=16, text_dim=None, image_dim=d, dropout=0.0)
    model = MISSRec(cfg)
    assert model.text_adaptor is None and model.fusion_factor is None and cfg.modalities == ["image"]
    assert not any(k.startswith(("text_adaptor", "fusion_factor")) for k in model.state_dict())
    assert cfg.n_parameters() == sum(p.numel() for p in model.parameters())
    check_one_modality_model(model, "image", n, d)


def test_a_config_without_any_modality_is_an_error_naming_config_json(tmp_path):
    from missrec.factory import load_model

    MISSRec(MISSRecConfig(hidden_size=16, n_heads=2, inner_size=16, text_dim=None, image_dim=8)).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "image_dim": None}))
    with pytest.raises(CorruptFileError) as e:
        load_model(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "config.json") in msg and "text_dim" in msg and "image_dim" in msg


def test_image_only_pretraining_records_the_absent_text(pretrained):
    ckpt, out = pretrained
    assert "image features only, an image-only model" in out
    assert "augmentation auto: item drop" in out  # the view it makes, said once
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["text_dim"] is None and cfg["image_dim"] == 16
    weights = load_file(str(ckpt / "model.safetensors"))
    assert not any(k.startswith(("text_adaptor", "fusion_factor")) for k in weights) and "img_adaptor.weight" in weights
    card = (ckpt / "README.md").read_text()
    assert "(modalities only), image-only; no text features; image features of dim 16." in card and "text features of dim" not in card
    assert "image-only" in card.split("---")[1]  # a tag in the card's metadata


def test_image_only_finetunes_in_both_modes_and_recommends(root, pretrained, tmp_path, capsys):
    from missrec.recipes.finetune import finetune
    from missrec.recommend import Recommender

    ckpt, _ = pretrained
    runs = [("transductive", str(ckpt)), ("inductive", str(ckpt)), ("inductive", "none")]
    for mode, source in runs:
        out = tmp_path / f"ft-{mode}-{source == 'none'}"
        res = finetune(["--data_root", str(root), "--dataset", "tiny", "--mode", mode, "--pretrained", source,
                        "--epochs", "1", "--output_dir", str(out), *SMALL, *FT])
        assert "image features only, an image-only model" in capsys.readouterr().out
        assert all(math.isfinite(v) and 0 <= v <= 1 for v in res["test"].values())
        best = json.loads((out / "best" / "config.json").read_text())
        assert best["text_dim"] is None and best["use_id"] is (mode == "transductive")
        assert "no text features" in (out / "best" / "README.md").read_text()
    rec = Recommender(str(tmp_path / "ft-inductive-False" / "best"), str(root), "tiny")
    top = rec.recommend(["I1", "I2", "I3"], k=5)
    assert len(top) == 5 and all(np.isfinite(s) for _, s in top)


def test_checkpoints_move_between_image_only_and_text_image_data(root, pretrained, tmp_path, capsys):
    from missrec.recipes.finetune import finetune, main

    ckpt, _ = pretrained
    # An image-only checkpoint on a text+image target: the texts are not read (said so).
    finetune(["--data_root", str(root), "--dataset", "tinymm", "--pretrained", str(ckpt), "--epochs", "1",
              "--output_dir", str(tmp_path / "ft-mm"), *SMALL, *FT])
    assert "the dataset's text features are not used" in capsys.readouterr().out
    assert json.loads((tmp_path / "ft-mm" / "best" / "config.json").read_text())["text_dim"] is None
    # A text+image checkpoint on an image-only target: zero text rows, as with text-only data.
    both = MISSRec(MISSRecConfig(hidden_size=32, n_heads=2, inner_size=32, text_dim=16, image_dim=16))
    both.save_pretrained(tmp_path / "both")
    res = finetune(["--data_root", str(root), "--dataset", "tiny", "--pretrained", str(tmp_path / "both"),
                    "--epochs", "1", "--output_dir", str(tmp_path / "ft-both"), *SMALL, *FT])
    assert "no text features (tiny.feat1CLS absent): zero rows for all 30 items" in capsys.readouterr().out
    assert math.isfinite(res["test"]["ndcg@10"])
    assert json.loads((tmp_path / "ft-both" / "best" / "config.json").read_text())["text_dim"] == 16
    # Image dims that differ, or no modality in common: one line naming the checkpoint.
    wide = MISSRec(MISSRecConfig(hidden_size=32, n_heads=2, inner_size=32, text_dim=None, image_dim=8))
    wide.save_pretrained(tmp_path / "wide")
    for source, dataset in ((tmp_path / "wide", "tiny"), (ckpt, "tinytxt")):
        assert main(["--data_root", str(root), "--dataset", dataset, "--pretrained", str(source), "--epochs", "1",
                     "--output_dir", str(tmp_path / "ft-bad"), *SMALL, *FT]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {source}: expects text/image features of dims")


def test_word_drop_is_refused_for_an_image_only_model(root, tmp_path):
    from missrec.recipes.pretrain import pretrain

    for aug in ("word_drop", "both"):
        with pytest.raises(UserError, match=rf"^--augmentation: {aug} drops words of the item texts"):
            pretrain(["--data_root", str(root), "--dataset", "tinypt", "--output_dir", str(tmp_path / aug),
                      "--epochs", "1", "--augmentation", aug, *SMALL])


def test_missing_feature_files_are_named(tmp_path):
    from missrec.data.atomic import load_dataset
    from missrec.factory import create_model

    _drop(make_domain(tmp_path, "bare"), "feat1CLS", "feat3CLS")
    with pytest.raises(UserError, match=r"bare\.feat1CLS: file not found, nor bare\.feat3CLS"):
        create_model("missrec", load_dataset(tmp_path, "bare", require_features=()))
    # A corpus whose domains disagree on a modality: the missing file, not a silently dropped modality.
    corpus = make_corpus(tmp_path)
    (corpus / "dom1.feat1CLS").unlink()
    with pytest.raises(UserError, match=r"dom1\.feat1CLS: file not found, while domain 'dom0' has text features"):
        load_dataset(tmp_path, "tinypt", splits=("train",), require_features=())


def test_image_features_alone_record_no_text_encoder(tmp_path):
    pytest.importorskip("open_clip")
    from missrec.data.atomic import read_meta
    from missrec.features import extract
    from tests._features_helpers import TINY_MODEL, make_catalogue, tiny_config_file

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tiny_config_file(tmp_path)
        ids = [f"B{k}" for k in range(5)]
        folder = make_catalogue(tmp_path / "Toy", "Toy", ids, {i: f"item {i}" for i in ids}, {i: k for k, i in enumerate(ids)})
        args = [str(folder), "--model", TINY_MODEL, "--pretrained", "none", "--workers", "0", "--modalities", "image"]
        assert extract.main(args) == 0
        meta = read_meta(folder / "Toy.meta.json")
        assert meta["modalities"] == ["image"] and meta["dims"] == {"feat3CLS": 32}
        assert list(meta["encoder"]["files"]) == ["feat3CLS"] and "text_encoder" not in meta["encoder"]
        assert meta["encoder"]["files"]["feat3CLS"]["output"] == "encode_image"
        assert not (folder / "Toy.feat1CLS").exists() and not (folder / "Toy.feat2CLS").exists()
        # A text option with no text to compute: one line, nothing recorded.
        assert extract.main([*args, "--text_encoder", "all-MiniLM-L6-v2"]) == 2
        assert read_meta(folder / "Toy.meta.json") == meta
    finally:
        torch.set_num_threads(threads)
