"""The budget currencies: what a run can be asked to remove, and every name each goes by.

One entry per currency, read by whatever lists them: the option checks (``PruneConfig``), the
message that asks for a budget, ``prune/job.build_budgets`` (which builds each from
``budget.py`` or ``latency.py``), the metrics and the progress line (``cli/output.py``), the
summary (``prune/records.py``, ``folders/run_record.py``) and the default run folder's name
(``cli/prune.py``). Adding a currency: docs/architecture.md, "How to add a budget".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

DEFAULT_TOLERANCE = 0.005  # relative miss of a budget's target allowed at the end (--tolerance)


def _fraction(value) -> bool:
    return isinstance(value, (int, float)) and 0 < value < 1


def _speedup(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 1


@dataclass(frozen=True)
class Currency:
    name: str  # key under "budgets" in config.json and summary.json, and binding_budget's value
    option: str  # the option that sets it
    field: str  # the PruneConfig field of that option
    unit: str  # of its costs, in messages and the summary
    asks: str  # what the option gives, in the message that asks for a budget
    valid: Callable[[float], bool]  # a value the option takes
    must_be: str  # what ``valid`` accepts, for its message
    example: str  # a value of the option, for messages
    metric_prefix: str  # metrics.jsonl: expected_{prefix}sparsity, target_{prefix}sparsity, {prefix}lambda1, 2
    label: str  # the progress line's name for its expected/target sparsity
    folder_tag: str  # the default run folder names its value after this: runs/<model>-p0.72-m0.5-x3
    summary_part: str | None  # the summary's part with its own figures (None: the top-level parameter keys)
    decimals: int = 0  # of its costs in the summary: 0 for counts, 3 for milliseconds
    # the option's value for a sparsity, the fraction of the dense cost to remove (--speedup X removes 1 - 1/X)
    option_value: Callable[[float], float] = lambda sparsity: sparsity

    def check(self, value) -> str | None:
        """The message refusing ``value`` (None: accepted)."""
        if value is None or self.valid(value):
            return None
        return f"{self.option} must be {self.must_be}, got {value}; e.g. {self.option} {self.example}"


PARAMS = Currency("params", "--sparsity", "sparsity", "parameters", "fraction of parameters to remove", _fraction,
                  "between 0 and 1 (exclusive)", "0.72", "", "sparsity", "p", None)
MACS = Currency("macs", "--macs-sparsity", "macs_sparsity", "MACs", "fraction of MACs to remove", _fraction,
                "between 0 and 1 (exclusive)", "0.72", "macs_", "MACs sparsity", "m", "macs")
LATENCY = Currency("latency", "--speedup", "speedup", "ms", "predicted speedup, with --latency-table", _speedup,
                   "a finite number above 1", "3", "latency_", "latency sparsity", "x", "predicted", decimals=3,
                   option_value=lambda sparsity: 1 / (1 - sparsity))
CURRENCIES = (PARAMS, MACS, LATENCY)  # in this order everywhere: budgets, metrics, summaries, folder names
BY_NAME = {currency.name: currency for currency in CURRENCIES}


def ask_for_budget() -> str:
    """What to give when no budget is given."""
    options = ", ".join(f"{c.option} ({c.asks})" for c in CURRENCIES)
    return f"give {options}, or several, e.g. {PARAMS.option} {PARAMS.example} {MACS.option} {MACS.example}"
