"""The one training loop shared by pretraining and finetuning (plain PyTorch + accelerate).

A *task* supplies the objective module, how to turn row indices into a batch, and what to do
at the start / end of each epoch (interest discovery; validation metrics). The loop owns data
order, optimisation, logging, checkpoints and -- given an ``EarlyStopping`` -- model selection:
the best epoch's model in ``best_dir`` and patience.

Data order is a seeded permutation per epoch of the GLOBAL batch; process r takes the r-th
contiguous slice of it, so N processes see exactly the rows one process would.

Every folder is written under a fixed temporary name (``.checkpoint-3.tmp``, ``.best.tmp``) and
renamed into place; leftovers of a killed write are cleaned up when the next run starts.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from .args import TrainArgs
from .checkpoint import check_resumable, write_model_files
from .errors import CorruptFileError, DataError, DivergenceError, MissingFileError, OptionError, UserError, read_json, reading
from .fsutil import atomic_write_json, replace_dir
from . import rundir
from .rundir import TRAINER_STATE
CHECKPOINT_NAME = r"checkpoint-(?:\d+|step\d+)"


TrainingDivergedError = DivergenceError  # the name this module used before both loops shared it

RESUME_FIX = "delete that checkpoint folder to resume from an older one, or use a new --output_dir"


def make_accelerator(args: TrainArgs) -> Accelerator:
    from .threads import apply_threads
    apply_threads(getattr(args, "threads", 0))  # first, before torch starts its thread pools
    use_cpu = args.cpu or not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
    mp = args.mixed_precision
    if mp == "auto":
        mp = "bf16" if (not use_cpu and torch.cuda.is_bf16_supported()) else "no"
    return Accelerator(cpu=use_cpu, mixed_precision=mp, log_with=args.log_with or None,
                       project_dir=args.output_dir)


@dataclass
class EarlyStopping:
    """Model selection on a metric the task reports at each epoch's end (higher is better)."""

    metric: str  # a key of task.on_epoch_end's dict, e.g. "valid_ndcg@10"
    patience: int  # stop after this many epochs without a better value
    best_dir: Path  # the best epoch's model (config, weights, interest clusters)


@dataclass
class TrainState:
    # Epochs are numbered from 1 wherever they are shown (logs, history, best_epoch, checkpoint-<N>
    # = after epoch N), as in the graph baselines' loop; ``epoch`` counts the epochs completed, so
    # the one in progress is ``epoch + 1``.
    epoch: int = 0  # epochs completed (the 0-based index of the epoch in progress)
    step_in_epoch: int = 0  # optimiser steps done in that epoch
    global_step: int = 0
    epoch_started: bool = False  # interests of `epoch` were discovered and are in the checkpoint
    best_metric: float = -math.inf
    best_epoch: int = 0  # 1-based; 0: none yet
    bad_epochs: int = 0
    epoch_loss_sum: float = 0.0  # the running train loss of the epoch in progress (global mean per step)
    epoch_loss_steps: int = 0
    history: list = field(default_factory=list)
    done: bool = False
    run_settings: dict = field(default_factory=dict)  # the options that fix what the run computes (rundir.py)


class Batches:
    """Seeded per-epoch permutations of row indices, cut into global batches and local slices."""

    def __init__(self, n_rows: int, global_batch: int, seed: int, drop_last: bool):
        if n_rows == 0:
            raise DataError("the training split is empty")
        self.n, self.bs, self.seed, self.drop_last = n_rows, global_batch, seed, drop_last
        full = n_rows // global_batch
        self.num_batches = full if (drop_last and full > 0) else math.ceil(n_rows / global_batch)
        if drop_last and full == 0:
            self.bs = n_rows  # a tiny dataset still gets one (smaller) batch

    def order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def global_batch(self, order: torch.Tensor, step: int) -> torch.Tensor:
        return order[step * self.bs:(step + 1) * self.bs]


