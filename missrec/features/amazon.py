"""Amazon review dumps -> atomic dataset folder (one category) or pretraining corpus (several).

Inputs, per category ``<Cat>`` in ``--raw_dir`` (plain or gzipped; detected from the bytes):

- 2018 release: ``<Cat>.json`` (or ``<Cat>_5.json``) review lines with ``reviewerID``, ``asin``,
  ``unixReviewTime``, or the ratings-only ``<Cat>.csv`` (``item,user,rating,timestamp``);
  metadata ``meta_<Cat>.json`` lines with ``asin``, ``title``, ``brand``, ``category``,
  ``imageURLHighRes``/``imageURL``.
- 2023 release: ``<Cat>.jsonl`` review lines with ``user_id``, ``parent_asin``, ``timestamp``;
  metadata ``meta_<Cat>.jsonl`` with ``parent_asin``, ``title``, ``store``, ``categories``,
  ``images`` (``[{hi_res, large, thumb, variant}]``).

Steps (counts printed after each): read all interactions; keep each user's earliest interaction
with an item (repeats in the dumps are mostly duplicate reviews); keep items whose metadata has a
non-empty title; k-core filter users and items (default 5) until nothing changes; order each
user's items by time (ties keep file order); leave-one-out split with histories cut to 50.
Users and items are indexed in sorted raw-id order.

Outputs in ``<out_root>/<name>/``: ``<name>.{train,valid,test}.inter``, ``.item2index``,
``.user2index``, ``.text`` (title + categories + brand, HTML unescaped and stripped, whitespace
collapsed, length-capped), ``.image_urls`` (``item_id<TAB>image_url``, one highest-resolution
image per item, the input of fetch_images) and ``.meta.json``.

A corpus (``--corpus NAME``) holds ``NAME.pt_datasets`` (domain names), ``NAME.train.inter`` and
``NAME.valid.inter`` with ``<domain_idx>-<idx>`` tokens for users and items, and per domain
``<domain>.item2index``, ``.user2index``, ``.text``, ``.image_urls``. Each domain is filtered on
its own; test targets of the source domains are held out of the corpus, as upstream.

Inputs are streamed line by line: only integer ids per interaction are kept in memory.

Over 500 lines on purpose: both Amazon releases, their two review formats and the corpus builder
share one streaming pipeline (read -> filter -> k-core -> split -> write) that reads best in one file.
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import html
import json
import re
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from missrec import cli
from missrec.data.atomic import INTER_HEADER, MAX_LEN, DataFormatError, write_index_map, write_meta, write_text
from missrec.data.split import kcore, split_rows, write_rows  # noqa: F401 - split_rows: re-exported
from missrec.fsutil import atomic_path, atomic_write_text

# The paper's pretraining domains (Food, Home, CDs, Kindle, Movies), in the dumps' file names.
DEFAULT_CORPUS = ("Grocery_and_Gourmet_Food", "Home_and_Kitchen", "CDs_and_Vinyl", "Kindle_Store", "Movies_and_TV")
SHORT_NAMES = {
    "Grocery_and_Gourmet_Food": "Food", "Home_and_Kitchen": "Home", "CDs_and_Vinyl": "CDs",
    "Kindle_Store": "Kindle", "Movies_and_TV": "Movies", "Industrial_and_Scientific": "Scientific",
    "Prime_Pantry": "Pantry", "Musical_Instruments": "Instruments", "Arts_Crafts_and_Sewing": "Arts",
    "Office_Products": "Office",
}
REVIEW_FILES = {
    "2018": ("{c}.json.gz", "{c}.json", "{c}_5.json.gz", "{c}_5.json", "{c}.csv.gz", "{c}.csv"),
    "2023": ("{c}.jsonl.gz", "{c}.jsonl"),
}
META_FILES = {"2018": ("meta_{c}.json.gz", "meta_{c}.json"), "2023": ("meta_{c}.jsonl.gz", "meta_{c}.jsonl")}
IMAGE_URLS_HEADER = "item_id\timage_url"
MAX_TEXT_CHARS = 512

_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


# ----------------------------------------------------------------------------- reading
def open_text(path: Path):
    """Open a plain or gzipped text file (decided by the gzip magic bytes, not the name)."""
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt", encoding="utf-8") if gz else open(path, encoding="utf-8")


def iter_lines(path: Path, desc: str) -> Iterator[tuple[int, str]]:
    with open_text(path) as f:
        for lineno, line in enumerate(tqdm(f, desc=desc, unit=" lines", mininterval=2, disable=None), start=1):
            line = line.strip()
            if line:
                yield lineno, line


def iter_json(path: Path, desc: str) -> Iterator[tuple[int, dict]]:
    for lineno, line in iter_lines(path, desc):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{path}:{lineno}: not a JSON object per line ({e.msg}); "
                                  "expected the Amazon 2018/2023 JSON-lines dumps") from None
        if not isinstance(rec, dict):
            raise DataFormatError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
        yield lineno, rec


def _field(rec: dict, key: str, path: Path, lineno: int, what: str):
    try:
        return rec[key]
    except KeyError:
        raise DataFormatError(f"{path}:{lineno}: missing field '{key}' (expected {what})") from None


def iter_reviews(path: Path, release: str) -> Iterator[tuple[str, str, int]]:
    """Yield (user, item, timestamp) from a review/rating dump of the given release."""
    if release == "2018" and ".csv" in path.name:
        for lineno, line in iter_lines(path, f"ratings {path.name}"):
            parts = line.split(",")
            if len(parts) != 4:
                raise DataFormatError(f"{path}:{lineno}: expected 'item,user,rating,timestamp', got {len(parts)} fields")
            try:
                yield parts[1], parts[0], int(float(parts[3]))
            except ValueError:
                raise DataFormatError(f"{path}:{lineno}: timestamp {parts[3]!r} is not a number") from None
        return
    if release == "2018":
        keys, what = ("reviewerID", "asin", "unixReviewTime"), "an Amazon 2018 review: reviewerID, asin, unixReviewTime"
    else:
        keys, what = ("user_id", "parent_asin", "timestamp"), "an Amazon 2023 review: user_id, parent_asin, timestamp"
    for lineno, rec in iter_json(path, f"reviews {path.name}"):
        user, item, ts = (_field(rec, k, path, lineno, what) for k in keys)
        try:
            ts = int(ts)
        except (TypeError, ValueError):
            raise DataFormatError(f"{path}:{lineno}: field '{keys[2]}' = {ts!r} is not an integer time") from None
        yield str(user), str(item), ts


# ----------------------------------------------------------------------------- item text / image
def clean_text(value) -> str:
    """HTML-unescape, strip tags, collapse whitespace; lists (also nested) are joined with spaces."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(t for t in (clean_text(v) for v in value) if t)
    s = str(value)
    # Twice: the dumps hold doubly escaped entities ("&amp;amp;") and escaped tags ("&lt;b&gt;").
    for _ in range(2):
        s = _TAG.sub(" ", html.unescape(s))
    return _SPACE.sub(" ", s).strip()


