"""Atomic-file dataset I/O: round trip, the exact upstream layout, and one test per bad input."""
import json
import re

import numpy as np
import pytest

from missrec.data.atomic import (DataFormatError, Split, load_dataset, read_features, read_text, write_dataset,
                                 write_features, write_index_map, write_inter)

HDR = "user_id:token\titem_id_list:token_seq\titem_id:token\n"


# ----------------------------------------------------------------------------- round trip
def _written(tmp_path, name="toy"):
    rng = np.random.default_rng(0)
    n_items, dim = 7, 5
    train = Split.from_lists(["0", "0", "1"], [[0], [0, 3], [6]], [3, 2, 5], id_offset=1)
    valid = Split.from_lists(["0", "1"], [[0, 3, 2], [6, 5]], [4, 1], id_offset=1)
    test = Split.from_lists(["0", "1"], [[0, 3, 2, 4], [6, 5, 1]], [6, 0], id_offset=1)
    feats = {"text": rng.standard_normal((n_items, dim)).astype(np.float32),
             "image": rng.standard_normal((n_items, dim)).astype(np.float32),
             "text_aug": rng.standard_normal((n_items, dim)).astype(np.float32)}
    feats["image"][2] = 0.0  # a missing modality is an all-zero row
    items = [f"I{i}" for i in range(n_items)]
    write_dataset(tmp_path, name, item_ids=items, user_ids=["ua", "ub"],
                  splits={"train": train, "valid": valid, "test": test},
                  texts=[f"title {i}" if i != 4 else "" for i in range(n_items)], features=feats,
                  encoder={"name": "test"})
    return {"train": train, "valid": valid, "test": test}, feats, items


def test_round_trip_identical(tmp_path):
    splits, feats, items = _written(tmp_path)
    ds = load_dataset(tmp_path, "toy")
    assert ds.item_ids == items and ds.user_ids == ["ua", "ub"] and ds.n_items == 7
    for s, ref in splits.items():
        got = ds.splits[s]
        for f in ("seq", "length", "target"):
            assert getattr(got, f).dtype == np.int64
            np.testing.assert_array_equal(getattr(got, f), getattr(ref, f))
        assert got.user.tolist() == ref.user.tolist()
    for k, v in feats.items():
        assert isinstance(ds.features[k], np.memmap), "features must be memory-mapped, not copied"
        assert np.array_equal(np.asarray(ds.features[k]), v)
    assert read_text(ds.path("text")) == {f"I{i}": (f"title {i}" if i != 4 else "") for i in range(7)}
    assert ds.meta["dims"] == {"feat1CLS": 5, "feat2CLS": 5, "feat3CLS": 5}
    assert ds.meta["encoder"] == {"name": "test"} and ds.meta["n_items"] == 7
    # The 0-based on-disk layout: ids are file index + 1 in memory.
    assert (tmp_path / "toy" / "toy.train.inter").read_text() == HDR + "0\t0\t3\n0\t0 3\t2\n1\t6\t5\n"


def test_corpus_round_trip(tmp_path):
    folder = tmp_path / "pt"
    sizes = [3, 4]
    rng = np.random.default_rng(1)
    feats = {}
    for d, (dom, n) in enumerate(zip(["da", "db"], sizes)):
        write_index_map(folder / f"{dom}.item2index", [f"{dom}{i}" for i in range(n)])
        feats[dom] = rng.standard_normal((n, 512)).astype(np.float32)
        write_features(folder / f"{dom}.feat1CLS", feats[dom])
        write_features(folder / f"{dom}.feat3CLS", -feats[dom])
    (folder / "pt.pt_datasets").write_text("da,db\n")
    # global ids: da items 1..3, db items 4..7
    train = Split.from_lists(["0-0", "1-0", "1-1"], [[0, 2], [3, 6], [4]], [1, 5, 3], id_offset=1)
    write_inter(folder / "pt.train.inter", train, domain_items=sizes)
    assert (folder / "pt.train.inter").read_text() == HDR + "0-0\t0-0 0-2\t0-1\n1-0\t1-0 1-3\t1-2\n1-1\t1-1\t1-0\n"
    ds = load_dataset(tmp_path, "pt", splits=("train",))
    assert ds.domains == ["da", "db"] and ds.domain_items == sizes and ds.n_items == 7
    for f in ("seq", "length", "target"):
        np.testing.assert_array_equal(getattr(ds.splits["train"], f), getattr(train, f))
    both = np.concatenate([feats["da"], feats["db"]])
    np.testing.assert_array_equal(ds.features["text"][np.arange(7)], both)
    np.testing.assert_array_equal(np.asarray(ds.features["image"]), -both)
    np.testing.assert_array_equal(ds.features["text"][np.array([4, 0])], both[[4, 0]])