def checkpoint_dirs(output_dir: str | Path, strict: bool = True) -> list[Path]:
    """The training checkpoints in ``output_dir``, oldest (fewest steps) first.

    ``strict``: a checkpoint whose trainer_state.json has no valid ``global_step`` is an error
    naming it; otherwise it is left out (and so never deleted by the rotation).
    """
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = []
    for p in out.iterdir():
        if p.is_dir() and re.fullmatch(CHECKPOINT_NAME, p.name) and (p / TRAINER_STATE).is_file():
            try:
                gs = rundir.read_global_step(p / TRAINER_STATE)
            except UserError:
                if strict:
                    raise
                continue
            found.append((gs, p.stat().st_mtime, p))
    return [p for *_, p in sorted(found)]


def clean_stale(folder: Path, names: str) -> None:
    """Remove what a killed write left in ``folder`` for the folders whose names match ``names``.

    ``.NAME.tmp`` is always unfinished. ``.NAME.old`` is the previous complete copy, moved aside
    by fsutil.replace_dir just before the swap: if the kill came between the two renames (no
    NAME), it is put back.
    """
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        m = re.fullmatch(rf"\.({names})\.(tmp|old)", p.name)
        if not m or not p.is_dir():
            continue
        final = p.with_name(m[1])
        if m[2] == "old" and not final.exists():
            os.replace(p, final)
        else:
            shutil.rmtree(p)


def resolve_resume(args: TrainArgs) -> Path | None:
    if not args.resume_from:
        return None
    if args.resume_from == "latest":
        dirs = checkpoint_dirs(args.output_dir)
        return dirs[-1] if dirs else None  # nothing yet: start fresh
    p = Path(args.resume_from)
    if not (p / TRAINER_STATE).is_file():
        raise MissingFileError(f"--resume_from {p}: not a training checkpoint (no {TRAINER_STATE})")
    return p


