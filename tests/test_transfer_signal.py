"""The source-statistics check: a source's popularity / successor counts carried to a target by item text."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from missrec.data.atomic import load_dataset, write_dataset
from missrec.recipes import transfer
from missrec.transfer_signal import format_signal, text_map, transfer_signal
from tests._tiny import _splits

TEXTS = [f"film {k}" for k in range(6)]


def _write(root, name, texts, seqs):
    n = len(texts)
    write_dataset(root, name, item_ids=[f"{name}-{i}" for i in range(n)], user_ids=[f"U{u}" for u in range(len(seqs))],
                  splits=_splits(seqs, [str(u) for u in range(len(seqs))]), texts=texts,
                  features={"text": np.eye(n, 4, dtype=np.float32)})


@pytest.fixture()
def root(tmp_path):
    # Source: film k is always followed by film k + 1 (mod 6; items in text order).
    _write(tmp_path, "src", TEXTS, [[(s + k) % 6 for k in range(9)] for s in range(6)] * 2)
    # Targets: the same films under other ids (a permutation) plus one film the source lacks;
    # "fwd" follows the source's rule, "rev" runs it backwards.
    perm = [3, 0, 5, 1, 4, 2]  # target item j has text TEXTS[perm[j]]
    inv = {p: j for j, p in enumerate(perm)}
    texts = [TEXTS[p] for p in perm] + ["a film only the target has"]
    fwd = [[inv[(s + k) % 6] for k in range(7)] for s in range(6)]
    _write(tmp_path, "fwd", texts, fwd)
    _write(tmp_path, "rev", texts, [list(reversed(s)) for s in fwd])
    return tmp_path


def test_items_match_by_text(root):
    src, tgt = load_dataset(root, "src", require_features=()), load_dataset(root, "fwd", require_features=())
    m = text_map(src, tgt)
    assert m.tolist() == [0, 4, 1, 6, 2, 5, 3, 0]  # target id j + 1 -> source id perm[j] + 1; unmatched -> 0


def test_source_successor_carried_by_text_finds_what_holds_in_the_target(root):
    res = transfer_signal(root, "fwd", root, "src", ks=(1, 10))
    assert res["matched_items"] == 6 and res["target_items"] == 7 and res["matched_targets"] == 1.0
    s = res["scores"]
    assert s["source successor, by text"]["recall@1"] == 1.0  # the source's rule holds in the target
    assert s["source successor, on the source"]["recall@1"] == 1.0
    back = transfer_signal(root, "rev", root, "src", ks=(1, 10))["scores"]
    assert back["source successor, by text"]["recall@1"] == 0.0  # ... and does not when reversed
    assert back["target successor"]["recall@1"] == 1.0  # while the target's own counts know it
    assert "film" not in format_signal(res) and "source successor, by text" in format_signal(res)


def test_unmatched_target_items_rank_below_every_matched_one(root):
    from missrec.baselines import PopularityScorer
    from missrec.transfer_signal import MappedScorer

    src, tgt = load_dataset(root, "src", require_features=()), load_dataset(root, "fwd", require_features=())
    sc = MappedScorer(PopularityScorer.from_split(src.splits["train"], src.n_items), text_map(src, tgt))
    u = sc.encode(torch.ones(1, 2, dtype=torch.long), torch.tensor([2]))
    scores = sc.score(u, torch.arange(1, 8))[0]
    assert scores[6] == -1 and bool((scores[:6] >= 0).all())


def test_transfer_signal_only_writes_the_check_and_trains_nothing(root, tmp_path, capsys):
    out = tmp_path / "o"
    res = transfer.transfer(["--data_root", str(root), "--dataset", "fwd", "--source", "src", "--signal_only",
                             "--output_dir", str(out)])
    printed = capsys.readouterr().out
    assert "what src's statistics know about fwd" in printed and "6 of 7 target items" in printed
    saved = json.loads((out / "results.json").read_text())
    assert saved["source_signal"]["scores"] == json.loads(json.dumps(res["source_signal"]["scores"]))
    assert not (out / "runs").exists() and not (out / "pretrain").exists()


def test_signal_only_needs_a_source(tmp_path, capsys):
    assert transfer.main(["--signal_only", "--output_dir", str(tmp_path / "o")]) == 2
    assert "--signal_only: needs --source" in capsys.readouterr().err


def test_a_dataset_without_text_skips_the_check_with_a_note(root, capsys):
    (root / "fwd" / "fwd.text").unlink()
    assert transfer._signal(str(root), "fwd", str(root), "src") is None
    printed = capsys.readouterr().out
    assert "note: no source-statistics check" in printed and "fwd.text: file not found" in printed


def test_cooccurrence_ranks_the_same_users_items_first(tmp_path):
    # Source users take films 0-2 or films 3-5; the target holds the same films (same text).
    _write(tmp_path, "taste", TEXTS, [[0, 1, 2] * 2, [3, 4, 5] * 2] * 4)
    _write(tmp_path, "tgt", TEXTS, [[0, 1, 2], [3, 4, 5, 3, 4, 5]])
    s = transfer_signal(tmp_path, "tgt", tmp_path, "taste", ks=(1, 3))["scores"]["source co-occurrence, by text"]
    # [0, 1] -> 2 scores 2 (1 + 1), above 0 and 1 (1 each) and the other group (0): rank 1;
    # [3, 4, 5, 3, 4] -> 5 ties with 3 and 4 (2 each): rank 3 (ties count against the answer).
    assert s["recall@1"] == 0.5 and s["recall@3"] == 1.0


def test_cooccurrence_refuses_a_catalogue_over_its_limit(root, monkeypatch, capsys):
    import missrec.transfer_signal as ts
    monkeypatch.setattr(ts, "MAX_COOC_ITEMS", 3)
    res = transfer_signal(root, "fwd", root, "src")
    assert "source co-occurrence, by text" not in res["scores"] and "source successor, by text" in res["scores"]
    assert "over its dense-table limit of 3" in capsys.readouterr().out
