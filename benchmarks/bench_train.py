"""Training throughput: a pretraining step and a finetuning epoch, ours vs the original's structure.

Data is generated in memory at the sizes of the paper's datasets -- Scientific (4,385 items,
34k train rows) and Office (25,986 items, 423k train rows) -- with random unit-norm 512-d text
and image features and an Amazon-like history length distribution (5-core users, mean 7.5
items; train rows are every prefix, so most histories are short).

* pretraining step (global batch 4096; 1024 on a CPU, see --pretrain-batch): ours =
  PretrainTask.make_batch + PretrainObjective forward/backward + Adam, under autocast in
  --dtype; reference = the original's step: RecBole
  batch -> dataloader transform on the CPU tables (per-sample interest dedup loop, item drop) ->
  batch to the device -> per-step DataLoader/DistributedSampler re-wrap -> fp32 forward with the
  [B, B, 2] fused logits -> backward -> Adam -> loss.item().
* finetuning epoch (batch 512, transductive, parameter-efficient as after pretraining):
  interest discovery (k-means, ratio 0.5) + one pass over the train rows. Ours = discover_interests
  + FinetuneObjective steps; reference = the single-pass CPU k-means + steps with the per-sample
  loop and the [B, N + 1, 2] fused logits over every item. When a whole epoch would exceed
  --budget-s, its steps are extrapolated from the timed steps (median step x steps per epoch) and
  a too-long k-means from timed probes (see bench_kmeans); the table says which.

* length distributions (batch 512, the finetuning step above): ours-padded (nn.Transformer on
  batches padded to 50), ours-packed (real tokens only, missrec/packed.py) and the reference, on
  one model's weights, for uniform 1..50 histories, the Amazon-style rows of Scientific and
  Office (matched to their published user/item/interaction counts) and MovieLens-style long
  histories (90% at 50). useful GFLOP = the packed step's work (real tokens only); achieved =
  useful GFLOP / step time, so padding shows up as a lower rate.

Ours is timed with both sequence paths on the same weights: ``packed`` (the default) and
``padded`` (``--attention_impl padded``, the reference path of this project).
Interest ids for the pretraining step are random (K = 2% of 2N), so no k-means runs there.
--quick uses a tiny catalogue and histories of at most 20 items.
Validation is not part of the epoch here: see bench_eval for its users/s.

    python -m benchmarks.bench_train [--quick] [--device cpu|cuda] [--dtype bf16|fp32] [--out FILE.json]
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
from types import SimpleNamespace

import numpy as np
import torch

from benchmarks.bench_kmeans import ours_model, probe_rows, reference_model
from benchmarks.common import (Ctx, add_curve, add_table, build_parser, copy_bandwidth_gbs, count_work, finish,
                               matmul_peak_tflops, measure, measure_adaptive, new_result, popularity, random_interests,
                               set_argv, synth_item_table, synth_splits, sync)
from benchmarks.reference import (RefTables, ref_cluster_kmeans, ref_finetune_loss, ref_pretrain_loss,
                                  ref_pretrain_transform, ref_trans_dataload)
from missrec.config import MISSRecConfig
from missrec.interest import n_interests
from missrec.model import MISSRec
from missrec.objectives import FinetuneObjective
from missrec.tasks import PretrainTask, split_tensors

SIZES = {"scientific": (4385, 34_000), "office": (25_986, 423_000)}
# Published counts (users, items, interactions): mean history length per user for the generator.
MEAN_LEN = {"scientific": 59_427 / 8_442, "office": 684_837 / 87_436}
QUICK_SIZES = {"tiny": (200, 600)}
QUICK_MAX_LEN = 20  # --quick only: shorter histories keep the smoke run within seconds
PRETRAIN_COLUMNS = ["size", "items", "batch", "ours_step_s", "padded_step_s", "reference_step_s", "speedup",
                    "packed_vs_padded", "ours_seq_per_s",
                    "reference_seq_per_s", "ours_peak_mb", "reference_peak_mb", "gflop_per_step",
                    "matmul_roof_frac", "bandwidth_roof_frac", "timing"]
FINETUNE_COLUMNS = ["size", "items", "train_rows", "batch", "steps_per_epoch", "ours_step_s", "padded_step_s",
                    "reference_step_s", "step_speedup", "ours_discovery_s", "reference_discovery_s", "ours_epoch_s",
                    "padded_epoch_s", "reference_epoch_s", "epoch_speedup", "padded_epoch_speedup", "ours_seq_per_s", "reference_seq_per_s",
                    "ours_peak_mb", "reference_peak_mb", "epoch_timing"]
LENGTH_COLUMNS = ["lengths", "items", "mean_len", "max_len", "packed_step_s", "padded_step_s", "reference_step_s",
                  "packed_vs_reference", "packed_vs_padded", "packed_seq_per_s", "padded_seq_per_s",
                  "reference_seq_per_s", "useful_gflop", "padded_gflop", "packed_gflop_per_s",
                  "padded_useful_gflop_per_s", "reference_useful_gflop_per_s"]


@contextlib.contextmanager
def attention_impl(model, impl: str):
    """Time one of our two sequence paths on the same weights."""
    old = model.config.attention_impl
    model.config.attention_impl = impl
    try:
        yield
    finally:
        model.config.attention_impl = old


def _rows(n_rows: int, batch: int, step: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randint(n_rows, (batch,), generator=g)


# ----------------------------------------------------------------------------- pretraining
class PretrainBench:
    def __init__(self, ctx: Ctx, items, train, seed: int):
        self.ctx, self.items = ctx, items
        self.model = MISSRec(_config(ctx)).to(ctx.device)
        self.ref_model = copy.deepcopy(self.model)
        targs = SimpleNamespace(seed=seed, gamma_reg=1e-4)
        pargs = SimpleNamespace(item_keep_prob=0.8, lambda_seq=1e-3, augmentation="item_drop",
                                mask_false_negatives=False)
        self.task = PretrainTask(self.model, items, train, targs, pargs)
        self.opt = torch.optim.Adam([p for p in self.task.objective.parameters() if p.requires_grad], lr=1e-3)
        # The original's dataset keeps its tables (features, interest ids, centroids) on the CPU.
        self.ref_tables = RefTables(items, "cpu")
        self.ref_data = {"user_id": torch.arange(len(train)), **_recbole(train)}
        self.ref_opt = torch.optim.Adam(self.ref_model.parameters(), lr=1e-3)
        self.gen = torch.Generator().manual_seed(seed)
        self.n_rows, self.seed, self.step_no = len(train), seed, 0

    def ours_step(self, batch: int):
        idx = _rows(self.n_rows, batch, self.step_no, self.seed)
        self.step_no += 1
        b = self.task.make_batch(idx, 0, 1, self.step_no, self.ctx.device)
        with self.ctx.autocast():
            loss, _ = self.task.objective(b, self.items)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.detach()

    def ref_step(self, batch: int):
        idx = _rows(self.n_rows, batch, self.step_no, self.seed)
        self.step_no += 1
        inter = {k: v[idx] for k, v in self.ref_data.items()}
        inter = ref_pretrain_transform(self.ref_tables, inter, gen=self.gen)
        inter = {k: v.to(self.ctx.device) for k, v in inter.items()}
        inter = ref_trans_dataload(inter)
        loss = ref_pretrain_loss(self.ref_model, inter)
        self.ref_opt.zero_grad()
        loss.backward()
        self.ref_opt.step()
        return loss.item()


def _recbole(split) -> dict:
    """The original's field names for a split's tensors."""
    t = split_tensors(split)
    return {"item_id_list": t["seq"], "item_length": t["length"], "item_id": t["target"]}


def _config(ctx: Ctx, **kw) -> MISSRecConfig:
    return MISSRecConfig(max_seq_length=QUICK_MAX_LEN if ctx.quick else 50, **kw)


def run_pretrain(ctx: Ctx, name: str, n_items: int, splits, batch: int, roofs: dict, curve_batches) -> tuple:
    items = synth_item_table(n_items, 512, ctx.seed, device=ctx.device)
    random_interests(items, n_interests(n_items, 0.02), ctx.seed)
    pb = PretrainBench(ctx, items, splits["train"], ctx.seed)
    ours = measure_adaptive(lambda: pb.ours_step(batch), ctx)
    with attention_impl(pb.model, "padded"):
        padded = measure_adaptive(lambda: pb.ours_step(batch), ctx)
    ref = measure_adaptive(lambda: pb.ref_step(batch), ctx)
    # Work of one step, counted on (at most) 512 rows and scaled to the batch: FLOPs are linear in
    # the batch up to the small [B, B] logits.
    sub = min(batch, 512)
    work = count_work(lambda: pb.ours_step(sub))
    scale = batch / sub
    flops, nbytes = work["flops"] * scale, work["bytes"] * scale
    row = {"size": name, "items": n_items, "batch": batch,
           "ours_step_s": ours["median_s"], "padded_step_s": padded["median_s"], "reference_step_s": ref["median_s"],
           "speedup": ref["median_s"] / ours["median_s"], "packed_vs_padded": padded["median_s"] / ours["median_s"],
           "ours_seq_per_s": batch / ours["median_s"], "reference_seq_per_s": batch / ref["median_s"],
           "ours_peak_mb": ours["peak_mem_mb"], "reference_peak_mb": ref["peak_mem_mb"],
           "gflop_per_step": flops / 1e9,
           "matmul_roof_frac": flops / ours["median_s"] / (roofs["tflops"] * 1e12),
           "bandwidth_roof_frac": nbytes / ours["median_s"] / (roofs["gbs"] * 1e9),
           "timing": "single run" if (ours.get("single_run") or ref.get("single_run")) else
           f"median of {ours['repeats']}", "est_bytes_per_step": nbytes}
    curve = {"ours": [], "reference": []}
    for b in curve_batches:  # the process is warm by now: one timed step per point
        o = measure(lambda: pb.ours_step(b), ctx, repeats=1, warmup=0)
        r = measure(lambda: pb.ref_step(b), ctx, repeats=1, warmup=0)
        curve["ours"].append((b, o["median_s"]))
        curve["reference"].append((b, r["median_s"]))
    curve["ours"].append((batch, ours["median_s"]))
    curve["reference"].append((batch, ref["median_s"]))
    del pb, items
    return row, curve


# ----------------------------------------------------------------------------- finetuning
def _discovery(ctx: Ctx, model, items, budget: float, flops: float) -> tuple[dict, torch.Tensor]:
    """Time our interest discovery (or extrapolate it); return timings and the adapted vectors."""
    t0 = time.perf_counter()
    with torch.no_grad():
        x = torch.cat([model.text_adaptor(items.text[1:]), model.img_adaptor(items.image[1:])]).float()
    sync(ctx.device)
    t_adapt = time.perf_counter() - t0
    k = n_interests(items.n_items, 0.5)
    om = ours_model(x, k, probe_rows(k, flops, 0.05 if ctx.quick else 3.0, x.shape[0]))
    if om["full_s"] + t_adapt <= budget:
        sync(ctx.device)
        t0 = time.perf_counter()
        info = items.discover_interests(model, 0.5, n_iter=20, seed=ctx.seed)
        sync(ctx.device)
        return {"ours_s": time.perf_counter() - t0, "ours_extrapolated": False, "iters": info["n_iter"]}, x
    random_interests(items, k, ctx.seed)
    return {"ours_s": t_adapt + om["full_s"], "ours_extrapolated": True, "iters": "20 (cap)"}, x


def run_finetune(ctx: Ctx, name: str, n_items: int, splits, batch: int, budget: float, flops: float) -> dict:
    items = synth_item_table(n_items, 512, ctx.seed, device=ctx.device)
    model = MISSRec(_config(ctx, use_id=True, n_items=n_items)).to(ctx.device)
    model.set_peft(True)  # the paper's transfer setting (the original's fix_enc=True)
    ref_model = copy.deepcopy(model)
    model.eval()  # as the trainer does around interest discovery
    disc, x = _discovery(ctx, model, items, budget, flops)
    model.train()
    k = n_interests(n_items, 0.5)
    x_cpu = x.cpu()
    rm = reference_model(x_cpu, k, probe_rows(k, flops, 0.05 if ctx.quick else 3.0, x.shape[0]))
    if rm["total_s"] <= budget:
        t0 = time.perf_counter()
        ref_cluster_kmeans(x_cpu, k, seed=ctx.seed)
        disc["reference_s"], disc["reference_extrapolated"] = time.perf_counter() - t0, False
    else:
        disc["reference_s"], disc["reference_extrapolated"] = rm["total_s"], True
    del x, x_cpu

    objective = FinetuneObjective(model, gamma_reg=1e-4)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ref_opt = torch.optim.Adam([p for p in ref_model.parameters() if p.requires_grad], lr=1e-3)
    train = split_tensors(splits["train"])
    ref_train = _recbole(splits["train"])
    ref_tables = RefTables(items, ctx.device)  # finetuning kept the tables in the model, on its device
    n_rows = len(splits["train"])
    steps = math.ceil(n_rows / batch)
    state = {"step": 0}

    def ours_step(idx=None):
        idx = _rows(n_rows, batch, state["step"], ctx.seed) if idx is None else idx
        state["step"] += 1
        b = {k: v[idx].to(ctx.device, non_blocking=True) for k, v in train.items()}
        with ctx.autocast():
            loss, _ = objective(b, items)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def ref_step(idx=None):
        idx = _rows(n_rows, batch, state["step"], ctx.seed) if idx is None else idx
        state["step"] += 1
        inter = {k: v[idx].to(ctx.device) for k, v in ref_train.items()}
        loss = ref_finetune_loss(ref_model, ref_tables, inter)
        ref_opt.zero_grad()
        loss.backward()
        ref_opt.step()
        return loss.item()

    ours = measure_adaptive(ours_step, ctx)
    with attention_impl(model, "padded"):
        padded = measure_adaptive(ours_step, ctx)
    ref = measure_adaptive(ref_step, ctx)
    timing = []
    order = torch.randperm(n_rows, generator=torch.Generator().manual_seed(ctx.seed))

    def epoch(step_fn, timed):
        est = steps * timed["median_s"]
        if est <= budget:
            sync(ctx.device)
            t0 = time.perf_counter()
            for s in range(steps):
                step_fn(order[s * batch:(s + 1) * batch])
            sync(ctx.device)
            return time.perf_counter() - t0, "measured"
        n = timed["repeats"]
        return est, f"extrapolated ({steps} x median of {n} timed step{'s' if n > 1 else ''})"

    ours_train, how_o = epoch(ours_step, ours)
    with attention_impl(model, "padded"):
        padded_train, how_p = epoch(ours_step, padded)
    ref_train_s, how_r = epoch(ref_step, ref)
    timing.append(f"steps: ours {how_o}, padded {how_p}, reference {how_r}")
    timing.append("k-means: ours " + ("extrapolated" if disc["ours_extrapolated"] else f"measured ({disc['iters']} iters)")
                  + ", reference " + ("extrapolated" if disc["reference_extrapolated"] else "measured"))
    ours_epoch = disc["ours_s"] + ours_train
    padded_epoch = disc["ours_s"] + padded_train
    ref_epoch = disc["reference_s"] + ref_train_s
    return {"size": name, "items": n_items, "train_rows": n_rows, "batch": batch, "steps_per_epoch": steps,
            "ours_step_s": ours["median_s"], "padded_step_s": padded["median_s"], "reference_step_s": ref["median_s"],
            "step_speedup": ref["median_s"] / ours["median_s"],
            "ours_discovery_s": disc["ours_s"], "reference_discovery_s": disc["reference_s"],
            "ours_epoch_s": ours_epoch, "padded_epoch_s": padded_epoch, "reference_epoch_s": ref_epoch,
            "epoch_speedup": ref_epoch / ours_epoch, "padded_epoch_speedup": ref_epoch / padded_epoch,
            "ours_seq_per_s": batch / ours["median_s"], "reference_seq_per_s": batch / ref["median_s"],
            "ours_peak_mb": ours["peak_mem_mb"], "reference_peak_mb": ref["peak_mem_mb"],
            "epoch_timing": "; ".join(timing)}


# ----------------------------------------------------------------------------- length distributions
def _length_rows(kind: str, n_items: int, n: int, rng: np.random.Generator, max_len: int, splits=None):
    """``n`` (seq, length, target) rows of one history-length distribution."""
    if splits is not None:  # Amazon-style: the generated train rows (every prefix of 5-core users)
        t = split_tensors(splits["train"])
        idx = torch.from_numpy(rng.choice(len(splits["train"]), size=n, replace=False))
        return {k: v[idx] for k, v in t.items()}
    if kind.startswith("uniform"):
        length = rng.integers(1, max_len + 1, size=n)
    else:  # MovieLens-style: most users have more than 50 ratings
        length = np.where(rng.random(n) < 0.9, max_len, rng.integers(1, max_len + 1, size=n))
    seq = rng.choice(n_items, size=(n, max_len), p=popularity(n_items, rng)) + 1
    seq = seq * (np.arange(max_len)[None, :] < length[:, None])
    return {"seq": torch.from_numpy(seq), "length": torch.from_numpy(length),
            "target": torch.from_numpy(rng.integers(1, n_items + 1, size=n))}


def run_lengths(ctx: Ctx, cases: list, batch: int, curve: dict | None = None) -> list[dict]:
    """Finetuning step (transductive, parameter-efficient) per length distribution: padded, packed,
    reference, on one model's weights, in this process. ``curve`` ({series: []}) is filled with the
    step time vs a fixed history length on the first case's catalogue."""
    rows = []
    for kind, n_items, splits in cases:
        rng = np.random.default_rng(ctx.seed)
        items = synth_item_table(n_items, 512, ctx.seed, device=ctx.device)
        random_interests(items, n_interests(n_items, 0.5), ctx.seed)
        model = MISSRec(_config(ctx, use_id=True, n_items=n_items)).to(ctx.device)
        model.set_peft(True)
        ref_model = copy.deepcopy(model)
        model.train()
        objective = FinetuneObjective(model, gamma_reg=1e-4)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        ref_opt = torch.optim.Adam([p for p in ref_model.parameters() if p.requires_grad], lr=1e-3)
        ref_tables = RefTables(items, ctx.device)
        b = _length_rows(kind, n_items, batch, rng, QUICK_MAX_LEN if ctx.quick else 50, splits)
        b_dev = {k: v.to(ctx.device) for k, v in b.items()}
        ref_b = {"item_id_list": b_dev["seq"], "item_length": b_dev["length"], "item_id": b_dev["target"]}

        def ours():
            with ctx.autocast():
                loss, _ = objective(b_dev, items)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        def ref():
            loss = ref_finetune_loss(ref_model, ref_tables, ref_b)
            ref_opt.zero_grad()
            loss.backward()
            ref_opt.step()
            return loss.item()

        t = {}
        for impl in ("packed", "padded"):
            with attention_impl(model, impl):
                t[impl] = measure_adaptive(ours, ctx, memory=False)["median_s"]
                t[impl + "_flops"] = count_work(ours)["flops"]
        t["reference"] = measure_adaptive(ref, ctx, memory=False)["median_s"]
        useful = t["packed_flops"]
        rows.append({"lengths": kind, "items": n_items, "mean_len": float(b["length"].float().mean()),
                     "max_len": int(b["length"].max()), "packed_step_s": t["packed"], "padded_step_s": t["padded"],
                     "reference_step_s": t["reference"], "packed_vs_reference": t["reference"] / t["packed"],
                     "packed_vs_padded": t["padded"] / t["packed"],
                     **{f"{k}_seq_per_s": batch / t[k] for k in ("packed", "padded", "reference")},
                     "useful_gflop": useful / 1e9, "padded_gflop": t["padded_flops"] / 1e9,
                     "packed_gflop_per_s": useful / 1e9 / t["packed"],
                     "padded_useful_gflop_per_s": useful / 1e9 / t["padded"],
                     "reference_useful_gflop_per_s": useful / 1e9 / t["reference"]})
        print(f"  lengths {kind}: packed {t['packed']:.3g}s, padded {t['padded']:.3g}s, "
              f"reference {t['reference']:.3g}s", flush=True)
        if curve is not None and not curve["packed"]:
            # Step time vs history length, every row of the batch at that length (one timed step each).
            for n in ([1, 2, 5, 10, 20] if ctx.quick else [1, 3, 10, 25, 50]):
                b_dev["length"].fill_(n)
                b_dev["seq"] = torch.where(torch.arange(b_dev["seq"].shape[1], device=ctx.device) < n,
                                           b_dev["seq"].clamp_min(1), 0)
                ref_b.update(item_id_list=b_dev["seq"], item_length=b_dev["length"])
                for impl in ("packed", "padded"):
                    with attention_impl(model, impl):
                        curve[impl].append((n, measure(ours, ctx, repeats=1, warmup=0)["median_s"]))
                curve["reference"].append((n, measure(ref, ctx, repeats=1, warmup=0)["median_s"]))
        del model, ref_model, items, ref_tables
    return rows


