"""Errors a user can fix: each names the file or option at fault and what to do.

Library code raises these; ``missrec.cli.run`` prints them as one ``error: ...`` line. They are
ValueErrors so callers that catch bad input as ``ValueError`` keep working.
"""
from __future__ import annotations

import contextlib
import json
import os
import zipfile
from pathlib import Path
from typing import Iterator


class UserError(ValueError):
    """``UserError(where, what)`` -> ``"<where>: <what>"``; ``UserError(message)`` is kept as is."""

    def __init__(self, where, message: str | None = None):
        if message is None:
            where, message = None, str(where)
        self.where, self.message = (None if where is None else str(where)), message
        super().__init__(message if where is None else f"{where}: {message}")


class OptionError(UserError):
    """A command-line option (or its YAML value) is invalid; ``where`` is ``--name`` or ``FILE.yaml: key``."""


class CorruptFileError(UserError):
    """A file exists but cannot be read (truncated, not the expected format, not UTF-8)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named is not there (still a FileNotFoundError for callers catching that)."""


class OutputExistsError(UserError, FileExistsError):
    """The output path is taken by something this run must not replace (still a FileExistsError)."""


class DataError(UserError):
    """The data given (a dataset's contents, a split, a feature matrix) cannot be used as asked."""


class DivergenceError(UserError):
    """Training produced a non-finite loss or gradient; shared by the sequential Trainer and the graph loop.

    ``DivergenceError.at(epoch, step, detail)`` -> ``training diverged at step S (epoch E): <detail>; <what
    to do>`` (``in epoch E`` when the loop has no step count), always one line.
    """

    HINT = "lower the learning rate"

    @classmethod
    def at(cls, epoch: int, step: int | None = None, detail: str = "non-finite loss",
           hint: str = "") -> "DivergenceError":
        where = f"at step {step} (epoch {epoch})" if step is not None else f"at epoch {epoch}"
        return cls(f"training diverged {where}: {detail}; {hint or cls.HINT}")


def not_utf8(path: str | os.PathLike, err: UnicodeDecodeError | None = None) -> CorruptFileError:
    """The error for a text file with non-UTF-8 bytes, naming the first bad line."""
    path = Path(path)
    line = None
    try:
        data = path.read_bytes()
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        err = e
    except OSError:
        pass
    where = f"{path}:{line}" if line is not None else str(path)
    byte = "" if err is None else f" (byte 0x{err.object[err.start]:02x})"
    return CorruptFileError(where, f"not UTF-8 text{byte}; re-save the file as UTF-8")


def read_json(path: str | os.PathLike, what: str = "JSON file", fix: str = "restore or delete it"):
    """Parse a JSON file; a missing, truncated or non-UTF-8 file is an error naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(path, f"not found (expected a {what})") from None
    except UnicodeDecodeError as e:
        raise not_utf8(path, e) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CorruptFileError(path, f"not valid JSON ({e}); the {what} is damaged: {fix}") from None


def check_safetensors(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a readable safetensors file, or None when its header and size add up."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), "pt") as f:
            f.keys()
    except Exception as e:  # noqa: BLE001 - any failure to open it is the answer
        return f"{type(e).__name__}: {e}"
    return None


def _damaged_file(folder: Path) -> Path | None:
    """The first file under ``folder`` that fails a cheap integrity check (zip / safetensors)."""
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        if p.stat().st_size == 0:
            return p
        if p.suffix == ".safetensors" and check_safetensors(p):
            return p
        if p.suffix in (".bin", ".pt", ".pth", ".pkl"):
            with open(p, "rb") as f:
                is_zip = f.read(4) == b"PK\x03\x04"
            if is_zip:
                try:
                    with zipfile.ZipFile(p) as z:
                        if z.testzip() is not None:
                            return p
                except (zipfile.BadZipFile, OSError, EOFError):
                    return p
    return None


@contextlib.contextmanager
def reading(path: str | os.PathLike, what: str = "file",
            fix: str = "restore it, or delete it and write it again") -> Iterator[None]:
    """Turn a library's failure to parse ``path`` (a file or a folder of files) into a CorruptFileError.

    For a folder the message names the damaged file inside it when a cheap check can find it.
    """
    path = Path(path)
    try:
        yield
    except UserError:
        raise
    except UnicodeDecodeError as e:
        raise not_utf8(path, e) if path.is_file() else CorruptFileError(path, f"not UTF-8 text ({e})") from e
    except (OSError, RuntimeError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        if isinstance(e, FileNotFoundError):
            raise
        if isinstance(e, RuntimeError) and "size mismatch" in str(e):
            raise UserError(path, "holds weights of other shapes than this model: use the model options it "
                                  "was saved with") from e
        bad = path if path.is_file() else (_damaged_file(path) if path.is_dir() else None)
        where = bad or path
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CorruptFileError(where, f"cannot read this {what}: truncated or damaged ({first[:200]}); {fix}") from e
    except Exception as e:  # safetensors' SafetensorError derives from Exception only
        if type(e).__name__ != "SafetensorError":
            raise
        where = path if path.is_file() else ((_damaged_file(path) if path.is_dir() else None) or path)
        raise CorruptFileError(where, f"not a readable safetensors file: truncated or damaged ({e}); {fix}") from e
