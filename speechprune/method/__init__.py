"""The pruning method, apart from any command: hard-concrete gates over every prunable structure
(``gates``), the exact parameter and MACs counts of gate values (``accounting``, ``macs``),
latency predicted from a measured cost table (``latency``), budgets in each currency
(``budget``), the decision that lands on them (``decision``) and the distillation loss
(``distill``). Builds on ``model``."""