def _scheduler(optimizer, args: TrainArgs, total_steps: int):
    def factor(step):
        if args.warmup_steps and step < args.warmup_steps:
            return (step + 1) / args.warmup_steps
        if args.lr_scheduler == "constant":
            return 1.0
        prog = min(1.0, (step - args.warmup_steps) / max(1, total_steps - args.warmup_steps))
        if args.lr_scheduler == "linear":
            return 1.0 - prog
        if args.lr_scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * prog))
        raise OptionError(f"lr_scheduler must be constant|linear|cosine, got {args.lr_scheduler!r}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class Trainer:
    """The loop; ``settings`` (missrec/rundir.py: run_settings) are the options that fix what the run
    computes: recorded in run_args.json and every checkpoint, and compared when it is resumed."""

    def __init__(self, args: TrainArgs, task, accelerator: Accelerator | None = None,
                 early_stopping: EarlyStopping | None = None, settings: dict | None = None):
        self.args, self.task, self.stopping = args, task, early_stopping
        self.acc = accelerator or make_accelerator(args)
        self.out = Path(args.output_dir)
        self.settings = settings if settings is not None else rundir.run_settings(args)
        self.state = TrainState(run_settings=self.settings)
        self.lock = self.log = None

    # ---------------------------------------------------------------- folders
    def _write_folder(self, final: Path, resumable: bool) -> Path:
        """Model files (+ optimizer/RNG/trainer state when ``resumable``) to ``final``, atomically.

        A failed write (disk full, ...) removes the temp folder, leaves the previous ``final``
        as it was and ends in one line.
        """
        acc, tmp = self.acc, final.with_name(f".{final.name}.tmp")
        try:
            if acc.is_main_process:
                final.parent.mkdir(parents=True, exist_ok=True)
                if tmp.exists():
                    shutil.rmtree(tmp)
                tmp.mkdir(parents=True)
            acc.wait_for_everyone()
            if resumable:
                acc.save_state(str(tmp / "accelerate"), safe_serialization=True)
                acc.wait_for_everyone()
            if acc.is_main_process:
                write_model_files(tmp, self.task.model, self.task.items)
                if resumable:
                    atomic_write_json(tmp / TRAINER_STATE, asdict(self.state))
                replace_dir(tmp, final)
        except Exception as e:  # noqa: BLE001 - cleaned up always; expected failures become one line
            if acc.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
                clean_stale(final.parent, re.escape(final.name))  # puts a swapped-out previous copy back
            why = _write_failure(e)
            if why is None:
                raise
            raise UserError(final, f"could not be written ({why}); nothing of it was kept, the previous "
                                   "checkpoints and best/ are as they were: free space, then continue with "
                                   "--resume_from latest") from e
        acc.wait_for_everyone()
        return final

    def save_checkpoint(self, name: str) -> Path:
        final = self._write_folder(self.out / name, resumable=True)
        if self.acc.is_main_process and self.args.save_total_limit > 0:
            for old in checkpoint_dirs(self.out, strict=False)[:-self.args.save_total_limit]:
                if old != final:  # renamed first, so a kill mid-delete leaves only a .tmp to clean
                    tmp = old.with_name(f".{old.name}.tmp")
                    os.replace(old, tmp)
                    shutil.rmtree(tmp)
        self.acc.wait_for_everyone()
        return final

    def check_checkpoint(self, folder: Path) -> dict:
        """Everything a resume from ``folder`` reads, checked before any work; its trainer state."""
        args, acc = self.args, self.acc
        state = rundir.read_trainer_state(folder / TRAINER_STATE, self.batches.num_batches, fix=RESUME_FIX)
        rundir.check_settings(folder, state.get("run_settings"), self.settings,
                              "resume with the same options, or use another --output_dir (or "
                              "--overwrite_output_dir) to start a new run")
        check_resumable(folder, self.task.model)
        hard, soft = rundir.check_resume_files(folder, acc.num_processes, acc.scaler is not None,
                                               item_state=self.task.items is not None)
        if hard:
            path, why = hard[0]
            raise CorruptFileError(path, f"{why}: cannot resume from this checkpoint; {RESUME_FIX}")
        if soft and not args.resume_inexact:
            path, why, lost = soft[0]
            raise CorruptFileError(path, f"{why}: without it the resumed run would not be the same ({lost}); "
                                         f"{RESUME_FIX}, or pass --resume_inexact to continue anyway")
        for path, why, lost in soft:
            acc.print(f"note: --resume_inexact: {path}: {why}; {lost}")
        self.inexact = {p.name for p, *_ in soft}
        return state

    def load_checkpoint(self, folder: Path, state: dict | None = None) -> None:
        if state is None:
            state = self.check_checkpoint(folder)
        with reading(folder / "accelerate", "training checkpoint", fix=RESUME_FIX), \
                rundir.watch_accelerate_rng() as rng_failed:
            self.acc.load_state(str(folder / "accelerate"))
        rng = folder / "accelerate" / rundir.RNG_FILE.format(self.acc.process_index)
        if rng_failed and not self.args.resume_inexact:
            raise CorruptFileError(rng, "accelerate could not restore the random states from it: without them the "
                                        f"resumed run would not be the same; {RESUME_FIX}, or pass --resume_inexact "
                                        "to continue anyway")
        self.state = TrainState(**{**state, "run_settings": self.settings})
        if "interest.safetensors" in self.inexact:
            self.state.epoch_started = False  # the epoch's interests are discovered again
        elif self.task.items is not None:  # ID-only models keep no item state
            self.task.items.load_interest(folder / "interest.safetensors")

    def _clean_stale(self) -> None:
        if self.acc.is_main_process:
            clean_stale(self.out, CHECKPOINT_NAME)
            if self.stopping is not None:
                best = Path(self.stopping.best_dir)
                clean_stale(best.parent, re.escape(best.name))
        self.acc.wait_for_everyone()

    def _claim_output_dir(self) -> None:
        """Refuse a folder holding another run (read-only, every process), then lock it (main process)."""
        args, acc = self.args, self.acc
        rundir.check_output_dir(self.out, args.resume_from, args.overwrite_output_dir)
        if args.resume_from == "latest" and not checkpoint_dirs(self.out, strict=False) \
                and not any(self.out.glob(".checkpoint-*.old")):
            rundir.check_fresh_start(self.out, self.settings)  # before the lock file is made
        acc.wait_for_everyone()
        if acc.is_main_process:
            self.lock = rundir.claim_output_dir(self.out, args.resume_from, args.overwrite_output_dir)
        acc.wait_for_everyone()

    def close(self) -> None:
        """Release the output folder (the recipes call it once their last file is written)."""
        if self.log is not None:
            self.log.close()
            self.log = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    # ---------------------------------------------------------------- the loop
    def train(self) -> TrainState:
        try:
            return self._train()
        except BaseException:
            self.close()
            raise

    def _train(self) -> TrainState:
        args, st = self.args, self._setup()
        bar = tqdm(total=self.total, initial=min(st.global_step, self.total), desc=self.task.name,
                   disable=not (self.acc.is_main_process and args.progress), dynamic_ncols=True)
        t0, start_step, self.seen = time.perf_counter(), st.global_step, 0
        self._window = {"t": t0, "seen": 0, "loss": 0.0, "steps": 0, "parts": {}}
        while not st.done and st.epoch < args.epochs and st.global_step < self.total:
            self._start_epoch()
            if not self._run_epoch(bar):
                break  # max_steps reached mid-epoch
            self._end_epoch()
        self._log_window()  # the steps since the last line (a run stopped by --max_steps)
        bar.close()
        elapsed = time.perf_counter() - t0
        if st.step_in_epoch and st.global_step > start_step:  # stopped by max_steps inside an epoch
            if self.stopping is not None:  # validate the partial epoch: a short run still gets a best/
                self._validate(partial=True)
            self.save_checkpoint(f"checkpoint-step{st.global_step}")
        steps = st.global_step - start_step
        self.throughput = {"seconds": elapsed, "steps": steps, "sequences": self.seen,
                           "steps_per_s": steps / elapsed if elapsed else float("nan"),
                           "sequences_per_s": self.seen / elapsed if elapsed else float("nan")}
        if args.log_with:
            self.acc.end_training()
        return st

    def _setup(self) -> TrainState:
        """Claim the output folder; seed, optimizer and schedule; resume if asked, every input checked first."""
        args, acc, task = self.args, self.acc, self.task
        set_seed(args.seed)
        self.accum = max(1, args.gradient_accumulation_steps)
        if args.train_batch_size % (acc.num_processes * self.accum):
            raise OptionError(f"--train_batch_size: {args.train_batch_size} is not divisible by "
                             f"num_processes x gradient_accumulation_steps = {acc.num_processes * self.accum}")
        self.batches = Batches(task.n_train_rows, args.train_batch_size, args.seed, task.drop_last)
        self.total = self.batches.num_batches * args.epochs
        if args.max_steps > 0:
            self.total = min(self.total, args.max_steps)
        self._claim_output_dir()
        self._clean_stale()
        resume, state, self.inexact = resolve_resume(args), None, set()
        if resume is not None:
            state = self.check_checkpoint(resume)
        elif args.resume_from == "latest":
            rundir.check_fresh_start(self.out, self.settings)
        # Every input is sound: from here on the run may write.
        self.params = [p for p in task.objective.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(self.params, lr=args.learning_rate, weight_decay=args.weight_decay,
                                     betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
        scheduler = _scheduler(optimizer, args, self.total)
        self.objective, self.optimizer, self.scheduler = acc.prepare(task.objective, optimizer, scheduler)
        if resume is not None:
            self.load_checkpoint(resume, state)
            acc.print(f"resumed from {resume} at epoch {self.state.epoch + 1}, step {self.state.global_step}")
        if args.log_with:
            acc.init_trackers(task.name, config={k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))})
        if acc.is_main_process:
            rundir.write_run_args(self.out, self.settings)
            self.log = rundir.TrainLog(self.out, None if resume is None else self.state.global_step)
        return self.state

    def _start_epoch(self) -> None:
        st = self.state
        if not st.epoch_started:
            info = self.task.on_epoch_start(st.epoch, self.acc)
            st.epoch_started = True
            if info:
                self.acc.print(f"epoch {st.epoch + 1}: interests K={info['k']}, k-means {info['n_iter']} iterations, "
                               f"inertia {info['inertia']:.4g}")
        self.objective.train()
        self._window.update(t=time.perf_counter(), seen=self.seen)  # sequences/s: training steps only

    def _run_epoch(self, bar) -> bool:
        """The epoch's remaining steps (a resumed epoch continues where it stopped); True if it ended."""
        args, st = self.args, self.state
        order = self.batches.order(st.epoch)
        while st.step_in_epoch < self.batches.num_batches and st.global_step < self.total:
            logs = self._step(self.batches.global_batch(order, st.step_in_epoch))
            bar.update(1)
            if st.global_step % max(1, args.log_every) == 0 or st.step_in_epoch == self.batches.num_batches:
                avg = st.epoch_loss_sum / st.epoch_loss_steps
                bar.set_postfix(epoch=st.epoch + 1, loss=f"{avg:.4f}")
                if args.log_with:
                    self.acc.log({"train/loss": avg, **{f"train/{k}": float(v) for k, v in logs.items()}},
                                 step=st.global_step)
                self._log_window()
            if args.save_steps and st.global_step % args.save_steps == 0:
                self.save_checkpoint(f"checkpoint-step{st.global_step}")
            _maybe_kill(st.global_step)
        return st.step_in_epoch == self.batches.num_batches

    def _log_window(self) -> None:
        """The steps since the last line: to train_log.jsonl, and to stdout when the progress bar is off."""
        acc, st, w = self.acc, self.state, self._window
        if not w["steps"]:
            return
        now = time.perf_counter()
        row = {"kind": "step", "step": st.global_step, "epoch": st.epoch + 1, "loss": w["loss"] / w["steps"],
               **{k: float(v) / w["steps"] for k, v in w["parts"].items()},
               "lr": float(self.optimizer.param_groups[0]["lr"]),
               "sequences_per_s": (self.seen - w["seen"]) / max(now - w["t"], 1e-9)}
        if self.log is not None:
            self.log.write(row)
        if not self.args.progress:
            parts = ", ".join(f"{k} {row[k]:.4f}" for k in w["parts"])
            acc.print(f"step {st.global_step}/{self.total} (epoch {st.epoch + 1}): loss {row['loss']:.4f}"
                      + (f" ({parts})" if parts else "") + f", lr {row['lr']:.3g}, "
                      f"{row['sequences_per_s']:.1f} sequences/s", flush=True)
        self._window = {"t": now, "seen": self.seen, "loss": 0.0, "steps": 0, "parts": {}}

    def _step(self, gidx: torch.Tensor) -> dict:
        """One optimiser step on the global batch ``gidx`` (in micro-batches); refuses non-finite ones."""
        acc, task, st = self.acc, self.task, self.state
        world, loss_sum = acc.num_processes, torch.zeros((), device=acc.device)
        for mi, midx in enumerate(torch.tensor_split(gidx, self.accum)):
            batch = task.make_batch(midx, acc.process_index, world, st.global_step * self.accum + mi, acc.device)
            loss, logs = self.objective(batch, task.items)
            # Weight this process's mean loss by its share of the global batch: DDP then
            # averages to the exact global mean even when the last batch splits unevenly.
            weight = len(torch.tensor_split(midx, world)[acc.process_index]) * world / len(gidx)
            acc.backward(loss * weight)
            loss_sum += loss.detach().float() * weight
        # One sync per step: the loss (averaged, so every process decides alike) and the gradient
        # norm (already all-reduced); a huge input can give a finite loss but infinite gradients.
        step_loss, grad_norm = torch.stack([_mean_across(acc, loss_sum), self._grad_norm()]).tolist()
        if not (math.isfinite(step_loss) and math.isfinite(grad_norm)):
            raise DivergenceError.at(
                st.epoch + 1, st.global_step + 1, f"loss {step_loss}, gradient norm {grad_norm}; stopped before "
                f"applying it, nothing written since the last checkpoint",
                "lower the learning rate (--learning_rate), set --max_grad_norm, or look for huge values in the "
                "feature files")
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        st.step_in_epoch += 1
        st.global_step += 1
        st.epoch_loss_sum += step_loss
        st.epoch_loss_steps += 1
        self.seen += len(gidx)
        w = self._window  # what the next log line averages (summed on the device: no extra sync)
        w["loss"], w["steps"] = w["loss"] + step_loss, w["steps"] + 1
        for k, v in logs.items():
            w["parts"][k] = w["parts"].get(k, 0.0) + (v.detach().float() if torch.is_tensor(v) else float(v))
        return logs

    def _grad_norm(self) -> torch.Tensor:
        """The global gradient norm, after clipping to --max_grad_norm if set."""
        norm = None
        if self.args.max_grad_norm > 0:
            norm = self.acc.clip_grad_norm_(self.params, self.args.max_grad_norm)
        if self.acc.mixed_precision == "fp16":  # infinite gradients are routine there: the scaler skips the step
            return torch.zeros((), device=self.acc.device)
        if norm is None:
            grads = [p.grad.float() for p in self.params if p.grad is not None]
            if not grads:
                return torch.zeros((), device=self.acc.device)
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        return norm.float()

    def _validate(self, partial: bool = False) -> bool:
        """The task's metrics of the epoch in progress, history, model selection; True when patience ran out.

        ``partial``: the run stops inside the epoch (--max_steps); its model is validated and may
        become best/, but it does not count as an epoch without improvement.
        """
        args, acc, st = self.args, self.acc, self.state
        metrics = self.task.on_epoch_end(st.epoch, acc) or {}
        epoch_loss = st.epoch_loss_sum / max(st.epoch_loss_steps, 1)
        row = {"epoch": st.epoch + 1, "train_loss": epoch_loss, **metrics}
        if partial:
            row["partial_steps"] = st.step_in_epoch
        st.history.append(row)
        what = f" (its first {st.step_in_epoch} of {self.batches.num_batches} steps: --max_steps)" if partial else ""
        acc.print(f"epoch {st.epoch + 1}{what}: train loss {epoch_loss:.4f}" + "".join(f", {k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
        if args.log_with:
            acc.log({"epoch/train_loss": epoch_loss, **{f"epoch/{k}": v for k, v in metrics.items()}}, step=st.global_step)
        if self.log is not None:
            self.log.write({"kind": "epoch", "step": st.global_step, **row})
        return self._select(metrics, partial)

    def _end_epoch(self) -> None:
        """Validation (the task's metrics), history, model selection, the epoch checkpoint."""
        args, st = self.args, self.state
        st.done = self._validate()
        st.epoch += 1
        st.step_in_epoch, st.epoch_started = 0, False
        st.epoch_loss_sum, st.epoch_loss_steps = 0.0, 0
        # The last step (--epochs, --max_steps or patience) always leaves a checkpoint.
        if (st.epoch % max(1, args.save_every) == 0) or st.epoch == args.epochs or st.done \
                or st.global_step >= self.total:
            self.save_checkpoint(f"checkpoint-{st.epoch}")

    def _select(self, metrics: dict, partial: bool = False) -> bool:
        """Keep the best epoch's model; True when patience has run out."""
        stop, st = self.stopping, self.state
        if stop is None:
            return False
        if stop.metric not in metrics:
            raise OptionError(f"--metric: {stop.metric} is not among the epoch's metrics {sorted(metrics)}")
        if metrics[stop.metric] > st.best_metric:
            st.best_metric, st.best_epoch, st.bad_epochs = metrics[stop.metric], st.epoch + 1, 0
            self._write_folder(Path(stop.best_dir), resumable=False)
        elif not partial:
            st.bad_epochs += 1
        return st.bad_epochs >= stop.patience and not partial


def _mean_across(acc: Accelerator, value: torch.Tensor) -> torch.Tensor:
    if acc.num_processes == 1:
        return value
    return acc.reduce(value.reshape(1), reduction="mean").reshape(())


def _write_failure(e: BaseException) -> str | None:
    """What went wrong writing a checkpoint, when it is the disk's fault (full, read-only, ...); None for a bug."""
    if isinstance(e, OSError):
        return e.strerror or str(e)
    if type(e).__name__ == "SafetensorError" or (isinstance(e, RuntimeError) and "write" in str(e).lower()):
        return " ".join(str(e).split())[:200]  # safetensors' and torch.save's I/O errors
    return None


def _maybe_kill(step: int) -> None:
    # Test hook: die like a killed job (no clean-up) right after this optimiser step.
    kill = os.environ.get("MISSREC_KILL_AFTER_STEP")
    if kill and int(kill) == step:
        os._exit(17)
