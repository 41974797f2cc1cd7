"""Throughput of the features stage: items/s for CLIP text and image features.

Runs the same code paths as missrec/features/extract.py (ClipEncoder; ImageItems decoding through a
DataLoader) on synthetic catalogues: titles of random words and JPEG files of random pixels.
Models get random weights (``--pretrained none``), which cost the same time as trained ones.
Per model and modality it reports the end-to-end rate (tokenize or decode + preprocess + encode)
and the model-only rate (pre-tokenized / pre-processed inputs), median over repeats after warm-up.

    python -m benchmarks.bench_features --quick            # tiny config, a few seconds
    python -m benchmarks.bench_features --models ViT-B-32 --n_images 64 --n_text 256 --out runs/bench_features.json
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.common import Ctx, add_table, build_parser, finish, measure, new_result, set_argv

TINY_MODEL = "MissrecBenchTiny"
# ViT width 64, 2 layers on 32x32 images; text tower width 32, 2 layers (the tests' tiny config).
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
WORDS = ("organic stainless steel wireless kitchen coffee blue red large small pack of two premium "
         "cotton ceramic mug running shoe book novel edition deluxe portable charger tea green black").split()


def _titles(n: int, rng: np.random.Generator) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(6, 20)))) for _ in range(n)]


def _jpegs(folder: Path, n: int, rng: np.random.Generator, size: int) -> list[Path]:
    paths = []
    for k in range(n):
        arr = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        p = folder / f"I{k:05d}.jpg"
        Image.fromarray(arr, "RGB").save(p, quality=90)
        paths.append(p)
    return paths


def bench_model(model: str, ctx: Ctx, texts: list[str], images: list[Path], batch: int, workers: int) -> list[dict]:
    from missrec.features.extract import ClipEncoder, ImageItems, autocast

    enc = ClipEncoder(model, "none", ctx.device, seed=ctx.seed)
    precision = ctx.dtype_name
    rows = []

    def text_e2e():
        with autocast(ctx.device, precision):
            for b in range(0, len(texts), batch):
                enc.encode_text(texts[b:b + batch])

    tokens = [enc.tokenizer(texts[b:b + batch]).to(ctx.device) for b in range(0, len(texts), batch)]

    def text_model():
        with torch.inference_mode(), autocast(ctx.device, precision):
            for t in tokens:
                enc.model.encode_text(t)

    dataset = ImageItems(images, enc.preprocess, enc.image_shape)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=workers,
                                         pin_memory=ctx.device.type == "cuda")

    def image_e2e():
        with autocast(ctx.device, precision):
            for x, _ in loader:
                enc.encode_image(x)

    pre = [torch.stack([dataset[i][0] for i in range(b, min(b + batch, len(images)))]).to(ctx.device)
           for b in range(0, len(images), batch)]

    def image_model():
        with torch.inference_mode(), autocast(ctx.device, precision):
            for x in pre:
                enc.model.encode_image(x)

    for modality, n, e2e, only in (("text", len(texts), text_e2e, text_model),
                                   ("image", len(images), image_e2e, image_model)):
        r_e2e = measure(e2e, ctx)
        r_only = measure(only, ctx)
        rows.append({"model": model, "modality": modality, "items": n, "batch": batch,
                     "median_s": r_e2e["median_s"], "items_per_s": n / r_e2e["median_s"],
                     "model_only_items_per_s": n / r_only["median_s"], "times_s": r_e2e["times_s"]})
    return rows


def main(argv=None) -> dict:
    p = build_parser(__doc__.split("\n\n")[0], default_repeats=3)
    p.add_argument("--models", default="tiny,ViT-B-32",
                   help="comma-separated open_clip models ('tiny' = the tests' tiny config); --quick uses tiny only")
    p.add_argument("--n_text", type=int, default=256, help="texts per timed run")
    p.add_argument("--n_images", type=int, default=64, help="images per timed run")
    p.add_argument("--image_px", type=int, default=256, help="side of the synthetic JPEGs (decode cost grows with it)")
    p.add_argument("--batch_size", type=int, default=64, help="items per forward pass (as extract.py --batch_size)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers decoding images (as extract.py --workers)")
    args = p.parse_args(argv)
    set_argv(argv)
    ctx = Ctx(args)  # applies --threads (a common option)
    import open_clip

    models = ["tiny"] if ctx.quick else [m.strip() for m in args.models.split(",") if m.strip()]
    n_text = min(args.n_text, 64) if ctx.quick else args.n_text
    n_images = min(args.n_images, 32) if ctx.quick else args.n_images
    rng = np.random.default_rng(ctx.seed)
    texts = _titles(n_text, rng)
    result = new_result("features", ctx)
    result["env"].update({"open_clip": open_clip.__version__, "torch_threads": torch.get_num_threads()})
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_features.") as tmp:
        tmp = Path(tmp)
        if "tiny" in models:
            cfg = tmp / f"{TINY_MODEL}.json"
            cfg.write_text(json.dumps(TINY_CONFIG))
            open_clip.add_model_config(cfg)
        images = _jpegs(tmp, n_images, rng, args.image_px)
        for m in models:
            rows += bench_model(TINY_MODEL if m == "tiny" else m, ctx, texts, images, args.batch_size, args.workers)
    for r in rows:
        if r["model"] == TINY_MODEL:
            r["model"] = "tiny (ViT w64 x2, text w32 x2)"
    add_table(result, "throughput", f"features throughput ({ctx.dtype_name}, random weights, "
              f"{args.image_px}px JPEGs, {args.workers} decode workers)",
              ["model", "modality", "items", "batch", "median_s", "items_per_s", "model_only_items_per_s"], rows)
    result["notes"].append("items_per_s: tokenize/decode + preprocess + encode; model_only: encode on prepared inputs")
    return finish(result, ctx)


if __name__ == "__main__":
    main()
