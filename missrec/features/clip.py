"""The encoders of the features stage: an open_clip model (text and image) and image decoding.

missrec/features/extract.py drives them over a catalogue in resumable shards.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from missrec.errors import UserError
from missrec.fsutil import sha256_file

# Status of one item's input (one int8 per item in a shard).
NO_INPUT, ENCODED, UNREADABLE = 0, 1, 2


class ExtractError(UserError, RuntimeError):
    """A user-facing failure; missrec.cli.run prints it as one line."""


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
            # open_clip loads the folder's one weights file; with several it would pick by its own
            # preference list, so we ask for exactly one and can then record which bytes were used.
            found = sorted(p for p in d.iterdir() if p.suffix in (".safetensors", ".bin", ".pth"))
            if len(found) != 1:
                raise ExtractError(f"--pretrained {pretrained}: expected one *.safetensors/*.bin/*.pth weights "
                                   f"file in {d}, found {[p.name for p in found] or 'none'} (or pass the file "
                                   "itself: --model NAME --pretrained FILE)")
            info["weights_sha256"] = sha256_file(found[0])
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
