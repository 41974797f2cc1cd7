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
from .errors import CorruptFileError

CARD = "README.md"
_METRIC_NAMES = {"recall": "Recall", "ndcg": "NDCG", "mrr": "MRR", "hit": "Hit"}


_MD_SPECIAL = set("\\`*_{}[]()|~")


def _one_line(value, limit: int = 200) -> str:
    """``str(value)`` on one line (whitespace runs collapsed), cut to ``limit`` characters."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def md(value, limit: int = 200) -> str:
    """``value`` as inert Markdown text: one line, HTML escaped, Markdown punctuation backslash-escaped.

    Strings in a card's body come from data files (a dataset's name, meta.json's encoder names,
    results.json); escaped, they show verbatim and cannot open a comment (``<!--``), a tag, a
    link, a heading or a table cell that hides the rest of the card.
    """
    text = _one_line(value, limit)
    out = []
    for ch in text:
        if ch == "&":
            out.append("&amp;")
        elif ch == "<":
            out.append("&lt;")
        elif ch == ">":
            out.append("&gt;")
        elif ch in _MD_SPECIAL:
            out.append("\\" + ch)
        elif ord(ch) < 32 or 0x7f <= ord(ch) < 0xa0 or ch in "\u2028\u2029":
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


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


def card_metadata(config: dict, results: dict | None = None, model_cls=None) -> dict:
    """The card's YAML front matter; ``model_cls`` (missrec/seqmodel.py) adds the model's own tags."""
    kind = config.get("model_type", "missrec")
    results = results or {}
    meta: dict = {"library_name": "missrec", "license": "mit",
                  "tags": ["recommendation", "sequential-recommendation", kind]
                  + list(model_cls.card_tags_for(config) if model_cls is not None else ())}
    dataset = _one_line(results["dataset"]) if results.get("dataset") else None  # YAML quotes the rest
    if dataset:
        meta["datasets"] = [dataset]
    encoder = _encoder_name(results.get("features"))
    if encoder:
        meta["feature_encoder"] = _one_line(encoder)
    metrics = _metrics(results)
    if metrics:
        meta["metrics"] = sorted({m["type"].split("@")[0] for m in metrics})
        meta["model-index"] = [{"name": f"{kind}-{dataset or 'model'}", "results": [{
            "task": {"type": "sequential-recommendation", "name": "Sequential recommendation (next item)"},
            "dataset": {"name": str(dataset or "unknown"), "type": str(dataset or "unknown")},
            "metrics": metrics}]}]
    return meta


def model_card(config: dict, results: dict | None = None, model_cls=None) -> str:
    meta = card_metadata(config, results, model_cls)
    kind = config.get("model_type", "missrec")
    results = results or {}
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", ""]
    lines += [f"# {getattr(model_cls, 'card_title', '') or kind}", ""]
    if model_cls is not None:
        lines += [model_cls.card_summary(config)]
    lines += ["", "## Use", "", "With the `missrec` package installed (`pip install .` in its checkout):", "", "```bash",
              "missrec-finetune --pretrained OWNER/THIS_REPO --data_root DATA --dataset NAME   # transfer / continue",
              "missrec-recommend OWNER/THIS_REPO --data_root DATA --dataset NAME --history ID1 ID2 --k 10",
              "```", "", "Files: `config.json`, `model.safetensors`"
              + "".join(f", {f}" for f in getattr(model_cls, "card_files", ())) + "."]
    if results.get("dataset"):
        encoder = _encoder_name(results.get("features"))
        lines += ["", "## Training data", "", f"Dataset: {md(results['dataset'])}"
                  + (f"; item features from {md(encoder)}." if encoder else ".")]
    test = {k: v for k, v in (results.get("test") or {}).items() if isinstance(v, (int, float))}
    if test:
        keys = list(test)
        lines += ["", "## Results", "", "Full ranking over all items, leave-one-out split.", "",
                  "| split | " + " | ".join(md(k) for k in keys) + " |", "|---|" + "---|" * len(keys)]
        for split in ("valid", "test"):
            vals = results.get(split) or {}
            if all(isinstance(vals.get(k), (int, float)) for k in keys):
                lines.append(f"| {split} | " + " | ".join(f"{vals[k]:.4f}" for k in keys) + " |")
        if "best_epoch" in results:
            lines += ["", f"Best epoch {md(results['best_epoch'])} of {md(results.get('epochs_run', '?'))}."]
    keep = {k: v for k, v in config.items() if k not in ("source",) and not isinstance(v, (dict, list))}
    lines += ["", "## Configuration", "", "```json", json.dumps(keep, indent=1), "```", ""]
    return "\n".join(lines)


def write_model_card(folder: str | Path, results: dict | None = None, model_cls=None) -> Path:
    """Write ``<folder>/README.md`` from its config.json and ``results`` (default: its results.json);
    ``model_cls``, the model's class (missrec/model_registry.py), gives its title and description."""
    folder = Path(folder)
    config = _read_json(folder / "config.json") or {}
    if results is None:
        results = _read_json(folder / "results.json")
    path = folder / CARD
    atomic_write_text(path, model_card(config, results, model_cls))
    return path


def read_card_metadata(path: str | Path) -> dict:
    """The YAML front matter of a model card (for tests and tools)."""
    text = Path(path).read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        raise CorruptFileError(f"{path}: no YAML front matter")
    end = text.index("\n---", 4)
    return yaml.safe_load(text[4:end]) or {}