def _flatten(value) -> list:
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _flatten(v)]
    return [] if value is None else [value]


def item_text(rec: dict, release: str, max_chars: int = MAX_TEXT_CHARS) -> str:
    """title + categories + brand (store in 2023), cleaned, duplicates dropped, capped at a word."""
    title = clean_text(rec.get("title"))
    cats = []
    for c in _flatten(rec.get("category" if release == "2018" else "categories")):
        c = clean_text(c)
        if c and c not in cats:
            cats.append(c)
    brand = clean_text(rec.get("brand") if release == "2018" else rec.get("store"))
    text = " ".join(p for p in (title, " ".join(cats), brand) if p)
    if len(text) > max_chars:
        cut = text[:max_chars + 1]
        text = cut[:cut.rfind(" ")] if " " in cut else text[:max_chars]
    return text.strip()


def image_url(rec: dict, release: str) -> str | None:
    """One image per item: the first (2023: the MAIN variant) at its highest resolution."""
    if release == "2018":
        for key in ("imageURLHighRes", "imageURL"):
            urls = [u for u in _flatten(rec.get(key)) if isinstance(u, str) and u.startswith("http")]
            if urls:
                return urls[0]
        return None
    images = rec.get("images") or []
    if isinstance(images, dict):  # the Hub's columnar variant: {"hi_res": [...], "large": [...], ...}
        n = max((len(v) for v in images.values() if isinstance(v, list)), default=0)
        images = [{k: (v[j] if isinstance(v, list) and j < len(v) else None) for k, v in images.items()} for j in range(n)]
    images = [im for im in images if isinstance(im, dict)]
    images.sort(key=lambda im: im.get("variant") != "MAIN")  # stable: MAIN first, else file order
    for im in images:
        for key in ("hi_res", "large", "thumb"):
            u = im.get(key)
            if isinstance(u, str) and u.startswith("http"):
                return u
    return None


