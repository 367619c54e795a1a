"""Width steps of a cost table: how each part's time moves with its width on the hardware the
table was measured on (``bench MODEL --cost-model T``, format 2).

Kernels work on blocks of channels (oneDNN: 16 on AVX-512, 8 on AVX2; GPUs: tiles), so time
does not follow MACs smoothly: a width just past a block boundary, or a block count the kernel
cannot share work across, costs more per MAC. The table's smooth fit cannot see that, so it
keeps, per part kind, a sweep of widths at multiples of the block step and, at each, a factor:
measured time / smooth fit, relative to the sweep's widest width (1 there).

A part's step-aware time is its smooth time times ``Steps.factor`` of its width: the width is
padded up to the block (a kernel computes a started block whole), the factor measured there is
taken; between measured points of a coarser sweep the smooth fit stands, rescaled by the
neighbours' factors interpolated linearly; beyond the sweep's ends the end's factor.

The sweep names below are what ``bench.cost_model`` measures and what each part
(``method/parts/``, ``step_factor``) reads.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass

CONV_OUTPUTS = "conv.{}.outputs"  # conv layer c's output channels, its input channels dense
CONV_INPUTS = "conv.{}.inputs"  # conv layer c's input channels (c >= 1), its output channels dense
PROJECTION = "projection.channels"  # the feature projection's input channels
ATTENTION = "attention.heads.{}"  # run-time head width of a layer of that many heads, without FFN
FFN = "ffn.units"  # FFN units of a layer without attention


@dataclass(frozen=True)
class Steps:
    """The width steps of one table: its block step and, per sweep name, (widths ascending, factors)."""

    block: int
    sweeps: dict[str, tuple[list[int], list[float]]]

    @classmethod
    def of(cls, widths: dict | None) -> "Steps | None":
        """From a table's ``widths`` section (None for a format 1 table: no steps)."""
        if widths is None:
            return None
        return cls(widths["block"], {name: (sweep["widths"], sweep["factor"]) for name, sweep in widths["steps"].items()})

    def padded(self, width: float) -> int:
        """``width`` rounded up to the block step."""
        return math.ceil(width / self.block - 1e-9) * self.block

    def factor(self, name: str, width: float) -> float:
        """The step factor of sweep ``name`` at ``width`` (1.0 when that sweep was not measured)."""
        if name not in self.sweeps or width <= 0:
            return 1.0
        widths, factors = self.sweeps[name]
        padded = min(self.padded(width), widths[-1])
        i = bisect_left(widths, padded)
        if widths[i] == padded or i == 0:
            return factors[i]
        low, high = widths[i - 1], widths[i]  # between measured points: interpolate the rescaling
        share = (padded - low) / (high - low)
        return factors[i - 1] * (1 - share) + factors[i] * share


def sweep_widths(full: int, block: int, points: int) -> list[int]:
    """Multiples of ``block`` up to ``full`` (and ``full`` itself), at most about ``points`` of them:
    every block while that is few enough, else every few blocks."""
    stride = block * max(1, math.ceil(full / block / points))
    widths = list(range(stride, full + 1, stride))
    return widths if widths and widths[-1] == full else widths + [full]


def block_step(device_type: str, override: int | None = None) -> tuple[int, str]:
    """(the block step widths are measured at, where it comes from): ``override`` when given;
    on a CPU the SIMD width in float32 lanes of the kernels torch dispatches to (16 with AVX-512,
    8 with AVX2, 8 otherwise); on a GPU 8 (tensor cores want multiples of 8)."""
    if override is not None:
        return override, "--block-step"
    if device_type == "cpu":
        import torch

        capability = torch.backends.cpu.get_cpu_capability()
        return {"AVX512": 16, "AVX2": 8}.get(capability, 8), f"cpu capability {capability}"
    return 8, f"{device_type} default"
