"""Download a released checkpoint: resumable, checksum-verified, renamed into place only when good.

    python checkpoints/download.py NAME_OR_URL [--out DIR] [--sha256 HEX] [--list]

NAME_OR_URL is a name from ``checkpoints/registry.json``, an ``http(s)://`` or ``file://`` URL,
or a Hugging Face Hub repo id (``owner/name`` or ``hf://owner/name[@revision]``).

HTTP downloads go to ``<file>.part`` and continue from its size with a ``Range`` request when
a connection drops (``--retries`` times in one run; a later run with the same arguments resumes
the same ``.part``). The finished file is SHA-256 checked and only then renamed to its final
name. A wrong checksum or an HTTP error removes the ``.part``: nothing is left behind. The one
thing deliberately kept is the ``.part`` of a download cut off by the network (or Ctrl-C), since
that is what resuming needs; the message says so.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as a file: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from missrec.fsutil import sha256_file  # noqa: E402

REGISTRY_PATH = Path(__file__).resolve().with_name("registry.json")
FORMATS = ("missrec-pth", "missrec")
SOURCE_TYPES = ("url", "hub", "manual")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HUB_ID = re.compile(r"^(?:hf://)?([A-Za-z0-9][\w.-]*/[\w.-]+)(?:@([\w./-]+))?$")
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed; the message says what is left on disk (if anything)."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not have the expected SHA-256 (the file was removed)."""


class ManualDownloadRequired(DownloadError):
    """The registry entry has no direct URL; the message explains where to get the file."""


class RegistryError(ValueError):
    """registry.json is malformed or does not have the requested entry."""


class _Interrupted(Exception):
    """A transfer that may be resumed (connection dropped, short read, 5xx)."""


# ----------------------------------------------------------------------------- registry
def registry_path(path: str | os.PathLike | None = None) -> Path:
    """The registry file: ``path``, else ``$MISSREC_REGISTRY``, else checkpoints/registry.json."""
    if path is not None:
        return Path(path)
    env = os.environ.get("MISSREC_REGISTRY")
    return Path(env) if env else REGISTRY_PATH


def load_registry(path: str | os.PathLike | None = None) -> dict[str, dict]:
    """Read and validate the registry; returns ``{name: entry}``."""
    path = registry_path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(f"{path}: registry file not found") from None
    except json.JSONDecodeError as e:
        raise RegistryError(f"{path}: not valid JSON ({e})") from None
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
    """``$MISSREC_DOWNLOAD_DIR``, else checkpoints/downloads/ (git-ignored), else ~/.cache/missrec."""
    env = os.environ.get("MISSREC_DOWNLOAD_DIR")
    if env:
        return Path(env)
    here = REGISTRY_PATH.parent
    if os.access(here, os.W_OK):
        return here / "downloads"
    return Path.home() / ".cache" / "missrec" / "downloads"


def _safe_filename(name) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


# ----------------------------------------------------------------------------- HTTP / file downloads
def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def download_url(url: str, dest: str | os.PathLike, sha256: str | None = None, *, retries: int = 3,
                 timeout: float = 60.0, progress: bool = True, backoff: float = 0.5) -> Path:
    """Fetch ``url`` to ``dest`` through ``dest.part``; verify ``sha256`` (if given) before renaming."""
    dest = Path(dest)
    expected = sha256.lower() if sha256 else None
    if expected is not None and not _HEX64.match(expected):
        raise DownloadError(f"--sha256 {sha256!r} is not 64 hex digits")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if dest.is_file():
        if expected is None:
            _log(f"{dest} already exists (not re-downloaded; no checksum given to verify it)")
            return dest
        if sha256_file(dest) == expected:
            _log(f"{dest} already exists and its SHA-256 matches")
            return dest
        _log(f"{dest} exists but its SHA-256 does not match: downloading it again")
    scheme = urllib.parse.urlparse(url).scheme
    try:
        if scheme == "file":
            _copy_local(url, part, progress)
        elif scheme in ("http", "https"):
            _http_download(url, part, retries=retries, timeout=timeout, progress=progress, backoff=backoff)
        else:
            raise DownloadError(f"{url}: unsupported URL scheme {scheme!r} (http, https or file)")
        actual = sha256_file(part)
        if expected is not None and actual != expected:
            raise ChecksumError(f"{url}: SHA-256 mismatch: got {actual}, expected {expected}; "
                                "the downloaded file was removed")
        os.replace(part, dest)
    except _Interrupted as e:
        if part.exists() and part.stat().st_size == 0:
            part.unlink()
            raise DownloadError(f"{url}: download failed ({e}); nothing was received") from None
        if not part.exists():
            raise DownloadError(f"{url}: download failed ({e})") from None
        raise DownloadError(f"{url}: download interrupted ({e}); the partial file {part} "
                            f"({part.stat().st_size} bytes) is kept: run the same command again to resume") from None
    except KeyboardInterrupt:
        if part.exists():
            _log(f"interrupted: partial file kept at {part}; run the same command again to resume")
        raise
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    if expected is None:
        _log(f"warning: no SHA-256 was given, so {dest.name} is NOT verified. Its SHA-256 is {actual}")
    return dest


def _copy_local(url: str, part: Path, progress: bool) -> None:
    src = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    if not src.is_file():
        raise DownloadError(f"{url}: file not found")
    from tqdm import tqdm
    with open(src, "rb") as fin, open(part, "wb") as fout, \
            tqdm(total=src.stat().st_size, unit="B", unit_scale=True, desc=src.name, disable=not progress) as bar:
        while block := fin.read(CHUNK):
            fout.write(block)
            bar.update(len(block))


