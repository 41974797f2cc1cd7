"""missrec.hub.resolve: local folder, local original .pth, registry names (file:// and loopback URLs)."""
from __future__ import annotations

import hashlib
import json
import os
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


def test_local_pth_is_converted_once_into_the_private_cache(original):
    src, sd = original
    folder = hub.resolve(src)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    # Keyed by the file's full SHA-256, in the user's own cache (conftest points MISSREC_CACHE_DIR
    # at a temp folder), never beside the file.
    assert folder == hub.cache_root() / "pth" / sha
    assert (folder.parent.stat().st_mode & 0o777) == 0o700
    assert [p.name for p in src.parent.iterdir()] == [src.name]
    _assert_same_weights(folder, sd)
    stamp = (folder / "config.json").stat().st_mtime_ns
    assert hub.resolve(str(src)) == folder  # cached: same bytes, same folder, not rewritten
    assert (folder / "config.json").stat().st_mtime_ns == stamp


def test_planted_cache_folders_are_never_used(original, tmp_path):
    src, sd = original
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    # Someone's weights (zeros) under the names the old cache used beside the file, with a
    # config.json that records the right SHA-256.
    fake_sd = {k: torch.zeros_like(v) for k, v in sd.items()}
    for name in (f".{src.name}.missrec-{sha[:16]}", f".{src.name}.missrec-{sha}"):
        planted, _ = pth.convert_pth(src, src.parent / name)
        from safetensors.torch import save_file
        save_file(fake_sd, str(planted / "model.safetensors"))
    folder = hub.resolve(src)
    assert folder.parent == hub.cache_root() / "pth"
    _assert_same_weights(folder, sd)

    # A cache folder that records another file's hash is converted again, not trusted.
    save_file(fake_sd, str(folder / "model.safetensors"))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["source"]["sha256"] = "0" * 64
    (folder / "config.json").write_text(json.dumps(cfg))
    assert hub.resolve(src) == folder
    _assert_same_weights(folder, sd)


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o755])
def test_cache_folder_others_can_write_to_is_refused(original, tmp_path, mode):
    src, _ = original
    shared = tmp_path / "shared-cache"
    shared.mkdir()
    shared.chmod(mode)
    if mode & 0o022:
        with pytest.raises(hub.UserError, match=r"shared-cache: the cache folder is writable by other users"):
            hub.resolve(src, cache_dir=shared)
        assert list(shared.iterdir()) == []
    else:
        assert hub.resolve(src, cache_dir=shared).parent == shared


def test_cache_folder_of_another_user_is_refused(original, tmp_path):
    if os.getuid() != 0:
        pytest.skip("giving a folder to another user needs root")
    src, _ = original
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 12345, 12345)
    with pytest.raises(hub.UserError, match=r"theirs: the cache folder belongs to another user \(uid 12345\)"):
        hub.resolve(src, cache_dir=theirs)
    assert list(theirs.iterdir()) == []
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(hub.UserError, match="symbolic link"):
        hub.resolve(src, cache_dir=tmp_path / "link")


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
