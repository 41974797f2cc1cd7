"""Download one image per item, concurrently, into ``<out>/<raw_item_id>.<ext>``.

Input: a dataset folder (reads ``<name>.image_urls``, written by prepare_amazon; for a corpus,
each domain's ``<domain>.image_urls`` goes to ``<out>/<domain>/``) or any ``--urls`` TSV file of
``item_id<TAB>url`` lines (a header line ``item_id<TAB>image_url`` is skipped).

Each download has a socket timeout and an overall deadline, is retried with exponential backoff on
timeouts, connection errors, HTTP 429 and 5xx (not on other 4xx), is cut off above ``--max_mb``,
must decode completely with Pillow, and is written atomically; the extension comes from the
decoded format (jpg, png, webp, gif, ...). A re-run skips items whose file is present and
decodes, so an interrupted run resumes. Failures (item, url, reason) go to
``<out>/failures.tsv``; items with no URL are counted, not listed.

This layout, ``<images_dir>/<raw_item_id>.<ext>``, is what features/extract.py reads.
"""
from __future__ import annotations

import argparse
import http.client
import io
import os
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from PIL import Image
from tqdm import tqdm

from missrec import cli
from missrec.data.atomic import DataFormatError
from missrec.fsutil import atomic_path, atomic_write_text

IMAGE_EXTS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tiff"}
# Order in which an item's file is looked up when several extensions exist.
EXT_PREFERENCE = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tiff", "tif")
FAILURES_HEADER = "item_id\turl\treason"
USER_AGENT = "missrec-fetch-images/0.1 (+https://github.com/)"
# Item ids become file names: refuse anything that could leave the folder or hide a file.
_SAFE_ID = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,200}$")


class FetchError(Exception):
    def __init__(self, reason: str, retry: bool):
        super().__init__(reason)
        self.reason, self.retry = reason, retry


def safe_id(item_id: str) -> bool:
    return bool(_SAFE_ID.match(item_id)) and ".." not in item_id


def read_url_list(path: Path) -> list[tuple[str, str]]:
    pairs, seen = [], set()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if not line or (lineno == 1 and line.startswith("item_id\t")):
                continue
            parts = line.split("\t")
            if len(parts) != 2:
                raise DataFormatError(f"{path}:{lineno}: expected 'item_id<TAB>url', got {len(parts)} fields")
            if parts[0] in seen:
                raise DataFormatError(f"{path}:{lineno}: item '{parts[0]}' listed twice")
            seen.add(parts[0])
            pairs.append((parts[0], parts[1].strip()))
    return pairs


def index_images(folder: Path) -> dict[str, Path]:
    """raw item id -> image file in ``folder`` (one directory listing, no per-item stat)."""
    found: dict[str, Path] = {}
    rank = {e: r for r, e in enumerate(EXT_PREFERENCE)}
    if not folder.is_dir():
        return found
    with os.scandir(folder) as it:
        for entry in it:
            if entry.name.startswith(".") or not entry.is_file():
                continue
            stem, _, ext = entry.name.rpartition(".")
            ext = ext.lower()
            if stem and ext in rank and (stem not in found or rank[ext] < rank[found[stem].suffix[1:].lower()]):
                found[stem] = Path(entry.path)
    return found


def validate_image(data_or_path) -> str:
    """Fully decode the image (a truncated file passes Image.verify); return its format."""
    src = io.BytesIO(data_or_path) if isinstance(data_or_path, (bytes, bytearray)) else data_or_path
    try:
        with Image.open(src) as im:
            fmt = im.format
            im.load()
    except Exception as e:  # noqa: BLE001 -- Pillow raises many types for bad data
        raise FetchError(f"not a decodable image ({type(e).__name__}: {str(e)[:80]})", retry=False) from None
    if fmt not in IMAGE_EXTS:
        raise FetchError(f"unsupported image format {fmt}", retry=False)
    return fmt


def download(url: str, timeout: float, max_bytes: int) -> bytes:
    if not url.lower().startswith(("http://", "https://")):
        raise FetchError("not an http(s) URL", retry=False)
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    deadline = time.monotonic() + 3 * timeout  # the socket timeout is per read; also bound the total
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            length = r.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise FetchError(f"too large ({int(length)} bytes > {max_bytes})", retry=False)
            chunks, n = [], 0
            while chunk := r.read(1 << 16):
                n += len(chunk)
                if n > max_bytes:
                    raise FetchError(f"too large (> {max_bytes} bytes)", retry=False)
                if time.monotonic() > deadline:
                    raise FetchError(f"timeout (download took over {3 * timeout:g}s)", retry=True)
                chunks.append(chunk)
            return b"".join(chunks)
    except urllib.error.HTTPError as e:
        raise FetchError(f"HTTP {e.code}", retry=e.code == 429 or e.code >= 500) from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise FetchError("timeout", retry=True) from None
        raise FetchError(f"connection error ({str(reason)[:80]})", retry=True) from None
    except (socket.timeout, TimeoutError):
        raise FetchError("timeout", retry=True) from None
    except (OSError, http.client.HTTPException) as e:  # reset, RemoteDisconnected, IncompleteRead, ...
        raise FetchError(f"connection error ({type(e).__name__})", retry=True) from None


@dataclass
class FetchSummary:
    downloaded: int = 0
    present: int = 0
    no_url: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)

    def reasons(self) -> Counter:
        # "HTTP 404", "timeout", "too large", ...: group by the reason's head.
        return Counter(r.split(" (")[0] for _, _, r in self.failed)

    def line(self) -> str:
        s = f"downloaded {self.downloaded}, already present {self.present}, failed {len(self.failed)}, no URL {self.no_url}"
        if self.failed:
            s += " (" + ", ".join(f"{k}: {v}" for k, v in self.reasons().most_common()) + ")"
        return s