_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def _http_download(url: str, part: Path, *, retries: int, timeout: float, progress: bool, backoff: float) -> None:
    from tqdm import tqdm
    attempt = 0
    while True:
        offset = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": "missrec-download/1"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            try:
                resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
            except urllib.error.HTTPError as e:
                if e.code == 416 and offset:
                    return  # nothing left to send: the .part is complete; the checksum decides
                if 500 <= e.code < 600:
                    raise _Interrupted(f"HTTP {e.code} {e.reason}") from None
                raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
            except (urllib.error.URLError, OSError) as e:
                raise _Interrupted(str(getattr(e, "reason", e))) from None
            with resp:
                total = None
                mode = "ab"
                if offset and resp.status == 206:
                    m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
                    if not m or int(m.group(1)) != offset:
                        raise DownloadError(f"{url}: server answered Range {offset}- with Content-Range "
                                            f"{resp.headers.get('Content-Range')!r}")
                    total = int(m.group(3)) if m.group(3) != "*" else None
                else:
                    if offset:
                        _log("server ignored the Range request: starting over")
                    offset, mode = 0, "wb"
                    length = resp.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                received = offset
                with open(part, mode) as fout, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                                   desc=part.name[: -len(".part")], disable=not progress) as bar:
                    try:
                        while block := resp.read(CHUNK):
                            fout.write(block)
                            received += len(block)
                            bar.update(len(block))
                    except (OSError, ValueError, http.client.HTTPException) as e:
                        raise _Interrupted(f"connection lost after {received} bytes: {e}") from None
                if total is not None and received < total:
                    raise _Interrupted(f"connection closed after {received} of {total} bytes")
                if total is not None and received > total:
                    raise DownloadError(f"{url}: received {received} bytes, more than the announced {total}")
                return
        except _Interrupted as e:
            attempt += 1
            if attempt > retries:
                raise
            wait = backoff * 2 ** (attempt - 1)
            _log(f"{e}; retrying ({attempt}/{retries}) in {wait:.1f}s, resuming from "
                 f"{part.stat().st_size if part.exists() else 0} bytes")
            time.sleep(wait)


# ----------------------------------------------------------------------------- Hub and registry
def hub_repo_id(spec: str) -> tuple[str, str | None] | None:
    """``owner/name[@rev]`` or ``hf://owner/name[@rev]`` -> (repo_id, revision); else None."""
    m = _HUB_ID.match(spec)
    if not m or spec.endswith((".pth", ".pt", ".bin", ".safetensors")):
        return None
    return m.group(1), m.group(2)


def fetch_hub(repo_id: str, out_dir: str | os.PathLike | None = None, revision: str | None = None) -> Path:
    """Snapshot a Hub repo (huggingface_hub verifies each file) into ``out_dir`` or the HF cache."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise DownloadError("huggingface_hub is not installed (pip install huggingface_hub)") from None
    try:
        path = snapshot_download(repo_id=repo_id, revision=revision,
                                 local_dir=str(out_dir) if out_dir is not None else None)
    except Exception as e:  # the hub raises many error types; all mean "could not get it"
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0") else ""
        raise DownloadError(f"Hugging Face Hub repo '{repo_id}'"
                            f"{'@' + revision if revision else ''}: {type(e).__name__}: {e}{offline}") from None
    return Path(path)


def manual_instructions(name: str, entry: dict, out_dir: Path) -> str:
    src = entry["source"]
    lines = [f"'{name}' cannot be downloaded automatically: {src.get('instructions', 'no direct URL is known.')}"]
    if src.get("page"):
        lines.append(f"  1. Open {src['page']}")
    lines.append(f"  2. Save the file as {out_dir / src['filename']}")
    lines.append(f"  3. Run the same command again (it then checks the file"
                 f"{' against the registered SHA-256' if entry.get('sha256') else ' and prints its SHA-256'})")
    return "\n".join(lines)


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


def _url_filename(url: str) -> str:
    name = urllib.parse.unquote(Path(urllib.parse.urlparse(url).path).name)
    if not _safe_filename(name):
        raise DownloadError(f"{url}: cannot tell a file name from the URL")
    return name


# ----------------------------------------------------------------------------- CLI
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
    p = argparse.ArgumentParser(
        prog="missrec-download",
        description="Download a MISSRec checkpoint by registry name, URL or Hugging Face Hub id; resume "
                    "interrupted downloads, verify SHA-256, rename into place only when verified.")
    p.add_argument("spec", nargs="?", metavar="NAME_OR_URL",
                   help="a name from checkpoints/registry.json (see --list), an http(s):// or file:// URL, "
                        "or a Hub repo id 'owner/name' / 'hf://owner/name@revision'")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="folder to download into (default: $MISSREC_DOWNLOAD_DIR or checkpoints/downloads/, "
                        "which git ignores; Hub repos default to the Hugging Face cache, or DIR/owner__name)")
    p.add_argument("--sha256", metavar="HEX", default=None,
                   help="expected SHA-256 of the file; required to verify a plain URL, must agree with the "
                        "registry for a registry name")
    p.add_argument("--list", action="store_true", help="list the registry's checkpoints and exit")
    p.add_argument("--registry", metavar="FILE", default=None,
                   help="registry JSON to use instead of checkpoints/registry.json (or set $MISSREC_REGISTRY)")
    p.add_argument("--retries", type=int, default=3,
                   help="how many times to resume after a dropped connection within this run (default 3)")
    p.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds (default 60)")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.list:
            _print_list(args.registry)
            return 0
        if not args.spec:
            build_parser().error("NAME_OR_URL is required (or --list)")
        path, _ = fetch(args.spec, args.out, args.sha256, args.registry, retries=args.retries,
                        timeout=args.timeout, progress=not args.no_progress)
    except ManualDownloadRequired as e:
        print(str(e), file=sys.stderr)
        return 3
    except (DownloadError, RegistryError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
