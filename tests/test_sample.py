"""The embedded synthetic sample: determinism, formats, leave-one-out splits, learnable structure."""
import json

import numpy as np
import pytest

from missrec.data.atomic import load_dataset, read_index_map, read_text
from missrec.baselines import baseline_table
from missrec.data.sample import MARKER, SampleConfig, ensure_sample, generate, read_summary
from missrec.recipes.sample import main

SMALL = dict(n_sources=2, source_items=120, source_users=150, n_targets=1, target_items=150, target_users=200)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    return root, generate(root, seed=3, **SMALL)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_byte_identical_other_seed_differs(small, tmp_path):
    root, _ = small
    generate(tmp_path / "again", seed=3, **SMALL)
    a, b = _files(root), _files(tmp_path / "again")
    assert a.keys() == b.keys() and len(a) > 20
    assert [k for k in a if a[k] != b[k]] == []
    generate(tmp_path / "other", seed=4, **SMALL)
    c = _files(tmp_path / "other")
    assert c["sample_a/sample_a.feat1CLS"] != a["sample_a/sample_a.feat1CLS"]
    assert c["sample_pt/sample_pt.train.inter"] != a["sample_pt/sample_pt.train.inter"]


def test_target_domain_layout_and_content(small):
    root, summary = small
    ds = load_dataset(root, "sample_a", require_features=("text", "image", "text_aug"))
    n = SMALL["target_items"]
    assert ds.n_items == n and len(ds.user_ids) == SMALL["target_users"]
    assert ds.meta["encoder"]["name"] == "synthetic" and ds.meta["dims"]["feat1CLS"] == 512
    for key in ("text", "image", "text_aug"):
        f = np.asarray(ds.features[key])
        assert f.shape == (n, 512) and f.dtype == np.float32 and np.isfinite(f).all()
        norms = np.linalg.norm(f, axis=1)
        assert ((norms == 0) | ((norms > 1) & (norms < 30))).all()
    text_zero = ~np.asarray(ds.features["text"]).any(1)
    image_zero = ~np.asarray(ds.features["image"]).any(1)
    # 5% of 150 items: 7 or 8 miss one modality, both kinds present, never both modalities.
    assert text_zero.sum() >= 1 and image_zero.sum() >= 1 and text_zero.sum() + image_zero.sum() == round(0.05 * n)
    assert not (text_zero & image_zero).any()
    assert (~np.asarray(ds.features["text_aug"]).any(1) == text_zero).all()
    # Word-dropped text features stay close to the text features (extra noise only).
    t, a = np.asarray(ds.features["text"])[~text_zero], np.asarray(ds.features["text_aug"])[~text_zero]
    cos = (t * a).sum(1) / np.linalg.norm(t, axis=1) / np.linalg.norm(a, axis=1)
    assert cos.min() > 0.8
    titles = read_text(ds.path("text"))
    assert list(titles) == ds.item_ids and all(r.startswith("A") and len(r) == 8 for r in ds.item_ids)
    assert all((titles[r] == "") == bool(z) for r, z in zip(ds.item_ids, text_zero))
    assert all(len(titles[r].split()) >= 4 for r, z in zip(ds.item_ids, text_zero) if not z)
    # PNGs for items that have an image, 32x32 RGB.
    from PIL import Image

    pngs = sorted(p.stem for p in (root / "sample_a" / "images").glob("*.png"))
    assert pngs == sorted(r for r, z in zip(ds.item_ids, image_zero) if not z)
    with Image.open(root / "sample_a" / "images" / f"{pngs[0]}.png") as im:
        assert im.size == (32, 32) and im.mode == "RGB"
    stats = {d["name"]: d for d in summary["domains"]}["sample_a"]
    assert stats["items"] == n and stats["missing_text"] == int(text_zero.sum())


def test_leave_one_out_splits(small):
    root, summary = small
    ds = load_dataset(root, "sample_a")
    tr, va, te = (ds.splits[s] for s in ("train", "valid", "test"))
    n_users = SMALL["target_users"]
    assert len(va) == len(te) == n_users
    assert va.user.tolist() == te.user.tolist() == [str(u) for u in range(n_users)]
    # test history = valid history + valid target
    for u in range(n_users):
        lv, lt = va.length[u], te.length[u]
        assert lt == lv + 1 and (te.seq[u, :lv] == va.seq[u, :lv]).all() and te.seq[u, lv] == va.target[u]
    # train rows: every prefix of items[:-2] with history >= 1, in order
    full = {u: list(te.seq[u, :te.length[u]]) + [te.target[u]] for u in range(n_users)}
    lens = np.array([len(full[u]) for u in range(n_users)])
    assert lens.min() >= 5 and lens.max() <= 30
    assert len(tr) == int((lens - 3).sum())
    users = tr.user.astype(int)
    for r in range(len(tr)):
        k = tr.length[r]
        assert list(tr.seq[r, :k]) == full[users[r]][:k] and tr.target[r] == full[users[r]][k]
        assert k <= len(full[users[r]]) - 3
    assert sum(d["interactions"] for d in summary["domains"] if d["name"] == "sample_a") == lens.sum()


