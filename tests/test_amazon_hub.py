"""prepare_amazon --hub: the 2023 raw files come from the Hub (faked here: no network in tests)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from missrec.features import amazon as pa
from missrec.data.atomic import read_index_map
from missrec.features import amazon_hub
from tests._features_helpers import write_amazon_dump

CAT = "Grocery_and_Gourmet_Food"


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A folder in the Hub repo's layout, served by a stand-in for hf_hub_download."""
    flat = tmp_path / "hubsrc"
    write_amazon_dump(flat, CAT, "2023")
    repo = tmp_path / "hubrepo"
    (repo / "raw" / "review_categories").mkdir(parents=True)
    (repo / "raw" / "meta_categories").mkdir(parents=True)
    shutil.copy(flat / f"{CAT}.jsonl", repo / "raw" / "review_categories" / f"{CAT}.jsonl")
    shutil.copy(flat / f"meta_{CAT}.jsonl", repo / "raw" / "meta_categories" / f"meta_{CAT}.jsonl")
    calls = []

    def download(*, repo_id, filename, repo_type, revision=None, local_dir=None):
        calls.append((repo_id, filename, repo_type))
        src = repo / filename
        if repo_id != amazon_hub.REPO_ID or repo_type != "dataset" or not src.is_file():
            raise FileNotFoundError(f"404 for {repo_id}/{filename}")
        dst = Path(local_dir) / filename
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
        return str(dst)

    monkeypatch.setattr(amazon_hub, "hf_hub_download", download)
    return calls


def test_hub_category_downloads_then_prepares(tmp_path, fake_hub, capsys):
    raw, out = tmp_path / "raw", tmp_path / "data"
    args = ["--hub", CAT, "--raw_dir", str(raw), "--out_root", str(out), "--kcore", "3"]
    assert pa.main(args) == 0
    assert fake_hub == [(amazon_hub.REPO_ID, f"raw/review_categories/{CAT}.jsonl", "dataset"),
                        (amazon_hub.REPO_ID, f"raw/meta_categories/meta_{CAT}.jsonl", "dataset")]
    assert (raw / "raw" / "review_categories" / f"{CAT}.jsonl").is_file()
    # The hand-checked case of tests/test_prepare_amazon.py: users u1..u4, items A..E.
    assert read_index_map(out / "Food" / "Food.user2index") == ["u1", "u2", "u3", "u4"]
    assert read_index_map(out / "Food" / "Food.item2index") == list("ABCDE")
    # Run again: the files are there, nothing is downloaded.
    fake_hub.clear()
    assert pa.main(args) == 0
    assert fake_hub == []
    assert "present, not downloaded again" in capsys.readouterr().out


def test_hub_without_network_says_what_to_download(tmp_path, monkeypatch, capsys):
    def offline(**kw):
        raise ConnectionError("Failed to resolve 'huggingface.co'\nmore detail")

    monkeypatch.setattr(amazon_hub, "hf_hub_download", offline)
    assert pa.main(["--hub", "All_Beauty", "--raw_dir", str(tmp_path / "raw"), "--out_root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: could not download raw/review_categories/All_Beauty.jsonl")
    assert "https://huggingface.co/datasets/McAuley-Lab/Amazon-Reviews-2023/resolve/main/raw/review_categories/All_Beauty.jsonl" in err
    assert "resolve/main/raw/meta_categories/meta_All_Beauty.jsonl" in err
    assert str(tmp_path / "raw" / "raw") in err


def test_unknown_category_is_a_clear_error(tmp_path, fake_hub, capsys):
    assert pa.main(["--hub", "No_Such_Cat", "--raw_dir", str(tmp_path / "raw"), "--out_root", str(tmp_path)]) == 2
    assert "FileNotFoundError: 404" in capsys.readouterr().err
