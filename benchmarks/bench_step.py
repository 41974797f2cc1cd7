"""One training step, this code vs an earlier commit's, interleaved in one process (issue 16 item 2).

The earlier commit's ``missrec`` package is extracted with ``git archive`` into a temporary
folder and imported under another name, so both run in this process on the same weights, the
same item table and the same batches. Each repeat times the old step then the new one (or the
other way round, alternating), at every thread count asked for, so machine load drifting during
the run hits both alike and cancels in the ratio; the median of the repeats is reported.

Shapes (generated data):

* ``ml1m``: MovieLens-1M as text-only transfer data: 3,706 items, 384-d text features (MiniLM),
  no images (zero rows), hidden 64, histories 90% at 50 items (the rest uniform 1..50);
* ``amazon``: Amazon Scientific: 4,385 items, 512-d text and image features, hidden 300 (the
  paper's), history lengths of every prefix of 5-core users (mean 3.3).

Steps (batch 512, Adam): ``pretrain`` = both views (item drop) + in-batch contrast, interest ids at
ratio 0.02; ``finetune`` = transductive, parameter-efficient (the paper's transfer setting),
full softmax over every item, interest ids at ratio 0.5. Before timing, the two codes' losses and
gradients are compared on one batch in eval mode (no dropout): ``max_rel_diff``.

    python -m benchmarks.bench_step --baseline 5272a94 --threads 1,2 --repeats 5 --out FILE.json
"""
from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {
    # name: (items, text dim, image dim or 0 for none, hidden, lengths)
    "ml1m": (3706, 384, 0, 64, "movielens"),
    "amazon": (4385, 512, 512, 300, "amazon"),
}


def import_baseline(rev: str, workdir: Path):
    """``missrec`` as of git revision ``rev``, importable as ``missrec_base``."""
    dest = workdir / "missrec_base"
    if not dest.is_dir():
        tar = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "missrec"], check=True,
                             capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(workdir)], input=tar, check=True)
        (workdir / "missrec").rename(dest)
    sys.path.insert(0, str(workdir))
    return importlib.import_module("missrec_base")


def make_batch(kind: str, n_items: int, batch: int, rng: np.random.Generator, max_len: int = 50) -> dict:
    from benchmarks.common import popularity, synth_splits
    from missrec.tasks import split_tensors
    if kind == "amazon":
        t = split_tensors(synth_splits(n_items, 34_000, rng, mean_len=59_427 / 8_442, max_len=max_len)["train"])
        idx = torch.from_numpy(rng.choice(len(t["seq"]), size=batch, replace=False))
        b = {k: v[idx] for k, v in t.items()}
    else:
        length = np.where(rng.random(batch) < 0.9, max_len, rng.integers(1, max_len + 1, size=batch))
        seq = rng.choice(n_items, size=(batch, max_len), p=popularity(n_items, rng)) + 1
        seq = seq * (np.arange(max_len)[None, :] < length[:, None])
        b = {"seq": torch.from_numpy(seq), "length": torch.from_numpy(length),
             "target": torch.from_numpy(rng.integers(1, n_items + 1, size=batch))}
    b["keep"] = torch.from_numpy(rng.random(b["seq"].shape) < 0.8)
    return b


