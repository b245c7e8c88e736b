"""Plots for docs/benchmarks.md from the JSON the benchmarks write (needs matplotlib).

    python benchmarks/plot.py docs/results/e2e_gpu_h100.json docs/e2e_gpu_h100.png
"""

from __future__ import annotations

import json
import sys


def plot_e2e(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["rows"] if r.get("variant", "default") == "default"]
    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.6))
    for ax, model in zip(axes if len(models) > 1 else [axes], models):
        mine = [r for r in rows if r["model"] == model]
        labels = [str(r["batch"]) for r in mine]
        x = range(len(mine))
        ax.bar([i - 0.2 for i in x], [r["baseboard_tok_s"] for r in mine], 0.4,
               label="baseboard")
        ax.bar([i + 0.2 for i in x], [r["transformers_tok_s"] or 0 for r in mine], 0.4,
               label="transformers generate")
        ax.set_xticks(list(x), labels)
        ax.set_yscale("log")
        ax.set_xlabel("batch")
        ax.set_ylabel("tokens/s")
        ax.set_title(model)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    plot_e2e(json.load(open(sys.argv[1])), sys.argv[2])
