"""Import the original MISSRec ``.pth`` checkpoints into our checkpoint folder.

The authors' files are ``torch.save``'d dicts ``{"config": <recbole Config>, "epoch": int,
"state_dict": OrderedDict, "optimizer": ..., ["cur_step", "best_valid_score", "other_parameter"]}``,
read here by :func:`missrec.unpickle.load_pth` (nothing in them is run and RecBole is not needed;
its Config becomes an inert placeholder whose values we read).

Parameter names are the same as ours, and our model (built from the sizes the tensor shapes give)
defines the expected keys and shapes. The dataset's feature tables are dropped (after checking them
against the dataset when one is given), item-indexed tables are permuted from RecBole's internal
item order to ours (see :func:`recbole_item_tokens`), and the interest buffers go to
interest.safetensors. The folder is written by :func:`missrec.checkpoint.save_checkpoint`.
"""
from __future__ import annotations

import itertools
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import config
from .checkpoint import save_checkpoint
from .config import MISSRecConfig
from .errors import UserError
from .fsutil import sha256_file
from .model import MISSRec
from .unpickle import Placeholder, PthFormatError, UnsafePickleError, load_pth, placeholder_state, restricted_loads

__all__ = [
    "UnsafePickleError", "PthFormatError", "PthConversionError", "Placeholder", "restricted_loads", "load_pth",
    "placeholder_state", "OriginalCheckpoint", "read_original", "ConvertedCheckpoint", "convert_original",
    "write_converted", "convert_pth", "recbole_item_tokens",
]


class PthConversionError(UserError):
    """The checkpoint was read but cannot be mapped onto our model (names keys/shapes)."""


# ============================================================================ original checkpoints
_SUMMARY_NODES = 20_000  # values in one provenance summary, shared ones counted each time they appear
_SUMMARY_TEXT = 2_000  # characters of one string in it


def _jsonable(x, depth: int = 0, _memo: dict | None = None, _left: list | None = None):
    """A JSON-safe summary of unpickled data (for provenance only), bounded whatever the data.

    Each container is summarised once (by id): a shared reference reuses its summary while the
    whole result stays under ``_SUMMARY_NODES`` values, so ``[x] * 200`` nested 8 deep (a few
    KB of pickle, 200**8 values if walked naively) costs a few thousand steps.
    """
    memo = {} if _memo is None else _memo
    left = [_SUMMARY_NODES] if _left is None else _left
    return _summary(x, depth, memo, left)[0]


def _brief(x) -> str:
    """A value from the file, for an error line: its summary's repr, at most 100 characters."""
    text = repr(_jsonable(x))
    return text if len(text) <= 100 else text[:97] + "..."


def _summary(x, depth: int, memo: dict, left: list) -> tuple[object, int]:
    """(summary, number of values in it); ``left`` is the budget still unspent."""
    if left[0] <= 0 or depth > 8:
        return "...", 1
    left[0] -= 1
    if x is None or isinstance(x, (bool, int)):
        return x, 1
    if isinstance(x, str):
        return (x if len(x) <= _SUMMARY_TEXT else x[:_SUMMARY_TEXT] + f"... ({len(x)} characters)"), 1
    if isinstance(x, float):
        return (x if math.isfinite(x) else str(x)), 1
    if isinstance(x, (torch.dtype, torch.device)):
        return str(x), 1
    if isinstance(x, torch.Tensor):
        return f"<tensor {list(x.shape)} {str(x.dtype).replace('torch.', '')}>", 1
    if isinstance(x, (bytes, bytearray)):
        return f"<{len(x)} bytes>", 1
    if not isinstance(x, (list, tuple, set, frozenset, dict, Placeholder)):
        return f"<{getattr(x, 'pickle_name', type(x).__name__)}>", 1
    if id(x) in memo:  # a shared reference: summarised already
        out, n = memo[id(x)]
        if n > left[0]:
            return "<shared value, omitted>", 1
        left[0] -= n
        return out, n
    n = 1
    if isinstance(x, dict):
        out = {}
        for k, v in itertools.islice(x.items(), 500):
            out[str(k)[:_SUMMARY_TEXT]], m = _summary(v, depth + 1, memo, left)
            n += m
    elif isinstance(x, Placeholder):
        if len(x.args) == 1:
            arg, m = _summary(x.args[0], depth + 1, memo, left)
            out, n = f"{x.pickle_name}({arg!r})"[:_SUMMARY_TEXT], n + m
        else:
            out = f"<{x.pickle_name}>"
    else:
        out = []
        for v in itertools.islice(x, 200):
            s, m = _summary(v, depth + 1, memo, left)
            out.append(s)
            n += m
    memo[id(x)] = (out, n)
    return out, n


