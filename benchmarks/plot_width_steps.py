"""Plot and tabulate the width sweeps of a format 2 cost table (`speechprune bench --cost-model T`).

For each sweep asked for, the top panel shows the measured time of the part at every width the
sweep timed; the bottom panel shows the width's factor (measured time per unit of work over the
smooth fit's, 1.0 at the dense width). Widths whose factor stands at least ``--slow`` above both
neighbours' are marked: they are the kernel's slow steps, the widths `prune --round-to auto` avoids.

    python benchmarks/plot_width_steps.py T --sweeps conv.1.outputs,ffn.units --out docs/width-steps.png

Prints one markdown table per sweep on stdout. Nothing is timed: the numbers are the table's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def slow_widths(factors: list[float], margin: float) -> list[bool]:
    """Whether each width's factor exceeds both neighbours' by ``margin``. The ends have one neighbour and
    are never marked: the narrowest widths cost more per unit of work at every width (fixed costs)."""
    inner = [factors[i] >= max(factors[i - 1], factors[i + 1]) + margin for i in range(1, len(factors) - 1)]
    return [False, *inner, False] if len(factors) > 1 else [False] * len(factors)


def markdown(name: str, sweep: dict, block: int, marks: list[bool]) -> str:
    def cell(value, slow):
        return f"**{value}**" if slow else str(value)

    widths = [cell(w, m) for w, m in zip(sweep["widths"], marks)]
    blocks = [cell(-(-w // block), m) for w, m in zip(sweep["widths"], marks)]
    ms = [cell(f"{t:.2f}", m) for t, m in zip(sweep["measured_ms"], marks)]
    factors = [cell(f"{f:.2f}", m) for f, m in zip(sweep["factor"], marks)]
    rows = [[f"`{name}` width", *widths], [f"blocks of {block}", *blocks], ["measured ms", *ms], ["factor", *factors]]
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def plot(table: dict, names: list[str], marks: dict[str, list[bool]], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conditions = table["conditions"]
    figure, axes = plt.subplots(2, len(names), figsize=(6 * len(names), 6), squeeze=False, sharex="col")
    for column, name in enumerate(names):
        sweep = table["widths"]["steps"][name]
        widths = sweep["widths"]
        slow = [i for i, m in enumerate(marks[name]) if m]
        time_axis, factor_axis = axes[0][column], axes[1][column]
        time_axis.plot(widths, sweep["measured_ms"], "o-", markersize=3)
        time_axis.plot([widths[i] for i in slow], [sweep["measured_ms"][i] for i in slow], "o", color="red",
                       label="slow step")
        time_axis.set_title(name)
        time_axis.set_ylabel("measured ms")
        factor_axis.plot(widths, sweep["factor"], "o-", markersize=3)
        factor_axis.plot([widths[i] for i in slow], [sweep["factor"][i] for i in slow], "o", color="red")
        factor_axis.axhline(1.0, color="grey", linewidth=0.8)
        factor_axis.set_ylabel("factor (time per unit of work / dense)")
        factor_axis.set_xlabel("width")
        if slow:
            time_axis.legend()
    figure.suptitle(f"{conditions.get('device_name', conditions['device'])}, {conditions['threads']} threads, "
                    f"{conditions['dtype']}, {conditions['seconds']} s, batch {conditions['batch']}, "
                    f"block {table['widths']['block']}", fontsize=10)
    figure.tight_layout()
    tmp = out.with_name(out.name + ".tmp.png")
    figure.savefig(tmp, dpi=100)
    tmp.replace(out)  # atomic: a reader never sees half a picture


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("table", help="a format 2 cost table from bench --cost-model")
    parser.add_argument("--sweeps", default="conv.1.outputs,ffn.units", help="comma-separated sweep names")
    parser.add_argument("--slow", type=float, default=0.15, help="factor margin over both neighbours that marks a slow width")
    parser.add_argument("--out", help="PNG to write (needs matplotlib)")
    args = parser.parse_args(argv)
    table = json.loads(Path(args.table).read_text())
    steps = table.get("widths", {}).get("steps")
    if not steps:
        sys.exit(f"error: {args.table} has no width sweeps; measure a format 2 table with bench --cost-model")
    names = args.sweeps.split(",")
    unknown = [n for n in names if n not in steps]
    if unknown:
        sys.exit(f"error: no sweep {', '.join(unknown)} in {args.table}; it has {', '.join(steps)}")
    marks = {name: slow_widths(steps[name]["factor"], args.slow) for name in names}
    for name in names:
        print(markdown(name, steps[name], table["widths"]["block"], marks[name]) + "\n")
    if args.out:
        plot(table, names, marks, Path(args.out))


if __name__ == "__main__":
    main()
