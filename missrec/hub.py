"""Named checkpoints and the one resolver of ``--pretrained``: registry, downloads, conversion.

:func:`resolve` turns a ``--pretrained`` value into a local checkpoint folder (config.json +
model.safetensors, see missrec/checkpoint.py). Accepted, in this order:

1. a local folder in our format;
2. a local file: an original MISSRec ``.pth``, imported with the restricted unpickler
   (missrec/pth.py) into ``<cache>/pth/<sha256 of the file>/``, where ``<cache>`` is
   ``$MISSREC_CACHE_DIR``, else ``$XDG_CACHE_HOME/missrec`` (``~/.cache/missrec``): a folder of
   the user's own (created 0700; refused when another user owns it or others may write to it),
   never one beside the file or a fixed shared path, where someone else could plant weights.
   Every use hashes the ``.pth`` again and takes the folder only when it records that hash;
3. a name from ``missrec/registry.json`` (downloaded and verified, converted like 2 when it is
   a ``.pth``);
4. a Hugging Face Hub repo id ``owner/name[@revision]`` (``huggingface_hub.snapshot_download``);
   a repo holding a single ``.pth`` instead of our format is converted like 2, into
   ``<download dir>/converted/`` rather than into the Hugging Face cache.

Downloads of URLs go through ``torch.hub.download_url_to_file``, which writes a temp file beside
the target and renames it only after the whole file's SHA-256 matched; a failed or mismatching
transfer leaves nothing behind and is retried from the start (``retries``). A download without a
SHA-256 to check is kept only if it starts like a ``torch.save`` file (an HTML sign-in page or an
empty response is removed with an error). Several processes of one run (every rank of an
``accelerate launch``) serialise on a ``filelock`` per target.

    python checkpoints/download.py NAME_OR_URL [--out DIR] [--sha256 HEX] [--list]   # = missrec-download

Transductive original checkpoints need ``dataset`` (the dataset folder they were trained on) to
put their item-ID rows in our order; see :func:`missrec.pth.convert_original`.

Over 500 lines on purpose: the registry, URL and Hub downloads, .pth caching and the error
messages for each are one resolution path, read top to bottom; splitting it would scatter it.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterator

from filelock import FileLock

from .checkpoint import is_checkpoint_folder
from .errors import MissingFileError, UserError, read_json
from .fsutil import sha256_file
from .pth import convert_pth

__all__ = ["resolve", "convert_cached", "cache_root", "private_dir", "fetch", "download_url", "load_registry",
           "main"]

REGISTRY_PATH = Path(__file__).resolve().with_name("registry.json")
FORMATS = ("missrec-pth", "missrec")
SOURCE_TYPES = ("url", "hub", "manual")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HUB_ID = re.compile(r"^(?:hf://)?([A-Za-z0-9][\w.-]*/[\w.-]+)(?:@([\w./-]+))?$")
_PTH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


class DownloadError(UserError, RuntimeError):
    """A download failed; the message says what is left on disk (if anything)."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not have the expected SHA-256 (the file was removed)."""


class ManualDownloadRequired(DownloadError):
    """The registry entry has no direct URL; the message explains where to get the file."""


class RegistryError(UserError):
    """registry.json is malformed or does not have the requested entry."""


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _locked(what: str) -> Iterator[None]:
    """One process at a time per download/conversion target. Lock files live in the temp folder,
    not next to the downloads, so nothing is left beside them."""
    lock_dir = Path(tempfile.gettempdir()) / "missrec-locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_dir / (hashlib.sha256(what.encode()).hexdigest()[:24] + ".lock"))):
        yield


# ----------------------------------------------------------------------------- registry
def registry_path(path: str | os.PathLike | None = None) -> Path:
    """The registry file: ``path``, else ``$MISSREC_REGISTRY``, else missrec/registry.json."""
    if path is not None:
        return Path(path)
    env = os.environ.get("MISSREC_REGISTRY")
    return Path(env) if env else REGISTRY_PATH


def _safe_filename(name) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


