"""Turn a ``--pretrained`` value into a local checkpoint folder (config.json + model.safetensors).

Accepted, in this order:

1. a local folder in our format;
2. a local file: an original MISSRec ``.pth``, imported with the restricted unpickler
   (:mod:`missrec.pth`) into a cache folder next to it (``.<file>.missrec-<sha>/``), or into
   ``<tmp>/missrec-pth-cache/`` when that folder is not writable; reused while the file's
   SHA-256 is unchanged;
3. a name from ``checkpoints/registry.json`` (downloaded and verified by
   ``checkpoints/download.py``, converted like 2 when it is a ``.pth``);
4. a Hugging Face Hub repo id ``owner/name[@revision]`` (``huggingface_hub.snapshot_download``);
   a repo holding a single ``.pth`` instead of our format is converted like 2, into
   ``<download dir>/converted/`` rather than into the Hugging Face cache.

Transductive original checkpoints need ``dataset`` (the dataset folder they were trained on) to
put their item-ID rows in our order; see :func:`missrec.pth.convert_original`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .checkpoint import is_checkpoint_folder
from .fsutil import sha256_file
from .pth import convert_pth

__all__ = ["resolve", "convert_cached"]

_PTH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


@contextlib.contextmanager
def _locked(what: str) -> Iterator[None]:
    """Exclusive lock (POSIX flock) so that several processes of one run (e.g. every rank of an
    ``accelerate launch``) do not download or convert the same thing at the same time. Lock files
    live in the temp folder, not next to the downloads, so nothing is left beside them."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock; the atomic renames still protect files
        yield
        return
    lock_dir = Path(tempfile.gettempdir()) / "missrec-locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / (hashlib.sha256(what.encode()).hexdigest()[:24] + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _cache_key(file_sha: str, dataset) -> str:
    key = file_sha[:16]
    if dataset is not None:
        key += "-" + hashlib.sha256(str(Path(dataset).resolve()).encode()).hexdigest()[:8]
    return key


def _cached_ok(folder: Path, file_sha: str) -> bool:
    if not is_checkpoint_folder(folder):
        return False
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(cfg, dict) and cfg.get("source", {}).get("sha256") == file_sha


def convert_cached(pth: str | os.PathLike, *, dataset: str | os.PathLike | None = None,
                   cache_dir: str | os.PathLike | None = None, allow_unknown: bool = False) -> Path:
    """Convert an original ``.pth`` once; later calls with the same bytes reuse the folder."""
    pth = Path(pth)
    file_sha = sha256_file(pth)
    key = _cache_key(file_sha, dataset)
    if cache_dir is not None:
        target = Path(cache_dir) / key
    elif os.access(pth.parent, os.W_OK):
        target = pth.parent / f".{pth.name}.missrec-{key}"
    else:
        target = Path(tempfile.gettempdir()) / "missrec-pth-cache" / key
    with _locked(f"convert:{target.resolve()}"):
        if _cached_ok(target, file_sha):
            return target
        if target.exists():
            shutil.rmtree(target)  # our own cache folder (name derived from the hash), stale or broken
        folder, conv = convert_pth(pth, target, dataset=dataset, allow_unknown=allow_unknown, overwrite=True)
    for note in conv.notes:
        print(f"[missrec.hub] {pth.name}: {note}", flush=True)
    return folder


def _folder_or_single_pth(folder: Path, what: str, **convert_kwargs) -> Path:
    if is_checkpoint_folder(folder):
        return folder
    pths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _PTH_SUFFIXES)
    if len(pths) == 1:
        return convert_cached(pths[0], **convert_kwargs)
    raise FileNotFoundError(f"{what}: neither a checkpoint folder (config.json + model.safetensors) nor a "
                            f"folder with a single original .pth (found {[p.name for p in pths]})")


def resolve(spec: str | os.PathLike, *, dataset: str | os.PathLike | None = None,
            registry: str | os.PathLike | None = None, download_dir: str | os.PathLike | None = None,
            cache_dir: str | os.PathLike | None = None, allow_unknown: bool = False,
            progress: bool = True) -> Path:
    """Return a local folder in our checkpoint format for ``spec`` (see the module docstring)."""
    text = str(spec)
    path = Path(text).expanduser()
    conv = {"dataset": dataset, "cache_dir": cache_dir, "allow_unknown": allow_unknown}
    if path.is_dir():
        if is_checkpoint_folder(path):
            return path
        raise FileNotFoundError(f"{path}: not a checkpoint folder (needs config.json and model.safetensors)")
    if path.is_file():
        return convert_cached(path, **conv)

    # Not on disk: a registry name, a URL, or a Hub id. The downloader lives with the registry.
    from checkpoints.download import default_download_dir, fetch, hub_repo_id, load_registry, registry_path
    reg = registry_path(registry)
    names = load_registry(reg) if reg.is_file() else {}
    looks_local = text.startswith((".", "/", "~")) or text.endswith(_PTH_SUFFIXES)
    if text not in names and not text.startswith(("http://", "https://", "file://")) and (
            looks_local or hub_repo_id(text) is None):
        raise FileNotFoundError(f"'{text}': no such file or folder, and not a registry name "
                                f"({', '.join(sorted(names)) or 'registry empty'}) or a Hub repo id (owner/name)")
    where = Path(download_dir) if download_dir is not None else default_download_dir()
    with _locked(f"fetch:{where.resolve()}:{text}"):
        got, entry = fetch(text, download_dir, registry=registry, progress=progress)
    if got.is_dir():
        if cache_dir is None:  # keep our converted copy out of the Hugging Face cache's snapshot folder
            conv["cache_dir"] = where / "converted"
        return _folder_or_single_pth(got, text, **conv)
    if entry is not None and entry.get("format") == "missrec":
        raise FileNotFoundError(f"registry entry '{text}' gave a single file {got}, expected a folder")
    return convert_cached(got, **conv)
