"""``missrec-push OUT_DIR REPO_ID``: upload a checkpoint to the Hugging Face Hub as a model repo.

OUT_DIR is a checkpoint folder (``config.json`` + ``model.safetensors`` [+ ``interest.safetensors``])
or a finetuning output folder holding ``best/`` and ``results.json``. Only the model files, the
model card (``README.md``, rebuilt here with the metrics of ``results.json`` when one is found in
the folder or beside it) and ``results.json`` are uploaded: never optimizer or RNG state. The
upload goes through ``huggingface_hub`` (token from ``HF_TOKEN`` or ``huggingface-cli login``);
``--pretrained REPO_ID`` then downloads it again (missrec/hub.py).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from huggingface_hub import HfApi

from . import cli
from .checkpoint import read_config_dict
from .model_registry import model_class
from .modelcard import write_model_card
from .errors import CorruptFileError, MissingFileError

MODEL_FILES = ("config.json", "model.safetensors", "interest.safetensors")


def find_checkpoint(out_dir: Path) -> tuple[Path, Path | None]:
    """(checkpoint folder, results.json or None) of OUT_DIR."""
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        ckpt = out_dir
    elif (out_dir / "best" / "config.json").is_file():
        ckpt = out_dir / "best"
    else:
        raise MissingFileError(f"{out_dir}: not a checkpoint folder (no config.json) nor a finetuning output "
                                "folder with best/config.json")
    if not (ckpt / "model.safetensors").is_file():
        raise MissingFileError(f"{ckpt / 'model.safetensors'}: not found")
    results = next((p for p in (ckpt / "results.json", ckpt.parent / "results.json") if p.is_file()), None)
    return ckpt, results


def stage(ckpt: Path, results: Path | None, dest: Path) -> list[str]:
    """Copy what gets uploaded into ``dest`` and write its model card; returns the file names."""
    for name in MODEL_FILES:
        if (ckpt / name).is_file():
            shutil.copy2(ckpt / name, dest / name)
    res = None
    if results is not None:
        try:
            res = json.loads(results.read_text(encoding="utf-8"))
        except ValueError as e:
            raise CorruptFileError(f"{results}: not valid JSON ({e})") from None
        shutil.copy2(results, dest / "results.json")
    config = read_config_dict(dest)
    write_model_card(dest, res, model_class(config.get("model_type", "missrec"), where=f"{ckpt / 'config.json'}: model_type"))
    return sorted(p.name for p in dest.iterdir())


def push(out_dir: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
         commit_message: str | None = None, api: HfApi | None = None) -> str:
    ckpt, results = find_checkpoint(Path(out_dir))
    api = api or HfApi()
    with tempfile.TemporaryDirectory(prefix="missrec-push-") as tmp:
        files = stage(ckpt, results, Path(tmp))
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(folder_path=tmp, repo_id=repo_id, repo_type="model", revision=revision,
                                 commit_message=commit_message or f"Upload {ckpt.name} ({', '.join(files)})")
    return str(getattr(info, "commit_url", None) or info)


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="missrec-push", description=__doc__.split("\n\n")[0],
                           epilog="Example: missrec-push outputs/finetune-scientific you/missrec-scientific")
    p.add_argument("out_dir", type=Path, help="checkpoint folder, or a finetuning output folder holding best/")
    p.add_argument("repo_id", help="Hub model repo, owner/name (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--revision", default=None, help="branch to push to (default: main)")
    p.add_argument("--message", default=None, help="commit message")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``missrec-push``: 0; 2 after one ``error:`` line for a bad folder; 1 when the upload itself fails."""
    return cli.run(_main, argv, exit=False)


def _main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    find_checkpoint(args.out_dir)  # a bad folder: a user error (status 2), before any Hub call
    try:
        url = push(args.out_dir, args.repo_id, private=args.private, revision=args.revision,
                   commit_message=args.message)
    except (FileNotFoundError, ValueError):
        raise
    except Exception as e:  # network / auth failures of huggingface_hub: one line, what to do
        cli.error_line(f"upload to {args.repo_id} failed ({type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''}); check the network and your token "
                       "(HF_TOKEN or `huggingface-cli login`)")
        return 1
    print(f"pushed {args.out_dir} to {args.repo_id}: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