def _meta_key(release: str) -> str:
    return "asin" if release == "2018" else "parent_asin"


# ----------------------------------------------------------------------------- filtering
class _Interner:
    """str -> dense int, so that 10^8 interactions cost a few bytes each instead of Python strings."""

    def __init__(self):
        self.index: dict[str, int] = {}
        self.names: list[str] = []

    def __call__(self, s: str) -> int:
        i = self.index.get(s)
        if i is None:
            i = self.index[s] = len(self.names)
            self.names.append(s)
        return i


def _counts(step: str, users: np.ndarray, items: np.ndarray) -> dict:
    nu, ni, n = len(np.unique(users)), len(np.unique(items)), len(users)
    return {"step": step, "users": nu, "items": ni, "interactions": n,
            "density": (n / (nu * ni)) if nu and ni else 0.0}


def _print_counts(label: str, c: dict) -> None:
    print(f"[{label}] {c['step']:<22} users {c['users']:>10,}  items {c['items']:>9,}  "
          f"interactions {c['interactions']:>12,}  density {c['density']:.6f}", flush=True)


@dataclass
class Prepared:
    """One category after filtering: chronological item sequences per user, and item metadata."""

    item_ids: list[str]
    user_ids: list[str]
    texts: list[str]
    image_urls: list[str | None]
    seq_items: np.ndarray  # item indices, grouped by user index, oldest first
    seq_bounds: np.ndarray  # user u owns seq_items[seq_bounds[u]:seq_bounds[u+1]]
    counts: list[dict] = field(default_factory=list)
    rounds: int = 0

    def sequences(self) -> Iterator[tuple[int, np.ndarray]]:
        for u in range(len(self.user_ids)):
            yield u, self.seq_items[self.seq_bounds[u]:self.seq_bounds[u + 1]]