class Side:
    """One code version's model, item table, objective and optimiser."""

    def __init__(self, pkg: str, state: dict, cfg: dict, tables: dict, part: str):
        model_mod = importlib.import_module(f"{pkg}.model")
        config_mod = importlib.import_module(f"{pkg}.config")
        items_mod = importlib.import_module(f"{pkg}.items")
        obj_mod = importlib.import_module(f"{pkg}.objectives")
        self.model = model_mod.MISSRec(config_mod.MISSRecConfig(**cfg))
        self.model.load_state_dict(state)
        if part == "finetune":
            self.model.set_peft(True)
        it = items_mod.ItemTable(tables["text"].clone(), tables["image"].clone(), None, cfg["hidden_size"])
        it.set_interests(tables["text_ids"], tables["image_ids"], tables["centroids"])
        self.items = it
        self.objective = (obj_mod.FinetuneObjective(self.model, gamma_reg=1e-4) if part == "finetune" else
                          obj_mod.PretrainObjective(self.model, lambda_seq=1e-3, gamma_reg=1e-4,
                                                    augmentation="item_drop"))
        self.opt = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], lr=1e-3)

    def step(self, b: dict) -> float:
        self.model.train()
        loss, _ = self.objective(b, self.items)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.item()

    def loss_and_grads(self, b: dict):
        """Loss and gradients in eval mode (no dropout), for the equality check."""
        self.model.eval()
        self.model.zero_grad(set_to_none=True)
        loss, _ = self.objective(b, self.items)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in self.model.named_parameters() if p.grad is not None}
        self.model.zero_grad(set_to_none=True)
        return loss.detach(), grads


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def run_case(shape: str, part: str, base_pkg: str, threads: list[int], repeats: int, seed: int) -> dict:
    from missrec.interest import n_interests
    n_items, tdim, idim, hidden, lengths = SHAPES[shape]
    g = torch.Generator().manual_seed(seed)
    text = torch.zeros(n_items + 1, tdim)
    text[1:] = torch.nn.functional.normalize(torch.randn(n_items, tdim, generator=g), dim=1)
    image = torch.zeros(n_items + 1, idim or tdim)
    if idim:
        image[1:] = torch.nn.functional.normalize(torch.randn(n_items, idim, generator=g), dim=1)
    k = n_interests(n_items, 0.5 if part == "finetune" else 0.02)
    text_ids = torch.randint(1, k + 1, (n_items,), generator=g)
    # Text-only data: every (zero) image vector is the same point, so one cluster.
    image_ids = torch.randint(1, k + 1, (n_items,), generator=g) if idim else torch.full((n_items,), k)
    tables = {"text": text, "image": image, "text_ids": text_ids, "image_ids": image_ids,
              "centroids": torch.randn(k, hidden, generator=g) * 0.1}
    cfg = dict(hidden_size=hidden, text_dim=tdim, image_dim=idim or tdim, use_id=part == "finetune",
               n_items=n_items if part == "finetune" else 0)
    torch.manual_seed(seed)
    from missrec.model import MISSRec
    from missrec.config import MISSRecConfig
    state = MISSRec(MISSRecConfig(**cfg)).state_dict()
    # Non-zero adaptor biases, as after training: at zero, normalising text-only data's zero image
    # rows (adapted to the bias alone) has gradients of ~1e5 that no two summation orders agree on.
    for name in ("text_adaptor.bias", "img_adaptor.bias"):
        state[name] = torch.randn(state[name].shape, generator=g) * 0.02
    sides = {"old": Side(base_pkg, state, cfg, tables, part), "new": Side("missrec", state, cfg, tables, part)}
    rng = np.random.default_rng(seed)
    batches = [make_batch(lengths, n_items, 512, rng) for _ in range(3)]
    # Equality on one batch, before any optimiser step changed the weights.
    (l_old, g_old), (l_new, g_new) = (sides[s].loss_and_grads(batches[0]) for s in ("old", "new"))
    diff = max([rel_diff(l_new, l_old)] + [rel_diff(g_new[n], g_old[n]) for n in g_old])
    assert g_old.keys() == g_new.keys()
    row = {"shape": shape, "part": part, "items": n_items, "hidden": hidden, "batch": 512,
           "mean_len": float(torch.cat([b["length"] for b in batches]).float().mean()),
           "max_rel_diff": diff, "times": {}}
    for t in threads:
        torch.set_num_threads(t)
        for s in sides.values():  # warm-up (allocator, Adam state)
            s.step(batches[0])
        times = {"old": [], "new": []}
        for r in range(repeats):
            order = ("old", "new") if r % 2 == 0 else ("new", "old")
            for name in order:
                b = batches[r % len(batches)]
                t0 = time.perf_counter()
                sides[name].step(b)
                times[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        # Each repeat's old and new steps ran back to back: their ratio cancels slow load drift.
        paired = statistics.median(o / n for o, n in zip(times["old"], times["new"]))
        row["times"][t] = {"old_s": med["old"], "new_s": med["new"], "speedup": med["old"] / med["new"],
                           "paired_speedup": paired,
                           "old_all_s": times["old"], "new_all_s": times["new"],
                           "load": [round(x, 2) for x in os.getloadavg()]}
        print(f"{shape:7s} {part:9s} threads {t}: old {med['old']:.3f} s, new {med['new']:.3f} s, "
              f"speedup {med['old'] / med['new']:.2f}x, paired {paired:.2f}x (max rel diff {diff:.1e}, load {os.getloadavg()[0]:.1f})",
              flush=True)
    return row


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--baseline", required=True, help="Git revision whose missrec package is the 'old' side.")
    p.add_argument("--threads", default="1,2", help="Comma-separated torch thread counts to time.")
    p.add_argument("--repeats", type=int, default=5, help="Timed steps per side and thread count (median).")
    p.add_argument("--shapes", default="ml1m,amazon", help="Comma-separated subset of: " + ", ".join(SHAPES))
    p.add_argument("--parts", default="pretrain,finetune", help="Comma-separated subset of: pretrain, finetune.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="", help="Write the rows as JSON here.")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench_step_"))
    try:
        import_baseline(args.baseline, tmp)
        threads = [int(t) for t in args.threads.split(",")]
        rows = [run_case(s, part, "missrec_base", threads, args.repeats, args.seed)
                for s in args.shapes.split(",") for part in args.parts.split(",")]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res = {"benchmark": "step", "baseline": args.baseline, "command": "python -m benchmarks.bench_step "
           + " ".join(sys.argv[1:] if argv is None else argv), "torch": torch.__version__,
           "cpu_count": os.cpu_count(), "rows": rows}
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = out.with_name(out.name + ".tmp")
        tmp_out.write_text(json.dumps(res, indent=1))
        tmp_out.replace(out)
    return res


if __name__ == "__main__":
    main()