# ----------------------------------------------------------------------------- upstream layout, byte by byte
def _upstream(tmp_path, name="Scientific", n_items=4, dim=6):  # n_items matches item2index below
    """A folder as the authors released them: written here by hand, not by our writers, no meta.json."""
    folder = tmp_path / name
    folder.mkdir(parents=True)
    (folder / f"{name}.train.inter").write_bytes(
        b"user_id:token\titem_id_list:token_seq\titem_id:token\n"
        b"0\t2\t0\n"
        b"0\t2 0\t3\n"
        b"1\t1\t3\n")
    (folder / f"{name}.valid.inter").write_bytes(
        b"user_id:token\titem_id_list:token_seq\titem_id:token\n0\t2 0 3\t1\n1\t1 3\t2\n")
    (folder / f"{name}.test.inter").write_bytes(
        b"user_id:token\titem_id_list:token_seq\titem_id:token\n0\t2 0 3 1\t0\n1\t1 3 2\t0\n")
    (folder / f"{name}.item2index").write_bytes(b"B0001\t0\nB0002\t1\nB0003\t2\nB0004\t3\n")
    (folder / f"{name}.user2index").write_bytes(b"AUSER1\t0\nAUSER2\t1\n")
    (folder / f"{name}.text").write_bytes(
        "item_id:token\ttext:token_seq\nB0001\tMicroscope slides, 72 pcs\nB0002\tBeaker 250 ml\n"
        "B0003\tPipette tips — sterile\nB0004\t\n".encode("utf-8"))
    text = np.arange(n_items * dim, dtype="<f4").reshape(n_items, dim) / 10
    image = -text
    image[1] = 0.0
    text.tofile(folder / f"{name}.feat1CLS")
    image.tofile(folder / f"{name}.feat3CLS")
    return folder, text, image


def test_upstream_single_domain_loads(tmp_path):
    folder, text, image = _upstream(tmp_path)
    ds = load_dataset(tmp_path, "Scientific")
    assert ds.meta is None and ds.n_items == 4 and ds.user_ids == ["AUSER1", "AUSER2"]
    tr = ds.splits["train"]
    assert tr.seq[:, :2].tolist() == [[3, 0], [3, 1], [2, 0]]  # ids = index + 1, 0 = padding
    assert tr.length.tolist() == [1, 2, 1] and tr.target.tolist() == [1, 4, 4]
    assert tr.seq.shape == (3, 50)
    assert ds.splits["test"].target.tolist() == [1, 1]
    assert ds.splits["valid"].seq[1, :2].tolist() == [2, 4]
    np.testing.assert_array_equal(np.asarray(ds.features["text"]), text)
    np.testing.assert_array_equal(np.asarray(ds.features["image"]), image)
    assert "text_aug" not in ds.features
    assert read_text(ds.path("text"))["B0003"] == "Pipette tips — sterile"


def test_upstream_corpus_loads(tmp_path):
    folder = tmp_path / "FHCKM"
    folder.mkdir()
    (folder / "FHCKM.pt_datasets").write_bytes(b"Food,Home")
    (folder / "FHCKM.train.inter").write_bytes(
        b"user_id:token\titem_id_list:token_seq\titem_id:token\n"
        b"0-0\t0-5 0-1\t0-2\n"
        b"1-3\t1-0\t1-1\n")
    (folder / "FHCKM.valid.inter").write_bytes(
        b"user_id:token\titem_id_list:token_seq\titem_id:token\n0-0\t0-5 0-1 0-2\t0-4\n")
    rng = np.random.default_rng(0)
    food = rng.standard_normal((6, 512)).astype("<f4")
    home = rng.standard_normal((2, 512)).astype("<f4")
    # No item2index: domain sizes come from the 512-d feature files.
    food.tofile(folder / "Food.feat1CLS")
    (food * 2).tofile(folder / "Food.feat3CLS")
    home.tofile(folder / "Home.feat1CLS")
    (home * 2).tofile(folder / "Home.feat3CLS")
    ds = load_dataset(tmp_path, "FHCKM", splits=("train", "valid"))
    assert ds.domains == ["Food", "Home"] and ds.domain_items == [6, 2]
    tr = ds.splits["train"]
    assert tr.seq[:, :2].tolist() == [[6, 2], [7, 0]] and tr.target.tolist() == [3, 8]
    assert tr.user.tolist() == ["0-0", "1-3"]
    assert ds.splits["valid"].target.tolist() == [5]
    np.testing.assert_array_equal(ds.features["image"][np.array([6, 7, 0])],
                                  np.concatenate([home * 2, food[:1] * 2]))