@dataclass
class OriginalCheckpoint:
    """What we take from an original ``.pth``: tensors, the RecBole config values, provenance."""

    path: Path
    sha256: str
    state_dict: dict[str, torch.Tensor]
    config: dict
    epoch: int | None
    extra: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def read_original(path: str | os.PathLike) -> OriginalCheckpoint:
    """Read an original MISSRec/RecBole ``.pth`` (or a bare state_dict) safely."""
    path = Path(path)
    obj = load_pth(path)
    notes: list[str] = []
    if isinstance(obj, dict) and "state_dict" in obj:
        sd = obj["state_dict"]
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd, obj = obj, {}
        notes.append("file holds a bare state_dict (no RecBole config): hyper-parameters not in the tensor "
                     "shapes take the paper's defaults")
    else:
        keys = _brief(sorted(_brief(k) for k in itertools.islice(obj, 50))) if isinstance(obj, dict) \
            else type(obj).__name__
        raise PthFormatError(f"{path}: expected a dict with a 'state_dict' entry (an original MISSRec checkpoint), "
                             f"found {keys}")
    if not isinstance(sd, dict):
        raise PthFormatError(f"{path}: 'state_dict' is a {type(sd).__name__}, expected a dict of tensors")
    bad = [k for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise PthFormatError(f"{path}: state_dict entries that are not named tensors: {_brief(bad[:8])}")
    # Views repeat no storage element (missrec/unpickle.py), but many entries can still name the
    # same tensor: what conversion copies must stay near what the file holds (tied weights: 2x).
    size, total = path.stat().st_size, sum(v.numel() * v.element_size() for v in sd.values())
    if total > 2 * size + (1 << 20):
        raise PthFormatError(f"{path}: its state_dict's tensors hold {total} bytes, more than twice the file's "
                             f"{size}: its entries repeat the same data (the file is damaged or built to exhaust "
                             "memory)")
    state = dict(sd)
    if state and all(k.startswith("module.") for k in state):  # saved from a DDP wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
        notes.append("stripped the 'module.' prefix of a DistributedDataParallel state_dict")

    config: dict = {}
    cfg = obj.get("config")
    if isinstance(cfg, dict):
        config = cfg
    elif isinstance(cfg, Placeholder):
        final = (placeholder_state(cfg) or {}).get("final_config_dict")
        if isinstance(final, dict):
            config = final
        else:
            notes.append(f"the pickled config ({cfg.pickle_name}) carries no readable final_config_dict")
    elif cfg is not None:
        notes.append(f"ignored a 'config' entry of type {type(cfg).__name__}")
    epoch = obj.get("epoch")
    extra = {k: _jsonable(obj[k]) for k in ("cur_step", "best_valid_score", "global_step") if k in obj}
    return OriginalCheckpoint(path=path, sha256=sha256_file(path), state_dict=state, config=config,
                              epoch=epoch if type(epoch) is int else None, extra=extra, notes=notes)


# ============================================================================ RecBole item order
def _dataset_name(folder: Path) -> str:
    if (folder / f"{folder.name}.item2index").is_file():
        return folder.name
    found = sorted(folder.glob("*.item2index"))
    if len(found) == 1:
        return found[0].name[: -len(".item2index")]
    if not found:
        raise PthConversionError(f"{folder}: not a dataset folder (no <name>.item2index)")
    raise PthConversionError(f"{folder}: several *.item2index files; name the dataset folder <name>/")


def recbole_item_tokens(folder: str | os.PathLike, name: str | None = None,
                        splits: tuple[str, ...] = ("train", "valid", "test")) -> list[str]:
    """Item tokens in RecBole's internal id order (index 0 = '[PAD]') for a benchmark-split dataset.

    RecBole (the 1.x line MISSRec pins, recbole==1.2.0, with ``benchmark_filename: [train,
    valid, test]`` and ``alias_of_item_id: [item_id_list]``) loads the three ``.inter`` files
    with every token as a string, concatenates them in that order, skips filtering, and remaps
    ``item_id`` and its alias ``item_id_list`` together: ``pd.factorize`` over the target column
    of all rows followed by all history tokens flattened row by row, ids in order of first
    appearance, shifted by one so that '[PAD]' is 0. We reproduce exactly that.
    """
    folder = Path(folder)
    name = name or _dataset_name(folder)
    targets: list[str] = []
    histories: list[str] = []
    for split in splits:
        path = folder / f"{name}.{split}.inter"
        if not path.is_file():
            raise PthConversionError(f"{path}: file not found (needed to recover RecBole's item order)")
        with open(path, encoding="utf-8") as f:
            header = f.readline().rstrip("\r\n").split("\t")
            fields = [h.split(":", 1)[0] for h in header]
            try:
                ti, hi = fields.index("item_id"), fields.index("item_id_list")
            except ValueError:
                raise PthConversionError(f"{path}:1: header lacks item_id / item_id_list columns") from None
            for lineno, line in enumerate(f, start=2):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue  # pandas skips blank lines too
                parts = line.split("\t")
                if len(parts) != len(header):
                    raise PthConversionError(f"{path}:{lineno}: expected {len(header)} fields, got {len(parts)}")
                targets.append(parts[ti])
                histories.extend(t for t in parts[hi].split(" ") if t)
    return ["[PAD]"] + list(dict.fromkeys(targets + histories))


# ============================================================================ key mapping
_LAYER_RE = re.compile(r"^trm_model\.(encoder|decoder)\.layers\.(\d+)\.")
# Buffers of the original finetune model that hold dataset tables, not model parameters.
_FEATURE_TABLES = {"plm_embedding.weight": "feat1CLS", "img_embedding.weight": "feat3CLS"}
_DROPPED = {"plm_embedding_empty_mask", "img_embedding_empty_mask"}
_INTEREST = {"plm_interest_lookup_table": "text_interest", "img_interest_lookup_table": "image_interest",
             "interest_embeddings": "interest_embeddings"}
# What the tensor shapes do not reveal: our config field -> the RecBole config key.
_HPARAMS = {"n_heads": "n_heads", "dropout": "hidden_dropout_prob", "hidden_act": "hidden_act",
            "layer_norm_eps": "layer_norm_eps", "initializer_range": "initializer_range",
            "temperature": "temperature"}
PAPER_DEFAULTS = {k: v for k, v in config.PAPER_DEFAULTS.items() if k in _HPARAMS}


@dataclass
class ConvertedCheckpoint:
    config: dict
    model: dict[str, torch.Tensor]
    interest: dict[str, torch.Tensor] | None
    notes: list[str]


def _architecture(src, sd) -> dict:
    """Sizes from the tensor shapes; every key and shape is then checked against our model."""
    needed = ["position_embedding.weight", "text_adaptor.weight", "img_adaptor.weight",
              "trm_model.encoder.layers.0.linear1.weight"]
    missing = [k for k in needed if k not in sd]
    if missing:
        raise PthConversionError(f"{src}: missing {missing}. Only the text+image MISSRec (modal_type img_text) "
                                 "is supported")
    if any(sd[k].dim() != 2 for k in needed):
        raise PthConversionError(f"{src}: {needed} must be 2-D, got {[list(sd[k].shape) for k in needed]}")
    layers: dict[str, set[int]] = {"encoder": set(), "decoder": set()}
    for k in sd:
        if m := _LAYER_RE.match(k):
            layers[m.group(1)].add(int(m.group(2)))
    for stack, idx in layers.items():
        if sorted(idx) != list(range(len(idx))) or not idx:
            raise PthConversionError(f"{src}: {stack} layers {sorted(idx)} are not numbered 0..n-1 (need at least one)")
    (max_len, H), inner = sd[needed[0]].shape, sd[needed[3]].shape[0]
    return {"max_seq_length": max_len, "hidden_size": H, "inner_size": inner, "text_dim": sd[needed[1]].shape[1],
            "image_dim": sd[needed[2]].shape[1], "num_encoder_layers": len(layers["encoder"]),
            "num_decoder_layers": len(layers["decoder"])}


def _hyperparameters(src, conf: dict, arch: dict, notes: list[str]) -> dict:
    """What the shapes do not reveal, from the pickled RecBole config (paper defaults otherwise)."""
    errors: list[str] = []
    hp = {}
    for ours, key in _HPARAMS.items():
        default, v = PAPER_DEFAULTS[ours], conf.get(key)
        if v is None:
            notes.append(f"{ours} = {default!r} (paper default: the checkpoint's config has no '{key}')")
            v = default
        elif isinstance(default, float):
            ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
            if not ok:
                errors.append(f"config '{key}' = {_brief(v)} is not a number")
            v = float(v) if ok else default
        elif type(v) is not type(default):
            errors.append(f"config '{key}' = {_brief(v)} is not a {type(default).__name__}")
            v = default
        hp[ours] = v
    if hp["n_heads"] <= 0 or arch["hidden_size"] % hp["n_heads"]:
        errors.append(f"n_heads {hp['n_heads']} does not divide hidden size {arch['hidden_size']}")
    if hp["hidden_act"] not in ("gelu", "relu"):
        errors.append(f"hidden_act {hp['hidden_act']!r} is not supported (gelu or relu)")
    if conf.get("seq_mm_fusion") not in (None, "add"):
        errors.append(f"seq_mm_fusion={_brief(conf['seq_mm_fusion'])} is not supported "
                      "(ours adds the modality embeddings: 'add')")
    if conf.get("modal_type") not in (None, "img_text"):
        errors.append(f"modal_type={_brief(conf['modal_type'])} is not supported (only 'img_text')")
    if errors:
        raise PthConversionError(f"{src}: " + "; ".join(errors))
    for key, ours in (("hidden_size", "hidden_size"), ("inner_size", "inner_size"), ("plm_size", "text_dim"),
                      ("img_size", "image_dim"), ("MAX_ITEM_LIST_LENGTH", "max_seq_length")):
        if conf.get(key) is not None and conf.get(key) != arch[ours]:
            notes.append(f"config says {key}={_brief(conf.get(key))} but the tensors say {arch[ours]}; "
                         "the tensors win")
    n_layers = conf.get("n_layers")
    if type(n_layers) is int and n_layers != arch["num_encoder_layers"] + arch["num_decoder_layers"]:
        notes.append(f"config says n_layers={n_layers} but the state_dict has {arch['num_encoder_layers']} encoder "
                     f"+ {arch['num_decoder_layers']} decoder layers; the tensors win")
    return hp
def _fusion(src, sd, conf, notes) -> tuple[str, torch.Tensor]:
    item_fusion = conf.get("item_mm_fusion")
    factor = sd.get("fusion_factor")
    if factor is None:
        if item_fusion not in (None, "static"):
            raise PthConversionError(f"{src}: item_mm_fusion={_brief(item_fusion)} but the state_dict has "
                                     "no 'fusion_factor'")
        notes.append("no fusion_factor: static fusion (plain mean of the modality scores); stored fusion_factor=0")
        return "static", torch.zeros(())
    if factor.dim() != 0:
        raise PthConversionError(f"{src}: 'fusion_factor' has shape {list(factor.shape)}: per-item fusion "
                                 "('dynamic_instance') is not supported, only one shared scalar")
    return ("static" if item_fusion == "static" else "dynamic_shared"), factor


def _stage(sd, conf, notes) -> str:
    stage = conf.get("train_stage")
    if stage not in ("pretrain", "inductive_ft", "transductive_ft"):
        stage = ("transductive_ft" if "item_embedding.weight" in sd
                 else "inductive_ft" if "plm_embedding.weight" in sd else "pretrain")
        notes.append(f"train_stage inferred from the tensors: {stage}")
    return stage


def _item_rows(src, sd, use_id: bool) -> int | None:
    """Rows of the original's item-indexed tables (RecBole's item count incl. [PAD]), all equal."""
    rows = None
    for k in ("item_embedding.weight", "plm_embedding.weight", "img_embedding.weight", "plm_interest_lookup_table",
              "img_interest_lookup_table", "plm_embedding_empty_mask", "img_embedding_empty_mask"):
        if k not in sd or (k == "item_embedding.weight" and not use_id):
            continue
        if sd[k].dim() != (2 if k.endswith(".weight") else 1):
            raise PthConversionError(f"{src}: '{k}' has shape {list(sd[k].shape)}")
        if rows is None:
            rows = sd[k].shape[0]
        elif sd[k].shape[0] != rows:
            raise PthConversionError(f"{src}: '{k}' has {sd[k].shape[0]} rows, other item tables have {rows}")
    return rows


def _item_tables(src, sd, dataset, use_id: bool, skip_feature_check: bool, notes: list[str]):
    """Put item-indexed tables in our order. Returns (n_items, ID table or None, interest or None, dataset)."""
    rows = _item_rows(src, sd, use_id)
    interest_src = {ours: sd[k] for k, ours in _INTEREST.items() if k in sd}
    if interest_src and len(interest_src) != len(_INTEREST):
        raise PthConversionError(f"{src}: incomplete interest state: has {sorted(interest_src)}")
    id_table = sd["item_embedding.weight"] if use_id else None
    if dataset is None or rows is None:
        if use_id:
            raise PthConversionError(
                f"{src}: this is a transductive checkpoint: its item-ID table is in RecBole's internal item order, "
                "which depends on the dataset it was trained on. Pass --dataset DIR (the dataset folder, e.g. "
                ".../Scientific_mm_full) so the rows can be put in our order (id = file index + 1)")
        if dataset is not None:
            notes.append(f"--dataset {dataset} not needed: this checkpoint has no item-indexed tables")
        if rows is None:
            return 0, None, None, None
        notes.append(f"n_items = {rows - 1} from the original's item tables (RecBole counts only items that occur "
                     "in the .inter files; pass --dataset to take it from item2index)")
        if interest_src:
            notes.append("interest state not converted: its per-item cluster ids are in RecBole's item order; "
                         "pass --dataset to keep it (finetuning recomputes it anyway)")
        return rows - 1, None, None, None

    from .data.atomic import read_index_map
    folder = Path(dataset)
    name = _dataset_name(folder)
    n_items = len(read_index_map(folder / f"{name}.item2index"))
    tokens = recbole_item_tokens(folder, name)
    if len(tokens) != rows:
        raise PthConversionError(
            f"{src}: the checkpoint's item tables have {rows} rows but {folder}'s .inter files hold "
            f"{len(tokens) - 1} distinct items (+ padding): this is not the dataset it was trained on")
    try:
        file_idx = torch.tensor([int(t) for t in tokens[1:]], dtype=torch.long)
    except ValueError:
        raise PthConversionError(f"{folder}: item tokens must be integer file indices") from None
    if len(file_idx) and (int(file_idx.min()) < 0 or int(file_idx.max()) >= n_items):
        raise PthConversionError(f"{folder}: an item token is outside 0..{n_items - 1} (item2index)")
    if n_items > len(file_idx):
        notes.append(f"{n_items - len(file_idx)} items of item2index never occur in the .inter files: the original "
                     "had no rows for them (their ID rows and interest ids are left at 0)")
    if skip_feature_check:
        notes.append("feature-table check skipped (--skip-feature-check)")
    else:
        _verify_feature_tables(src, sd, folder, name, n_items, file_idx, notes)
    ours = torch.cat([torch.zeros(1, dtype=torch.long), file_idx + 1])  # our id of RecBole id r

    def permute(t: torch.Tensor) -> torch.Tensor:
        out = torch.zeros((n_items + 1,) + tuple(t.shape[1:]), dtype=t.dtype)
        out[ours] = t
        return out

    interest = None
    if interest_src:
        interest = {"interest_embeddings": interest_src["interest_embeddings"].float(),
                    "text_interest": permute(interest_src["text_interest"].long()),
                    "image_interest": permute(interest_src["image_interest"].long())}
    return n_items, (permute(id_table) if use_id else None), interest, str(folder)


def _check_interest(src, interest: dict, H: int) -> None:
    emb = interest["interest_embeddings"]
    if emb.dim() != 2 or emb.shape[1] != H:
        raise PthConversionError(f"{src}: 'interest_embeddings' has shape {list(emb.shape)}, expected [K+1, {H}]")
    for k in ("text_interest", "image_interest"):
        v = interest[k]
        if len(v) and (int(v.min()) < 0 or int(v.max()) >= emb.shape[0]):
            raise PthConversionError(f"{src}: {k} ids fall outside 0..{emb.shape[0] - 1}")


def _model_state(src, sd, config: dict, allow_unknown: bool, notes: list[str]) -> dict[str, torch.Tensor]:
    """The original's tensors under our keys; our model (built on the meta device: no memory, no
    RNG draws) says which keys and shapes there must be."""
    try:  # the sizes from the tensors and the values from its RecBole config, checked as for config.json
        cfg = MISSRecConfig.from_dict(config)
    except ValueError as e:
        raise PthConversionError(f"{src}: {e}") from None
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in MISSRec(cfg).state_dict().items()}
    known = set(expected) | set(_FEATURE_TABLES) | _DROPPED | set(_INTEREST) | {"item_embedding.weight"}
    unknown = sorted(set(sd) - known)
    if unknown and not allow_unknown:
        raise PthConversionError(
            f"{src}: state_dict keys that MISSRec does not have: {unknown}. This is probably not a MISSRec "
            "checkpoint (or a variant with extra modules); pass --allow-unknown to drop them")
    if unknown:
        notes.append(f"dropped unknown keys (--allow-unknown): {unknown}")
    state = {k: sd[k] for k in expected if k in sd}
    missing = sorted(set(expected) - set(state))
    errors = [f"missing {missing}"] if missing else []
    errors += [f"'{k}' has shape {list(v.shape)}, expected {list(expected[k])}" for k, v in state.items()
               if tuple(v.shape) != expected[k]]
    if errors:
        raise PthConversionError(f"{src}: " + "; ".join(errors))
    return state


