"""The one training loop shared by pretraining and finetuning (plain PyTorch + accelerate).

A *task* supplies the objective module, how to turn row indices into a batch, and what to do
at the start / end of each epoch (interest discovery; validation and early stopping). The loop
owns data order, optimisation, logging and checkpoints.

Data order is a seeded permutation per epoch of the GLOBAL batch; process r takes the r-th
contiguous slice of it, so N processes see exactly the rows one process would.
"""
from __future__ import annotations

import json
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
from .errors import read_json, reading
from .fsutil import atomic_write_json, replace_dir

TRAINER_STATE = "trainer_state.json"
RESUME_FIX = "delete that checkpoint folder to resume from an older one, or use a new --output_dir"


def make_accelerator(args: TrainArgs) -> Accelerator:
    use_cpu = args.cpu or not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
    mp = args.mixed_precision
    if mp == "auto":
        mp = "bf16" if (not use_cpu and torch.cuda.is_bf16_supported()) else "no"
    return Accelerator(cpu=use_cpu, mixed_precision=mp, log_with=args.log_with or None,
                       project_dir=args.output_dir)


@dataclass
class TrainState:
    epoch: int = 0  # epoch in progress (or next to start)
    step_in_epoch: int = 0  # optimiser steps done in that epoch
    global_step: int = 0
    epoch_started: bool = False  # interests of `epoch` were discovered and are in the checkpoint
    best_metric: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    epoch_loss_sum: float = 0.0  # running train loss of the epoch in progress (for mid-epoch resume)
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
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = []
    for p in out.iterdir():
        if p.is_dir() and re.fullmatch(r"checkpoint-(\d+|step\d+)", p.name) and (p / TRAINER_STATE).is_file():
            gs = read_json(p / TRAINER_STATE, "trainer state")["global_step"]
            found.append((gs, p.stat().st_mtime, p))
    return [p for *_, p in sorted(found)]


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
    def __init__(self, args: TrainArgs, task, accelerator: Accelerator | None = None):
        self.args, self.task = args, task
        self.acc = accelerator or make_accelerator(args)
        self.out = Path(args.output_dir)
        self.state = TrainState()
        self._running = (0.0, 0)  # (loss sum, steps) of the epoch in progress

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self, name: str) -> Path:
        acc, final = self.acc, self.out / name
        tmp = self.out / f".{name}.tmp"
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp / "accelerate"), safe_serialization=True)
        acc.wait_for_everyone()
        running, n_run = self._running
        self.state.epoch_loss_sum, self.state.epoch_loss_steps = float(running), n_run
        if acc.is_main_process:
            write_model_files(tmp, self.task.model, self.task.items)
            atomic_write_json(tmp / TRAINER_STATE, asdict(self.state))
            replace_dir(tmp, final)
        acc.wait_for_everyone()
        return final

    def load_checkpoint(self, folder: Path) -> None:
        check_resumable(folder, self.task.model)
        with reading(folder / "accelerate", "training checkpoint", fix=RESUME_FIX):
            self.acc.load_state(str(folder / "accelerate"))
        self.state = TrainState(**read_json(folder / TRAINER_STATE, "trainer state"))
        if (folder / "interest.safetensors").is_file():
            self.task.items.load_interest(folder / "interest.safetensors")

    # ---------------------------------------------------------------- the loop
    def train(self) -> TrainState:
        args, acc, task = self.args, self.acc, self.task
        set_seed(args.seed)
        world = acc.num_processes
        accum = max(1, args.gradient_accumulation_steps)
        if args.train_batch_size % (world * accum):
            raise ValueError(f"train_batch_size {args.train_batch_size} must be divisible by "
                             f"num_processes x gradient_accumulation_steps = {world * accum}")
        batches = Batches(task.n_train_rows, args.train_batch_size, args.seed, task.drop_last)
        steps_per_epoch = batches.num_batches
        total = steps_per_epoch * args.epochs
        if args.max_steps > 0:
            total = min(total, args.max_steps)

        objective = task.objective
        params = [p for p in objective.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=args.learning_rate, weight_decay=args.weight_decay,
                                     betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
        scheduler = _scheduler(optimizer, args, total)
        objective, optimizer, scheduler = acc.prepare(objective, optimizer, scheduler)
        if args.log_with:
            acc.init_trackers(task.name, config={k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))})

        resume = resolve_resume(args)
        if resume is not None:
            self.load_checkpoint(resume)
            acc.print(f"resumed from {resume} at epoch {self.state.epoch}, step {self.state.global_step}")
        st = self.state
        bar = tqdm(total=total, initial=min(st.global_step, total), disable=not (acc.is_main_process and args.progress),
                   desc=task.name, dynamic_ncols=True)
        t0, seen, start_step = time.perf_counter(), 0, st.global_step
        while not st.done and st.epoch < args.epochs and st.global_step < total:
            if not st.epoch_started:
                info = task.on_epoch_start(st.epoch, acc)
                st.epoch_started = True
                if info:
                    acc.print(f"epoch {st.epoch}: interests K={info['k']}, k-means {info['n_iter']} iterations, "
                              f"inertia {info['inertia']:.4g}")
            objective.train()
            order = batches.order(st.epoch)
            # A resumed epoch continues its running loss, so its history entry matches an uninterrupted run.
            running, n_run = (st.epoch_loss_sum, st.epoch_loss_steps) if st.step_in_epoch else (0.0, 0)
            while st.step_in_epoch < steps_per_epoch and st.global_step < total:
                gidx = batches.global_batch(order, st.step_in_epoch)
                micro = torch.tensor_split(gidx, accum)
                for mi, midx in enumerate(micro):
                    batch = task.make_batch(midx, acc.process_index, world, st.global_step * accum + mi, acc.device)
                    loss, logs = objective(batch, task.items)
                    # Weight this process's mean loss by its share of the global batch: DDP then
                    # averages to the exact global mean even when the last batch splits unevenly.
                    n_local = len(torch.tensor_split(midx, world)[acc.process_index])
                    weight = n_local * world / len(gidx)
                    acc.backward(loss * weight)
                    running = running + loss.detach().float() * weight
                if args.max_grad_norm > 0:
                    acc.clip_grad_norm_(params, args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                st.step_in_epoch += 1
                st.global_step += 1
                n_run += 1
                self._running = (running, n_run)
                seen += len(gidx)
                bar.update(1)
                if st.global_step % max(1, args.log_every) == 0 or st.step_in_epoch == steps_per_epoch:
                    avg = float(running) / max(n_run, 1)
                    bar.set_postfix(epoch=st.epoch, loss=f"{avg:.4f}")
                    if args.log_with:
                        acc.log({"train/loss": avg, **{f"train/{k}": float(v) for k, v in logs.items()}}, step=st.global_step)
                if args.save_steps and st.global_step % args.save_steps == 0:
                    self.save_checkpoint(f"checkpoint-step{st.global_step}")
                _maybe_kill(st.global_step)
            epoch_loss = _mean_across(acc, float(running) / max(n_run, 1))
            if st.step_in_epoch < steps_per_epoch:
                break  # max_steps reached mid-epoch
            metrics = task.on_epoch_end(st.epoch, acc) or {}
            st.history.append({"epoch": st.epoch, "train_loss": epoch_loss, **metrics})
            acc.print(f"epoch {st.epoch}: train loss {epoch_loss:.4f}" + "".join(f", {k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
            if args.log_with:
                acc.log({"epoch/train_loss": epoch_loss, **{f"epoch/{k}": v for k, v in metrics.items()}}, step=st.global_step)
            st.done = task.after_epoch(self, st, metrics)
            st.epoch += 1
            st.step_in_epoch = 0
            st.epoch_started = False
            self._running = (0.0, 0)
            if (st.epoch % max(1, args.save_every) == 0) or st.epoch == args.epochs or st.done:
                self.save_checkpoint(f"checkpoint-{st.epoch}")
        bar.close()
        elapsed = time.perf_counter() - t0
        if st.step_in_epoch:  # stopped by max_steps inside an epoch
            self.save_checkpoint(f"checkpoint-step{st.global_step}")
        steps = st.global_step - start_step
        self.throughput = {"seconds": elapsed, "steps": steps, "sequences": seen,
                           "steps_per_s": steps / elapsed if elapsed else float("nan"),
                           "sequences_per_s": seen / elapsed if elapsed else float("nan")}
        if args.log_with:
            acc.end_training()
        return st


def _mean_across(acc: Accelerator, value: float) -> float:
    if acc.num_processes == 1:
        return value
    t = torch.tensor([value], device=acc.device)
    return float(acc.reduce(t, reduction="mean").item())


def _maybe_kill(step: int) -> None:
    # Test hook: die like a killed job (no clean-up) right after this optimiser step.
    kill = os.environ.get("MISSREC_KILL_AFTER_STEP")
    if kill and int(kill) == step:
        os._exit(17)
