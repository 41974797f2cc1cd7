"""The reports every training run writes: results.json, results.md and curves.png (each atomically).

Shared by finetuning (missrec/recipes/finetune.py) and the graph baselines (missrec/graph/loop.py),
so MISSRec and baseline folders read the same way and missrec/recipes/compare.py can put them in
one table.
"""
from __future__ import annotations

from pathlib import Path

from .fsutil import atomic_path, atomic_write_json, atomic_write_text


def write_reports(out: Path, results: dict, history: list, *, title: str, footer: str,
                  plot: bool = True) -> None:
    """``results`` holds ``valid``/``test`` metric dicts and ``metric``; ``history`` one dict per epoch.

    results.json keeps every number at full precision (settings such as ``reg: 1e-5`` included);
    only the markdown table rounds metrics to 4 decimals."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", results)
    keys = list(results["test"].keys())
    lines = [f"# {title}", "", "| split | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for split in ("valid", "test"):
        lines.append(f"| {split} | " + " | ".join(f"{results[split][k]:.4f}" for k in keys) + " |")
    atomic_write_text(out / "results.md", "\n".join(lines + ["", footer]) + "\n")
    if plot and history:
        _plot_curves(out / "curves.png", history, f"valid_{results['metric']}", title)


def _plot_curves(path: Path, history: list, key: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax1 = plt.subplots(figsize=(6, 3.5))
    ax1.plot([h["epoch"] for h in history], [h["train_loss"] for h in history], color="tab:blue")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("train loss", color="tab:blue")
    pts = [(h["epoch"], h[key]) for h in history if key in h]
    if pts:
        ax2 = ax1.twinx()
        ax2.plot(*zip(*pts), color="tab:red")
        ax2.set_ylabel(key.replace("_", " "), color="tab:red")
    ax1.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