def test_pretraining_corpus_loads(small):
    root, summary = small
    ds = load_dataset(root, "sample_pt", splits=("train", "valid", "test"),
                      require_features=("text", "image", "text_aug"))
    assert ds.domains == ["sample_s0", "sample_s1"] and ds.domain_items == [120, 120]
    assert (root / "sample_pt" / "sample_pt.pt_datasets").read_text().strip() == "sample_s0,sample_s1"
    assert ds.features["text"].shape == (240, 512)
    tr, va = ds.splits["train"], ds.splits["valid"]
    assert len(va) == 2 * SMALL["source_users"]
    # Each domain's items stay in its own id range: a row never mixes domains.
    dom_of = lambda ids: (ids - 1) // 120  # noqa: E731
    for s in (tr, va, ds.splits["test"]):
        d = np.array([int(u.split("-")[0]) for u in s.user])
        assert (dom_of(s.target) == d).all()
        real = np.arange(s.seq.shape[1])[None] < s.length[:, None]
        assert (dom_of(np.where(real, s.seq, 1 + 120 * d[:, None])) == d[:, None]).all()
    first = (root / "sample_pt" / "sample_pt.train.inter").read_text().splitlines()[1]
    assert first.split("\t")[0] == "0-0" and first.split("\t")[2].startswith("0-")
    ids = read_index_map(root / "sample_pt" / "sample_s1.item2index")
    assert len(ids) == 120 and len(read_text(root / "sample_pt" / "sample_s1.text")) == 120
    meta = json.loads((root / "sample_pt" / "sample_pt.meta.json").read_text())
    assert meta["domains"] == ds.domains and meta["encoder"]["name"] == "synthetic"
    # All raw item ids are unique across every domain.
    tgt = read_index_map(root / "sample_a" / "sample_a.item2index")
    src = read_index_map(root / "sample_pt" / "sample_s0.item2index")
    assert len(set(tgt) | set(src) | set(ids)) == 150 + 240


def test_baselines_ordering_shows_learnable_structure(tmp_path):
    root = tmp_path / "s"
    generate(root, seed=11, n_sources=0, n_targets=1, target_items=300, target_users=500, target_images=False)
    res = baseline_table(root)["sample_a"]
    rnd, pop, succ = res["random"], res["popularity"], res["successor"]
    assert pop["recall@10"] > 2 * rnd["recall@10"] and pop["recall@10"] > rnd["recall@10"] + 0.1
    assert pop["ndcg@10"] > 2 * rnd["ndcg@10"]
    assert succ["recall@10"] > pop["recall@10"] + 0.1 and succ["ndcg@10"] > 1.5 * pop["ndcg@10"]
    assert succ["recall@50"] > pop["recall@50"]


def test_ensure_sample_default_location_marker_and_regeneration(tmp_path, monkeypatch):
    monkeypatch.setenv("MISSREC_DATA_ROOT", str(tmp_path / "data"))
    kw = dict(n_sources=1, source_items=50, source_users=40, n_targets=1, target_items=60, target_users=50,
              target_images=False)
    path = ensure_sample(**kw)
    assert path == tmp_path / "data" / "sample"
    marker = json.loads((path / MARKER).read_text())
    assert marker["seed"] == 0 and marker["generator_version"] >= 1 and marker["config"]["target_items"] == 60
    assert read_summary(path)["domains"][-1]["name"] == "sample_a"
    feat = path / "sample_a" / "sample_a.feat1CLS"
    stamp = feat.stat().st_mtime_ns
    assert ensure_sample(**kw) == path and feat.stat().st_mtime_ns == stamp  # complete: reused
    (path / MARKER).unlink()  # as if the first run died before the marker: regenerate
    ensure_sample(**kw)
    assert (path / MARKER).is_file() and feat.stat().st_mtime_ns != stamp
    stamp = feat.stat().st_mtime_ns
    ensure_sample(seed=1, **kw)  # another seed: regenerate
    assert json.loads((path / MARKER).read_text())["seed"] == 1 and feat.stat().st_mtime_ns != stamp
    assert sorted(p.name for p in (tmp_path / "data").iterdir() if not p.name.startswith(".")) == ["sample"]


def test_cli_prints_summary_and_baselines(tmp_path, capsys):
    rc = main(["--root", str(tmp_path), "--seed", "2", "--n_sources", "1", "--source_items", "60",
               "--source_users", "60", "--n_targets", "1", "--target_items", "80", "--target_users", "90"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "sample_s0" in out and "sample_a" in out and "density" in out
    for name in ("random", "popularity", "successor"):
        assert name in out
    assert (tmp_path / "sample" / "sample_a" / "images").is_dir()
    with pytest.raises(SystemExit):
        main(["--root", str(tmp_path), "--target-users", "1"])
    assert "must be >= 2" in capsys.readouterr().err


def test_config_validation():
    with pytest.raises(ValueError, match="latent_dim"):
        SampleConfig(n_topics=40)
    with pytest.raises(ValueError, match="min_len"):
        SampleConfig(min_len=2)
    with pytest.raises(ValueError, match="sum to"):
        SampleConfig(p_transition=0.9, p_preference=0.2)