def fetch_images(pairs: Sequence[tuple[str, str | None]], out_dir: Path, *, workers: int = 16,
                 timeout: float = 15.0, retries: int = 3, backoff: float = 1.0, max_bytes: int = 10 << 20,
                 failures_path: Path | None = None, desc: str = "images") -> FetchSummary:
    """Fetch ``(item_id, url)`` pairs into ``out_dir``; write the failures file; return counts."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    existing = index_images(out_dir)
    summary = FetchSummary()
    lock = threading.Lock()

    def one(item: str, url: str) -> str:
        if not safe_id(item):
            raise FetchError("item id is not a safe file name", retry=False)
        old = existing.get(item)
        if old is not None:
            try:
                validate_image(old)
                return "present"
            except FetchError:
                pass  # a broken leftover: download again
        last = None
        for attempt in range(retries + 1):
            try:
                data = download(url, timeout, max_bytes)
                fmt = validate_image(data)
                with atomic_path(out_dir / f"{item}.{IMAGE_EXTS[fmt]}") as tmp:
                    tmp.write_bytes(data)
                if old is not None and old.name != f"{item}.{IMAGE_EXTS[fmt]}":
                    old.unlink(missing_ok=True)
                return "downloaded"
            except FetchError as e:
                last = e
                if not e.retry or attempt == retries:
                    break
                # Exponential backoff with jitter, so that a throttling server is not hammered in step.
                time.sleep(backoff * (2 ** attempt) * (0.5 + random.random()))
        raise last

    todo = []
    for item, url in pairs:
        if url:
            todo.append((item, url))
        else:
            summary.no_url += 1
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, \
            tqdm(total=len(todo), desc=desc, unit="img", disable=None) as bar:
        futures = {pool.submit(one, item, url): (item, url) for item, url in todo}
        for fut in as_completed(futures):
            item, url = futures[fut]
            try:
                status = fut.result()
            except FetchError as e:
                with lock:
                    summary.failed.append((item, url, e.reason))
            else:
                if status == "present":
                    summary.present += 1
                else:
                    summary.downloaded += 1
            bar.update(1)
    summary.failed.sort()
    failures_path = failures_path or out_dir / "failures.tsv"
    atomic_write_text(failures_path, FAILURES_HEADER + "\n" + "".join(
        f"{i}\t{u}\t{r}\n" for i, u, r in summary.failed))
    return summary


def dataset_jobs(folder: Path, out: Path | None) -> list[tuple[str, Path, Path]]:
    """(label, url list, output folder) for a dataset folder or a corpus folder."""
    folder = Path(folder)
    name = folder.name
    out = Path(out) if out else folder / "images"
    pt = folder / f"{name}.pt_datasets"
    if pt.is_file():
        domains = [d.strip() for d in pt.read_text(encoding="utf-8").replace("\n", ",").split(",") if d.strip()]
        return [(d, folder / f"{d}.image_urls", out / d) for d in domains]
    return [(name, folder / f"{name}.image_urls", out)]


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="missrec-fetch-images", description=__doc__.split("\n\n")[0],
                                epilog="Example: missrec-fetch-images data/Scientific  (-> data/Scientific/images/)")
    p.add_argument("dataset", nargs="?", type=Path,
                   help="dataset or corpus folder whose <name>.image_urls (per domain for a corpus) lists the images")
    p.add_argument("--urls", type=Path, help="TSV of item_id<TAB>url to fetch instead of a dataset folder's list")
    p.add_argument("--out", type=Path, help="output folder (default <dataset>/images; <out>/<domain>/ per corpus domain)")
    p.add_argument("--workers", type=int, default=16, help="concurrent downloads (default 16)")
    p.add_argument("--timeout", type=float, default=15.0, help="socket timeout in seconds; a whole download gets 3x (default 15)")
    p.add_argument("--retries", type=int, default=3, help="retries after a timeout, connection error, 429 or 5xx (default 3)")
    p.add_argument("--backoff", type=float, default=1.0, help="first retry delay in seconds, doubled each retry (default 1)")
    p.add_argument("--max_mb", type=float, default=10.0, help="skip images larger than this many MiB (default 10)")
    p.add_argument("--failures", type=Path, help="failures TSV (default <out>/failures.tsv)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``missrec-fetch-images``: exit status 0, or 2 after one ``error:`` line naming the file or option."""
    return cli.run(_main, argv, exit=False)


def _main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    if (args.dataset is None) == (args.urls is None):
        raise cli.OptionError("DATASET / --urls", "give a dataset folder or --urls FILE (exactly one)")
    if args.urls:
        if not args.out:
            raise cli.OptionError("--urls", "needs --out (where to put the images)")
        jobs = [(args.urls.stem, args.urls, args.out)]
    else:
        jobs = dataset_jobs(args.dataset, args.out)
    lists = []
    for label, url_file, out in jobs:
        if not url_file.is_file():
            raise DataFormatError(f"{url_file}: file not found (written by missrec-prepare-amazon; or pass --urls)")
        lists.append((label, read_url_list(url_file), out))
    for label, pairs, out in lists:
        fp = args.failures if (args.failures and len(lists) == 1) else None
        if args.failures and len(lists) > 1:
            fp = args.failures.with_name(f"{args.failures.stem}.{label}{args.failures.suffix}")
        s = fetch_images(pairs, out, workers=args.workers, timeout=args.timeout, retries=args.retries,
                         backoff=args.backoff, max_bytes=int(args.max_mb * (1 << 20)), failures_path=fp, desc=label)
        print(f"[{label}] {s.line()} -> {out}", flush=True)
    return 0

