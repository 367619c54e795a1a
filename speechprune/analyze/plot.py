"""``--png``: the layers x heads heatmaps (and, for runs, parameters per layer) as one figure.

matplotlib is an optional extra (``pip install speechprune[plot]``); ``require_matplotlib``
is called while options are checked, before any weights are loaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import SpeechpruneError
from ..io.outputs import write_file

HEATMAPS = (
    ("drop_one", "drop-one change of the output (relative L2)"),
    ("grad_importance", "gradient importance (relative)"),
    ("entropy", "attention entropy (nats)"),
    ("mean_distance", "mean attention distance (frames)"),
    ("contribution_norm", "norm of the head's output"),
)


def require_matplotlib() -> None:
    if importlib.util.find_spec("matplotlib") is None:
        raise SpeechpruneError("--png needs matplotlib: pip install 'speechprune[plot]' (or pip install matplotlib)")


def save_png(report: dict, path: str | Path) -> None:
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    heads = report.get("heads") or {}
    maps = [(key, title) for key, title in HEATMAPS if key in heads]
    panels = len(maps) + (1 if report.get("run") else 0)
    if panels == 0:
        raise SpeechpruneError("nothing to draw: pass --data for head statistics (or analyze a prune run)")
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 4.2), squeeze=False)
    for ax, (key, title) in zip(axes[0], maps):
        rows = heads[key]
        width = max((len(r) for r in rows), default=0)
        grid = np.full((len(rows), max(width, 1)), np.nan)
        for l, row in enumerate(rows):
            grid[l, : len(row)] = row
        image = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_yticks(range(len(rows)), [str(l + 1) for l in range(len(rows))])
        fig.colorbar(image, ax=ax, fraction=0.046)
    if report.get("run"):
        ax = axes[0][-1]
        layers = report["run"]["params_by_layer"]
        y = np.arange(len(layers))
        ax.barh(y + 0.2, [l["dense"] / 1e6 for l in layers], height=0.4, label="before")
        ax.barh(y - 0.2, [l["pruned"] / 1e6 for l in layers], height=0.4, label="after")
        ax.set_yticks(y, [str(l["layer"] + 1) for l in layers])
        ax.invert_yaxis()
        ax.set_xlabel("parameters (M)")
        ax.set_ylabel("layer")
        ax.set_title("parameters per layer", fontsize=9)
        ax.legend(fontsize=8)
    fig.suptitle(f"speechprune analyze {report['model']}", fontsize=10)
    fig.tight_layout()
    write_file(path, "--png", lambda tmp: fig.savefig(tmp, dpi=110, format="png"), kind="png")
    plt.close(fig)