def prepare_category(reviews: Path, meta: Path, release: str, kcore_k: int = 5,
                     max_text_chars: int = MAX_TEXT_CHARS, label: str = "") -> Prepared:
    label = label or reviews.name
    U, I = _Interner(), _Interner()
    u_arr, i_arr, t_arr = array("i"), array("i"), array("q")
    for user, item, ts in iter_reviews(reviews, release):
        u_arr.append(U(user))
        i_arr.append(I(item))
        t_arr.append(ts)
    u = np.frombuffer(u_arr, dtype=np.int32).astype(np.int64)
    it = np.frombuffer(i_arr, dtype=np.int32).astype(np.int64)
    t = np.frombuffer(t_arr, dtype=np.int64)
    pos = np.arange(len(u))
    del u_arr, i_arr, t_arr
    counts = [_counts("raw", u, it)]
    _print_counts(label, counts[-1])

    # Earliest interaction per (user, item); equal times resolved by file order.
    order = np.lexsort((pos, t, it, u))
    us, ist = u[order], it[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (us[1:] != us[:-1]) | (ist[1:] != ist[:-1])
    keep = np.sort(order[first])
    u, it, t, pos = u[keep], it[keep], t[keep], pos[keep]
    counts.append(_counts("deduplicated", u, it))
    _print_counts(label, counts[-1])

    key = _meta_key(release)
    has_meta = np.zeros(len(I.names), dtype=bool)
    for lineno, rec in iter_json(meta, f"metadata {meta.name}"):
        j = I.index.get(str(_field(rec, key, meta, lineno, f"an Amazon {release} metadata record with '{key}'")))
        if j is not None and clean_text(rec.get("title")):
            has_meta[j] = True
    m = has_meta[it]
    u, it, t, pos = u[m], it[m], t[m], pos[m]
    counts.append(_counts("with metadata", u, it))
    _print_counts(label, counts[-1])

    m, rounds = kcore(u, it, kcore_k, len(U.names), len(I.names))
    u, it, t, pos = u[m], it[m], t[m], pos[m]
    counts.append(_counts(f"{kcore_k}-core ({rounds} rounds)", u, it))
    _print_counts(label, counts[-1])
    if len(u) == 0:
        raise DataFormatError(f"{reviews}: no interactions left after the {kcore_k}-core filter "
                              "(too little data, or reviews and metadata ids do not match)")

    # Dense indices in sorted raw-id order: reproducible regardless of the dump's line order.
    uniq_u, uniq_i = np.unique(u), np.unique(it)
    user_ids = sorted(U.names[x] for x in uniq_u)
    item_ids = sorted(I.names[x] for x in uniq_i)
    u_rank = {n: r for r, n in enumerate(user_ids)}
    i_rank = {n: r for r, n in enumerate(item_ids)}
    u_map = np.full(len(U.names), -1, dtype=np.int64)
    i_map = np.full(len(I.names), -1, dtype=np.int64)
    u_map[uniq_u] = [u_rank[U.names[x]] for x in uniq_u]
    i_map[uniq_i] = [i_rank[I.names[x]] for x in uniq_i]
    u, it = u_map[u], i_map[it]
    order = np.lexsort((pos, t, u))
    seq_items = it[order]
    seq_bounds = np.searchsorted(u[order], np.arange(len(user_ids) + 1), side="left")

    texts: list[str | None] = [None] * len(item_ids)
    urls: list[str | None] = [None] * len(item_ids)
    for lineno, rec in iter_json(meta, f"metadata {meta.name} (text)"):
        r = i_rank.get(str(rec.get(key)))
        if r is None or texts[r] is not None or not clean_text(rec.get("title")):
            continue
        texts[r] = item_text(rec, release, max_text_chars)
        urls[r] = image_url(rec, release)
    n_img = sum(x is not None for x in urls)
    print(f"[{label}] items with an image URL: {n_img:,} of {len(item_ids):,}", flush=True)
    return Prepared(item_ids, user_ids, texts, urls, seq_items, seq_bounds, counts, rounds)


# ----------------------------------------------------------------------------- writing
def _write_rows(files: dict, prep: Prepared, max_len: int, user_tok, item_tok) -> dict:
    return write_rows(files, prep.seq_items, prep.seq_bounds, max_len, user_tok, item_tok)


@contextlib.contextmanager
def _inter_files(folder: Path, name: str, splits: Sequence[str]):
    """Open ``<name>.<split>.inter`` for streaming; all are renamed into place only on success."""
    with contextlib.ExitStack() as stack:
        files = {}
        for s in splits:
            tmp = stack.enter_context(atomic_path(folder / f"{name}.{s}.inter"))
            f = stack.enter_context(open(tmp, "w", encoding="utf-8", newline="\n"))
            f.write(INTER_HEADER + "\n")
            files[s] = f
        yield files
        for f in files.values():
            f.close()


def _write_items(folder: Path, prefix: str, prep: Prepared) -> None:
    write_index_map(folder / f"{prefix}.item2index", prep.item_ids)
    write_index_map(folder / f"{prefix}.user2index", prep.user_ids)
    write_text(folder / f"{prefix}.text", prep.item_ids, prep.texts)
    lines = [f"{r}\t{u}\n" for r, u in zip(prep.item_ids, prep.image_urls) if u]
    atomic_write_text(folder / f"{prefix}.image_urls", IMAGE_URLS_HEADER + "\n" + "".join(lines))


def _summary(prep: Prepared, rows: dict) -> dict:
    return {"n_users": len(prep.user_ids), "n_items": len(prep.item_ids),
            "n_interactions": int(len(prep.seq_items)), "kcore_rounds": prep.rounds,
            "n_with_image_url": sum(u is not None for u in prep.image_urls),
            "rows": rows, "steps": prep.counts}


def write_single(out_root: Path, name: str, prep: Prepared, max_len: int, source: dict) -> Path:
    folder = Path(out_root) / name
    folder.mkdir(parents=True, exist_ok=True)
    with _inter_files(folder, name, ("train", "valid", "test")) as files:
        rows = _write_rows(files, prep, max_len, str, str)
    _write_items(folder, name, prep)
    write_meta(folder, name, n_items=len(prep.item_ids), n_users=len(prep.user_ids),
               extra={"source": source, "prepare": _summary(prep, rows)})
    return folder


def build_corpus(out_root: Path, name: str, domains: Sequence[tuple[str, Path, Path, str]],
                 kcore_k: int, max_len: int, max_text_chars: int, source: dict) -> Path:
    """``domains``: (short name, reviews file, metadata file, release), in corpus order."""
    folder = Path(out_root) / name
    folder.mkdir(parents=True, exist_ok=True)
    per_domain, n_items, n_users = {}, 0, 0
    with _inter_files(folder, name, ("train", "valid")) as files:
        for d_idx, (dname, reviews, meta, release) in enumerate(domains):
            prep = prepare_category(reviews, meta, release, kcore_k, max_text_chars, label=dname)
            tok = (lambda x, d=d_idx: f"{d}-{x}")
            rows = _write_rows(files, prep, max_len, tok, tok)
            _write_items(folder, dname, prep)
            per_domain[dname] = _summary(prep, rows)
            n_items += len(prep.item_ids)
            n_users += len(prep.user_ids)
            del prep
    names = [d[0] for d in domains]
    atomic_write_text(folder / f"{name}.pt_datasets", ",".join(names) + "\n")
    write_meta(folder, name, n_items=n_items, n_users=n_users,
               extra={"source": source, "pt_datasets": names, "prepare": per_domain})
    return folder


# ----------------------------------------------------------------------------- CLI
def find_inputs(raw_dir: Path, category: str, release: str) -> tuple[str, Path, Path]:
    """Locate (release, reviews, metadata) of a category; ``release`` may be 'auto'."""
    found = {}
    for rel in (("2018", "2023") if release == "auto" else (release,)):
        rev = next((raw_dir / p.format(c=category) for p in REVIEW_FILES[rel] if (raw_dir / p.format(c=category)).is_file()), None)
        meta = next((raw_dir / p.format(c=category) for p in META_FILES[rel] if (raw_dir / p.format(c=category)).is_file()), None)
        if rev and meta:
            found[rel] = (rev, meta)
    if not found:
        tried = [p.format(c=category) for rel in REVIEW_FILES if release in ("auto", rel)
                 for p in REVIEW_FILES[rel] + META_FILES[rel]]
        raise DataFormatError(f"{raw_dir}: no review + metadata files for category '{category}' "
                              f"(looked for {', '.join(tried)})")
    if len(found) > 1:
        raise DataFormatError(f"{raw_dir}: both 2018 and 2023 files exist for '{category}'; pass --release")
    rel, (rev, meta) = next(iter(found.items()))
    return rel, rev, meta


def _parse_category(spec: str) -> tuple[str, str]:
    cat, _, short = spec.partition("=")
    return cat, short or SHORT_NAMES.get(cat, cat)


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(
        prog="missrec-prepare-amazon", description=__doc__.split("\n\n")[0],
        epilog="Example: missrec-prepare-amazon --raw_dir raw --category Industrial_and_Scientific "
               "(-> data/Scientific/); missrec-prepare-amazon --raw_dir raw --corpus FHCKM (the paper's 5 domains).")
    p.add_argument("--raw_dir", type=Path, default=Path("raw"),
                   help="folder holding the dumps: <Cat>.json(l)[.gz] or <Cat>.csv and meta_<Cat>.json(l)[.gz]")
    p.add_argument("--out_root", type=Path, default=Path("data"), help="datasets are written to <out_root>/<name>/")
    p.add_argument("--release", choices=("auto", "2018", "2023"), default="auto",
                   help="dump release; 'auto' picks the one whose files exist (default auto)")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--category", help="build one dataset from this category (file name, e.g. Industrial_and_Scientific)")
    mode.add_argument("--corpus", metavar="NAME", help="build a multi-domain pretraining corpus <out_root>/NAME/")
    mode.add_argument("--hub", metavar="CATEGORY",
                      help="like --category, for the 2023 release fetched from the Hub dataset McAuley-Lab/Amazon-Reviews-2023 "
                           "into <raw_dir>/raw/ (resumed if interrupted, reused when present), e.g. --hub All_Beauty")
    p.add_argument("--name", help="dataset name for --category (default: its short name, e.g. Scientific)")
    p.add_argument("--categories", nargs="+", metavar="CAT[=SHORT]", default=list(DEFAULT_CORPUS),
                   help="corpus domains in order, as dump names with optional short domain names "
                        f"(default: {' '.join(DEFAULT_CORPUS)} -> Food Home CDs Kindle Movies)")
    p.add_argument("--reviews", type=Path, help="with --category: explicit review/rating file instead of looking in --raw_dir")
    p.add_argument("--meta", type=Path, help="with --category: explicit metadata file instead of looking in --raw_dir")
    p.add_argument("--kcore", type=int, default=5,
                   help="keep users and items with at least this many interactions, iterated (default 5; >= 3 so every user has valid and test items)")
    p.add_argument("--max_len", type=int, default=MAX_LEN, help="keep the last N items of each history (default 50)")
    p.add_argument("--max_text_chars", type=int, default=MAX_TEXT_CHARS, help="cap item text at this many characters (default 512)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``missrec-prepare-amazon``: exit status 0, or 2 after one ``error:`` line naming the file or option."""
    return cli.run(_main, argv, exit=False)


def _main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.kcore < 3:
        raise cli.OptionError("--kcore", "must be at least 3 (leave-one-out needs a train, a valid and a test item "
                                         f"per user), got {args.kcore}")
    t0 = time.time()
    if args.hub:
        from .amazon_hub import fetch_category
        args.category, args.release = args.hub, "2023"
        args.reviews, args.meta = fetch_category(args.hub, args.raw_dir)
    if args.category:
        if bool(args.reviews) != bool(args.meta):
            raise DataFormatError("--reviews and --meta go together")
        if args.reviews:
            release = args.release
            if release == "auto":
                release = "2023" if ".jsonl" in args.reviews.name else "2018"
            rev, meta = args.reviews, args.meta
            for f in (rev, meta):
                if not f.is_file():
                    raise DataFormatError(f"{f}: file not found")
        else:
            release, rev, meta = find_inputs(args.raw_dir, args.category, args.release)
        name = args.name or _parse_category(args.category)[1]
        prep = prepare_category(rev, meta, release, args.kcore, args.max_text_chars, label=name)
        source = {"release": release, "category": args.category, "reviews": rev.name, "meta": meta.name}
        folder = write_single(args.out_root, name, prep, args.max_len, source)
    else:
        cats = [_parse_category(c) for c in args.categories]
        shorts = [s for _, s in cats]
        if len(set(shorts)) != len(shorts):
            raise DataFormatError(f"--categories: domain names must be distinct, got {shorts}")
        domains = []
        for cat, short in cats:
            rel, rev, meta = find_inputs(args.raw_dir, cat, args.release)
            domains.append((short, rev, meta, rel))  # each domain may come from either release
        source = {"categories": {s: c for c, s in cats},
                  "files": {s: {"release": rel, "reviews": r.name, "meta": m.name} for s, r, m, rel in domains}}
        folder = build_corpus(args.out_root, args.corpus, domains, args.kcore, args.max_len,
                              args.max_text_chars, source)
    print(f"wrote {folder} in {time.time() - t0:.1f}s", flush=True)
    return 0

