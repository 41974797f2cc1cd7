"""missrec-transfer: the low-data target, the four settings over seeds, per-user paired statistics."""
from __future__ import annotations

import json

import numpy as np
import pytest

from missrec.data.atomic import load_dataset, read_index_map, read_meta
from missrec.evaluate import metrics_from_ranks, per_row_metrics
from missrec.recipes import transfer
from tests._tiny import make_corpus, make_domain

SMALL = ["--hidden_size", "32", "--n_heads", "2", "--inner_size", "32", "--progress", "false",
         "--train_batch_size", "64", "--plot", "false"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer")
    make_corpus(root)
    make_domain(root, n_users=40)
    return root


def _rows(folder, name, split):
    lines = (folder / f"{name}.{split}.inter").read_text().splitlines()[1:]
    return [tuple(line.split("\t", 1)) for line in lines]


def test_per_row_metrics_average_to_the_split_metrics():
    ranks = np.array([1, 3, 10, 11, 50, 200])
    m = metrics_from_ranks(ranks, (10, 50))
    for k, v in m.items():
        assert per_row_metrics(ranks, k).mean() == pytest.approx(v)
    with pytest.raises(ValueError, match="recall@K or ndcg@K"):
        per_row_metrics(ranks, "mrr")


def test_user_subset_is_seeded_keeps_whole_users_and_the_catalogue(root, tmp_path):
    out_root, name = transfer.subset_users(root, "tiny", 0.25, 3, tmp_path)
    folder = out_root / name
    assert name == "tiny-users0.25-seed3"
    users = read_index_map(folder / f"{name}.user2index")
    assert len(users) == 10 and users == sorted(users, key=lambda u: int(u[1:]))  # old order kept
    old_users = read_index_map(root / "tiny" / "tiny.user2index")
    for split in ("train", "valid", "test"):
        old = _rows(root / "tiny", "tiny", split)
        new = _rows(folder, name, split)
        # Every row of a chosen user, unchanged but for the renumbered user token, in file order.
        expect = [(str(users.index(old_users[int(u)])), rest) for u, rest in old if old_users[int(u)] in users]
        assert new == expect
    assert len(_rows(folder, name, "test")) == 10
    for suffix in ("item2index", "feat1CLS", "feat3CLS", "text"):
        assert (folder / f"{name}.{suffix}").read_bytes() == (root / "tiny" / f"tiny.{suffix}").read_bytes()
    meta = read_meta(folder / f"{name}.meta.json")
    assert meta["user_subset"]["n_users"] == 10 and meta["user_subset"]["of_users"] == 40
    ds = load_dataset(out_root, name)
    assert ds.n_items == 30 and len(ds.splits["test"]) == 10
    # The same seed chooses the same users (the folder is reused); another seed others.
    mtime = (folder / f"{name}.test.inter").stat().st_mtime_ns
    assert transfer.subset_users(root, "tiny", 0.25, 3, tmp_path) == (out_root, name)
    assert (folder / f"{name}.test.inter").stat().st_mtime_ns == mtime
    _, other = transfer.subset_users(root, "tiny", 0.25, 4, tmp_path)
    assert read_index_map(tmp_path / other / f"{other}.user2index") != users


def test_transfer_runs_four_settings_over_seeds_and_pairs_per_user(root, tmp_path, capsys):
    out = tmp_path / "tr"
    argv = ["--data_root", str(root), "--dataset", "tiny", "--source", "tinypt", "--pretrain_args", "--max_steps 2 --train_batch_size 64 --progress false",
            "--seeds", "0,1", "--user_fraction", "0.5", "--output_dir", str(out), "--epochs", "1", *SMALL]
    res = transfer.transfer(argv)
    printed = capsys.readouterr().out
    assert "paired difference pretrained - scratch per test user" in printed
    saved = json.loads((out / "results.json").read_text())
    assert saved["paired_pretrained_minus_scratch"] == json.loads(json.dumps(res["paired_pretrained_minus_scratch"]))
    assert saved["pretrain"]["checkpoint"].endswith("checkpoint-step2")
    assert saved["target"]["subset"]["user_fraction"] == 0.5
    assert saved["source_signal"] is None and "note: no source-statistics check: " in printed  # a corpus source
    runs = saved["runs"]
    assert sorted((r["setting"], r["seed"]) for r in runs) == sorted(
        (t, s) for t in transfer.SETTINGS for s in (0, 1))
    ranks = {}
    for r in runs:
        # Each run has its own folder; its saved ranks give exactly its test metrics.
        rk = np.load(r["ranks_file"], allow_pickle=False)
        assert len(rk) == 20
        got = metrics_from_ranks(rk, (10, 20, 50))
        assert got == pytest.approx(json.loads((out / "runs" / f"{r['setting']}-seed{r['seed']}" / "results.json")
                                               .read_text())["test"], abs=1e-4)
        ranks[r["setting"], r["seed"]] = rk
    for tag in transfer.SETTINGS:
        vals = [r["test"]["ndcg@10"] for r in runs if r["setting"] == tag]
        s = saved["per_setting"][tag]["ndcg@10"]
        assert s["mean"] == pytest.approx(np.mean(vals)) and s["n"] == 2
        assert s["se"] == pytest.approx(np.std(vals, ddof=1) / np.sqrt(2))
    for ids in ("id", "noid"):
        d = np.mean([per_row_metrics(ranks[f"{ids}-pt", s], "recall@10") - per_row_metrics(ranks[f"{ids}-scratch", s], "recall@10")
                     for s in (0, 1)], axis=0)
        p = saved["paired_pretrained_minus_scratch"][ids]["recall@10"]
        se = np.std(d, ddof=1) / np.sqrt(len(d))
        assert p["mean"] == pytest.approx(d.mean()) and p["se"] == pytest.approx(se)
        assert p["z"] == (pytest.approx(d.mean() / se) if se else None)
    # Run again: every finished run and the pretraining are reused, the results are the same.
    again = transfer.transfer(argv)
    assert capsys.readouterr().out.count("reusing") == 9
    assert again["per_setting"] == res["per_setting"]


@pytest.mark.parametrize("argv, needle", [
    (["--settings", "id-pt,nope"], "--settings: unknown setting(s) nope"),
    (["--settings", "id-pt"], "--source: the pretrained settings need"),
    (["--mode", "inductive"], "--mode: is set by missrec-transfer"),
    (["--seeds", "a,b"], "--seeds: expected comma-separated integers"),
    (["--source", "rest"], "--source: 'rest' (the target's other users) needs --user_fraction"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, argv, needle):
    assert transfer.main(argv + ["--output_dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert needle in err[-1]


def test_rest_is_the_complement_of_the_subset(root, tmp_path):
    _, name = transfer.subset_users(root, "tiny", 0.25, 3, tmp_path)
    _, rest = transfer.subset_users(root, "tiny", 0.25, 3, tmp_path, rest=True)
    assert rest == name + "-rest"
    chosen = set(read_index_map(tmp_path / name / f"{name}.user2index"))
    others = set(read_index_map(tmp_path / rest / f"{rest}.user2index"))
    assert not chosen & others and chosen | others == set(read_index_map(root / "tiny" / "tiny.user2index"))
    assert len(_rows(tmp_path / rest, rest, "test")) == 30
    assert read_meta(tmp_path / rest / f"{rest}.meta.json")["user_subset"]["rest"] is True


def test_source_rest_pretrains_on_the_other_users(root, tmp_path, capsys):
    out = tmp_path / "tr"
    res = transfer.transfer(["--data_root", str(root), "--dataset", "tiny", "--source", "rest", "--user_fraction", "0.25",
                             "--settings", "noid-scratch,noid-pt", "--pretrain_args", "--max_steps 2 --progress false",
                             "--output_dir", str(out), "--epochs", "1", *SMALL])
    printed = capsys.readouterr().out
    saved = json.loads((out / "results.json").read_text())
    assert saved["pretrain"]["source"] == "tiny-users0.25-seed0-rest"
    assert saved["pretrain"]["argv"][:4] == ["--data_root", str(out / "data"), "--dataset", "tiny-users0.25-seed0-rest"]
    # The same items under both: every answer of the target has its text in the source.
    assert res["source_signal"]["matched_targets"] == 1.0 and "what tiny-users0.25-seed0-rest's statistics" in printed
