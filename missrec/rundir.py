"""The output folder of a training run: claimed, locked, and resumed only from complete, matching state.

- A run into a folder that already holds files refuses unless it resumes (``--resume_from``) or
  starts over (``--overwrite_output_dir``, which moves the old contents aside to a timestamped
  sibling ``NAME.old-YYYYmmdd-HHMMSS``; nothing is deleted).
- A lock file (:data:`LOCK_NAME`, held through ``filelock``) makes a second run into the same
  folder fail at once instead of mixing its files with the first's.
- The run's settings (every option that changes what it computes) are recorded in
  ``run_args.json`` and in each checkpoint's ``trainer_state.json``; a resume with other settings
  is refused, naming them.
- A checkpoint is checked file by file, and ``trainer_state.json`` field by field, before any
  work; accelerate's RNG state files are only checked for presence and integrity here (they are
  pickles: accelerate itself reads them in ``Accelerator.load_state``).

Used by the training loop (missrec/trainer.py).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
import zipfile
from pathlib import Path
from typing import Iterator

from .errors import CorruptFileError, OptionError, UserError, check_safetensors, read_json
from .fsutil import atomic_write_json, atomic_write_text

LOCK_NAME = ".missrec-run.lock"
RUN_ARGS = "run_args.json"
TRAIN_LOG = "train_log.jsonl"
TRAINER_STATE = "trainer_state.json"

# Options that do not change what a run computes: a resume may change them (e.g. more --epochs).
FREE_OPTIONS = frozenset({
    "output_dir", "resume_from", "overwrite_output_dir", "resume_inexact", "epochs", "max_steps", "patience",
    "save_every", "save_steps", "save_total_limit", "log_with", "log_every", "progress", "cpu", "threads",
    "eval_batch_size", "attention_impl", "data_root", "plot", "config", "debug"})


# ----------------------------------------------------------------------------- run settings
def run_settings(*options) -> dict:
    """The settings of a run from its parsed option dataclasses, minus :data:`FREE_OPTIONS`."""
    import dataclasses
    out = {}
    for obj in options:
        for f in dataclasses.fields(obj):
            if f.name not in FREE_OPTIONS:
                out[f.name] = getattr(obj, f.name)
    return json.loads(json.dumps(out, default=str))  # as it reads back from JSON (tuples -> lists)


def settings_differ(saved: dict, now: dict) -> list[str]:
    """``--name SAVED (this run: NOW)`` for each setting recorded in both that differs."""
    return [f"--{k} {_show(saved[k])} (this run: {_show(now[k])})"
            for k in sorted(set(saved) & set(now)) if saved[k] != now[k]]


def _show(v) -> str:
    return json.dumps(v) if v is None or isinstance(v, (bool, list, dict)) or v == "" else str(v)


def check_settings(where: Path, saved, now: dict, fix: str) -> None:
    if not isinstance(saved, dict):
        print(f"note: {where}: records no run settings (written by an older version); they are not compared",
              flush=True)
        return
    diff = settings_differ(saved, now)
    if diff:
        raise UserError(where, f"was trained with {', '.join(diff)}: {fix}")


# ----------------------------------------------------------------------------- the output folder
def _contents(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME) if out.is_dir() else []


def _listing(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f", ... ({len(names)} entries)" if len(names) > 5 else "")


def check_output_dir(out: Path, resume_from: str, overwrite: bool) -> None:
    """Read-only: refuse an output folder that is a file, or holds a run this one would mix with."""
    if overwrite and resume_from:
        raise OptionError("--overwrite_output_dir", "starts a new run; it cannot be combined with "
                                                    "--resume_from (drop one of them)")
    if out.exists() and not out.is_dir():
        raise UserError(f"--output_dir {out}", "is a file, not a folder: choose a folder")
    names = _contents(out)
    if names and not resume_from and not overwrite:
        raise UserError(f"--output_dir {out}", f"already holds a run ({_listing(names)}): continue it with "
                        f"--resume_from latest, start over with --overwrite_output_dir (moves the old files aside "
                        f"to {out.name}.old-<date>-<time>), or choose another --output_dir")


def _lock(out: Path):
    from filelock import FileLock, Timeout
    lock = FileLock(str(out / LOCK_NAME), timeout=0, preserve_lock_file=True)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(f"--output_dir {out}", f"another run is using this folder now (it holds {LOCK_NAME}): "
                        "wait for it to end, or choose another --output_dir") from None
    return lock


def claim_output_dir(out: Path, resume_from: str, overwrite: bool):
    """Create and lock ``out`` (main process only); with ``overwrite`` move what it holds aside first.

    Returns the held lock; it is released by ``release()``, at garbage collection or at exit.
    """
    out.mkdir(parents=True, exist_ok=True)
    lock = _lock(out)
    try:
        check_output_dir(out, resume_from, overwrite)  # again, now that no other run can start here
        names = _contents(out)
        if overwrite and names:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            aside, n = out.with_name(f"{out.name}.old-{stamp}"), 1
            while aside.exists():
                n += 1
                aside = out.with_name(f"{out.name}.old-{stamp}-{n}")
            os.replace(out, aside)  # the held lock file moves with it: no run can start in it meanwhile
            out.mkdir()
            new = _lock(out)
            lock.release()
            lock = new
            print(f"--overwrite_output_dir: moved the previous contents of {out} ({_listing(names)}) to {aside}; "
                  "delete that folder when you no longer need it", flush=True)
    except BaseException:
        lock.release()
        raise
    return lock


def check_fresh_start(out: Path, settings: dict) -> None:
    """``--resume_from latest`` found no checkpoint: start fresh only over files of this same run."""
    names = [n for n in _contents(out) if n not in (RUN_ARGS, TRAIN_LOG) and not n.endswith((".tmp", ".old"))]
    if not (out / RUN_ARGS).is_file():
        if names:
            raise UserError(f"--output_dir {out}", f"--resume_from latest: holds no training checkpoint but other "
                            f"files ({_listing(names)}): start over with --overwrite_output_dir, or choose "
                            "another --output_dir")
        return
    saved = read_json(out / RUN_ARGS, "run settings file", fix="delete it, or use --overwrite_output_dir")
    check_settings(out / RUN_ARGS, saved.get("run_settings") if isinstance(saved, dict) else None, settings,
                   "resume with the same options, or start over with --overwrite_output_dir")


def write_run_args(out: Path, settings: dict) -> None:
    atomic_write_json(out / RUN_ARGS, {"run_settings": settings})


# ----------------------------------------------------------------------------- trainer_state.json
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not (isinstance(v, float) and math.isnan(v))


# field: (test, what it must be)
STATE_FIELDS = {
    "epoch": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "step_in_epoch": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "global_step": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "epoch_started": (lambda v: isinstance(v, bool), "true or false"),
    "best_metric": (_is_num, "a number (-Infinity before the first validation)"),
    "best_epoch": (lambda v: _is_int(v) and v >= -1, "an integer >= -1"),
    "bad_epochs": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "epoch_loss_sum": (lambda v: _is_num(v) and math.isfinite(v), "a finite number"),
    "epoch_loss_steps": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "history": (lambda v: isinstance(v, list) and all(isinstance(h, dict) for h in v), "a list of objects"),
    "done": (lambda v: isinstance(v, bool), "true or false"),
    "run_settings": (lambda v: isinstance(v, dict), "an object"),
}
OPTIONAL_STATE_FIELDS = ("run_settings",)  # absent in checkpoints written before it existed


def read_trainer_state(path: Path, steps_per_epoch: int | None = None, fix: str = "") -> dict:
    """``trainer_state.json`` checked field by field (type and range); errors name the file and key."""
    fix = fix or "delete that checkpoint folder to resume from an older one"
    d = read_json(path, "trainer state", fix=fix)
    if not isinstance(d, dict):
        raise CorruptFileError(path, f"expected a JSON object, got {type(d).__name__}; {fix}")
    unknown = sorted(set(d) - set(STATE_FIELDS))
    if unknown:
        raise CorruptFileError(path, f"unknown key {unknown[0]!r} (expected {', '.join(STATE_FIELDS)}); {fix}")
    for key, (ok, what) in STATE_FIELDS.items():
        if key not in d:
            if key in OPTIONAL_STATE_FIELDS:
                continue
            raise CorruptFileError(path, f"{key}: missing (expected {what}); {fix}")
        if not ok(d[key]):
            raise CorruptFileError(path, f"{key}: must be {what}, got {json.dumps(d[key])[:80]}; {fix}")
    if steps_per_epoch is not None:
        if d["step_in_epoch"] > steps_per_epoch:
            raise CorruptFileError(path, f"step_in_epoch: {d['step_in_epoch']} is beyond the epoch's {steps_per_epoch} "
                                         f"steps (this run's training split and --train_batch_size); {fix}")
        if d["global_step"] != d["epoch"] * steps_per_epoch + d["step_in_epoch"]:
            raise CorruptFileError(path, f"global_step: {d['global_step']} does not match epoch {d['epoch']} and "
                                         f"step_in_epoch {d['step_in_epoch']} at {steps_per_epoch} steps per epoch "
                                         f"(this run's training split and --train_batch_size); {fix}")
    return d


def read_global_step(path: Path) -> int:
    """Only ``global_step`` of a ``trainer_state.json`` (to order checkpoints), checked."""
    fix = "delete that checkpoint folder to resume from an older one"
    d = read_json(path, "trainer state", fix=fix)
    if not isinstance(d, dict):
        raise CorruptFileError(path, f"expected a JSON object, got {type(d).__name__}; {fix}")
    gs = d.get("global_step")
    if not _is_int(gs) or gs < 0:
        what = "missing" if "global_step" not in d else f"got {json.dumps(gs)[:40]}"
        raise CorruptFileError(path, f"global_step: must be an integer >= 0, {what}; {fix}")
    return gs


# ----------------------------------------------------------------------------- checkpoint files
RNG_FILE = "random_states_{}.pkl"


def _torch_file_problem(p: Path) -> str | None:
    """Why ``p`` is not an intact ``torch.save`` archive (zip members and their CRCs), or None."""
    try:
        with zipfile.ZipFile(p) as z:
            if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in z.namelist()):
                return "truncated or damaged (not a torch.save file)"
            bad = z.testzip()
            if bad is not None:
                return f"truncated or damaged (member {bad} fails its checksum)"
    except (zipfile.BadZipFile, EOFError):
        return "truncated or damaged (not a complete torch.save file)"
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    return None


def _file_problem(p: Path) -> str | None:
    if not p.is_file():
        return "missing"
    if p.stat().st_size == 0:
        return "empty"
    if p.suffix == ".safetensors":
        why = check_safetensors(p)
        return None if why is None else f"not a readable safetensors file ({why[:120]})"
    return _torch_file_problem(p)


def check_resume_files(folder: Path, num_processes: int, has_scaler: bool,
                       item_state: bool = True) -> tuple[list, list]:
    """Problems of the files a resume from ``folder`` reads, as ([(path, why)] required, [(path, why, lost)] inexact).

    Required: accelerate's model, optimizer and scheduler state (and the fp16 scaler). The RNG states
    of every process and ``interest.safetensors`` can be done without (``--resume_inexact``): the
    second list says what is then lost. ``item_state``: the model keeps interest clusters (MISSRec;
    an ID-only model has none).
    """
    acc = folder / "accelerate"
    required = [acc / "model.safetensors", acc / "optimizer.bin", acc / "scheduler.bin"]
    if has_scaler:
        required.append(acc / "scaler.pt")
    hard = [(p, why) for p in required if (why := _file_problem(p))]
    soft = [(acc / RNG_FILE.format(i), "the random streams (dropout, augmentation) of process "
                                       f"{i} differ from the uninterrupted run's") for i in range(num_processes)]
    if item_state:
        soft.append((folder / "interest.safetensors", "the interest clusters of the epoch in progress are "
                                                      "discovered again from the resumed weights"))
    soft = [(p, why, lost) for p, lost in soft if (why := _file_problem(p))]
    return hard, soft


@contextlib.contextmanager
def watch_accelerate_rng() -> Iterator[list]:
    """Collect accelerate's "could not load random states" (it skips a bad RNG file with an INFO log only)."""
    seen: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record):
            msg = record.getMessage()
            if "Could not load random states" in msg:
                seen.append(msg)

    log = logging.getLogger("accelerate.checkpointing")
    handler, level, propagate = Catch(logging.INFO), log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # the other INFO lines of load_state stay quiet, as before
    try:
        yield seen
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        log.propagate = propagate


# ----------------------------------------------------------------------------- train_log.jsonl
class TrainLog:
    """``train_log.jsonl`` in the output folder: one JSON object per line (main process only)."""

    def __init__(self, out: Path, resume_step: int | None):
        self.path = out / TRAIN_LOG
        if resume_step is None:
            atomic_write_text(self.path, "")
        elif self.path.is_file():
            # Keep what led up to the resumed checkpoint; steps after it are run (and logged) again.
            kept = []
            for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line cut by a kill
                if isinstance(row, dict) and _is_int(row.get("step")) and row["step"] <= resume_step:
                    kept.append(line)
            atomic_write_text(self.path, "".join(f"{ln}\n" for ln in kept))
        self.file = open(self.path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self.file.write(json.dumps(row, sort_keys=False) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()
