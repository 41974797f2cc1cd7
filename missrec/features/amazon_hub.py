"""Fetch one category of the Amazon Reviews 2023 raw dumps from the Hugging Face Hub.

The release lives in the Hub dataset repo ``McAuley-Lab/Amazon-Reviews-2023`` as
``raw/review_categories/<Cat>.jsonl`` and ``raw/meta_categories/meta_<Cat>.jsonl``. Its loading
script no longer runs with ``datasets`` >= 4, so the raw files are fetched with
``huggingface_hub.hf_hub_download`` into ``<raw_dir>/raw/...`` (an interrupted download resumes;
files already there are used as they are), then prepared like any local dump.
"""
from __future__ import annotations

from pathlib import Path

from huggingface_hub import hf_hub_download

from ..data.atomic import DataFormatError

REPO_ID = "McAuley-Lab/Amazon-Reviews-2023"


def hub_files(category: str) -> tuple[str, str]:
    """(reviews, metadata) paths of a category inside the Hub repo."""
    return f"raw/review_categories/{category}.jsonl", f"raw/meta_categories/meta_{category}.jsonl"


def file_url(filename: str, repo_id: str = REPO_ID, revision: str = "main") -> str:
    return f"https://huggingface.co/datasets/{repo_id}/resolve/{revision}/{filename}"


def fetch_category(category: str, raw_dir: str | Path, repo_id: str = REPO_ID,
                   revision: str | None = None) -> tuple[Path, Path]:
    """Local paths of the category's review and metadata files, downloading what is missing."""
    raw_dir = Path(raw_dir)
    out = []
    for filename in hub_files(category):
        local = raw_dir / filename
        if local.is_file():
            print(f"[hub] {local}: present, not downloaded again", flush=True)
            out.append(local)
            continue
        print(f"[hub] downloading {repo_id}/{filename} -> {local}", flush=True)
        try:
            got = hf_hub_download(repo_id=repo_id, filename=filename, repo_type="dataset", revision=revision,
                                  local_dir=raw_dir)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # offline, unknown category, auth: say what to fetch by hand
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            urls = " and ".join(file_url(f, repo_id, revision or "main") for f in hub_files(category))
            raise DataFormatError(f"could not download {filename} from the Hub dataset {repo_id} "
                                  f"({type(e).__name__}: {reason}); download {urls} by hand into "
                                  f"{raw_dir / 'raw'}/review_categories/ and meta_categories/ and run the same "
                                  "command again") from None
        out.append(Path(got))
    return out[0], out[1]