def convert_original(orig: OriginalCheckpoint, dataset: str | os.PathLike | None = None,
                     allow_unknown: bool = False, skip_feature_check: bool = False) -> ConvertedCheckpoint:
    """Map an original checkpoint onto our config/model/interest tensors (nothing written)."""
    src, conf, notes = orig.path, orig.config, list(orig.notes)
    arch = _architecture(src, orig.state_dict)
    hp = _hyperparameters(src, conf, arch, notes)
    fusion, fusion_factor = _fusion(src, orig.state_dict, conf, notes)
    sd = {**orig.state_dict, "fusion_factor": fusion_factor}
    stage = _stage(sd, conf, notes)

    use_id = "item_embedding.weight" in sd and stage == "transductive_ft" and conf.get("id_type", "id") != "none"
    if "item_embedding.weight" in sd and not use_id:
        notes.append(f"dropped item_embedding.weight: unused by the original (train_stage={stage}, "
                     f"id_type={_brief(conf.get('id_type'))})")
    if use_id and tuple(sd["item_embedding.weight"].shape[1:]) != (arch["hidden_size"],):
        raise PthConversionError(f"{src}: 'item_embedding.weight' has shape "
                                 f"{list(sd['item_embedding.weight'].shape)}, expected [n, {arch['hidden_size']}]")
    n_items, id_table, interest, dataset_dir = _item_tables(src, sd, dataset, use_id, skip_feature_check, notes)
    if id_table is not None:
        sd["item_embedding.weight"] = id_table
    if interest is not None:
        _check_interest(src, interest, arch["hidden_size"])
    config = {"model_type": "missrec", **{k: int(v) for k, v in arch.items()}, **hp, "use_id": bool(use_id),
              "n_items": int(n_items), "fusion": fusion}
    if use_id:  # whose items the ID table holds, so later loads can check it (missrec/checkpoint.py)
        from .data.atomic import catalogue, read_index_map
        name = _dataset_name(Path(dataset_dir))
        config["catalogue"] = catalogue(name, read_index_map(Path(dataset_dir) / f"{name}.item2index"))
    model = _model_state(src, sd, config, allow_unknown, notes)
    casted = sorted(k for k, v in model.items() if v.is_floating_point() and v.dtype != torch.float32)
    if casted:
        notes.append(f"cast to float32: {casted}")
    model = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in model.items()}
    if interest is not None:
        interest = {k: v.detach().contiguous().clone() for k, v in interest.items()}
    config["source"] = {
        "format": "missrec-original-pth", "file": src.name, "sha256": orig.sha256, "epoch": orig.epoch,
        "train_stage": stage, "original_dataset": _jsonable(conf.get("dataset")), "dataset_dir": dataset_dir,
        "item_order": ("RecBole internal ids permuted to file index + 1 (missrec.pth.recbole_item_tokens)"
                       if dataset_dir else None),
        "extra": orig.extra, "notes": notes, "original_config": _jsonable(conf),
    }
    return ConvertedCheckpoint(config=config, model=model, interest=interest, notes=notes)