def load_registry(path: str | os.PathLike | None = None) -> dict[str, dict]:
    """Read and validate the registry; returns ``{name: entry}``."""
    path = registry_path(path)
    if not path.is_file():
        raise RegistryError(f"{path}: registry file not found")
    data = read_json(path, "registry", fix="restore it or pass another --registry")
    entries = data.get("checkpoints") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise RegistryError(f"{path}: expected an object with a 'checkpoints' mapping")
    for name, e in entries.items():
        where = f"{path}: entry '{name}'"
        if not isinstance(e, dict):
            raise RegistryError(f"{where}: expected an object")
        if e.get("format") not in FORMATS:
            raise RegistryError(f"{where}: 'format' must be one of {FORMATS}, got {e.get('format')!r}")
        src = e.get("source")
        if not isinstance(src, dict) or src.get("type") not in SOURCE_TYPES:
            raise RegistryError(f"{where}: 'source.type' must be one of {SOURCE_TYPES}")
        sha = e.get("sha256")
        if sha is not None and not (isinstance(sha, str) and _HEX64.match(sha.lower())):
            raise RegistryError(f"{where}: 'sha256' must be 64 hex digits or null")
        if src["type"] == "url":
            if not isinstance(src.get("url"), str):
                raise RegistryError(f"{where}: url source needs 'url'")
            if sha is None:
                raise RegistryError(f"{where}: url sources need a 'sha256' (downloads are always verified)")
        if src["type"] in ("url", "manual") and e["format"] != "missrec-pth":
            raise RegistryError(f"{where}: a single-file source must have format 'missrec-pth'")
        if src["type"] == "hub" and not isinstance(src.get("repo_id"), str):
            raise RegistryError(f"{where}: hub source needs 'repo_id'")
        if src["type"] in ("manual", "url") and "filename" in src and not _safe_filename(src["filename"]):
            raise RegistryError(f"{where}: 'filename' must be a plain file name")
        if src["type"] == "manual" and not isinstance(src.get("filename"), str):
            raise RegistryError(f"{where}: manual source needs the expected 'filename'")
    return entries


def default_download_dir() -> Path:
    """``$MISSREC_DOWNLOAD_DIR``, else ``$XDG_CACHE_HOME/missrec/downloads`` (~/.cache/missrec/downloads)."""
    env = os.environ.get("MISSREC_DOWNLOAD_DIR")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "missrec" / "downloads"


# ----------------------------------------------------------------------------- downloads
# torch.save's legacy (non-zip) format starts with its magic number pickled at protocol 2.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
EXIT_MANUAL_DOWNLOAD = 3


