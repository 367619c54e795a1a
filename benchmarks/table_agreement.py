"""How far two cost tables of one model and setting (`speechprune bench --cost-model T`) agree on
their width steps: for every width of every sweep both measured, its time relative to the sweep's
widest width in one table over the same in the other. Relative times, not factors: a factor also
carries the table's smooth fit, which two tables fit a little differently, while the prediction of a
width (its smooth time times its factor) is its relative time times the widest width's smooth time.

    python benchmarks/table_agreement.py T1 T2

Two tables measured back to back on an idle machine should disagree by a few per cent; the
disagreement is what the machine's moving speed put into the widths a `--round-to auto` decision
chooses between. Prints a markdown table per sweep kind on stdout. Nothing is timed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

KINDS = ("conv", "projection", "attention", "ffn")  # the first word of each sweep name (method/latency_steps.py)


def relative_times(sweep: dict) -> list[float]:
    """Each width's measured time over the widest width's (the last)."""
    widest = sweep["measured_ms"][-1]
    return [ms / widest for ms in sweep["measured_ms"]]


def disagreements(first: dict, second: dict) -> dict[str, list[float]]:
    """Per sweep kind: |relative time in ``first`` / relative time in ``second`` - 1| of every width
    but the widest (1 in both), over the sweeps both tables measured at the same widths."""
    found: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for name, sweep in first["widths"]["steps"].items():
        other = second["widths"]["steps"].get(name)
        if other is None or other["widths"] != sweep["widths"]:
            continue
        pairs = zip(relative_times(sweep)[:-1], relative_times(other)[:-1])
        found[name.split(".")[0]] += [abs(a / b - 1) for a, b in pairs]
    return {kind: values for kind, values in found.items() if values}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def markdown(found: dict[str, list[float]]) -> str:
    rows = ["| sweeps | widths | median | 90th percentile | largest |", "|---|---|---|---|---|"]
    everything = [value for values in found.values() for value in values]
    for kind, values in [*found.items(), ("all", everything)]:
        rows.append(f"| {kind} | {len(values)} | {statistics.median(values):.1%} | {percentile(values, 0.9):.1%} | "
                    f"{max(values):.1%} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tables", nargs=2, type=Path, help="two cost tables (format 2 or later)")
    args = parser.parse_args()
    first, second = (json.loads(path.read_text()) for path in args.tables)
    for path, table in zip(args.tables, (first, second)):
        if "widths" not in table:
            sys.exit(f"error: {path} has no width steps (a format 1 table); measure one with speechprune bench "
                     "MODEL --cost-model FILE")
    found = disagreements(first, second)
    if not found:
        sys.exit("error: the two tables share no sweep at the same widths; compare tables of one model and block step")
    print(markdown(found), end="")


if __name__ == "__main__":
    main()
