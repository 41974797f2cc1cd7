"""Model card (``README.md`` with YAML metadata) for a checkpoint folder, as the Hugging Face Hub shows it.

The card is built from what lies in the folder: ``config.json`` (model type and sizes), and, when
present, ``results.json`` written by finetuning (dataset, feature encoder, test/valid metrics).
:func:`missrec.checkpoint.write_files` (the one checkpoint writer) writes it with every checkpoint; finetuning rewrites
the best checkpoint's card once its test results exist, and ``missrec-push`` refreshes it before
uploading.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from .fsutil import atomic_write_text

CARD = "README.md"
_METRIC_NAMES = {"recall": "Recall", "ndcg": "NDCG", "mrr": "MRR", "hit": "Hit"}


def _read_json(path: Path) -> dict | None:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def _encoder_name(features) -> str | None:
    """A short name for the feature encoder recorded in a dataset's meta.json ('encoder' entry)."""
    if not isinstance(features, dict):
        return None
    files = features.get("files") if isinstance(features.get("files"), dict) else {}
    names = []
    for rec in [features, *files.values()]:
        if not isinstance(rec, dict):
            continue
        for key in ("source", "model", "text_encoder"):
            v = rec.get(key)
            if isinstance(v, str) and v and v not in names:
                names.append(v)
                break
    return " + ".join(names) or None


def _metrics(results: dict) -> list[dict]:
    out = []
    for split in ("test", "valid"):
        for k, v in (results.get(split) or {}).items():
            if not isinstance(v, (int, float)) or "@" not in k:
                continue
            base, cut = k.split("@", 1)
            out.append({"type": k, "value": round(float(v), 4),
                        "name": f"{_METRIC_NAMES.get(base, base)}@{cut} ({split}, full ranking)"})
    return out


def card_metadata(config: dict, results: dict | None = None) -> dict:
    kind = config.get("model_type", "missrec")
    results = results or {}
    meta: dict = {"library_name": "missrec", "license": "mit",
                  "tags": ["recommendation", "sequential-recommendation", kind]
                  + ((["multimodal" if config.get("image_dim", 1) else "text-only", "pretrain-then-transfer"])
                     if kind == "missrec" else ["id-based"])}
    dataset = results.get("dataset")
    if dataset:
        meta["datasets"] = [str(dataset)]
    encoder = _encoder_name(results.get("features"))
    if encoder:
        meta["feature_encoder"] = encoder
    metrics = _metrics(results)
    if metrics:
        meta["metrics"] = sorted({m["type"].split("@")[0] for m in metrics})
        meta["model-index"] = [{"name": f"{kind}-{dataset or 'model'}", "results": [{
            "task": {"type": "sequential-recommendation", "name": "Sequential recommendation (next item)"},
            "dataset": {"name": str(dataset or "unknown"), "type": str(dataset or "unknown")},
            "metrics": metrics}]}]
    return meta


def model_card(config: dict, results: dict | None = None) -> str:
    meta = card_metadata(config, results)
    kind = config.get("model_type", "missrec")
    results = results or {}
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", ""]
    if kind == "sasrec":
        lines += ["# SASRec (ID-only baseline)", "",
                  "Self-attentive sequential recommender over item IDs, trained with full-softmax "
                  "cross-entropy by the MISSRec (rebuilt) training loop, as the ID-only baseline of its tables."]
    else:
        mode = "transductive (item IDs + modalities)" if config.get("use_id") else "inductive (modalities only)"
        lines += ["# MISSRec", "",
                  "Multi-modal interest-aware sequential recommender (MISSRec, ACM MM 2023), "
                  f"{mode}; text features of dim {config.get('text_dim')}; "
                  + (f"image features of dim {config['image_dim']}." if config.get("image_dim") else "no image features.")]
    lines += ["", "## Use", "", "With the `missrec` package installed (`pip install .` in its checkout):", "", "```bash",
              "missrec-finetune --pretrained OWNER/THIS_REPO --data_root DATA --dataset NAME   # transfer / continue",
              "missrec-recommend OWNER/THIS_REPO --data_root DATA --dataset NAME --history ID1 ID2 --k 10",
              "```", "", "Files: `config.json`, `model.safetensors`"
              + (", `interest.safetensors` (interest clusters)" if kind == "missrec" else "") + "."]
    if results.get("dataset"):
        lines += ["", "## Training data", "", f"Dataset: `{results['dataset']}`"
                  + (f"; item features from `{_encoder_name(results.get('features'))}`." if _encoder_name(results.get("features")) else ".")]
    test = {k: v for k, v in (results.get("test") or {}).items() if isinstance(v, (int, float))}
    if test:
        keys = list(test)
        lines += ["", "## Results", "", "Full ranking over all items, leave-one-out split.", "",
                  "| split | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        for split in ("valid", "test"):
            vals = results.get(split) or {}
            if all(isinstance(vals.get(k), (int, float)) for k in keys):
                lines.append(f"| {split} | " + " | ".join(f"{vals[k]:.4f}" for k in keys) + " |")
        if "best_epoch" in results:
            lines += ["", f"Best epoch {results['best_epoch']} of {results.get('epochs_run', '?')}."]
    keep = {k: v for k, v in config.items() if k not in ("source",) and not isinstance(v, (dict, list))}
    lines += ["", "## Configuration", "", "```json", json.dumps(keep, indent=1), "```", ""]
    return "\n".join(lines)


def write_model_card(folder: str | Path, results: dict | None = None) -> Path:
    """Write ``<folder>/README.md`` from its config.json and ``results`` (default: its results.json)."""
    folder = Path(folder)
    config = _read_json(folder / "config.json") or {}
    if results is None:
        results = _read_json(folder / "results.json")
    path = folder / CARD
    atomic_write_text(path, model_card(config, results))
    return path


def read_card_metadata(path: str | Path) -> dict:
    """The YAML front matter of a model card (for tests and tools)."""
    text = Path(path).read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        raise ValueError(f"{path}: no YAML front matter")
    end = text.index("\n---", 4)
    return yaml.safe_load(text[4:end]) or {}
