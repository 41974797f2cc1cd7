"""features/extract.py with a tiny open_clip config registered here (random weights, --pretrained none)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

open_clip = pytest.importorskip("open_clip")

from missrec.features import extract  # noqa: E402
from missrec.features import amazon as prepare_amazon  # noqa: E402
from missrec.data.atomic import load_dataset, read_features, read_meta  # noqa: E402
from missrec.fsutil import sha256_file  # noqa: E402
from tests._features_helpers import TINY_CONFIG, TINY_MODEL, make_catalogue, png, tiny_config_file, write_amazon_dump  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IDS = [f"B{k:04d}" for k in range(10)]
TEXTS = {i: f"item {k} {'red running shoe' if k % 2 else 'blue ceramic mug'}" for k, i in enumerate(IDS) if k not in (3, 7)}
IMAGES = {i: 100 + k for k, i in enumerate(IDS) if k % 3}  # items 0, 3, 6, 9 have no image


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    # One intra-op thread: on a shared 2-core box, OpenMP barriers make tiny models 100x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tiny_config_file(tmp_path_factory.mktemp("cfg"))
    torch.set_num_threads(threads)


def _toy(root: Path, name: str = "Toy") -> Path:
    folder = make_catalogue(root / name, name, IDS, TEXTS, IMAGES)
    # Item 4's file is not an image: it must count as unreadable and get a zero row.
    (folder / "images" / f"{IDS[4]}.png").write_bytes(b"definitely not a png")
    png(folder / "images" / f"{IDS[5]}.png", 7, mode="RGBA")  # alpha goes onto white
    return folder


def _args(folder: Path, *extra: str) -> list[str]:
    return [str(folder), "--model", TINY_MODEL, "--pretrained", "none", "--shard_size", "4", "--batch_size", "3",
            "--workers", "0", *extra]


def _reference_model(seed: int = 0):
    torch.manual_seed(seed)
    model, _, preprocess = open_clip.create_model_and_transforms(TINY_MODEL, pretrained=None)
    return model.eval(), preprocess, open_clip.get_tokenizer(TINY_MODEL)


def test_features_match_open_clip_and_missing_rows_are_zero(tiny, tmp_path, capsys):
    folder = _toy(tmp_path)
    assert extract.main(_args(folder)) == 0
    meta = read_meta(folder / "Toy.meta.json")
    assert meta["dims"] == {"feat1CLS": 32, "feat3CLS": 32}
    text = np.asarray(read_features(folder / "Toy.feat1CLS", n_items=10))
    image = np.asarray(read_features(folder / "Toy.feat3CLS", n_items=10))
    assert text.shape == image.shape == (10, 32)
    has_text = np.array([i in TEXTS for i in IDS])
    has_image = np.array([i in IMAGES and i != IDS[4] for i in IDS])
    assert (np.abs(text).sum(1) > 0).tolist() == has_text.tolist()
    assert (np.abs(image).sum(1) > 0).tolist() == has_image.tolist()
    assert meta["feature_counts"]["feat1CLS"] == {"dim": 32, "present": 8, "missing": 2, "unreadable": 0}
    assert meta["feature_counts"]["feat3CLS"] == {"dim": 32, "present": 5, "missing": 4, "unreadable": 1}
    assert meta["encoder"]["pretrained"] == "none" and meta["encoder"]["random_weights"] is True
    assert meta["encoder"]["model"] == TINY_MODEL
    assert meta["sha256"]["feat3CLS"] == sha256_file(folder / "Toy.feat3CLS")
    out = capsys.readouterr().out
    assert "feat3CLS: dim 32, 5 encoded, 4 missing, 1 unreadable" in out
    assert not (folder / ".Toy.shards").exists()

    model, preprocess, tokenizer = _reference_model()
    with torch.no_grad():
        rows = np.flatnonzero(has_text)
        ref = model.encode_text(tokenizer([TEXTS[IDS[r]] for r in rows])).numpy()
        np.testing.assert_allclose(text[rows], ref, rtol=1e-5, atol=1e-5)
        rows = np.flatnonzero(has_image)
        ims = []
        for r in rows:
            im = Image.open(folder / "images" / f"{IDS[r]}.png")
            if im.mode == "RGBA":
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                bg.alpha_composite(im)
                im = bg
            ims.append(preprocess(im.convert("RGB")))
        ref = model.encode_image(torch.stack(ims)).numpy()
        np.testing.assert_allclose(image[rows], ref, rtol=1e-5, atol=1e-5)

    # Decoding in DataLoader workers gives the same bytes.
    other = _toy(tmp_path / "w")
    assert extract.main(_args(other, "--workers", "1", "--modalities", "image")) == 0
    assert (other / "Toy.feat3CLS").read_bytes() == (folder / "Toy.feat3CLS").read_bytes()
    assert not (other / "Toy.feat1CLS").exists()


def _killed_after(monkeypatch, n: int) -> None:
    """The run dies (as on SIGINT) right after its n-th shard write."""
    real, done = extract.ShardStore.save, []

    def save(self, *args, **kwargs):
        real(self, *args, **kwargs)
        done.append(1)
        if len(done) == n:
            raise KeyboardInterrupt

    monkeypatch.setattr(extract.ShardStore, "save", save)


def test_kill_and_resume_is_byte_identical(tiny, tmp_path, capsys, monkeypatch):
    full = _toy(tmp_path / "full")
    assert extract.main(_args(full, "--text_aug_drop", "0.3")) == 0
    part = _toy(tmp_path / "part")
    # 3 shards per file, 3 files: killed after 1, then after 6 more (mid image), then finish.
    _killed_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        extract.main(_args(part, "--text_aug_drop", "0.3"))
    shards = part / ".Toy.shards"
    assert len(list(shards.glob("text-*.status.npy"))) == 1 and not (part / "Toy.feat1CLS").exists()
    monkeypatch.undo()
    _killed_after(monkeypatch, 6)
    with pytest.raises(KeyboardInterrupt):
        extract.main(_args(part, "--text_aug_drop", "0.3"))
    assert len(list(shards.glob("*.status.npy"))) == 7
    monkeypatch.undo()
    (shards / ".image-000002-deadbeef.npy.x1.tmp").write_bytes(b"half a shard from a killed write")
    capsys.readouterr()
    assert extract.main(_args(part, "--text_aug_drop", "0.3")) == 0
    out = capsys.readouterr().out
    assert "feat3CLS: resuming, 1 of 3 shards done" in out and "discarding 1 shard files" in out
    for suffix in ("feat1CLS", "feat2CLS", "feat3CLS"):
        assert (part / f"Toy.{suffix}").read_bytes() == (full / f"Toy.{suffix}").read_bytes(), suffix
    assert (part / "Toy.meta.json").read_text() == (full / "Toy.meta.json").read_text()
    assert not shards.exists()
    # Word-dropped text differs from the plain text for items that have text.
    t1 = np.fromfile(full / "Toy.feat1CLS", dtype="<f4").reshape(10, 32)
    t2 = np.fromfile(full / "Toy.feat2CLS", dtype="<f4").reshape(10, 32)
    assert not np.allclose(t1[0], t2[0]) and not t2[3].any()


def test_changed_input_recomputes_only_its_shard(tiny, tmp_path, capsys, monkeypatch):
    part = _toy(tmp_path / "a")
    _killed_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        extract.main(_args(part, "--modalities", "text"))
    monkeypatch.undo()
    texts = dict(TEXTS, **{IDS[0]: "a completely different title"})
    for folder in (part, tmp_path / "b" / "Toy"):
        make_catalogue(folder, "Toy", IDS, texts, {})
    capsys.readouterr()
    assert extract.main(_args(part, "--modalities", "text")) == 0
    assert "discarding 2 shard files" in capsys.readouterr().out  # shard 0 (features + status) only
    assert extract.main(_args(tmp_path / "b" / "Toy", "--modalities", "text")) == 0
    assert (part / "Toy.feat1CLS").read_bytes() == (tmp_path / "b" / "Toy" / "Toy.feat1CLS").read_bytes()


def test_corpus_folder_gets_features_per_domain(tiny, tmp_path):
    raw = tmp_path / "raw"
    write_amazon_dump(raw, "Grocery_and_Gourmet_Food", "2018")
    write_amazon_dump(raw, "Kindle_Store", "2023", gz=True)
    assert prepare_amazon.main(["--raw_dir", str(raw), "--out_root", str(tmp_path / "data"), "--corpus", "FK",
                                "--categories", "Grocery_and_Gourmet_Food", "Kindle_Store", "--kcore", "3"]) == 0
    folder = tmp_path / "data" / "FK"
    for item in "ABD":
        png(folder / "images" / "Food" / f"{item}.png", ord(item))
    assert extract.main(_args(folder)) == 0
    for d in ("Food", "Kindle"):
        assert (folder / f"{d}.feat1CLS").stat().st_size == 5 * 32 * 4
        assert read_meta(folder / f"{d}.meta.json")["dims"]["feat3CLS"] == 32
    img = np.fromfile(folder / "Food.feat3CLS", dtype="<f4").reshape(5, 32)
    assert (np.abs(img).sum(1) > 0).tolist() == [True, True, False, True, False]
    assert not np.fromfile(folder / "Kindle.feat3CLS", dtype="<f4").any()  # no images/Kindle: all zero
    meta = read_meta(folder / "FK.meta.json")
    assert meta["dims"] == {"feat1CLS": 32, "feat3CLS": 32} and meta["pt_datasets"] == ["Food", "Kindle"]
    assert meta["domain_feature_counts"]["Kindle"]["feat3CLS"]["missing"] == 5
    ds = load_dataset(tmp_path / "data", "FK", splits=("train", "valid"))
    assert ds.features["text"].shape == (10, 32) and ds.features["image"].shape == (10, 32)
    np.testing.assert_array_equal(ds.features["image"][np.arange(5)], img)


def test_local_weights_file_and_local_dir(tiny, tmp_path):
    from safetensors.torch import save_file

    model, _, _ = _reference_model(seed=5)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    wdir = tmp_path / "weights"
    wdir.mkdir()
    save_file(sd, str(wdir / "open_clip_model.safetensors"))
    (wdir / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CONFIG, "preprocess_cfg": {}}))
    a = _toy(tmp_path / "file")
    b = _toy(tmp_path / "dir")
    c = _toy(tmp_path / "seed5")
    common = ["--shard_size", "4", "--batch_size", "3", "--workers", "0"]
    assert extract.main([str(a), "--model", TINY_MODEL, "--pretrained", str(wdir / "open_clip_model.safetensors"), *common]) == 0
    assert extract.main([str(b), "--pretrained", f"local-dir:{wdir}", *common]) == 0
    assert extract.main([str(c), "--model", TINY_MODEL, "--pretrained", "none", "--seed", "5", *common]) == 0
    for suffix in ("feat1CLS", "feat3CLS"):
        assert (a / f"Toy.{suffix}").read_bytes() == (c / f"Toy.{suffix}").read_bytes()
        assert (b / f"Toy.{suffix}").read_bytes() == (c / f"Toy.{suffix}").read_bytes()
    meta = read_meta(a / "Toy.meta.json")["encoder"]
    assert meta["random_weights"] is False and meta["weights_sha256"] == sha256_file(wdir / "open_clip_model.safetensors")


def test_errors_are_one_clear_line(tiny, tmp_path, capsys):
    folder = _toy(tmp_path)
    # A pretrained tag without network (tests run with HF_HUB_OFFLINE=1).
    assert extract.main([str(folder), "--model", "ViT-B-32", "--pretrained", "openai"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'openai' weights of ViT-B-32" in err
    assert "--pretrained /path/to/open_clip_model.safetensors" in err and "local-dir:<dir>" in err
    assert extract.main([str(folder), "--model", "ViT-B-32", "--pretrained", "/no/such/file.safetensors"]) == 2
    assert "weights file not found" in capsys.readouterr().err
    assert extract.main([str(folder), "--model", "NoSuchNet", "--pretrained", "none"]) == 2
    assert "unknown open_clip model" in capsys.readouterr().err
    assert extract.main(_args(folder, "--images", str(tmp_path / "nope"))) == 2
    assert "image folder not found" in capsys.readouterr().err
    assert extract.main(_args(tmp_path / "missing")) == 2
    assert "dataset folder not found" in capsys.readouterr().err
    (folder / "Toy.item2index").unlink()
    assert extract.main(_args(folder)) == 2
    assert "Toy.item2index: file not found" in capsys.readouterr().err


def test_runs_as_a_script():
    r = subprocess.run([sys.executable, str(ROOT / "features" / "extract.py"), "--help"], capture_output=True,
                       text=True, timeout=120, cwd="/")
    assert r.returncode == 0 and "--pretrained" in r.stdout and "local-dir:" in r.stdout


def test_embedded_sample_end_to_end(tiny, tmp_path):
    sample = pytest.importorskip("missrec.data.sample")
    sample.generate(tmp_path, seed=3, n_sources=1, n_targets=1, source_items=40, source_users=50,
                    target_items=40, target_users=50, source_images=True)
    target = sample.target_names(1)[0]
    folder = tmp_path / target
    before = read_meta(folder / f"{target}.meta.json")
    assert extract.main(_args(folder, "--text_aug_drop", "0.2")) == 0  # images default to <folder>/images
    ds = load_dataset(tmp_path, target)
    assert ds.features["text"].shape == ds.features["image"].shape == ds.features["text_aug"].shape == (40, 32)
    counts = ds.meta["feature_counts"]
    assert counts["feat1CLS"]["missing"] == before["sample"]["n_missing_text"]
    assert counts["feat3CLS"]["missing"] == before["sample"]["n_missing_image"]
    assert counts["feat3CLS"]["present"] == len(list((folder / "images").glob("*.png")))
    assert ds.meta["encoder"]["pretrained"] == "none" and ds.meta["n_users"] == 50
    corpus = [p for p in tmp_path.iterdir() if (p / f"{p.name}.pt_datasets").is_file()][0]
    assert extract.main(_args(corpus, "--modalities", "image")) == 0
    ds = load_dataset(tmp_path, corpus.name, splits=("train", "valid"), require_features=("image",))
    assert ds.features["image"].shape == (40, 32)