def _verify_feature_tables(src, sd, folder: Path, name: str, n_items: int, file_idx: torch.Tensor,
                           notes: list[str]) -> None:
    """The original keeps the dataset's features in RecBole order: row r = feature[int(token_r)].

    Comparing them with the dataset's files checks both that this is the right dataset and that
    our reconstruction of RecBole's item order is right.
    """
    from .data.atomic import read_features
    for key, suffix in _FEATURE_TABLES.items():
        if key not in sd:
            continue
        path = folder / f"{name}.{suffix}"
        if not path.is_file():
            notes.append(f"{path.name} absent: could not cross-check {key}")
            continue
        table = sd[key].float()
        feats = read_features(path, n_items=n_items, dim=table.shape[1], check_finite=False)
        expected = torch.from_numpy(np.asarray(feats[file_idx.numpy()], dtype=np.float32))
        got = table[1:]
        diff = (got - expected).abs()
        bad_rows = int((diff.amax(dim=1) > 1e-6).sum()) if len(got) else 0
        pad_ok = bool((table[0] == 0).all())
        if bad_rows or not pad_ok:
            raise PthConversionError(
                f"{src}: '{key}' does not match {path} under RecBole's item order: {bad_rows} of {len(got)} rows "
                f"differ (max |diff| {float(diff.max()) if len(got) else 0:.3g}){'' if pad_ok else ', padding row not 0'}. "
                "Either --dataset is not the dataset this checkpoint was finetuned on, or its features were "
                "re-extracted; pass --skip-feature-check to convert anyway")
        notes.append(f"checked: {key} equals {path.name} row for row under the recovered item order")


# ============================================================================ writing
def write_converted(conv: ConvertedCheckpoint, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check the mapped tensors against our model's keys and shapes, then write our checkpoint folder."""
    with torch.device("meta"):
        model = MISSRec(MISSRecConfig.from_dict(conv.config))
    model.load_state_dict(conv.model, assign=True)  # strict: every key, every shape
    return save_checkpoint(out_dir, model.config.to_dict(), conv.model, conv.interest, overwrite=overwrite,
                           model_cls=MISSRec)


def convert_pth(in_path: str | os.PathLike, out_dir: str | os.PathLike, dataset: str | os.PathLike | None = None,
                allow_unknown: bool = False, skip_feature_check: bool = False, overwrite: bool = False
                ) -> tuple[Path, ConvertedCheckpoint]:
    """Read an original ``.pth`` safely, map it, write our folder. Returns (folder, conversion)."""
    orig = read_original(in_path)
    conv = convert_original(orig, dataset=dataset, allow_unknown=allow_unknown,
                            skip_feature_check=skip_feature_check)
    return write_converted(conv, out_dir, overwrite=overwrite), conv
