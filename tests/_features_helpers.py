"""Test-only helpers for the features stage: a tiny open_clip config and small dataset folders."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from missrec.data.atomic import write_index_map, write_text

TINY_MODEL = "MissrecTinyCLIP"
# ViT width 64, 2 layers, 32x32 images in 4 patches; text tower width 32, 2 layers; 32-d output.
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def tiny_config_file(folder: Path) -> Path:
    """Write the tiny config as <folder>/MissrecTinyCLIP.json and register it with open_clip."""
    import open_clip

    path = Path(folder) / f"{TINY_MODEL}.json"
    path.write_text(json.dumps(TINY_CONFIG), encoding="utf-8")
    open_clip.add_model_config(path)
    return path


def png(path: Path, seed: int, size=(40, 30), mode="RGB") -> Path:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}[mode]
    arr = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path)
    return path


def jpeg_bytes(seed: int, size=(24, 24)) -> bytes:
    import io

    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, "JPEG")
    return buf.getvalue()


def make_catalogue(folder: Path, prefix: str, item_ids, texts: dict, images: dict, image_dir: Path | None = None):
    """item2index + .text (only items in ``texts``) + PNGs for items in ``images`` (id -> seed)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_index_map(folder / f"{prefix}.item2index", list(item_ids))
    ids = [i for i in item_ids if i in texts]
    write_text(folder / f"{prefix}.text", ids, [texts[i] for i in ids])
    image_dir = image_dir or folder / "images"
    for raw, seed in images.items():
        png(image_dir / f"{raw}.png", seed)
    return folder


# ----------------------------------------------------------------------------- small Amazon dumps
# (user, item, time) in file order; see tests/test_prepare_amazon.py for the hand-checked result.
FOOD_INTERACTIONS = [
    ("u1", "A", 1), ("u2", "B", 5), ("u3", "G", 1), ("u1", "B", 2), ("u2", "A", 5), ("u5", "F", 1),
    ("u1", "C", 3), ("u3", "H", 0), ("u4", "E", 4), ("u3", "C", 2), ("u6", "F", 1), ("u1", "D", 4),
    ("u2", "C", 6), ("u3", "A", 3), ("u4", "A", 5), ("u5", "A", 2), ("u1", "E", 5), ("u6", "B", 2),
    ("u2", "D", 7), ("u3", "B", 4), ("u4", "B", 6), ("u6", "G", 3), ("u1", "X", 6), ("u2", "B", 8),
    ("u4", "D", 10), ("u3", "E", 5), ("u2", "G", 20), ("u4", "D", 3),
]
# item -> (title, categories, brand, image urls as (high-res, small) or None)
FOOD_META = [
    ("A", "Caf&eacute; <b>Beans</b>  Dark", ["Grocery &amp; Gourmet Food", "Coffee", "Coffee"], "Joe's",
     ("http://img/A_big.jpg", "http://img/A_small.jpg")),
    ("B", "Green Tea", [], "", (None, "http://img/B_small.jpg")),
    ("C", "Oat Milk", ["Milk"], None, None),
    ("D", "Rice", [], "", ("http://img/D_big.jpg", "http://img/D_small.jpg")),
    ("E", "Soy   Sauce\n", [], "Kikkoman", ("http://img/E_big.jpg", None)),
    ("F", "Fig", [], "", None),
    ("G", "Ginger", [], "", None),
    ("H", "<p> </p>", ["Empty"], "", None),  # title is only HTML: counts as no metadata
    ("A", "A later duplicate record", [], "", None),  # first record wins
    ("Z", "Never bought", [], "", None),
]


def _meta_2018(item, title, cats, brand, imgs):
    rec = {"asin": item, "title": title, "category": cats, "description": ["<div>long text</div>"]}
    if brand is not None:
        rec["brand"] = brand
    if imgs:
        rec["imageURLHighRes"] = [imgs[0]] if imgs[0] else []
        rec["imageURL"] = [imgs[1]] if imgs[1] else []
    return rec


def _meta_2023(item, title, cats, brand, imgs):
    rec = {"parent_asin": item, "title": title, "categories": cats, "store": brand, "main_category": "Grocery",
           "features": ["x"], "description": [], "images": []}
    if imgs:
        # A non-MAIN image first: the MAIN one must win, at its highest resolution.
        rec["images"] = [{"thumb": "http://img/other_thumb.jpg", "large": "http://img/other_large.jpg",
                          "hi_res": None, "variant": "PT01"},
                         {"thumb": "http://img/t.jpg", "large": imgs[1], "hi_res": imgs[0], "variant": "MAIN"}]
    return rec


def write_amazon_dump(raw_dir: Path, category: str, release: str, interactions=FOOD_INTERACTIONS,
                      meta=FOOD_META, gz: bool = False, csv: bool = False) -> None:
    """Write <category> reviews + metadata in the 2018 or 2023 layout (optionally gzipped / ratings CSV)."""
    import gzip

    raw_dir.mkdir(parents=True, exist_ok=True)

    def put(name: str, lines: list[str]):
        data = "".join(line + "\n" for line in lines).encode()
        if gz:
            (raw_dir / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (raw_dir / name).write_bytes(data)

    if release == "2018":
        if csv:
            put(f"{category}.csv", [f"{i},{u},5.0,{t}" for u, i, t in interactions])
        else:
            put(f"{category}.json", [json.dumps({"overall": 4.0, "verified": True, "reviewerID": u, "asin": i,
                                                 "unixReviewTime": t, "reviewText": "ok"}) for u, i, t in interactions])
        put(f"meta_{category}.json", [json.dumps(_meta_2018(*m)) for m in meta])
    else:
        put(f"{category}.jsonl", [json.dumps({"rating": 5.0, "title": "t", "text": "x", "asin": i + "-child",
                                              "parent_asin": i, "user_id": u, "timestamp": t * 1000,
                                              "verified_purchase": True}) for u, i, t in interactions])
        put(f"meta_{category}.jsonl", [json.dumps(_meta_2023(*m)) for m in meta])
