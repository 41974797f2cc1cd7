"""The item side of a dataset on the training device: feature tables and interest state.

Kept outside the nn.Module on purpose: DDP would otherwise broadcast these (possibly GB-sized)
tables as buffers on every forward. Row 0 is the padding item everywhere.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .interest import kmeans, n_interests
from .errors import CorruptFileError, DataError


def _with_pad_row(arr) -> torch.Tensor:
    t = torch.zeros((arr.shape[0] + 1, arr.shape[1]), dtype=torch.float32)
    t.numpy()[1:] = np.asarray(arr)  # one copy, straight from the memory map
    return t


def _check_interest_state(state: dict, width: int, source: str) -> None:
    """Shapes, dtypes and id ranges of an interest state (interest.safetensors) before any use:
    an id outside the centroid table would index out of bounds (or wrap, when negative)."""
    emb = state["interest_embeddings"]
    if emb.dim() != 2 or emb.shape[0] < 1 or not emb.is_floating_point():
        raise CorruptFileError(source, f"'interest_embeddings' must be a [K+1, {width}] float table, got "
                                       f"{list(emb.shape)} {str(emb.dtype).replace('torch.', '')}")
    if emb.shape[1] != width:
        raise CorruptFileError(source, f"'interest_embeddings' are {emb.shape[1]} wide, the model's hidden size is "
                                       f"{width}: this interest state belongs to another model")
    if not bool(torch.isfinite(emb).all()):
        raise CorruptFileError(source, "'interest_embeddings' hold NaN or infinite values")
    k = emb.shape[0] - 1
    for key in ("text_interest", "image_interest"):
        ids = state[key]
        if ids.dim() != 1 or ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise CorruptFileError(source, f"'{key}' must be a 1-D integer tensor, got {list(ids.shape)} "
                                           f"{str(ids.dtype).replace('torch.', '')}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) > k):
            raise CorruptFileError(source, f"'{key}' holds ids from {int(ids.min())} to {int(ids.max())}, outside "
                                           f"0..{k} (the rows of its {k} interest centroids): the file is damaged; "
                                           "delete it to recompute the interests (interest discovery)")
    if state["text_interest"].shape != state["image_interest"].shape:
        raise CorruptFileError(source, f"'text_interest' and 'image_interest' cover {state['text_interest'].numel()} "
                                       f"and {state['image_interest'].numel()} items")


class ItemTable:
    def __init__(self, text: torch.Tensor | None, image: torch.Tensor | None, text_aug: torch.Tensor | None = None,
                 hidden_size: int = 300):
        # image None: a text-only table (for a model without an image modality, image_dim None);
        # text None: an image-only table (text_dim None). One of the two is always there.
        if text is None and image is None:
            raise DataError("an item table needs text or image features (or both)")
        if text is not None and image is not None and text.shape[0] != image.shape[0]:
            raise DataError(f"text features have {text.shape[0]} rows but image features {image.shape[0]}")
        self.text, self.image, self.text_aug = text, image, text_aug
        first = text if text is not None else image
        n = first.shape[0]
        self.text_interest = torch.zeros(n, dtype=torch.long, device=first.device)
        self.image_interest = torch.zeros(n, dtype=torch.long, device=first.device)
        self.centroids = torch.zeros(1, hidden_size, device=first.device)
        self.catalogue: dict = {}  # AtomicDataset.catalogue() of the dataset the rows come from

    @classmethod
    def from_dataset(cls, ds, hidden_size: int = 300, device=None, image_dim: int | None = None,
                     text_only: bool = False, *, text_dim: int | None = None,
                     image_only: bool = False) -> "ItemTable":
        """From a loaded AtomicDataset (memory-mapped features are copied once, here).

        ``text_only`` (a model with no image modality): no image table, whatever the dataset has;
        ``image_only`` (no text modality): no text table (nor its word-drop view). Otherwise a
        modality the dataset lacks is all zero rows of ``image_dim`` / ``text_dim`` (default: the
        other modality's dim), as for items without an image or a text (a model with that adaptor,
        e.g. a checkpoint pretrained on data that had it).
        """
        if text_only and image_only:
            raise DataError("an item table cannot be both text-only and image-only")
        feats = ds.features
        n_rows = (feats["text"] if "text" in feats else feats["image"]).shape[0]
        text = None if image_only else feats.get("text")
        if text is None and not image_only:
            text = np.zeros((n_rows, text_dim or feats["image"].shape[1]), np.float32)
        image = None if text_only else feats.get("image")
        if image is None and not text_only:
            image = np.zeros((n_rows, image_dim or feats["text"].shape[1]), np.float32)
        # The word-drop view belongs with real text rows: none for a model without text, or on data without it.
        aug = None if image_only or "text" not in feats else feats.get("text_aug")
        t = cls(None if text is None else _with_pad_row(text), None if image is None else _with_pad_row(image),
                None if aug is None else _with_pad_row(aug), hidden_size)
        if hasattr(ds, "catalogue"):
            t.catalogue = ds.catalogue()
        return t.to(device) if device is not None else t

    @property
    def n_items(self) -> int:
        return (self.text if self.text is not None else self.image).shape[0] - 1

    @property
    def device(self):
        return (self.text if self.text is not None else self.image).device

    def image_is_zero(self) -> bool:
        """Whether every image row is zero (text-only data): the model then adapts one row and
        broadcasts it. Cached per image tensor and its in-place version counter."""
        return self.is_zero("image")

    def is_zero(self, key: str) -> bool:
        """Whether every row of table ``key`` ("text" or "image") is zero (data without that
        modality, read by a model that has it). Cached per tensor and its in-place version counter."""
        table = getattr(self, key)
        cache = self.__dict__.setdefault("_zero_cache", {})
        stamp = (id(table), table._version, table.data_ptr())
        if cache.get(key, (None,))[0] != stamp:
            cache[key] = (stamp, not bool(table.any()))
        return cache[key][1]

    def to(self, device) -> "ItemTable":
        for k in ("text", "image", "text_aug", "text_interest", "image_interest", "centroids"):
            v = getattr(self, k)
            if v is not None:
                setattr(self, k, v.to(device))
        return self

    # ---------------------------------------------------------------- interest state
    @torch.no_grad()
    def discover_interests(self, model, ratio: float, *, n_iter: int = 20, init: str = "auto",
                           seed: int = 0, compat: bool = False, warm_start: bool = False,
                           chunk: int = 65536) -> dict:
        """Cluster all items' adapted text and image vectors (those the model has); refresh ids and centroids.

        ``warm_start`` starts Lloyd's iterations from the current centroids when there are K of
        them: the adaptors move little between epochs, so it converges in a few iterations.
        """
        n = self.n_items
        dev = self.device
        vecs, names = [], []
        for name, feats, adaptor in (("text", self.text, getattr(model, "text_adaptor", None)),
                                     ("image", self.image, getattr(model, "img_adaptor", None))):
            if adaptor is None:
                continue  # a modality the model has not (text-only or image-only)
            out = torch.empty(n, model.config.hidden_size, device=dev)
            for s in range(1, n + 1, chunk):
                out[s - 1:s - 1 + chunk] = adaptor(feats[s:s + chunk].to(adaptor.weight.dtype)).float()
            vecs.append(out)
            names.append(name)
        x = torch.cat(vecs, 0)
        k = n_interests(n, ratio, len(vecs))
        if warm_start and not compat and self.centroids.shape[0] == k + 1:
            init = self.centroids[1:]
        res = kmeans(x, k, n_iter=n_iter, init=init, seed=seed, compat=compat)
        # A modality the model has not gets interest id 0 (padding) everywhere, so only the other
        # modality's ids form interest tokens.
        labels = {m: res.labels[i * n:(i + 1) * n] + 1 for i, m in enumerate(names)}
        none = torch.zeros(n, dtype=res.labels.dtype, device=res.labels.device)
        self.set_interests(labels.get("text", none), labels.get("image", none), res.centroids)
        return {"k": k, "n_iter": res.n_iter, "inertia": res.inertia}

    def set_interests(self, text_labels, image_labels, centroids) -> None:
        dev = self.device
        self.text_interest = torch.cat([torch.zeros(1, dtype=torch.long, device=dev), text_labels.to(dev)])
        self.image_interest = torch.cat([torch.zeros(1, dtype=torch.long, device=dev), image_labels.to(dev)])
        self.centroids = torch.cat([torch.zeros(1, centroids.shape[1], device=dev), centroids.float().to(dev)])

    def interest_state(self) -> dict[str, torch.Tensor]:
        return {"interest_embeddings": self.centroids.contiguous().cpu(),
                "text_interest": self.text_interest.contiguous().cpu(),
                "image_interest": self.image_interest.contiguous().cpu()}

    def load_interest_state(self, state: dict[str, torch.Tensor], source: str = "interest state") -> None:
        for k in ("interest_embeddings", "text_interest", "image_interest"):
            if k not in state:
                raise CorruptFileError(f"{source}: missing tensor '{k}'")
        _check_interest_state(state, self.centroids.shape[1], source)
        if state["text_interest"].shape[0] != self.n_items + 1:
            raise CorruptFileError(f"{source}: interest ids cover {state['text_interest'].shape[0] - 1} items, "
                             f"the dataset has {self.n_items}")
        self.text_interest = state["text_interest"].long().to(self.device)
        self.image_interest = state["image_interest"].long().to(self.device)
        self.centroids = state["interest_embeddings"].float().to(self.device)

    def load_interest(self, path: str | Path) -> None:
        from .checkpoint import load_tensors
        self.load_interest_state(load_tensors(path), str(path))

    def broadcast_interests(self, accelerator) -> None:
        """Make every rank hold rank 0's clusters (k-means runs on the main process only)."""
        if accelerator is None or accelerator.num_processes == 1:
            return
        from accelerate.utils import broadcast
        n_k = torch.tensor([self.centroids.shape[0]], device=accelerator.device)
        n_k = broadcast(n_k)
        if self.centroids.shape[0] != int(n_k):
            self.centroids = torch.zeros(int(n_k), self.centroids.shape[1], device=self.device)
        self.text_interest = broadcast(self.text_interest.to(accelerator.device)).to(self.device)
        self.image_interest = broadcast(self.image_interest.to(accelerator.device)).to(self.device)
        self.centroids = broadcast(self.centroids.to(accelerator.device)).to(self.device)