def not_a_torch_file(path: str | os.PathLike) -> str | None:
    """Why the file cannot be a ``torch.save`` checkpoint (what every single-file entry is), or None.

    Only the first bytes are read: a zip (``PK``) or the legacy pickle header passes; what is
    inside is checked later by the restricted reader (missrec/unpickle.py).
    """
    with open(path, "rb") as f:
        head = f.read(1024)
    if not head:
        return "is empty (0 bytes)"
    if head.startswith(b"PK\x03\x04") or head.startswith(_LEGACY_TORCH_MAGIC):
        return None
    low = head.lstrip().lower()
    if low.startswith((b"<!doctype html", b"<html")) or b"<html" in low:
        return "is an HTML page, not a checkpoint (a sign-in, error or 'virus scan' page saved instead of the file?)"
    return (f"does not start like a torch.save checkpoint (a zip 'PK' or torch's legacy header); "
            f"its first bytes are {head[:24]!r}")


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    # torch.hub.download_url_to_file takes no timeout; its urlopen uses the socket default.
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def download_url(url: str, dest: str | os.PathLike, sha256: str | None = None, *, retries: int = 3,
                 timeout: float = 60.0, progress: bool = True, backoff: float = 0.5) -> Path:
    """Fetch ``url`` (http, https or file) to ``dest``, verifying the whole file's ``sha256`` if given.

    A dropped connection shows up as a short file, hence a checksum mismatch, so mismatches and
    network errors are both retried (from the start: torch.hub does not resume) ``retries`` times.
    """
    import torch.hub

    dest = Path(dest)
    expected = sha256.lower() if sha256 else None
    if expected is not None and not _HEX64.match(expected):
        raise DownloadError(f"--sha256 {sha256!r} is not 64 hex digits")
    if dest.is_file():
        if expected is None:
            why = not_a_torch_file(dest)
            if why:
                raise DownloadError(dest, f"already exists but {why}: delete it and run the same command again")
            _log(f"{dest} already exists (not re-downloaded; no checksum given to verify it)")
            return dest
        if sha256_file(dest) == expected:
            _log(f"{dest} already exists and its SHA-256 matches")
            return dest
        _log(f"{dest} exists but its SHA-256 does not match: downloading it again")
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("http", "https", "file"):
        raise DownloadError(f"{url}: unsupported URL scheme {scheme!r} (http, https or file)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Without a checksum the file is looked at before it takes its name (deterministic temp name).
    target = dest if expected is not None else dest.with_name(f".{dest.name}.unchecked")
    target.unlink(missing_ok=True)
    for attempt in range(retries + 1):
        retry = f"; retrying ({attempt + 1}/{retries})" if attempt < retries else ""
        try:
            with _socket_timeout(timeout):
                torch.hub.download_url_to_file(url, str(target), hash_prefix=expected, progress=progress)
            break
        except urllib.error.HTTPError as e:
            if not (500 <= e.code < 600 and retry):
                raise DownloadError(f"{url}: HTTP {e.code} {e.reason}; nothing was kept") from None
            _log(f"{url}: HTTP {e.code}{retry}")
        except RuntimeError as e:  # torch.hub's 'invalid hash value (expected "...", got "...")'
            if "invalid hash value" not in str(e):
                raise
            got = re.search(r'got "([0-9a-f]+)"', str(e))
            if not retry:
                raise ChecksumError(f"{url}: SHA-256 mismatch: got {got.group(1) if got else '?'}, expected "
                                    f"{expected}; the downloaded file was removed (a dropped connection ends "
                                    "like this too: run the same command again)") from None
            _log(f"{url}: SHA-256 mismatch (a dropped connection?){retry}")
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            if not retry:
                raise DownloadError(f"{url}: download failed ({getattr(e, 'reason', e)}); nothing was kept") from None
            _log(f"{url}: {getattr(e, 'reason', e)}{retry}")
        time.sleep(backoff * 2 ** attempt)
    if expected is None:
        why = not_a_torch_file(target)
        if why:
            target.unlink(missing_ok=True)
            raise DownloadError(url, f"the downloaded file {why}; nothing was kept (check the URL: it must give "
                                     "the .pth file itself, not a page about it)")
        os.replace(target, dest)
        _log(f"warning: no SHA-256 was given, so {dest.name} is NOT verified. Its SHA-256 is {sha256_file(dest)}")
    return dest


def hub_repo_id(spec: str) -> tuple[str, str | None] | None:
    """``owner/name[@rev]`` or ``hf://owner/name[@rev]`` -> (repo_id, revision); else None."""
    m = _HUB_ID.match(spec)
    if not m or spec.endswith((".pth", ".pt", ".bin", ".safetensors")):
        return None
    return m.group(1), m.group(2)


def fetch_hub(repo_id: str, out_dir: str | os.PathLike | None = None, revision: str | None = None) -> Path:
    """Snapshot a Hub repo (huggingface_hub verifies each file) into ``out_dir`` or the HF cache."""
    import huggingface_hub

    try:
        path = huggingface_hub.snapshot_download(repo_id=repo_id, revision=revision,
                                                 local_dir=str(out_dir) if out_dir is not None else None)
    except Exception as e:  # the hub raises many error types; all mean "could not get it"
        raise DownloadError(_hub_failure(repo_id, revision, e)) from None
    return Path(path)


def _hub_failure(repo_id: str, revision: str | None, e: Exception) -> str:
    """One line: why a Hub snapshot failed and how to get the repo by hand."""
    name = f"Hugging Face Hub repo '{repo_id}{'@' + revision if revision else ''}'"
    by_hand = (f"or download it where there is network (huggingface-cli download {repo_id} --local-dir DIR), "
               "copy DIR here and give that folder instead (--pretrained DIR)")
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if offline or type(e).__name__ in ("LocalEntryNotFoundError", "OfflineModeIsEnabled"):
        return (f"{name}: not in the local Hugging Face cache, and HF_HUB_OFFLINE=1 forbids downloading it: "
                f"run once with network access (without HF_HUB_OFFLINE), {by_hand}")
    first = (str(e).strip().splitlines() or [""])[0][:200]
    return f"{name}: could not be fetched ({type(e).__name__}: {first}); check the repo id and the network, {by_hand}"


def manual_instructions(name: str, entry: dict, out_dir: Path) -> str:
    """One line: where to get a manual entry's file, where to save it, and the local-path alternative."""
    src = entry["source"]
    how = src.get("instructions", "no direct URL is known.").strip()
    page = f"open {src['page']} and " if src.get("page") else ""
    check = "checks it against the registered SHA-256" if entry.get("sha256") else "checks it and prints its SHA-256"
    return (f"'{name}' cannot be downloaded automatically: {how} To use it, {page}save the file as "
            f"{out_dir / src['filename']}, then run the same command again (it {check}); or give the file's own "
            f"path instead of the name (--pretrained /path/to/{src['filename']})")


def _url_filename(url: str) -> str:
    name = urllib.parse.unquote(Path(urllib.parse.urlparse(url).path).name)
    if not _safe_filename(name):
        raise DownloadError(f"{url}: cannot tell a file name from the URL")
    return name


def fetch(spec: str, out_dir: str | os.PathLike | None = None, sha256: str | None = None,
          registry: str | os.PathLike | None = None, *, retries: int = 3, timeout: float = 60.0,
          progress: bool = True) -> tuple[Path, dict | None]:
    """Get NAME_OR_URL onto local disk. Returns (path, registry entry or None).

    The path is a file for URLs, ``url`` and ``manual`` entries, a folder for Hub repos.
    """
    out = Path(out_dir) if out_dir is not None else default_download_dir()

    def hub_out(sub: str) -> Path | None:
        # Hub snapshots go to the Hugging Face cache unless a folder was asked for explicitly.
        return Path(out_dir) / sub if out_dir is not None else None

    entries = {}
    reg = registry_path(registry)
    if reg.is_file() or registry is not None:
        entries = load_registry(reg)
    if spec in entries:
        entry = entries[spec]
        src = entry["source"]
        reg_sha = entry.get("sha256")
        if sha256 and reg_sha and sha256.lower() != reg_sha.lower():
            raise DownloadError(f"--sha256 {sha256} differs from the registered {reg_sha} for '{spec}'")
        want = (sha256 or reg_sha or "").lower() or None
        if src["type"] == "url":
            filename = src.get("filename") or _url_filename(src["url"])
            return download_url(src["url"], out / filename, want, retries=retries, timeout=timeout,
                                progress=progress), entry
        if src["type"] == "hub":
            return fetch_hub(src["repo_id"], hub_out(spec), src.get("revision")), entry
        path = out / src["filename"]
        if not path.is_file():
            raise ManualDownloadRequired(manual_instructions(spec, entry, out))
        actual = sha256_file(path)
        if want is not None and actual != want:
            raise ChecksumError(f"{path}: SHA-256 {actual} does not match the registered {want} for '{spec}' "
                                "(the file was left in place: it is yours; replace it with the right one)")
        why = not_a_torch_file(path) if want is None else None
        if why:
            raise DownloadError(path, f"{why}, so it is not '{spec}' (left in place: it is yours): delete it and "
                                      f"save the real file there ({src.get('page') or 'see --list'})")
        if want is None:
            _log(f"{path}: SHA-256 {actual} (not registered yet: to pin it, set \"sha256\": \"{actual}\" "
                 f"for '{spec}' in {reg})")
        return path, entry
    if re.match(r"^(https?|file)://", spec):
        return download_url(spec, out / _url_filename(spec), sha256, retries=retries, timeout=timeout,
                            progress=progress), None
    hub = hub_repo_id(spec)
    if hub is not None:
        repo_id, revision = hub
        return fetch_hub(repo_id, hub_out(repo_id.replace("/", "__")), revision), None
    known = ", ".join(sorted(entries)) or "none"
    raise RegistryError(f"'{spec}' is not a registry name (known: {known}), a URL, or a Hub repo id (owner/name)")


# ----------------------------------------------------------------------------- .pth conversion cache
def cache_root() -> Path:
    """``$MISSREC_CACHE_DIR``, else ``$XDG_CACHE_HOME/missrec`` (``~/.cache/missrec``)."""
    env = os.environ.get("MISSREC_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")) / "missrec"


