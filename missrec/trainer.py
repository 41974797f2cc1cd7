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
from .errors import UserError, read_json, reading
from .fsutil import atomic_write_json, replace_dir

TRAINER_STATE = "trainer_state.json"
CHECKPOINT_NAME = r"checkpoint-(?:\d+|step\d+)"


class TrainingDivergedError(UserError):
    """The loss or the gradient became NaN or infinite; training stopped before applying that step.

    A UserError, so the entry points' error path (``missrec.cli.run``) prints it as one line.
    """

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
    epoch: int = 0  # epoch in progress (or next to start)
    step_in_epoch: int = 0  # optimiser steps done in that epoch
    global_step: int = 0
    epoch_started: bool = False  # interests of `epoch` were discovered and are in the checkpoint
    best_metric: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    epoch_loss_sum: float = 0.0  # the running train loss of the epoch in progress (global mean per step)
    epoch_loss_steps: int = 0
    history: list = field(default_factory=list)
    done: bool = False


class Batches:
    """Seeded per-epoch permutations of row indices, cut into global batches and local slices."""

    def __init__(self, n_rows: int, global_batch: int, seed: int, drop_last: bool):
        if n_rows == 0:
            raise ValueError("the training split is empty")
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


def checkpoint_dirs(output_dir: str | Path) -> list[Path]:
    """The training checkpoints in ``output_dir``, oldest (fewest steps) first."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = []
    for p in out.iterdir():
        if p.is_dir() and re.fullmatch(CHECKPOINT_NAME, p.name) and (p / TRAINER_STATE).is_file():
            gs = read_json(p / TRAINER_STATE, "trainer state")["global_step"]
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
        raise FileNotFoundError(f"--resume_from {p}: not a training checkpoint (no {TRAINER_STATE})")
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
        raise ValueError(f"lr_scheduler must be constant|linear|cosine, got {args.lr_scheduler!r}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class Trainer:
    def __init__(self, args: TrainArgs, task, accelerator: Accelerator | None = None,
                 early_stopping: EarlyStopping | None = None):
        self.args, self.task, self.stopping = args, task, early_stopping
        self.acc = accelerator or make_accelerator(args)
        self.out = Path(args.output_dir)
        self.state = TrainState()

    # ---------------------------------------------------------------- folders
    def _write_folder(self, final: Path, resumable: bool) -> Path:
        """Model files (+ optimizer/RNG/trainer state when ``resumable``) to ``final``, atomically."""
        acc, tmp = self.acc, final.with_name(f".{final.name}.tmp")
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
        acc.wait_for_everyone()
        return final

    def save_checkpoint(self, name: str) -> Path:
        final = self._write_folder(self.out / name, resumable=True)
        if self.acc.is_main_process and self.args.save_total_limit > 0:
            for old in checkpoint_dirs(self.out)[:-self.args.save_total_limit]:
                if old != final:  # renamed first, so a kill mid-delete leaves only a .tmp to clean
                    tmp = old.with_name(f".{old.name}.tmp")
                    os.replace(old, tmp)
                    shutil.rmtree(tmp)
        self.acc.wait_for_everyone()
        return final

    def load_checkpoint(self, folder: Path) -> None:
        check_resumable(folder, self.task.model)
        with reading(folder / "accelerate", "training checkpoint", fix=RESUME_FIX):
            self.acc.load_state(str(folder / "accelerate"))
        self.state = TrainState(**read_json(folder / TRAINER_STATE, "trainer state"))
        if (folder / "interest.safetensors").is_file():
            self.task.items.load_interest(folder / "interest.safetensors")

    def _clean_stale(self) -> None:
        if self.acc.is_main_process:
            clean_stale(self.out, CHECKPOINT_NAME)
            if self.stopping is not None:
                best = Path(self.stopping.best_dir)
                clean_stale(best.parent, re.escape(best.name))
        self.acc.wait_for_everyone()

    # ---------------------------------------------------------------- the loop
    def train(self) -> TrainState:
        args, st = self.args, self._setup()
        bar = tqdm(total=self.total, initial=min(st.global_step, self.total), desc=self.task.name,
                   disable=not (self.acc.is_main_process and args.progress), dynamic_ncols=True)
        t0, start_step, self.seen = time.perf_counter(), st.global_step, 0
        while not st.done and st.epoch < args.epochs and st.global_step < self.total:
            self._start_epoch()
            if not self._run_epoch(bar):
                break  # max_steps reached mid-epoch
            self._end_epoch()
        bar.close()
        elapsed = time.perf_counter() - t0
        if st.step_in_epoch:  # stopped by max_steps inside an epoch
            self.save_checkpoint(f"checkpoint-step{st.global_step}")
        steps = st.global_step - start_step
        self.throughput = {"seconds": elapsed, "steps": steps, "sequences": self.seen,
                           "steps_per_s": steps / elapsed if elapsed else float("nan"),
                           "sequences_per_s": self.seen / elapsed if elapsed else float("nan")}
        if args.log_with:
            self.acc.end_training()
        return st

    def _setup(self) -> TrainState:
        """Seed, optimizer and schedule; clean up after a killed run, then resume if asked."""
        args, acc, task = self.args, self.acc, self.task
        set_seed(args.seed)
        self.accum = max(1, args.gradient_accumulation_steps)
        if args.train_batch_size % (acc.num_processes * self.accum):
            raise ValueError(f"--train_batch_size: {args.train_batch_size} is not divisible by "
                             f"num_processes x gradient_accumulation_steps = {acc.num_processes * self.accum}")
        self.batches = Batches(task.n_train_rows, args.train_batch_size, args.seed, task.drop_last)
        self.total = self.batches.num_batches * args.epochs
        if args.max_steps > 0:
            self.total = min(self.total, args.max_steps)
        self.params = [p for p in task.objective.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(self.params, lr=args.learning_rate, weight_decay=args.weight_decay,
                                     betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
        scheduler = _scheduler(optimizer, args, self.total)
        self.objective, self.optimizer, self.scheduler = acc.prepare(task.objective, optimizer, scheduler)
        if args.log_with:
            acc.init_trackers(task.name, config={k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))})
        self._clean_stale()
        resume = resolve_resume(args)
        if resume is not None:
            self.load_checkpoint(resume)
            acc.print(f"resumed from {resume} at epoch {self.state.epoch}, step {self.state.global_step}")
        return self.state

    def _start_epoch(self) -> None:
        st = self.state
        if not st.epoch_started:
            info = self.task.on_epoch_start(st.epoch, self.acc)
            st.epoch_started = True
            if info:
                self.acc.print(f"epoch {st.epoch}: interests K={info['k']}, k-means {info['n_iter']} iterations, "
                               f"inertia {info['inertia']:.4g}")
        self.objective.train()

    def _run_epoch(self, bar) -> bool:
        """The epoch's remaining steps (a resumed epoch continues where it stopped); True if it ended."""
        args, st = self.args, self.state
        order = self.batches.order(st.epoch)
        while st.step_in_epoch < self.batches.num_batches and st.global_step < self.total:
            logs = self._step(self.batches.global_batch(order, st.step_in_epoch))
            bar.update(1)
            if st.global_step % max(1, args.log_every) == 0 or st.step_in_epoch == self.batches.num_batches:
                avg = st.epoch_loss_sum / st.epoch_loss_steps
                bar.set_postfix(epoch=st.epoch, loss=f"{avg:.4f}")
                if args.log_with:
                    self.acc.log({"train/loss": avg, **{f"train/{k}": float(v) for k, v in logs.items()}},
                                 step=st.global_step)
            if args.save_steps and st.global_step % args.save_steps == 0:
                self.save_checkpoint(f"checkpoint-step{st.global_step}")
            _maybe_kill(st.global_step)
        return st.step_in_epoch == self.batches.num_batches

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
            raise TrainingDivergedError(
                f"training diverged at step {st.global_step + 1} (epoch {st.epoch}): loss {step_loss}, gradient "
                f"norm {grad_norm}; stopped before applying it, nothing written since the last checkpoint; "
                f"lower --learning_rate, set --max_grad_norm, or look for huge values in the feature files")
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        st.step_in_epoch += 1
        st.global_step += 1
        st.epoch_loss_sum += step_loss
        st.epoch_loss_steps += 1
        self.seen += len(gidx)
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

    def _end_epoch(self) -> None:
        """Validation (the task's metrics), history, model selection, the epoch checkpoint."""
        args, acc, st = self.args, self.acc, self.state
        metrics = self.task.on_epoch_end(st.epoch, acc) or {}
        epoch_loss = st.epoch_loss_sum / max(st.epoch_loss_steps, 1)
        st.history.append({"epoch": st.epoch, "train_loss": epoch_loss, **metrics})
        acc.print(f"epoch {st.epoch}: train loss {epoch_loss:.4f}" + "".join(f", {k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
        if args.log_with:
            acc.log({"epoch/train_loss": epoch_loss, **{f"epoch/{k}": v for k, v in metrics.items()}}, step=st.global_step)
        st.done = self._select(metrics)
        st.epoch += 1
        st.step_in_epoch, st.epoch_started = 0, False
        st.epoch_loss_sum, st.epoch_loss_steps = 0.0, 0
        if (st.epoch % max(1, args.save_every) == 0) or st.epoch == args.epochs or st.done:
            self.save_checkpoint(f"checkpoint-{st.epoch}")

    def _select(self, metrics: dict) -> bool:
        """Keep the best epoch's model; True when patience has run out."""
        stop, st = self.stopping, self.state
        if stop is None:
            return False
        if stop.metric not in metrics:
            raise ValueError(f"--metric: {stop.metric} is not among the epoch's metrics {sorted(metrics)}")
        if metrics[stop.metric] > st.best_metric:
            st.best_metric, st.best_epoch, st.bad_epochs = metrics[stop.metric], st.epoch, 0
            self._write_folder(Path(stop.best_dir), resumable=False)
        else:
            st.bad_epochs += 1
        return st.bad_epochs >= stop.patience


def _mean_across(acc: Accelerator, value: torch.Tensor) -> torch.Tensor:
    if acc.num_processes == 1:
        return value
    return acc.reduce(value.reshape(1), reduction="mean").reshape(())


def _maybe_kill(step: int) -> None:
    # Test hook: die like a killed job (no clean-up) right after this optimiser step.
    kill = os.environ.get("MISSREC_KILL_AFTER_STEP")
    if kill and int(kill) == step:
        os._exit(17)