# ----------------------------------------------------------------------------- bad inputs: one clear error each
def _err(tmp_path, match, **kw):
    with pytest.raises(DataFormatError) as e:
        load_dataset(tmp_path, "Scientific", **kw)
    msg = str(e.value)
    assert re.search(match, msg), msg
    return msg


def test_feature_size_not_multiple_of_row_size(tmp_path):
    folder, text, _ = _upstream(tmp_path)
    (folder / "Scientific.meta.json").write_text(json.dumps({"dims": {"feat1CLS": 6, "feat3CLS": 6}}))
    np.concatenate([text.ravel(), [1.0]]).astype("<f4").tofile(folder / "Scientific.feat1CLS")
    _err(tmp_path, r"Scientific\.feat1CLS: size 100 bytes is not a multiple of the row size 24")


def test_feature_size_without_meta_not_splitting_into_items(tmp_path):
    folder, text, _ = _upstream(tmp_path)
    np.concatenate([text.ravel(), [1.0]]).astype("<f4").tofile(folder / "Scientific.feat1CLS")
    _err(tmp_path, r"Scientific\.feat1CLS: 25 floats do not split into 4 rows")


def test_feature_size_not_float32(tmp_path):
    folder, *_ = _upstream(tmp_path)
    (folder / "Scientific.feat3CLS").write_bytes(b"\x00" * 7)
    _err(tmp_path, r"Scientific\.feat3CLS: size 7 bytes is not a positive multiple of 4")


def test_feature_rows_differ_from_item_count(tmp_path):
    folder, text, _ = _upstream(tmp_path)
    (folder / "Scientific.meta.json").write_text(json.dumps({"dims": {"feat1CLS": 6, "feat3CLS": 6}}))
    text[:3].tofile(folder / "Scientific.feat3CLS")
    _err(tmp_path, r"Scientific\.feat3CLS: has 3 rows of dim 6 but the dataset has 4 items")


def test_item_index_out_of_range(tmp_path):
    folder, *_ = _upstream(tmp_path)
    (folder / "Scientific.train.inter").write_text(HDR + "0\t2\t0\n1\t1 4\t3\n")
    _err(tmp_path, r"Scientific\.train\.inter:3: item index 4 out of range \[0, 4\)")
    (folder / "Scientific.train.inter").write_text(HDR + "0\t2\t-1\n")
    _err(tmp_path, r"Scientific\.train\.inter:2: item index -1 out of range")
    (folder / "Scientific.train.inter").write_text(HDR + "0\t2 x\t1\n")
    _err(tmp_path, r"Scientific\.train\.inter:2: item token 'x' is not an integer")


def test_corpus_item_index_out_of_range(tmp_path):
    folder = tmp_path / "pt"
    folder.mkdir()
    (folder / "pt.pt_datasets").write_text("a,b\n")
    for d, n in (("a", 3), ("b", 2)):
        np.zeros((n, 512), "<f4").tofile(folder / f"{d}.feat1CLS")
        np.zeros((n, 512), "<f4").tofile(folder / f"{d}.feat3CLS")
    for body, match in [("0-0\t0-1 1-2\t0-0\n", r"pt\.train\.inter:2: item index 2 of token '1-2' out of range"),
                        ("0-0\t0-1\t2-0\n", r"pt\.train\.inter:2: domain 2 of item token '2-0' out of range"),
                        ("0-0\t0-1\t5\n", r"pt\.train\.inter:2: item token '5' is not '<domain>-<index>'")]:
        (folder / "pt.train.inter").write_text(HDR + body)
        with pytest.raises(DataFormatError, match=match):
            load_dataset(tmp_path, "pt", splits=("train",))


def test_empty_history(tmp_path):
    folder, *_ = _upstream(tmp_path)
    (folder / "Scientific.valid.inter").write_text(HDR + "0\t2 0\t1\n1\t\t2\n")
    _err(tmp_path, r"Scientific\.valid\.inter:3: empty history")
    (folder / "Scientific.valid.inter").write_text(HDR + "0\t   \t1\n")
    _err(tmp_path, r"Scientific\.valid\.inter:2: empty history")


