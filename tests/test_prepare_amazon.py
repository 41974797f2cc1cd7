"""features/prepare_amazon.py on small generated dumps in both Amazon releases.

The hand-checked case (tests/_features_helpers.FOOD_*), with --kcore 3:
- raw: 28 interactions, users u1..u6, items A..H + X.
- dedup: u2's second B (t=8) and u4's D at t=10 go (u4 keeps D at t=3, which is later in the file).
- metadata: X has no record, H's title is only HTML -> 24 interactions, items A..G.
- 3-core: round 1 drops u5 (2 items) and F (2 users); round 2 drops u6 (B, G left); round 3 drops
  G (u2, u3 left); round 4 changes nothing -> users u1..u4, items A..E, 17 interactions.
- order: u2's B and A share t=5 and keep file order (B first); u4 is D(3) E A B.
Indices follow sorted raw ids: u1..u4 -> 0..3, A..E -> 0..4.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from missrec.features import amazon as pa
from missrec.data.atomic import load_dataset, read_index_map, read_inter, read_meta, read_text
from tests._features_helpers import FOOD_INTERACTIONS, FOOD_META, write_amazon_dump

SEQS = {"u1": "ABCDE", "u2": "BACD", "u3": "CABE", "u4": "DEAB"}
IDX = {c: i for i, c in enumerate("ABCDE")}
EXPECTED = {  # (user index, history, target)
    "train": [(0, [0], 1), (0, [0, 1], 2), (1, [1], 0), (2, [2], 0), (3, [3], 4)],
    "valid": [(0, [0, 1, 2], 3), (1, [1, 0], 2), (2, [2, 0], 1), (3, [3, 4], 0)],
    "test": [(0, [0, 1, 2, 3], 4), (1, [1, 0, 2], 3), (2, [2, 0, 1], 4), (3, [3, 4, 0], 1)],
}
TEXTS = {"A": "Café Beans Dark Grocery & Gourmet Food Coffee Joe's", "B": "Green Tea", "C": "Oat Milk Milk",
         "D": "Rice", "E": "Soy Sauce Kikkoman"}
URLS = {"A": "http://img/A_big.jpg", "B": "http://img/B_small.jpg", "D": "http://img/D_big.jpg",
        "E": "http://img/E_big.jpg"}


def _rows(split):
    return [(int(u), [int(x) - 1 for x in s[:n]], int(t) - 1)
            for u, s, n, t in zip(split.user, split.seq, split.length, split.target)]


def test_expected_rows_follow_from_the_sequences():
    # The table above, rebuilt from the per-user sequences with the split rule.
    for split in EXPECTED:
        got = []
        for u, (name, seq) in enumerate(sorted(SEQS.items())):
            got += [(u, list(h), t) for s, h, t in pa.split_rows([IDX[c] for c in seq]) if s == split]
        assert got == EXPECTED[split]


@pytest.mark.parametrize("release,gz,csv", [("2018", True, False), ("2018", False, False), ("2018", False, True),
                                            ("2023", False, False), ("2023", True, False)])
def test_hand_checked_category(tmp_path, capsys, release, gz, csv):
    raw = tmp_path / "raw"
    write_amazon_dump(raw, "Grocery_and_Gourmet_Food", release, gz=gz, csv=csv)
    rc = pa.main(["--raw_dir", str(raw), "--out_root", str(tmp_path / "data"), "--category",
                  "Grocery_and_Gourmet_Food", "--kcore", "3"])
    assert rc == 0
    out = capsys.readouterr().out
    folder = tmp_path / "data" / "Food"
    assert read_index_map(folder / "Food.user2index") == ["u1", "u2", "u3", "u4"]
    assert read_index_map(folder / "Food.item2index") == list("ABCDE")
    for split, rows in EXPECTED.items():
        assert _rows(read_inter(folder / f"Food.{split}.inter", n_items=5)) == rows, split
    assert read_text(folder / "Food.text") == TEXTS
    lines = (folder / "Food.image_urls").read_text().splitlines()
    assert lines[0] == "item_id\timage_url"
    assert dict(line.split("\t") for line in lines[1:]) == URLS  # C has no image
    meta = read_meta(folder / "Food.meta.json")
    assert meta["n_items"] == 5 and meta["n_users"] == 4
    steps = [(s["users"], s["items"], s["interactions"]) for s in meta["prepare"]["steps"]]
    assert steps == [(6, 9, 28), (6, 9, 26), (6, 7, 24), (4, 5, 17)]
    assert meta["prepare"]["kcore_rounds"] == 4
    assert meta["prepare"]["rows"] == {"train": 5, "valid": 4, "test": 4}
    assert "3-core (4 rounds)" in out and "density" in out
    ds = load_dataset(tmp_path / "data", "Food", require_features=())
    assert ds.n_items == 5 and len(ds.splits["train"]) == 5


def test_corpus_layout_loads(tmp_path):
    raw = tmp_path / "raw"
    write_amazon_dump(raw, "Grocery_and_Gourmet_Food", "2018", gz=True)
    # A second domain: the same behaviour under other ids, with one more user.
    kindle = [(u.replace("u", "k"), i.lower(), t) for u, i, t in FOOD_INTERACTIONS]
    kindle += [("k9", i, t) for i, t in (("a", 1), ("b", 2), ("c", 3), ("d", 4))]
    write_amazon_dump(raw, "Kindle_Store", "2018", interactions=kindle,
                      meta=[(m[0].lower(),) + m[1:] for m in FOOD_META])
    rc = pa.main(["--raw_dir", str(raw), "--out_root", str(tmp_path / "data"), "--corpus", "FK",
                  "--categories", "Grocery_and_Gourmet_Food", "Kindle_Store", "--kcore", "3"])
    assert rc == 0
    folder = tmp_path / "data" / "FK"
    assert (folder / "FK.pt_datasets").read_text().strip() == "Food,Kindle"
    assert read_index_map(folder / "Food.item2index") == list("ABCDE")
    assert read_index_map(folder / "Kindle.item2index") == list("abcde")
    assert read_index_map(folder / "Kindle.user2index") == ["k1", "k2", "k3", "k4", "k9"]
    assert read_text(folder / "Kindle.text")["a"] == TEXTS["A"]
    assert not (folder / "FK.test.inter").exists()  # source domains' test targets stay out
    train = (folder / "FK.train.inter").read_text().splitlines()
    assert train[1] == "0-0\t0-0\t0-1"  # Food u1: A -> B
    assert "1-4\t1-0\t1-1" in train  # Kindle k9: a -> b (c is valid, d test)
    assert "1-3\t1-3\t1-4" in train and len(train) == 1 + 5 + 6
    ds = load_dataset(tmp_path / "data", "FK", splits=("train", "valid"), require_features=())
    assert ds.domains == ["Food", "Kindle"] and ds.domain_items == [5, 5]
    assert len(ds.splits["train"]) == 5 + 6 and len(ds.splits["valid"]) == 4 + 5
    # Kindle k9's valid row: history a b (global ids 5+0+1, 5+1+1), target c.
    v = ds.splits["valid"]
    k = list(v.user).index("1-4")
    assert v.seq[k, :v.length[k]].tolist() == [6, 7] and v.target[k] == 5 + 2 + 1
    meta = read_meta(folder / "FK.meta.json")
    assert meta["n_items"] == 10 and meta["pt_datasets"] == ["Food", "Kindle"]


def test_history_truncated_to_max_len():
    seq = list(range(60))
    rows = list(pa.split_rows(seq, max_len=50))
    test = [r for r in rows if r[0] == "test"][0]
    assert test[1] == list(range(9, 59)) and test[2] == 59
    assert all(len(h) <= 50 for _, h, _ in rows)
    assert sum(r[0] == "train" for r in rows) == 57


def test_kcore_iterates_to_fixed_point():
    u = np.array([0, 0, 1, 1, 1, 2, 0, 1])
    i = np.array([0, 1, 0, 1, 2, 2, 2, 3])
    mask, rounds = pa.kcore(u, i, 2, 3, 4)
    # round 1: item 3 (1 user) and user 2 (1 item) go; round 2: item 2 keeps users 0,1 -> stable.
    assert mask.tolist() == [True, True, True, True, True, False, True, False] and rounds == 2
    mask, rounds = pa.kcore(np.array([0, 0, 1]), np.array([0, 1, 0]), 2, 2, 2)
    # user 1 and item 1 have one each -> then user 0 has 1 item, item 0 has 1 user -> empty
    assert not mask.any() and rounds == 3


def test_text_cleaning_and_cap():
    assert pa.clean_text("a &amp;amp; b &lt;i&gt;c&lt;/i&gt;\t\n d") == "a & b c d"
    assert pa.clean_text(["x", ["<b>y</b>", None], ""]) == "x y"
    rec = {"title": "word " * 200, "category": [], "brand": "B"}
    text = pa.item_text(rec, "2018", max_chars=23)
    assert text == "word word word word" and len(text) <= 23


def test_bad_input_errors_name_the_file_and_line(tmp_path, capsys):
    raw = tmp_path / "raw"
    write_amazon_dump(raw, "Office_Products", "2018")
    p = raw / "Office_Products.json"
    p.write_text(p.read_text() + "{not json\n")
    rc = pa.main(["--raw_dir", str(raw), "--out_root", str(tmp_path / "d"), "--category", "Office_Products"])
    err = capsys.readouterr().err
    assert rc == 2 and f"{p}:{len(FOOD_INTERACTIONS) + 1}: not a JSON object" in err
    p.write_text(json.dumps({"asin": "A", "unixReviewTime": 1}) + "\n")
    rc = pa.main(["--raw_dir", str(raw), "--out_root", str(tmp_path / "d"), "--category", "Office_Products"])
    assert rc == 2 and "missing field 'reviewerID'" in capsys.readouterr().err
    rc = pa.main(["--raw_dir", str(raw), "--out_root", str(tmp_path / "d"), "--category", "Nope"])
    assert rc == 2 and "meta_Nope.json" in capsys.readouterr().err
    assert not (tmp_path / "d" / "Office").exists() or not any((tmp_path / "d" / "Office").glob("*.inter"))


def test_too_little_data_is_an_error_not_an_empty_dataset(tmp_path, capsys):
    raw = tmp_path / "raw"
    write_amazon_dump(raw, "Office_Products", "2023")
    rc = pa.main(["--raw_dir", str(raw), "--out_root", str(tmp_path / "d"), "--category", "Office_Products"])
    assert rc == 2 and "no interactions left after the 5-core filter" in capsys.readouterr().err


def test_default_5core_drops_users_and_items_below_5(tmp_path):
    # v1..v5 x P1..P5 is a dense 5-core; v6 has only 4 items and P6 only 4 users.
    inter = [(f"v{u}", f"P{i}", 10 * u + i) for u in range(1, 6) for i in range(1, 6)]
    inter += [("v6", f"P{i}", 100 + i) for i in range(1, 5)] + [(f"v{u}", "P6", 200 + u) for u in range(1, 5)]
    meta = [(f"P{i}", f"Product {i}", [], "", None) for i in range(1, 7)]
    write_amazon_dump(tmp_path / "raw", "Office_Products", "2023", interactions=inter, meta=meta, gz=True)
    assert pa.main(["--raw_dir", str(tmp_path / "raw"), "--out_root", str(tmp_path / "d"),
                    "--category", "Office_Products"]) == 0
    folder = tmp_path / "d" / "Office"
    assert read_index_map(folder / "Office.user2index") == [f"v{u}" for u in range(1, 6)]
    assert read_index_map(folder / "Office.item2index") == [f"P{i}" for i in range(1, 6)]
    train = _rows(read_inter(folder / "Office.train.inter", n_items=5))
    assert train[:2] == [(0, [0], 1), (0, [0, 1], 2)] and len(train) == 10
    assert _rows(read_inter(folder / "Office.test.inter", n_items=5))[4] == (4, [0, 1, 2, 3], 4)
    assert read_meta(folder / "Office.meta.json")["prepare"]["steps"][-1]["interactions"] == 25
