"""missrec.hub.resolve: local folder, local original .pth, registry names (file:// and loopback URLs)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from missrec import hub, pth
from tests.test_download import CheckpointServer
from tests.test_pth import (RECBOLE_TOKENS, make_dataset, original_state_dict, recbole_tables,
                            save_original)


def _assert_same_weights(folder: Path, sd) -> None:
    weights = load_file(str(folder / "model.safetensors"))
    for k, v in weights.items():
        assert torch.equal(v, sd[k]), k


@pytest.fixture
def original(tmp_path):
    sd = original_state_dict("pretrain", seed=3)
    src = tmp_path / "orig" / "MISSRec-Toy-100.pth"
    src.parent.mkdir()
    save_original(src, sd, "pretrain")
    return src, sd


def test_local_folder_is_returned_as_is(tmp_path, original):
    src, sd = original
    folder, _ = pth.convert_pth(src, tmp_path / "ours")
    assert hub.resolve(folder) == folder
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        hub.resolve(tmp_path / "empty")


def test_local_pth_is_converted_once_next_to_it(original):
    src, sd = original
    folder = hub.resolve(src)
    assert folder.parent == src.parent and folder.name.startswith(f".{src.name}.missrec-")
    _assert_same_weights(folder, sd)
    stamp = (folder / "config.json").stat().st_mtime_ns
    assert hub.resolve(str(src)) == folder  # cached: same bytes, same folder, not rewritten
    assert (folder / "config.json").stat().st_mtime_ns == stamp


def test_changed_pth_is_converted_again(original, tmp_path):
    src, _ = original
    first = hub.resolve(src)
    sd2 = original_state_dict("pretrain", seed=4)
    save_original(src, sd2, "pretrain")
    second = hub.resolve(src, cache_dir=tmp_path / "cache")
    assert second != first and second.parent == tmp_path / "cache"
    _assert_same_weights(second, sd2)


def test_transductive_pth_uses_the_dataset(tmp_path):
    folder = make_dataset(tmp_path)
    text, image = recbole_tables(folder)
    sd = original_state_dict("transductive_ft", n_rows=len(RECBOLE_TOKENS), text_table=text, image_table=image)
    src = tmp_path / "ft.pth"
    save_original(src, sd, "transductive_ft")
    with pytest.raises(pth.PthConversionError, match="--dataset"):
        hub.resolve(src)
    out = hub.resolve(src, dataset=folder)
    assert json.loads((out / "config.json").read_text())["use_id"] is True
    assert (out / "interest.safetensors").is_file()


def _registry(tmp_path: Path, url: str, sha: str) -> Path:
    reg = tmp_path / "registry.json"
    reg.write_text(json.dumps({"checkpoints": {"toy-100": {
        "format": "missrec-pth", "sha256": sha, "description": "test entry",
        "source": {"type": "url", "url": url, "filename": "MISSRec-Toy-100.pth"}}}}))
    return reg


def test_registry_name_via_file_url(tmp_path, original):
    src, sd = original
    reg = _registry(tmp_path, src.as_uri(), hashlib.sha256(src.read_bytes()).hexdigest())
    folder = hub.resolve("toy-100", registry=reg, download_dir=tmp_path / "dl", progress=False)
    assert (tmp_path / "dl" / "MISSRec-Toy-100.pth").read_bytes() == src.read_bytes()
    _assert_same_weights(folder, sd)


def test_registry_name_via_loopback_http(tmp_path, original):
    src, sd = original
    data = src.read_bytes()
    server = CheckpointServer({"/toy.pth": data})
    try:
        server.cut_after = len(data) // 3  # the first transfer breaks; resolve still gets a verified file
        reg = _registry(tmp_path, server.url("/toy.pth"), hashlib.sha256(data).hexdigest())
        folder = hub.resolve("toy-100", registry=reg, download_dir=tmp_path / "dl", progress=False)
    finally:
        server.close()
    assert [r["range"] is not None for r in server.requests] == [False, False]  # fetched again whole
    _assert_same_weights(folder, sd)
    from missrec.factory import from_pretrained
    model = from_pretrained(folder)
    for k, v in sd.items():
        assert torch.equal(model.state_dict()[k], v), k


def test_registry_name_with_wrong_checksum_fails_cleanly(tmp_path, original):
    src, _ = original
    reg = _registry(tmp_path, src.as_uri(), "3" * 64)
    from missrec.hub import ChecksumError
    with pytest.raises(ChecksumError):
        hub.resolve("toy-100", registry=reg, download_dir=tmp_path / "dl", progress=False)
    assert list((tmp_path / "dl").iterdir()) == []


def test_unknown_names_are_clear_errors(tmp_path):
    reg = tmp_path / "registry.json"
    reg.write_text(json.dumps({"checkpoints": {}}))
    with pytest.raises(FileNotFoundError, match="no such file"):
        hub.resolve(str(tmp_path / "missing.pth"), registry=reg)
    with pytest.raises(FileNotFoundError, match="not a registry name"):
        hub.resolve("not-a-name", registry=reg)


def test_load_model_accepts_an_original_pth(original):
    src, sd = original
    from missrec.factory import from_pretrained
    model = from_pretrained(str(src))
    for k, v in sd.items():
        assert torch.equal(model.state_dict()[k], v), k


def test_hub_repo_id_goes_through_snapshot_download(tmp_path, original, monkeypatch):
    import huggingface_hub
    src, sd = original
    calls = []

    def fake_snapshot_download(repo_id, revision=None, local_dir=None, **kw):
        calls.append((repo_id, revision, local_dir))
        snap = tmp_path / "snapshot"  # what a repo holding an original .pth would download to
        snap.mkdir(exist_ok=True)
        (snap / src.name).write_bytes(src.read_bytes())
        (snap / "README.md").write_text("card")
        return str(snap)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    reg = tmp_path / "registry.json"
    reg.write_text(json.dumps({"checkpoints": {}}))
    folder = hub.resolve("someone/missrec-toy@v1", registry=reg, download_dir=tmp_path / "dl")
    assert calls == [("someone/missrec-toy", "v1", str(tmp_path / "dl" / "someone__missrec-toy"))]
    assert folder.parent == tmp_path / "dl" / "converted"
    _assert_same_weights(folder, sd)
    # a repo already in our format is used as is
    ours, _ = pth.convert_pth(src, tmp_path / "ours")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kw: str(ours))
    assert hub.resolve("someone/missrec-ours", registry=reg, download_dir=tmp_path / "dl") == ours