def test_bad_inter_header_and_field_count(tmp_path):
    folder, *_ = _upstream(tmp_path)
    (folder / "Scientific.test.inter").write_text("user\titems\ttarget\n0\t1\t2\n")
    _err(tmp_path, r"Scientific\.test\.inter:1: bad header")
    (folder / "Scientific.test.inter").write_text(HDR + "0\t1 2\n")
    _err(tmp_path, r"Scientific\.test\.inter:2: expected 3 tab-separated fields")


def test_non_finite_feature_values(tmp_path):
    folder, text, image = _upstream(tmp_path)
    text[2, 3] = np.nan
    text.tofile(folder / "Scientific.feat1CLS")
    _err(tmp_path, r"Scientific\.feat1CLS: non-finite value in row 2")
    text[2, 3] = 0
    text.tofile(folder / "Scientific.feat1CLS")
    image[3, 0] = np.inf
    image.tofile(folder / "Scientific.feat3CLS")
    _err(tmp_path, r"Scientific\.feat3CLS: non-finite value in row 3")


@pytest.mark.parametrize("missing", ["Scientific.item2index", "Scientific.train.inter", "Scientific.valid.inter",
                                     "Scientific.test.inter", "Scientific.feat1CLS", "Scientific.feat3CLS"])
def test_missing_file(tmp_path, missing):
    folder, *_ = _upstream(tmp_path)
    (folder / missing).unlink()
    _err(tmp_path, re.escape(missing) + r": file not found")


def test_missing_folder_and_corpus_domain_file(tmp_path):
    with pytest.raises(DataFormatError, match=r"nope: dataset folder not found"):
        load_dataset(tmp_path, "nope")
    folder = tmp_path / "pt"
    folder.mkdir()
    (folder / "pt.pt_datasets").write_text("a\n")
    np.zeros((2, 512), "<f4").tofile(folder / "a.feat1CLS")
    with pytest.raises(DataFormatError, match=r"a\.feat3CLS: file not found"):
        load_dataset(tmp_path, "pt", splits=("train",))


def test_index_map_and_meta_errors(tmp_path):
    folder, *_ = _upstream(tmp_path)
    (folder / "Scientific.item2index").write_text("B1\t0\nB2\t2\n")
    _err(tmp_path, r"Scientific\.item2index: indices must be exactly 0\.\.n-1")
    (folder / "Scientific.item2index").write_text("B1\t0\nB2 1\n")
    _err(tmp_path, r"Scientific\.item2index:2: expected 'raw_id<TAB>index'")
    folder2, *_ = _upstream(tmp_path / "x")
    (folder2 / "Scientific.meta.json").write_text("{not json")
    with pytest.raises(DataFormatError, match=r"Scientific\.meta\.json: not valid JSON"):
        load_dataset(tmp_path / "x", "Scientific")


def test_read_features_direct(tmp_path):
    p = tmp_path / "f.feat1CLS"
    np.ones((3, 4), "<f4").tofile(p)
    assert read_features(p, dim=4).shape == (3, 4)
    with pytest.raises(DataFormatError, match=r"f\.feat1CLS: cannot infer the feature dimension"):
        read_features(p)
    with pytest.raises(DataFormatError, match=r"f\.feat1CLS: has 3 rows of dim 4 but the dataset has 2 items"):
        read_features(p, n_items=2, dim=4)


def test_writer_refuses_padding_inside_history(tmp_path):
    bad = Split(user=np.array(["0"], dtype=object), seq=np.array([[1, 0, 2]]), length=np.array([3]),
                target=np.array([1]))
    with pytest.raises(ValueError, match="padding"):
        write_inter(tmp_path / "x.train.inter", bad)
    assert not (tmp_path / "x.train.inter").exists()


def test_split_truncated_keeps_most_recent_items():
    from missrec.data.atomic import Split
    sp = Split.from_lists(["u", "v"], [[0, 1, 2, 3, 4], [7]], [5, 8], max_len=6)
    t = sp.truncated(3)
    assert t.seq.tolist() == [[3, 4, 5], [8, 0, 0]]  # ids = index + 1
    assert t.length.tolist() == [3, 1] and t.target.tolist() == sp.target.tolist()
    assert sp.truncated(6) is sp
