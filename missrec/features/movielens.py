"""MovieLens ratings (GroupLens releases or RecBole atomic files) -> atomic dataset folder.

Inputs (a folder, or the release's ``.zip``; files are found by name anywhere inside):

- ml-100k: ``u.data`` (``user<TAB>item<TAB>rating<TAB>time``) and ``u.item`` (latin-1,
  ``id|title|release date|video date|url|19 genre flags``; genre names from ``u.genre`` if present);
- ml-1m (and ml-10m): ``ratings.dat`` (``user::item::rating::time``) and ``movies.dat``
  (``id::title::Genre|Genre``), latin-1;
- ml-20m / ml-25m / ml-32m / ml-latest: ``ratings.csv`` (``userId,movieId,rating,timestamp``) and
  ``movies.csv`` (``movieId,title,genres``), UTF-8 CSV;
- RecBole atomic files: ``<name>.inter`` (columns ``user_id``, ``item_id``, ``timestamp``, optional
  ``rating``) and ``<name>.item`` (``item_id`` + a title column such as ``movie_title``, optional
  year and genre columns).

Every rating counts as an interaction (``--min_rating`` keeps only ratings >= a threshold).
Steps, with counts printed after each: read; keep items with a catalogue entry; keep each user's
earliest interaction with an item; optional subsets (``--last_interactions``, ``--top_users`` or
``--random_users``, ``--last_per_user``); k-core filter; order each user's items by time (ties keep
file order); leave-one-out split with histories capped at ``--max_len``. Users and items are indexed
in raw-id order (numeric ids numerically). Item text: title (a trailing article such as ", The" moved
to the front) + ``(year)`` + genres, e.g. ``The City of Lost Children (1995): Adventure, Sci-Fi``.

Outputs in ``<out_root>/<name>/``: ``<name>.{train,valid,test}.inter``, ``.item2index``,
``.user2index``, ``.text`` and ``.meta.json`` (counts, source files and the subset options).
There are no images: extract text features with ``--modalities text`` (image features are then
absent and training uses zero rows), see features/README.md.

Over 500 lines on purpose: five GroupLens layouts plus RecBole's atomic files, each with its own
parser, feed one split/subset/write path; the parsers are short and sit beside each other.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import re
import time
import zipfile
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from .. import cli
from ..data.atomic import INTER_HEADER, MAX_LEN, DataFormatError, write_index_map, write_meta, write_text
from ..data.split import kcore, split_rows, write_rows  # noqa: F401 - split_rows: re-exported
from ..fsutil import atomic_path

ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                 "War", "Western")
NO_GENRE = {"unknown", "(no genres listed)"}
_YEAR = re.compile(r"^(.*?)\s*\((\d{4})(?:[-–]\d{0,4})?\)\s*$")
_ARTICLE = re.compile(r"^(.*?), (The|A|An|Les|Le|La|L'|Il|Das|Der|Die|El|Los|Las|Det|Den)((?: \(.*\))?)$")


# ----------------------------------------------------------------------------- sources
class Source:
    """A folder or a zip archive; files are looked up by base name (releases nest them in a folder)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if self.path.is_dir():
            self._zip = None
            self._names = {p.name: p for p in sorted(self.path.rglob("*")) if p.is_file()}
        elif self.path.is_file() and zipfile.is_zipfile(self.path):
            self._zip = zipfile.ZipFile(self.path)
            self._names = {}
            for n in sorted(self._zip.namelist()):
                if not n.endswith("/") and "__MACOSX" not in n:
                    self._names.setdefault(n.rsplit("/", 1)[-1], n)
        else:
            raise DataFormatError(f"{self.path}: not a folder or a .zip archive (expected a MovieLens release "
                                  "such as ml-1m/ or ml-1m.zip, or a folder of RecBole .inter/.item files)")

    def has(self, name: str) -> bool:
        return name in self._names

    def names(self) -> list[str]:
        return list(self._names)

    def where(self, name: str) -> str:
        return f"{self.path}/{self._names[name]}" if self._zip else str(self._names[name])

    @contextlib.contextmanager
    def open(self, name: str, encoding: str):
        if self._zip is not None:
            with self._zip.open(self._names[name]) as raw:
                yield io.TextIOWrapper(raw, encoding=encoding, newline="")
        else:
            with open(self._names[name], encoding=encoding, newline="") as f:
                yield f

    def lines(self, name: str, encoding: str, desc: str) -> Iterator[tuple[int, str]]:
        with self.open(name, encoding) as f:
            for lineno, line in enumerate(tqdm(f, desc=desc, unit=" lines", mininterval=2, disable=None), start=1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield lineno, line


def detect_format(src: Source) -> str:
    if src.has("u.data") and src.has("u.item"):
        return "ml-100k"
    if src.has("ratings.dat") and src.has("movies.dat"):
        return "ml-1m"
    if src.has("ratings.csv") and src.has("movies.csv"):
        return "ml-csv"
    inters = [n for n in src.names() if n.endswith(".inter")]
    if len(inters) == 1 and src.has(inters[0][:-6] + ".item"):
        return "recbole"
    if len(inters) > 1:
        raise DataFormatError(f"{src.path}: several RecBole .inter files ({', '.join(inters)}); pass the folder of one")
    raise DataFormatError(f"{src.path}: no MovieLens files found (expected u.data + u.item, ratings.dat + movies.dat, "
                          "ratings.csv + movies.csv, or RecBole <name>.inter + <name>.item)")


@dataclass
class Movie:
    title: str
    year: str = ""
    genres: list[str] = field(default_factory=list)


def _int(value: str, where: str, what: str) -> int:
    try:
        return int(float(value))
    except ValueError:
        raise DataFormatError(f"{where}: {what} {value!r} is not a number") from None


def _float(value: str, where: str, what: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise DataFormatError(f"{where}: {what} {value!r} is not a number") from None


def _read_ratings(src: Source, fmt: str) -> Iterator[tuple[str, str, float, int]]:
    """Yield (user, item, rating (nan if absent), time)."""
    if fmt == "ml-100k":
        for lineno, line in src.lines("u.data", "latin-1", "ratings u.data"):
            parts = line.split("\t")
            where = f"{src.where('u.data')}:{lineno}"
            if len(parts) != 4:
                raise DataFormatError(f"{where}: expected 'user<TAB>item<TAB>rating<TAB>timestamp', got {len(parts)} fields")
            yield parts[0], parts[1], _float(parts[2], where, "rating"), _int(parts[3], where, "timestamp")
    elif fmt == "ml-1m":
        for lineno, line in src.lines("ratings.dat", "latin-1", "ratings ratings.dat"):
            parts = line.split("::")
            where = f"{src.where('ratings.dat')}:{lineno}"
            if len(parts) != 4:
                raise DataFormatError(f"{where}: expected 'UserID::MovieID::Rating::Timestamp', got {len(parts)} fields")
            yield parts[0], parts[1], _float(parts[2], where, "rating"), _int(parts[3], where, "timestamp")
    elif fmt == "ml-csv":
        with src.open("ratings.csv", "utf-8") as f:
            rows = csv.reader(tqdm(f, desc="ratings ratings.csv", unit=" lines", mininterval=2, disable=None))
            header = next(rows, None)
            if header is None or [h.strip() for h in header[:4]] != ["userId", "movieId", "rating", "timestamp"]:
                raise DataFormatError(f"{src.where('ratings.csv')}:1: expected the header 'userId,movieId,rating,timestamp'")
            for lineno, parts in enumerate(rows, start=2):
                if not parts:
                    continue
                where = f"{src.where('ratings.csv')}:{lineno}"
                if len(parts) < 4:
                    raise DataFormatError(f"{where}: expected 'userId,movieId,rating,timestamp', got {len(parts)} fields")
                yield parts[0], parts[1], _float(parts[2], where, "rating"), _int(parts[3], where, "timestamp")
    else:
        name = next(n for n in src.names() if n.endswith(".inter"))
        lines = src.lines(name, "utf-8", f"interactions {name}")
        cols = _recbole_header(next(lines, (1, ""))[1], src.where(name), ("user_id", "item_id", "timestamp"))
        iu, ii, it, ir = cols["user_id"], cols["item_id"], cols["timestamp"], cols.get("rating")
        for lineno, line in lines:
            parts = line.split("\t")
            where = f"{src.where(name)}:{lineno}"
            if len(parts) < len(cols):
                raise DataFormatError(f"{where}: expected {len(cols)} tab-separated fields, got {len(parts)}")
            rating = float("nan") if ir is None else _float(parts[ir], where, "rating")
            yield parts[iu], parts[ii], rating, _int(parts[it], where, "timestamp")


def _recbole_header(line: str, where: str, required: Sequence[str]) -> dict[str, int]:
    cols = {}
    for i, h in enumerate(line.split("\t")):
        name = h.split(":", 1)[0].strip()
        cols.setdefault(name, i)
    missing = [r for r in required if r not in cols]
    if missing:
        raise DataFormatError(f"{where}:1: header lacks {', '.join(missing)} (a RecBole atomic header such as "
                              f"'user_id:token<TAB>item_id:token<TAB>timestamp:float'; got {line!r})")
    return cols


def split_title(raw: str) -> tuple[str, str]:
    """'City of Lost Children, The (1995)' -> ('The City of Lost Children', '1995')."""
    raw = raw.strip()
    year = ""
    m = _YEAR.match(raw)
    if m:
        raw, year = m.group(1), m.group(2)
    m = _ARTICLE.match(raw)
    if m:
        article = m.group(2)
        raw = f"{article}{'' if article.endswith(chr(39)) else ' '}{m.group(1)}{m.group(3)}"
    return raw.strip(), year


def item_text(movie: Movie) -> str:
    text = movie.title
    if movie.year:
        text = f"{text} ({movie.year})" if text else movie.year
    genres = [g for g in movie.genres if g and g not in NO_GENRE]
    if genres:
        text = f"{text}: {', '.join(genres)}" if text else ", ".join(genres)
    return " ".join(text.replace("\t", " ").split())


def _read_movies(src: Source, fmt: str) -> dict[str, Movie]:
    movies: dict[str, Movie] = {}
    if fmt == "ml-100k":
        genres = list(ML100K_GENRES)
        if src.has("u.genre"):
            pairs = [ln.split("|") for _, ln in src.lines("u.genre", "latin-1", "genres u.genre")]
            genres = [g for g, _ in sorted((p for p in pairs if len(p) == 2), key=lambda p: int(p[1]))]
        for lineno, line in src.lines("u.item", "latin-1", "movies u.item"):
            parts = line.split("|")
            if len(parts) < 5 + len(genres):
                raise DataFormatError(f"{src.where('u.item')}:{lineno}: expected 'id|title|release date|video date|url|"
                                      f"{len(genres)} genre flags', got {len(parts)} fields")
            title, year = split_title(parts[1])
            if not year and re.search(r"\d{4}$", parts[2]):
                year = parts[2][-4:]
            flags = parts[5:5 + len(genres)]
            movies[parts[0]] = Movie(title, year, [g for g, f in zip(genres, flags) if f.strip() == "1"])
    elif fmt == "ml-1m":
        for lineno, line in src.lines("movies.dat", "latin-1", "movies movies.dat"):
            parts = line.split("::")
            if len(parts) != 3:
                raise DataFormatError(f"{src.where('movies.dat')}:{lineno}: expected 'MovieID::Title::Genres', got {len(parts)} fields")
            title, year = split_title(parts[1])
            movies[parts[0]] = Movie(title, year, parts[2].split("|"))
    elif fmt == "ml-csv":
        with src.open("movies.csv", "utf-8") as f:
            rows = csv.reader(f)
            header = next(rows, None)
            if header is None or [h.strip() for h in header[:3]] != ["movieId", "title", "genres"]:
                raise DataFormatError(f"{src.where('movies.csv')}:1: expected the header 'movieId,title,genres'")
            for lineno, parts in enumerate(rows, start=2):
                if not parts:
                    continue
                if len(parts) != 3:
                    raise DataFormatError(f"{src.where('movies.csv')}:{lineno}: expected 'movieId,title,genres', got {len(parts)} fields")
                title, year = split_title(parts[1])
                movies[parts[0]] = Movie(title, year, parts[2].split("|"))
    else:
        name = next(n for n in src.names() if n.endswith(".inter"))[:-6] + ".item"
        lines = src.lines(name, "utf-8", f"items {name}")
        cols = _recbole_header(next(lines, (1, ""))[1], src.where(name), ("item_id",))
        tcol = next((cols[c] for c in ("movie_title", "title", "item_title", "name") if c in cols), None)
        ycol = next((cols[c] for c in ("release_year", "year") if c in cols), None)
        gcol = next((cols[c] for c in ("genre", "genres", "class", "categories") if c in cols), None)
        for lineno, line in lines:
            parts = line.split("\t")
            if len(parts) < len(cols):
                raise DataFormatError(f"{src.where(name)}:{lineno}: expected {len(cols)} tab-separated fields, got {len(parts)}")
            raw_id = parts[cols["item_id"]]
            title, year = split_title(parts[tcol] if tcol is not None else raw_id)
            if ycol is not None and not year:
                y = parts[ycol].strip()
                year = y[:-2] if y.endswith(".0") else y
            movies[raw_id] = Movie(title, year, parts[gcol].split() if gcol is not None else [])
    if not movies:
        raise DataFormatError(f"{src.path}: the movie catalogue is empty")
    return movies


# ----------------------------------------------------------------------------- filtering
@dataclass
class Subset:
    """Which part of the log to keep (recorded in the dataset's meta.json)."""

    min_rating: float | None = None
    last_interactions: int | None = None
    top_users: int | None = None
    random_users: int | None = None
    last_per_user: int | None = None
    kcore: int = 5
    seed: int = 0


def _raw_order(names: Sequence[str]) -> list[str]:
    """Numeric raw ids in numeric order, otherwise (or mixed) in string order."""
    if all(n.isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


@dataclass
class Prepared:
    item_ids: list[str]
    user_ids: list[str]
    texts: list[str]
    seq_items: np.ndarray  # item indices grouped by user index, oldest first
    seq_bounds: np.ndarray
    counts: list[dict]

    def sequences(self) -> Iterator[tuple[int, np.ndarray]]:
        for u in range(len(self.user_ids)):
            yield u, self.seq_items[self.seq_bounds[u]:self.seq_bounds[u + 1]]


def _step(counts: list, label: str, name: str, u: np.ndarray, i: np.ndarray) -> None:
    nu, ni, n = len(np.unique(u)), len(np.unique(i)), len(u)
    counts.append({"step": name, "users": nu, "items": ni, "interactions": n})
    print(f"[{label}] {name:<28} users {nu:>9,}  items {ni:>7,}  interactions {n:>11,}", flush=True)


def prepare(path: Path, subset: Subset, label: str = "movielens") -> tuple[Prepared, dict]:
    src = Source(path)
    fmt = detect_format(src)
    print(f"[{label}] {src.path}: format {fmt}", flush=True)
    movies = _read_movies(src, fmt)
    U: dict[str, int] = {}
    I: dict[str, int] = {}
    u_arr, i_arr, t_arr, r_arr = array("i"), array("i"), array("q"), array("f")
    for user, item, rating, ts in _read_ratings(src, fmt):
        u_arr.append(U.setdefault(user, len(U)))
        i_arr.append(I.setdefault(item, len(I)))
        t_arr.append(ts)
        r_arr.append(rating)
    if not u_arr:
        raise DataFormatError(f"{src.path}: no interactions")
    u_names, i_names = list(U), list(I)
    u = np.frombuffer(u_arr, dtype=np.int32).astype(np.int64)
    it = np.frombuffer(i_arr, dtype=np.int32).astype(np.int64)
    t = np.frombuffer(t_arr, dtype=np.int64)
    r = np.frombuffer(r_arr, dtype=np.float32)
    pos = np.arange(len(u))
    counts: list[dict] = []
    _step(counts, label, "raw", u, it)

    def keep(m):
        nonlocal u, it, t, r, pos
        u, it, t, r, pos = u[m], it[m], t[m], r[m], pos[m]

    if subset.min_rating is not None:
        keep(r >= subset.min_rating)
        _step(counts, label, f"rating >= {subset.min_rating:g}", u, it)
    known = np.array([n in movies for n in i_names], dtype=bool)
    keep(known[it])
    _step(counts, label, "in the movie catalogue", u, it)
    order = np.lexsort((pos, t, it, u))  # earliest (then first in file) per (user, item)
    first = np.ones(len(order), dtype=bool)
    first[1:] = (u[order][1:] != u[order][:-1]) | (it[order][1:] != it[order][:-1])
    keep(np.sort(order[first]))
    _step(counts, label, "deduplicated", u, it)

    if subset.last_interactions:
        order = np.lexsort((pos, t))
        keep(np.sort(order[-subset.last_interactions:]))
        _step(counts, label, f"last {subset.last_interactions:,} interactions", u, it)
    if subset.top_users or subset.random_users:
        present = np.unique(u)
        # Ranks by raw-id order make ties (top) and the draw (random) independent of file order.
        rank = {n: k for k, n in enumerate(_raw_order([u_names[x] for x in present]))}
        present = np.array(sorted(present, key=lambda x: rank[u_names[x]]), dtype=np.int64)
        if subset.top_users:
            n_per = np.bincount(u, minlength=len(u_names))[present]
            chosen = present[np.argsort(-n_per, kind="stable")[:subset.top_users]]
            what = f"{subset.top_users:,} most active users"
        else:
            g = np.random.default_rng(subset.seed)
            chosen = present[np.sort(g.permutation(len(present))[:subset.random_users])]
            what = f"{subset.random_users:,} random users (seed {subset.seed})"
        sel = np.zeros(len(u_names), dtype=bool)
        sel[chosen] = True
        keep(sel[u])
        _step(counts, label, what, u, it)
    if subset.last_per_user:
        order = np.lexsort((-pos, -t, u))  # newest first within each user
        us = u[order]
        start = np.searchsorted(us, us, side="left")
        within = np.arange(len(us)) - start
        keep(np.sort(order[within < subset.last_per_user]))
        _step(counts, label, f"last {subset.last_per_user} per user", u, it)
    m, rounds = kcore(u, it, subset.kcore)
    keep(m)
    _step(counts, label, f"{subset.kcore}-core ({rounds} rounds)", u, it)
    if len(u) == 0:
        raise DataFormatError(f"{src.path}: no interactions left after the {subset.kcore}-core filter (lower --kcore or keep more users)")

    user_ids = _raw_order([u_names[x] for x in np.unique(u)])
    item_ids = _raw_order([i_names[x] for x in np.unique(it)])
    u_map = np.full(len(u_names), -1, dtype=np.int64)
    i_map = np.full(len(i_names), -1, dtype=np.int64)
    u_map[[U[n] for n in user_ids]] = np.arange(len(user_ids))
    i_map[[I[n] for n in item_ids]] = np.arange(len(item_ids))
    u, it = u_map[u], i_map[it]
    order = np.lexsort((pos, t, u))
    seq_items = it[order]
    bounds = np.searchsorted(u[order], np.arange(len(user_ids) + 1), side="left")
    texts = [item_text(movies[n]) for n in item_ids]
    source = {"format": fmt, "path": str(src.path)}
    return Prepared(item_ids, user_ids, texts, seq_items, bounds, counts), source


# ----------------------------------------------------------------------------- writing
def write_dataset(out_root: Path, name: str, prep: Prepared, max_len: int, source: dict, subset: Subset) -> Path:
    folder = Path(out_root) / name
    folder.mkdir(parents=True, exist_ok=True)
    rows = dict.fromkeys(("train", "valid", "test"), 0)
    with contextlib.ExitStack() as stack:
        files = {}
        for s in rows:
            tmp = stack.enter_context(atomic_path(folder / f"{name}.{s}.inter"))
            files[s] = stack.enter_context(open(tmp, "w", encoding="utf-8", newline="\n"))
            files[s].write(INTER_HEADER + "\n")
        rows = write_rows(files, prep.seq_items, prep.seq_bounds, max_len, str, str)
        for f in files.values():
            f.close()
    write_index_map(folder / f"{name}.item2index", prep.item_ids)
    write_index_map(folder / f"{name}.user2index", prep.user_ids)
    write_text(folder / f"{name}.text", prep.item_ids, prep.texts)
    write_meta(folder, name, n_items=len(prep.item_ids), n_users=len(prep.user_ids),
               extra={"source": source, "images": False,
                      "prepare": {"subset": {k: v for k, v in vars(subset).items()}, "max_len": max_len,
                                  "n_interactions": int(len(prep.seq_items)), "rows": rows, "steps": prep.counts}})
    return folder


# ----------------------------------------------------------------------------- CLI
def default_name(path: Path) -> str:
    stem = path.name[:-4] if path.name.endswith(".zip") else path.name
    return stem or "movielens"


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(
        prog="missrec-prepare-movielens", description=__doc__.split("\n\n")[0],
        epilog="Example: missrec-prepare-movielens raw/ml-1m.zip --top_users 2000 --name ml-1m-top2000 "
               "(-> data/ml-1m-top2000/); then missrec-features data/ml-1m-top2000 --text_encoder all-MiniLM-L6-v2 "
               "--modalities text.")
    p.add_argument("source", type=Path, help="a MovieLens release folder or .zip (ml-100k, ml-1m, ml-20m, ml-25m, ml-32m, "
                                             "ml-latest), or a folder with one RecBole <name>.inter + <name>.item")
    p.add_argument("--out_root", type=Path, default=Path("data"), help="the dataset is written to <out_root>/<name>/ (default data)")
    p.add_argument("--name", help="dataset name (default: the source's name, e.g. ml-1m)")
    p.add_argument("--min_rating", type=float, default=None, help="keep only ratings >= this (default: every rating is an interaction)")
    p.add_argument("--last_interactions", type=int, default=None, metavar="M",
                   help="keep only the M most recent interactions of the whole log (before choosing users)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--top_users", type=int, default=None, metavar="N", help="keep the N users with the most interactions")
    who.add_argument("--random_users", type=int, default=None, metavar="N", help="keep N users drawn at random (--seed)")
    p.add_argument("--last_per_user", type=int, default=None, metavar="M", help="keep each user's M most recent interactions")
    p.add_argument("--kcore", type=int, default=5, help="then keep users and items with at least this many interactions, "
                                                       "iterated (default 5; >= 3 so every user has train, valid and test items)")
    p.add_argument("--seed", type=int, default=0, help="seed of --random_users (default 0)")
    p.add_argument("--max_len", type=int, default=MAX_LEN, help="keep the last N items of each history (default 50)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``missrec-prepare-movielens``: exit status 0, or 2 after one ``error:`` line naming the file or option."""
    return cli.run(_main, argv, exit=False)


def _main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    for opt in ("last_interactions", "top_users", "random_users", "last_per_user"):
        v = getattr(args, opt)
        if v is not None and v < 1:
            raise cli.OptionError(f"--{opt}", f"must be a positive number, got {v}")
    if args.kcore < 3:
        raise cli.OptionError("--kcore", "must be at least 3 (leave-one-out needs a train, a valid and a test item "
                                         f"per user), got {args.kcore}")
    if args.last_per_user is not None and args.last_per_user < 3:
        raise cli.OptionError("--last_per_user", "must be at least 3 (train, valid and test items)")
    subset = Subset(args.min_rating, args.last_interactions, args.top_users, args.random_users,
                    args.last_per_user, args.kcore, args.seed)
    name = args.name or default_name(args.source)
    t0 = time.time()
    if not args.source.exists():
        raise DataFormatError(f"{args.source}: not found (download a release from https://grouplens.org/datasets/movielens/)")
    prep, source = prepare(args.source, subset, label=name)
    folder = write_dataset(args.out_root, name, prep, args.max_len, source, subset)
    print(f"wrote {folder}: {len(prep.user_ids):,} users, {len(prep.item_ids):,} items, "
          f"{len(prep.seq_items):,} interactions in {time.time() - t0:.1f}s", flush=True)
    return 0