def private_dir(path: str | os.PathLike) -> Path:
    """``path`` as a folder only this user can write to: created 0700 when missing; one that is a
    symbolic link, owned by another user, or writable by group or others is refused."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = os.lstat(path)
    except OSError as e:
        raise UserError(path, f"cannot create the cache folder ({e.strerror}); set MISSREC_CACHE_DIR to a folder "
                              "of yours") from None
    fix = "set MISSREC_CACHE_DIR to a folder of yours (or pass another --cache_dir)"
    if not stat.S_ISDIR(st.st_mode):
        raise UserError(path, f"the cache folder is a symbolic link or not a folder; {fix}")
    if st.st_uid != os.getuid():
        raise UserError(path, f"the cache folder belongs to another user (uid {st.st_uid}), who could have put "
                              f"weights in it; {fix}")
    if st.st_mode & 0o022:
        raise UserError(path, f"the cache folder is writable by other users (mode {stat.S_IMODE(st.st_mode):o}), "
                              f"who could put weights in it: chmod go-w it, or {fix}")
    return path


def _cache_key(file_sha: str, dataset) -> str:
    key = file_sha
    if dataset is not None:
        key += "-" + hashlib.sha256(str(Path(dataset).resolve()).encode()).hexdigest()[:16]
    return key


def _cached_ok(folder: Path, file_sha: str) -> bool:
    if folder.is_symlink() or not is_checkpoint_folder(folder):
        return False
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    src = cfg.get("source") if isinstance(cfg, dict) else None
    return isinstance(src, dict) and src.get("sha256") == file_sha


def convert_cached(pth: str | os.PathLike, *, dataset: str | os.PathLike | None = None,
                   cache_dir: str | os.PathLike | None = None, allow_unknown: bool = False) -> Path:
    """Convert an original ``.pth`` once into ``cache_dir`` (default ``cache_root()/pth``), a folder
    of the user's own (:func:`private_dir`); later calls hash the file again and reuse the folder
    only when it records the same SHA-256."""
    pth = Path(pth)
    root = private_dir(Path(cache_dir) if cache_dir is not None else cache_root() / "pth")
    file_sha = sha256_file(pth)
    key = _cache_key(file_sha, dataset)
    target = root / key
    with FileLock(str(root / f".{key}.lock")):
        if _cached_ok(target, file_sha):
            return target
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)  # our own cache folder (name = the file's hash), stale or broken
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
    raise MissingFileError(f"{what}: neither a checkpoint folder (config.json + model.safetensors) nor a "
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
        raise MissingFileError(f"{path}: not a checkpoint folder (needs config.json and model.safetensors)")
    if path.is_file():
        return convert_cached(path, **conv)

    # Not on disk: a registry name, a URL, or a Hub id.
    reg = registry_path(registry)
    names = load_registry(reg) if reg.is_file() else {}
    looks_local = text.startswith((".", "/", "~")) or text.endswith(_PTH_SUFFIXES)
    if text not in names and not text.startswith(("http://", "https://", "file://")) and (
            looks_local or hub_repo_id(text) is None):
        raise MissingFileError(f"'{text}': no such file or folder, and not a registry name "
                                f"({', '.join(sorted(names)) or 'registry empty'}) or a Hub repo id (owner/name)")
    where = Path(download_dir) if download_dir is not None else default_download_dir()
    with _locked(f"fetch:{where.resolve()}:{text}"):
        got, entry = fetch(text, download_dir, registry=registry, progress=progress)
    if got.is_dir():
        if cache_dir is None:  # keep our converted copy out of the Hugging Face cache's snapshot folder
            conv["cache_dir"] = where / "converted"
        return _folder_or_single_pth(got, text, **conv)
    if entry is not None and entry.get("format") == "missrec":
        raise MissingFileError(f"registry entry '{text}' gave a single file {got}, expected a folder")
    return convert_cached(got, **conv)


# ----------------------------------------------------------------------------- CLI (missrec-download)
def _print_list(registry) -> None:
    entries = load_registry(registry)
    if not entries:
        print("(registry is empty)")
    for name, e in sorted(entries.items()):
        src = e["source"]
        where = src.get("url") or src.get("repo_id") or src.get("page", "?")
        print(f"{name}\n  format:     {e['format']}\n  source:     {src['type']}: {where}")
        if src["type"] == "manual":
            print(f"  file name:  {src['filename']}")
        print(f"  sha256:     {e.get('sha256') or '(not registered)'}")
        if e.get("trained_on"):
            print(f"  trained on: {e['trained_on']}")
        if e.get("description"):
            print(f"  about:      {e['description']}")


def build_parser() -> argparse.ArgumentParser:
    from .cli import ArgumentParser
    p = ArgumentParser(
        prog="missrec-download",
        description="Download a MISSRec checkpoint by registry name, URL or Hugging Face Hub id; verify its "
                    "SHA-256 and rename it into place only when verified.",
        epilog="Exit status: 0 done (the path is printed), 2 error (one 'error:' line), "
               f"{EXIT_MANUAL_DOWNLOAD} the file must be downloaded by hand (the line says from where and where to save it).")
    p.add_argument("spec", nargs="?", metavar="NAME_OR_URL",
                   help="a name from missrec/registry.json (see --list), an http(s):// or file:// URL, "
                        "or a Hub repo id 'owner/name' / 'hf://owner/name@revision'")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="folder to download into (default: $MISSREC_DOWNLOAD_DIR or ~/.cache/missrec/downloads; "
                        "Hub repos default to the Hugging Face cache, or DIR/owner__name)")
    p.add_argument("--sha256", metavar="HEX", default=None,
                   help="expected SHA-256 of the file; required to verify a plain URL, must agree with the "
                        "registry for a registry name")
    p.add_argument("--list", action="store_true", help="list the registry's checkpoints and exit")
    p.add_argument("--registry", metavar="FILE", default=None,
                   help="registry JSON to use instead of missrec/registry.json (or set $MISSREC_REGISTRY)")
    p.add_argument("--retries", type=int, default=3,
                   help="how many times to download again after a dropped connection or a checksum mismatch "
                        "(default 3)")
    p.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds (default 60)")
    p.add_argument("--no_progress", action="store_true", help="do not show a progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """``missrec-download``: exit status 0, 2 (one error line) or 3 (download by hand, one line)."""
    from .cli import run
    return run(_main, argv, exit=False)


def _main(argv: list[str]) -> int:
    from .cli import error_line
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        _print_list(args.registry)
        return 0
    if not args.spec:
        parser.error("NAME_OR_URL is required (or --list)")
    try:
        path, _ = fetch(args.spec, args.out, args.sha256, args.registry, retries=args.retries,
                        timeout=args.timeout, progress=not args.no_progress)
    except ManualDownloadRequired as e:
        error_line(str(e))
        return EXIT_MANUAL_DOWNLOAD
    print(path)
    return 0