def main(argv=None) -> dict:
    p = build_parser(__doc__.split("\n\n")[0], default_repeats=3)
    p.add_argument("--budget-s", type=float, default=None,
                   help="Longest a whole finetuning epoch's steps, or one k-means, may run before it is "
                        "extrapolated (default: 120 s; 2 s with --quick).")
    p.add_argument("--sizes", default="", help="Comma-separated subset of: " + ", ".join(SIZES))
    p.add_argument("--pretrain-batch", type=int, default=None, help="Pretraining global batch (default 4096 on a GPU, 1024 on a CPU; quick 32).")
    p.add_argument("--finetune-batch", type=int, default=None, help="Finetuning batch (default 512; quick 16).")
    p.add_argument("--parts", default="pretrain,finetune,lengths",
                   help="Comma-separated subset of: pretrain, finetune, lengths.")
    args = p.parse_args(argv)
    set_argv(argv)
    ctx = Ctx(args)
    res = new_result("train", ctx)
    budget = args.budget_s if args.budget_s is not None else (2.0 if ctx.quick else 120.0)
    sizes = QUICK_SIZES if ctx.quick else SIZES
    if args.sizes:
        unknown = [s for s in args.sizes.split(",") if s not in sizes]
        if unknown:
            raise SystemExit(f"error: --sizes: unknown {unknown}; choose from {list(sizes)}")
        sizes = {s: sizes[s] for s in args.sizes.split(",")}
    # A 4096-row fp32 step needs ~20 GB of host RAM (5 GB measured at 1024), more than a small
    # machine has: on a CPU the default batch is 1024 (sequences/s is what compares).
    pt_batch = args.pretrain_batch or (32 if ctx.quick else 4096 if ctx.device.type == "cuda" else 1024)
    ft_batch = args.finetune_batch or (16 if ctx.quick else 512)
    roofs = {"tflops": matmul_peak_tflops(ctx, n=512 if ctx.quick else None),
             "gbs": copy_bandwidth_gbs(ctx, mb=16 if ctx.quick else None)}
    parts = set(args.parts.split(","))
    if parts - {"pretrain", "finetune", "lengths"}:
        raise SystemExit(f"error: --parts: unknown {sorted(parts - {'pretrain', 'finetune', 'lengths'})}")
    pt_rows, ft_rows, curve, length_cases = [], [], None, []
    for i, (name, (n_items, n_rows)) in enumerate(sizes.items()):
        rng = np.random.default_rng(ctx.seed + i)
        splits = synth_splits(n_items, n_rows, rng, mean_len=MEAN_LEN.get(name, 7.5),
                              max_len=QUICK_MAX_LEN if ctx.quick else 50)
        if i == 0:
            length_cases.append(("uniform 1..50", n_items, None))
        length_cases.append((f"amazon ({name})", n_items, splits))
        if "pretrain" in parts:
            curve_b = [pt_batch // 8, pt_batch // 4, pt_batch // 2] if i == 0 else []
            row, c = run_pretrain(ctx, name, n_items, splits, pt_batch, roofs, curve_b)
            pt_rows.append(row)
            curve = curve or c
            print(f"  {name}: pretrain step ours {row['ours_step_s']:.3g}s, padded {row['padded_step_s']:.3g}s, "
                  f"reference {row['reference_step_s']:.3g}s", flush=True)
        if "finetune" in parts:
            ft_rows.append(run_finetune(ctx, name, n_items, splits, ft_batch, budget, roofs["tflops"] * 1e12))
            r = ft_rows[-1]
            print(f"  {name}: finetune epoch ours {r['ours_epoch_s']:.3g}s, padded {r['padded_epoch_s']:.3g}s, "
                  f"reference {r['reference_epoch_s']:.3g}s", flush=True)
    if "lengths" in parts:
        length_cases.append(("movielens (90% at 50)", length_cases[0][1], None))
        len_curve = {"packed": [], "padded": [], "reference": []}
        add_table(res, "lengths", f"Finetuning step by history length (batch {ft_batch}, transductive, parameter-efficient)",
                  LENGTH_COLUMNS, run_lengths(ctx, length_cases, ft_batch, len_curve))
        add_curve(res, "finetune_step_vs_history_length", "seqlen", "history length (every row)",
                  f"seconds per finetuning step (batch {ft_batch}, {length_cases[0][1]} items)", len_curve)
    if pt_rows:
        add_table(res, "pretrain", f"Pretraining step (batch {pt_batch})", PRETRAIN_COLUMNS, pt_rows)
        add_curve(res, "pretrain_step_vs_batch", "batch", "batch size", f"seconds per step ({list(sizes)[0]})",
                  {k: sorted(v) for k, v in curve.items()})
    if ft_rows:
        add_table(res, "finetune", f"Finetuning epoch (batch {ft_batch}, k-means ratio 0.5, no validation)",
                  FINETUNE_COLUMNS, ft_rows)
    res["roofs"] = {"matmul_tflops": roofs["tflops"], "copy_gbs": roofs["gbs"]}
    res["notes"] += [
        "ours = the packed path (real tokens only, the default); padded = our --attention_impl padded path on the "
        "same weights; useful GFLOP counts the packed step's work",
        "speedup = reference / ours, measured in this process on the same device; the reference is fp32 "
        f"(as the original), ours runs in {ctx.dtype_name}",
        f"roofs measured here: matmul {roofs['tflops'] * 1e3:.1f} GFLOP/s, copy {roofs['gbs']:.1f} GB/s; "
        "matmul_roof_frac / bandwidth_roof_frac = achieved FLOP/s (torch flop counter) and estimated "
        "kernel-level bytes/s (count_work, cache reuse ignored) of our step over those roofs",
        "peak_mb: peak memory above the level before the step (CPU: sampled RSS; CUDA: max_memory_allocated), "
        "taken on the first (warm-up) step, which includes allocating Adam's state",
    ]
    return finish(res, ctx)


if __name__ == "__main__":
    main()
