"""CPU thread count of a training run (``--threads``), applied once at startup.

On a CPU shared with other jobs, torch's default (one thread per core) oversubscribes the cores:
every multi-threaded op waits at its barrier for a thread whose core another job holds. Measured
on a 2-core machine with ONE other single-threaded job: the sample pretraining ran 1.32 steps/s
with 2 threads and 4.10 with 1. ``auto`` therefore uses only the cores that are free when the run
starts (cores minus the 1-minute load average, at least 1), unless OMP_NUM_THREADS says otherwise.
"""
from __future__ import annotations

import math
import os

import torch


def resolve_threads(threads: int) -> int:
    """``threads`` > 0 as given; 0 (auto): OMP_NUM_THREADS if set, else the free cores (>= 1)."""
    if threads < 0:
        raise ValueError(f"--threads: must be >= 0 (0: auto), got {threads}")
    if threads > 0:
        return threads
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    cores = os.cpu_count() or 1
    try:
        busy = math.ceil(os.getloadavg()[0] - 0.25)  # a core at a quarter load still counts as free
    except OSError:  # no load average on this platform
        busy = 0
    return max(1, min(cores, cores - busy))


def apply_threads(threads: int, announce: bool = True) -> int:
    """Set torch's intra-op (and, if still possible, inter-op) threads; returns the count used.
    ``announce``: say so (once, from the first process) when ``auto`` chose fewer than all cores."""
    n = resolve_threads(threads)
    cores = os.cpu_count() or 1
    by_load = threads == 0 and not os.environ.get("OMP_NUM_THREADS", "").strip()
    if announce and by_load and n < cores and os.environ.get("LOCAL_RANK", "0") == "0":
        print(f"note: {n} torch thread(s) of {cores} cores (--threads 0 = auto: the others are busy); "
              "--threads N sets it", flush=True)
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # only settable before the first parallel work of the process
        pass
    return n
