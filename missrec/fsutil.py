"""Atomic file output and checksums.

Every writer in the project goes through these helpers so that a crash or a bad input never
leaves a half-written file where a good one (or none) was expected.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from safetensors.torch import save_file


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; keep the permissions open() would give
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; shared clusters expect the usual mode
    try:
        yield tmp
        replace_dir(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def usual_mode(path: str | os.PathLike) -> None:
    """Give ``path`` the permissions ``open()``/``mkdir()`` would under the umask (0644/0755 usually).

    safetensors (our checkpoints, accelerate's state) and mkstemp create files 0600; every file the
    project writes gets the same mode instead.
    """
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~_umask())


def save_safetensors(tensors: dict, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """``safetensors.torch.save_file`` with the usual file permissions (it makes the file 0600)."""
    save_file(tensors, str(path), metadata=metadata)
    usual_mode(path)


def replace_dir(src: Path, dst: Path) -> None:
    """Rename the finished folder ``src`` onto ``dst``, replacing any old ``dst``.

    The old folder is moved aside first, so at no moment is there no complete copy. Every file
    and folder inside ``src`` gets the usual permissions first (libraries writing into it, such as
    accelerate's safetensors state, make 0600 files).
    """
    for p in [src, *Path(src).rglob("*")]:
        if not p.is_symlink():
            usual_mode(p)
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old)
    else:
        os.replace(src, dst)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
