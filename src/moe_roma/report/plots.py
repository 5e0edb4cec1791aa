"""PNG plots: training curves, expert utilisation, and a 2-D projection of routing vectors."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from moe_roma.manifold.metrics import expert_utilisation  # noqa: E402


def plot_training_curves(metrics_files: dict[str, Path], out: Path) -> Path:
    """Task loss and manifold loss against the step, one line per run."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, path in metrics_files.items():
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        steps = [r["step"] for r in rows]
        axes[0].plot(steps, [r["task_loss"] for r in rows], label=label)
        if any(r.get("manifold_loss") is not None for r in rows):
            axes[1].plot(steps, [r.get("manifold_loss") for r in rows], label=label)
    axes[0].set(title="task loss", xlabel="optimiser step")
    axes[1].set(title="manifold loss  Σ W_ij ||r_i − r_j||²", xlabel="optimiser step")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_expert_utilisation(
    routings: dict[str, torch.Tensor], layers: list[int], top_k: int, out: Path
) -> Path:
    """Share of top-k slots per expert, per tuned layer, for each routing (e.g. base vs tuned)."""
    n = len(layers)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2), squeeze=False)
    width = 0.8 / max(len(routings), 1)
    for j, (label, routing) in enumerate(routings.items()):
        util = expert_utilisation(routing, top_k).numpy()
        for i, layer in enumerate(layers):
            x = np.arange(util.shape[1])
            axes[0, i].bar(x + j * width, util[i], width=width, label=label)
            axes[0, i].set(title=f"layer {layer}", xlabel="expert")
    axes[0, 0].set_ylabel("share of top-k slots")
    axes[0, 0].legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_routing_projection(routings: dict[str, torch.Tensor], tasks: list[str], out: Path) -> Path:
    """PCA of the concatenated last-token routing vectors, coloured by task family.

    All panels share one projection (fitted on the first routing) so that they are comparable.
    """
    first = next(iter(routings.values()))
    x0 = first.reshape(first.shape[0], -1).double()
    mean = x0.mean(0)
    _, _, v = torch.pca_lowrank(x0 - mean, q=2, center=False)
    families = sorted(set(tasks))
    cmap = plt.get_cmap("tab20")
    fig, axes = plt.subplots(1, len(routings), figsize=(5 * len(routings), 4.4), squeeze=False)
    for ax, (label, routing) in zip(axes[0], routings.items()):
        xy = ((routing.reshape(routing.shape[0], -1).double() - mean) @ v).numpy()
        for c, fam in enumerate(families):
            idx = [i for i, t in enumerate(tasks) if t == fam]
            ax.scatter(xy[idx, 0], xy[idx, 1], s=9, color=cmap(c % 20), label=fam)
        ax.set(title=f"routing vectors: {label}", xlabel="PC 1", ylabel="PC 2")
    axes[0, -1].legend(fontsize=7, markerscale=1.5, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
