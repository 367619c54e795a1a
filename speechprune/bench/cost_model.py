"""``bench MODEL --cost-model FILE``: measure the cost table (``method.latency``) of a model for
this device, thread count, dtype, batch and input length.

The parts of the encoder are timed alone, built from the model's architecture with random
weights, at several widths, with bench's warm-up and interleaved rounds (``timing``), and each
part's features (``method.latency``) are fitted by non-negative least squares, on relative
errors. A transformer layer is timed at about a dozen shapes (head counts, head widths, FFN
widths, and two shapes whose heads are padded to a wider run-time width, so that the
projections at stored widths and the T'^2 products at the padded width separate).

Parts timed alone need not add up to the whole: a part called again and again finds its
inputs and weights in cache, and the glue between parts (WavLM's relative position bias,
norms, masks) is not timed. So the whole encoder is timed too, dense and evenly shrunk to
1/2 and 1/4 of its widths, in interleaved rounds as ``bench`` times models, and a scale and a
constant are fitted to those three.

Then the width steps (``method.latency_steps``): each part kind is timed again at multiples of
the hardware's block step (detected, or ``--block-step``): every conv layer's output channels
(its input dense) and input channels (its output dense, a coarser grid), the projection's
channels, the run-time head width at every head count (a layer without FFN), and the FFN units
(a layer without attention), each at most about ``SWEEP_POINTS`` widths. The widths of one sweep
are timed in the same interleaved rounds, as ``bench`` times models, and each width's time is
taken relative to the widest width's in the same round: a machine whose speed moves within
minutes (a 2-core VM's by a third) then moves every width of a round alike. Each width's factor
is that relative time over the smooth fit's, so 1 at the widest width. The steps are measured
before the encoder's scale is fitted, so the scale sees them.

The shapes of the smooth fit are timed twice: once as the fit asks for them, and again, alone as
before, after the last sweep; the fits use the lower of the two timings. A table takes minutes
and times each shape in a window of seconds, so a stretch of a slower machine would otherwise
stay in the prices of the shapes it caught. How far the dense parts moved between the passes is
recorded (``provenance.passes``), and a large move is a warning.

Every timed call runs in the runtime the table is for (``--runtime``, ``--quantize``): eager torch,
torch's dynamic int8, or ONNX Runtime, each part exported at its shape (``deploy.runtime.part_call``)
and int8-quantized as deployed models are. The stock model in float32 eager torch is timed in
the encoder's rounds too, so the table knows what its runtime gains over stock (``reference``).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Callable

import torch

from .. import __version__
from ..checks import MAX_BLOCK_STEP, check_count
from ..deploy.quantize import STATIC, quantize
from ..deploy.runtime import encoder_call, part_call
from ..errors import SpeechpruneError, UsageError
from ..io.outputs import check_output, output_path
from ..io.progress import Reporter
from ..method.latency import CostTable, architecture, dot, parts_ms, predict_ms, unit_coefficients, unit_features
from ..method.latency_check import check_cost_table
from ..method.latency_steps import ATTENTION, CONV_INPUTS, CONV_OUTPUTS, FFN, PROJECTION, Steps, block_step, sweep_widths
from ..method.parts import Frames
from ..model.device import DTYPES
from ..model.encoder import Encoder
from ..model.inference import InferenceConvLayer, InferencePositionalConv
from ..model.layers import EncoderLayer, FeatureProjection
from ..model.spec import EncoderSpec, LayerSpec
from .allocator import steady_allocator
from .fitting import fit_relative
from .job import BenchOptions, check_options
from .models import BenchModel, check_inputs, describe
from .timing import all_cores, device_name, device_sync, interleaved

COST_MODEL_MIN_TIME = 0.1  # seconds timed per shape at least (about 45 shapes, and the width sweeps)
SWEEP_POINTS = 32  # widths per sweep at most (about): every block of a 512-channel conv layer at step 16
INPUT_SWEEP_POINTS = 8  # conv input channels: their blocks move time less than the outputs'
FACTOR_RANGE = (0.25, 4.0)  # a step factor outside is a disturbed timing, not a kernel's step (those are < 2x)
DENSE_LAYER_SHAPES = 3  # the first of ``_layer_shapes``: the dense layer, its attention alone, its FFN alone
DRIFT_WARNING = 0.10  # the dense encoder's parts this much slower or faster in the second pass: the machine's speed moved


def check_cost_model_options(options: BenchOptions, out: str, block: int | None = None) -> None:
    """A table is for one model and one setting (before anything is read)."""
    if block is not None:
        check_count(block, "--block-step", most=MAX_BLOCK_STEP)
    if options.quantize in STATIC:
        raise UsageError(f"--cost-model times parts on random inputs, which --quantize {options.quantize} cannot be "
                         "calibrated on; use --quantize int8")
    if len(options.models) != 1:
        raise UsageError(f"--cost-model measures one model, got {len(options.models)}")
    for option, values in (("--seconds", options.seconds), ("--batch", options.batches), ("--dtype", options.dtypes)):
        if len(values) != 1:
            raise UsageError(f"--cost-model measures one setting: give one {option}, got {','.join(map(str, values))}")
    for option, given in (("--baseline", options.baseline), ("--compile", options.compile),
                          ("--breakdown", options.breakdown), ("--latency-table", options.latency_table)):
        if given:
            raise UsageError(f"--cost-model does not combine with {option}")
    if output_path(out, "--cost-model").is_dir():  # "" and links to nothing refused first
        raise UsageError(f"--cost-model {out} is a folder; give a file name such as cost-table.json")
    check_output(out, "--cost-model", {"MODEL": options.models[0]}, folder=False)


class _Timer:
    """Median milliseconds of one module call on random inputs, in the table's runtime (eager
    torch, torch int8, ONNX Runtime), with bench's warm-up and rounds."""

    def __init__(self, options: BenchOptions, device: torch.device, dtype: torch.dtype, clock: Callable[[], float],
                 threads: int, sampling_rate: int):
        self.options, self.device, self.dtype, self.clock, self.threads = options, device, dtype, clock, threads
        self.sampling_rate = sampling_rate
        self.sync = device_sync(device)
        self.generator = torch.Generator().manual_seed(options.seed)
        self.passes: dict[tuple, list[float]] = {}  # part shape -> its ms in each pass (its price: the lowest)
        self.builds: dict[tuple, Callable[[], tuple[torch.nn.Module, tuple]]] = {}  # part shape -> its build

    def part_ms(self, shape: tuple, build: Callable[[], tuple[torch.nn.Module, tuple]]) -> float:
        """Median ms of the part ``build()`` makes ((module, inputs)), timed the first time its
        ``shape`` is asked for, and the lower of its two timings once ``second_pass`` has run.
        ``build`` is kept for ``second_pass``, so it must bind what it uses (default arguments)."""
        if shape not in self.passes:
            module, inputs = build()
            self.passes[shape], self.builds[shape] = [self.ms(module, *inputs)], build
        return min(self.passes[shape])

    def second_pass(self, reporter: Reporter) -> None:
        """Every shape of the smooth fit timed again, alone, as the first time; each keeps the
        lower of its two timings. A table takes minutes and times each shape in a window of
        seconds, so a stretch of a slower machine (other work, throttling, a busy host) would stay
        in the prices of the shapes it caught; a slower machine never makes a part faster, so the
        lower timing is the part's. Seen on a 2-core VM: one stage of a table timed the layers
        1.7x slower than the same table twenty minutes later."""
        for done, (shape, build) in enumerate(self.builds.items()):
            reporter.count("timing every part again", done, len(self.builds))
            module, inputs = build()
            self.passes[shape].append(self.ms(module, *inputs))
        reporter.count("timing every part again", len(self.builds), len(self.builds))

    def sweep(self, parts: list[tuple[torch.nn.Module, tuple]]) -> tuple[list[float], list[float]]:
        """The parts (module, inputs) of one width sweep, widest last, timed in the same interleaved
        rounds: (the median ms of each, the median over the rounds of each one's time over the last
        one's in the same round). The machine's speed moves within minutes (a 2-core VM's by a
        third; ONNX Runtime's by 10-20 % between two states), so widths timed one after another
        compared its states more than their kernels; in one round every width sees the same. The
        rounds go on until the widest, the longest call, has ``min_time`` timed: a narrow width
        needs no more rounds than it for its ratio (a 1 ms width would otherwise take a hundred
        rounds of every width)."""
        times = self.interleaved([self.call(module, inputs) for module, inputs in parts], paced_by=-1)  # s, per round
        relative = [statistics.median(t / widest for t, widest in zip(part, times[-1])) for part in times]
        return [statistics.median(part) * 1e3 for part in times], relative

    def input(self, *shape: int) -> torch.Tensor:
        return torch.randn(self.options.batches[0], *shape, generator=self.generator).to(self.device, self.dtype)

    def call(self, module: torch.nn.Module, inputs: tuple) -> Callable[[], object]:
        """One call of ``module`` on ``inputs`` as the table's runtime runs it."""
        module = module.to(self.device, self.dtype).eval()
        if self.options.runtime == "onnxruntime":
            return part_call(module, inputs, threads=self.threads, quantize=self.options.quantize)
        return _eager(quantize(module, self.options.quantize) if self.options.quantize else module, inputs)

    def encoder_call(self, encoder: Encoder, input_values: torch.Tensor) -> Callable[[], object]:
        """One call of a whole encoder as it is deployed in the table's runtime: in ONNX Runtime,
        ``export-onnx``'s graph (``deploy.runtime.encoder_call``), not a fixed-shape one."""
        if self.options.runtime == "onnxruntime":
            return encoder_call(encoder.eval(), input_values, threads=self.threads, quantize=self.options.quantize,
                                sampling_rate=self.sampling_rate)
        return self.call(encoder, (input_values,))

    def ms(self, module: torch.nn.Module, *inputs) -> float:
        return self.interleaved_ms([self.call(module, inputs)])[0]

    def interleaved_ms(self, calls: list[Callable[[], object]]) -> list[float]:
        """Median ms of each call, timed in interleaved rounds (as ``bench`` times models)."""
        return [statistics.median(t) * 1e3 for t in self.interleaved(calls)]

    def interleaved(self, calls: list[Callable[[], object]], paced_by: int | None = None) -> list[list[float]]:
        """Seconds of each call in each round, with bench's warm-up and rounds (``timing.rounds``)."""
        o = self.options
        return interleaved(calls, warmup=o.warmup, repeat=o.repeat, min_time=o.min_time, clock=self.clock, sync=self.sync,
                           paced_by=paced_by)


def _eager(module: torch.nn.Module, inputs: tuple) -> Callable[[], object]:
    def run():
        with torch.inference_mode():
            return module(*inputs)
    return run


def _stock(model: BenchModel) -> tuple[torch.nn.Module, str]:
    """The stock model of ``model``'s architecture with random weights (the ``transformers`` class
    ``bench`` times a stock model as; speechprune's dense encoder for a prune run), and what it is."""
    info = model.target.info
    if info is None:
        return Encoder(model.spec), "speechprune's dense encoder, float32, eager torch"
    import transformers

    return getattr(transformers, info.family.base_class)(info.config), f"stock {info.family.base_class}, float32, eager torch"


def _with_conv(spec: EncoderSpec, changes: dict[int, int]) -> EncoderSpec:
    """``spec`` with some conv layers at other channel counts (norms still over the dense count,
    as in a shrunk model)."""
    channels = [changes.get(c, n) for c, n in enumerate(spec.conv_channels)]
    return EncoderSpec.from_dict({**spec.to_dict(), "conv_channels": channels,
                                  "conv_norm_channels": spec.conv_norm_channels})


def _share(n: int, fraction: float) -> int:
    return max(1, round(n * fraction))


def _uniform(spec: EncoderSpec, share: float) -> EncoderSpec:
    """``spec`` shrunk evenly: ``share`` of every conv layer's channels, of the heads and of the FFN units."""
    heads, units = _share(spec.num_heads, share), _share(spec.layers[0].ffn_dim, share)
    layer = LayerSpec(heads=list(range(heads)), qk_dim=spec.head_dim, vo_dim=spec.head_dim, ffn_dim=units)
    return EncoderSpec.from_dict({
        **spec.to_dict(),
        "conv_channels": [_share(n, share) for n in spec.conv_channels],
        "conv_norm_channels": spec.conv_norm_channels,
        "layers": [asdict(layer)] * len(spec.layers),
    })


def _layer_shapes(spec: EncoderSpec) -> list[LayerSpec]:
    """About a dozen shapes of one layer: head counts, head widths, FFN widths, and two shapes
    whose padded width differs from the stored ones (projections vs T'^2 products). The first
    ``DENSE_LAYER_SHAPES`` are the dense layer, its attention alone and its FFN alone."""
    h, w, f = spec.num_heads, spec.head_dim, spec.layers[0].ffn_dim
    two, third, half_w = _share(h, 2 / 3), _share(h, 1 / 3), _share(w, 1 / 2)

    def shape(heads, width, units, qk_dims=None, vo_dims=None):
        qk = max(qk_dims) if qk_dims else width
        vo = max(vo_dims) if vo_dims else width
        return LayerSpec(heads=list(range(heads)), qk_dim=qk if heads else 0, vo_dim=vo if heads else 0, ffn_dim=units,
                         attention=heads > 0, ffn=units > 0, qk_dims=qk_dims, vo_dims=vo_dims)

    shapes = [
        shape(h, w, f), shape(h, w, 0), shape(0, 0, f), shape(h, w, _share(f, 1 / 2)), shape(h, w, _share(f, 1 / 6)),
        shape(0, 0, 0), shape(two, w, f), shape(third, w, 0), shape(1, w, _share(f, 1 / 2)),
        shape(h, half_w, f), shape(third, half_w, _share(f, 1 / 6)),
        shape(h, w, _share(f, 1 / 2), qk_dims=[w if i % 2 else half_w for i in range(h)],
              vo_dims=[w if i % 2 else half_w for i in range(h)]),
        shape(two, w, 0, qk_dims=[half_w] * two, vo_dims=[w] * two),  # q/k narrower than v/o: padded to w
    ]
    unique = {json.dumps(asdict(s)): s for s in shapes}
    return list(unique.values())


def _describe_layer(layer: LayerSpec) -> str:
    qk, vo = layer.head_widths()
    attention = "no attention"
    if layer.attention:
        attention = f"{len(layer.heads)} heads q/k {sorted(set(qk))} v/o {sorted(set(vo))}"
    return f"layer: {attention}, FFN {layer.ffn_dim if layer.ffn else 'none'}"


def _layer_key(layer: LayerSpec) -> tuple:
    return ("layer", json.dumps(asdict(layer), sort_keys=True))


@dataclass(frozen=True)
class _Sweep:
    """One width sweep as measured: the part ``unit`` (``method.latency``'s units) at each of
    ``widths``, in an encoder of the matching spec in ``shapes``; the median ms of each, and the
    median over the rounds of its time over the widest width's time in the same round."""

    unit: tuple
    widths: list[int]
    shapes: list[EncoderSpec]
    measured_ms: list[float]
    relative: list[float]

    def steps(self, coefficients: dict, features: Callable[[EncoderSpec, tuple], dict]) -> dict:
        """The table's sweep: {"widths", "measured_ms", "factor"}, each width's factor its time
        relative to the widest over the same relation of the smooth fit (``coefficients``, the
        unit's), so 1 at the widest width; ``features(shape, unit)``: a unit's features."""
        smooth = [dot(coefficients, features(shape, self.unit)) for shape in self.shapes]
        factors = [relative * smooth[-1] / fitted if fitted > 0 and smooth[-1] > 0 and relative > 0 else 1.0
                   for relative, fitted in zip(self.relative, smooth)]
        return {"widths": self.widths, "measured_ms": [round(ms, 4) for ms in self.measured_ms],
                "factor": [round(min(max(f, FACTOR_RANGE[0]), FACTOR_RANGE[1]), 4) for f in factors]}


def _sweeps(spec: EncoderSpec, samples: int, step: int, timer: _Timer, bias, reporter: Reporter) -> dict[str, _Sweep]:
    """Every part kind timed at multiples of ``step`` (``latency_steps``) on an input of
    ``samples``, the widths of one sweep in the same interleaved rounds (``_Timer.sweep``), so that
    how they compare does not depend on how fast the machine ran while each was timed:
    {sweep name: ``_Sweep``}. ``bias``: WavLM's position bias input of a layer (else None)."""
    frames = Frames.of(spec, samples)
    t, d = frames.t, spec.hidden_size
    sweeps = {}

    def sweep(name: str, unit: tuple, shapes: list[tuple[int, EncoderSpec]],
              build: Callable[[int, EncoderSpec], tuple[torch.nn.Module, tuple]]) -> None:
        """Time the part ``build(width, shape)`` makes (module, inputs) at each (width, shape), widest last."""
        measured, relative = timer.sweep([build(width, shape) for width, shape in shapes])
        sweeps[name] = _Sweep(unit, [w for w, _ in shapes], [shape for _, shape in shapes], measured, relative)

    for c, full in enumerate(spec.conv_channels):
        reporter.message(f"timing conv layer {c} at its widths")
        before = spec.conv_channels[c - 1] if c else 1
        length = frames.lengths[c - 1] if c else samples
        dense_input = timer.input(before, length)  # the output sweep's input, shared (tens of MB for 10 s)
        sweep(CONV_OUTPUTS.format(c), ("conv", c),
              [(width, _with_conv(spec, {c: width})) for width in sweep_widths(full, step, SWEEP_POINTS)],
              lambda _, shape: (InferenceConvLayer(shape, c), (dense_input,)))
        if c:
            sweep(CONV_INPUTS.format(c), ("conv", c),
                  [(width, _with_conv(spec, {c - 1: width})) for width in sweep_widths(before, step, INPUT_SWEEP_POINTS)],
                  lambda width, shape: (InferenceConvLayer(shape, c), (timer.input(width, length),)))

    last = len(spec.conv_channels) - 1
    sweep(PROJECTION, ("projection",),
          [(width, _with_conv(spec, {last: width})) for width in sweep_widths(spec.conv_channels[-1], step, SWEEP_POINTS)],
          lambda width, shape: (FeatureProjection(shape), (timer.input(t, width),)))

    hidden = timer.input(t, d)

    def layer_sweep(name: str, layers: list[tuple[int, LayerSpec]]) -> None:
        sweep(name, ("layer", 0),
              [(width, EncoderSpec.from_dict({**spec.to_dict(), "layers": [asdict(layer)]})) for width, layer in layers],
              lambda _, shape: (EncoderLayer(spec, shape.layers[0]), (hidden, None, bias)))

    for heads in range(1, spec.num_heads + 1):
        reporter.message(f"timing attention of {heads} heads at its widths")
        layer_sweep(ATTENTION.format(heads), [
            (w, LayerSpec(heads=list(range(heads)), qk_dim=w, vo_dim=w, ffn_dim=0, ffn=False))
            for w in sweep_widths(spec.head_dim, step, SWEEP_POINTS)])
    reporter.message("timing the FFN at its widths")
    layer_sweep(FFN, [(w, LayerSpec(heads=[], qk_dim=0, vo_dim=0, ffn_dim=w, attention=False))
                      for w in sweep_widths(spec.layers[0].ffn_dim, step, SWEEP_POINTS)])
    return sweeps


class _Fits:
    """The fits of one table, part by part: each part's coefficients from its timed shapes, and the
    residuals of every shape (the table's ``fit``)."""

    def __init__(self, frames: Frames):
        self.frames = frames
        self.fit: dict[str, list] = {}

    def features(self, shape: EncoderSpec, unit: tuple) -> dict:
        """The features of ``unit`` of an encoder of ``shape``, as its parts declare them."""
        return unit_features(shape, self.frames)[unit]

    def fitted(self, name: str, shapes: list[tuple[str, dict, float]]) -> dict:
        """Coefficients of part ``name`` from its (label, features, measured ms) shapes."""
        coefficients = fit_relative([features for _, features, _ in shapes], [ms for _, _, ms in shapes])
        self.fit[name] = [{"shape": label, "measured_ms": round(ms, 4), "fitted_ms": round(dot(coefficients, f), 4),
                           "residual": round(dot(coefficients, f) / ms - 1, 4)} for label, f, ms in shapes]
        return coefficients


def _label(key: tuple) -> str:
    """What the table's ``fit`` calls the part shape ``key`` (``_fit_part``'s keys)."""
    if key[0] == "conv":
        return f"conv {key[1]}: {key[2]} -> {key[3]} channels"
    if key[0] == "projection":
        return f"projection: {key[1]} channels"
    if key[0] == "pos_conv":
        return "positional convolution"
    return _describe_layer(LayerSpec(**json.loads(key[1])))


def _fit_part(key: tuple, spec: EncoderSpec, samples: int, timer: _Timer, bias) -> tuple[torch.nn.Module, tuple]:
    """(module, inputs) of the part shape ``key`` of the smooth fit: ("conv", c, in, out) channels,
    ("projection", channels), ("pos_conv",) or a ``_layer_key``; ``bias``: WavLM's position bias
    input (else None). Built anew at each call, so a build can be kept for the second pass."""
    frames = Frames.of(spec, samples)
    if key[0] == "conv":
        _, c, k_in, k_out = key
        shape = _with_conv(spec, {c - 1: k_in, c: k_out} if c else {c: k_out})
        return InferenceConvLayer(shape, c), (timer.input(k_in, samples if c == 0 else frames.lengths[c - 1]),)
    if key[0] == "pos_conv":
        return InferencePositionalConv(spec), (timer.input(frames.t, spec.hidden_size),)
    if key[0] == "projection":
        return FeatureProjection(_with_conv(spec, {len(spec.conv_channels) - 1: key[1]})), (timer.input(frames.t, key[1]),)
    layer = LayerSpec(**json.loads(key[1]))
    return EncoderLayer(spec, layer), (timer.input(frames.t, spec.hidden_size), None, bias)


def _time_parts(spec: EncoderSpec, samples: int, timer: _Timer, bias, fits: _Fits, reporter: Reporter) -> dict:
    """The smooth fit: each conv layer, the projection, the positional convolution and the layer
    timed at a few widths, and fitted per part: {"conv", "projection", "pos_conv", "layer"}."""
    conv = []
    for c, full in enumerate(spec.conv_channels):
        reporter.message(f"timing conv layer {c}")
        before = spec.conv_channels[c - 1] if c else 1
        pairs = [(before, full), (before, _share(full, 3 / 4)), (before, _share(full, 1 / 2)),
                 (_share(before, 1 / 2), full), (_share(before, 1 / 4), _share(full, 1 / 4))]
        shapes = []
        for k_in, k_out in dict.fromkeys(pairs):  # layer 0 has one input channel: fewer distinct pairs
            shape = _with_conv(spec, {c - 1: k_in, c: k_out} if c else {c: k_out})
            key = ("conv", c, k_in, k_out)
            ms = timer.part_ms(key, lambda key=key: _fit_part(key, spec, samples, timer, bias))
            shapes.append((_label(key), fits.features(shape, ("conv", c)), ms))
        conv.append(fits.fitted(f"conv.{c}", shapes))

    reporter.message("timing the feature projection and the positional convolution")
    last = len(spec.conv_channels) - 1
    shapes = []
    for k in dict.fromkeys(_share(spec.conv_channels[-1], f) for f in (1, 1 / 2, 1 / 4)):
        shape = _with_conv(spec, {last: k})
        ms = timer.part_ms(("projection", k), lambda k=k: _fit_part(("projection", k), spec, samples, timer, bias))
        shapes.append((_label(("projection", k)), fits.features(shape, ("projection",)), ms))
    projection = fits.fitted("projection", shapes)
    pos_conv = {"const": timer.part_ms(("pos_conv",), lambda: _fit_part(("pos_conv",), spec, samples, timer, bias))}

    shapes = []
    for layer in _layer_shapes(spec):
        reporter.message(f"timing {_describe_layer(layer)}")
        ms = timer.part_ms(_layer_key(layer), lambda layer=layer: _fit_part(_layer_key(layer), spec, samples, timer, bias))
        shape = EncoderSpec.from_dict({**spec.to_dict(), "layers": [asdict(layer)]})
        shapes.append((_describe_layer(layer), fits.features(shape, ("layer", 0)), ms))
    return {"conv": conv, "projection": projection, "pos_conv": pos_conv, "layer": fits.fitted("layer", shapes)}


def _fit_encoder(spec: EncoderSpec, samples: int, timer: _Timer, fits: _Fits, parts: dict, steps: Steps,
                 stock: torch.nn.Module) -> tuple[dict, dict]:
    """(the encoder's scale and overhead, the reference): whole encoders at 1, 1/2 and 1/4 of their
    widths, timed interleaved as deployed (``_Timer.encoder_call``), against the step-aware sum of
    their parts; the ``stock`` model, in float32 eager torch, timed in the same rounds."""
    shares = (1, 1 / 2, 1 / 4)
    wholes = [_uniform(spec, share) for share in shares]
    stock_input = timer.input(samples).float()
    *measured, stock_ms = timer.interleaved_ms([timer.encoder_call(Encoder(whole), timer.input(samples)) for whole in wholes]
                                               + [_eager(stock.to(timer.device, torch.float32).eval(), (stock_input,))])
    fitted = fits.fitted("encoder", [
        (f"encoder at {share:g} of its widths", {"scale": parts_ms(parts, whole, samples, steps), "overhead": 1.0}, ms)
        for share, whole, ms in zip(shares, wholes, measured)])
    return fitted, {"dense_ms": round(stock_ms, 4), "table_dense_ms": round(measured[0], 4)}


def _passes(spec: EncoderSpec, timer: _Timer, reporter: Reporter) -> dict:
    """How far the machine's speed moved between the two passes: the table's ``provenance.passes``,
    every part at its dense width (each conv layer, the projection, the dense layer, its attention
    alone and its FFN alone) with its two timings and its share of the dense encoder's parts, how
    far the sum of those parts moved, and the median move of every shape. A sum that moved by more
    than ``DRIFT_WARNING`` is a warning: the lower timings are kept, which is wrong only if the
    machine was slow through both passes. (Single parts below a millisecond move by a third on an
    idle machine; the sum does not.)"""
    count = len(spec.layers)
    dense: dict[tuple, int] = {("conv", c, spec.conv_channels[c - 1] if c else 1, full): 1
                               for c, full in enumerate(spec.conv_channels)}  # part shape -> how many an encoder has
    dense[("projection", spec.conv_channels[-1])] = 1
    layers = [_layer_key(layer) for layer in _layer_shapes(spec)[:DENSE_LAYER_SHAPES]]
    dense.update(dict.fromkeys(layers, count))
    encoder = [key for key in dense if key[0] != "layer"] + layers[:1]  # the dense encoder's parts

    def parts_ms(timing: int) -> float:
        return sum(timer.passes[key][timing] * dense[key] for key in encoder)

    first_sum, second_sum = parts_ms(0), parts_ms(1)
    parts = []
    for key, times in dense.items():
        first, second = timer.passes[key]
        parts.append({"shape": _label(key), "first_ms": round(first, 4), "second_ms": round(second, 4),
                      "change": round(second / first - 1, 4), "share": round(first * times / first_sum, 4)})
    moved = second_sum / first_sum - 1
    if abs(moved) > DRIFT_WARNING:
        worst = max(parts, key=lambda part: abs(part["change"]) * part["share"])
        reporter.warning(
            f"the machine's speed moved while the table was measured: the dense encoder's parts took {first_sum:.1f} ms, "
            f"then {second_sum:.1f} ms ({moved:+.0%}; most in {worst['shape']}, {worst['change']:+.0%}); the table keeps "
            "the faster timing of each part, which is off if the machine was slow both times: measure again on an idle "
            "machine if in doubt")
    changes = [times[1] / times[0] - 1 for times in timer.passes.values()]
    return {"parts": parts, "encoder_parts_change": round(moved, 4), "largest_change": max((p["change"] for p in parts), key=abs),
            "shapes": len(changes), "median_change": round(statistics.median(changes), 4)}


def measure_cost_table(options: BenchOptions, out: str, reporter: Reporter | None = None,
                       clock: Callable[[], float] = time.perf_counter, block: int | None = None) -> CostTable:
    """Time the parts of ``options.models[0]`` at several widths, fit its cost table and measure
    its width steps at the block step ``block`` (None: ``latency_steps.block_step`` detects it)."""
    reporter = reporter or Reporter()
    check_cost_model_options(options, out, block)
    device = check_options(options)
    started = clock()
    model = describe(options.models[0])
    if model.kind == "shrunk":
        raise UsageError(f"{model.source} is a shrunk model; measure the cost table on the dense model it came from")
    check_inputs([model], None, options.seconds, options.batches)
    spec, seconds, dtype = model.spec, options.seconds[0], options.dtypes[0]
    threads = options.threads or all_cores()
    allocator = steady_allocator()
    torch.set_num_threads(threads)
    torch.manual_seed(options.seed)  # random weights: their values do not matter for timing
    timer = _Timer(options, device, DTYPES[dtype], clock, threads, model.sampling_rate)
    samples = round(seconds * model.sampling_rate)
    fits = _Fits(Frames.of(spec, samples))
    with torch.no_grad():  # modules built outside inference mode, as models are loaded; timed inside it
        bias = timer.input(spec.num_heads, fits.frames.t, fits.frames.t)[0] if spec.num_buckets else None  # WavLM
        _time_parts(spec, samples, timer, bias, fits, reporter)  # the first pass of the fits' shapes
        step, step_from = block_step(device.type, block)
        reporter.message(f"timing widths at multiples of {step} channels ({step_from})")
        sweeps_started = clock()
        sweeps = _sweeps(spec, samples, step, timer, bias, reporter)
        sweeps_seconds = clock() - sweeps_started
        timer.second_pass(reporter)
        passes = _passes(spec, timer, reporter)
        parts = _time_parts(spec, samples, timer, bias, fits, Reporter())  # the fits again, on the lower timings
        steps = {name: sweep.steps(unit_coefficients(parts, sweep.unit), fits.features) for name, sweep in sweeps.items()}
        widths = {"block": step, "block_from": step_from, "seconds": round(sweeps_seconds, 1), "steps": steps}
        reporter.message("timing the encoder at 1, 1/2 and 1/4 of its widths and the stock model, interleaved")
        stock, stock_is = _stock(model)
        scale, reference = _fit_encoder(spec, samples, timer, fits, parts, Steps.of(widths), stock)
        parts.update(scale)
    table = CostTable(
        conditions={"device": device.type, "device_name": device_name(device), "threads": threads,
                    "dtype": dtype, "batch": options.batches[0], "seconds": seconds, "runtime": options.runtime,
                    "quantize": options.quantize},
        architecture=architecture(spec, model.sampling_rate),
        coefficients=parts,
        fit=fits.fit,
        provenance={"model": model.source, "speechprune": __version__, "torch": torch.__version__,
                    "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "warmup": options.warmup,
                    "repeat": options.repeat, "min_time": options.min_time, "seed": options.seed,
                    "weights": "random (timing does not depend on weight values)", "allocator": allocator,
                    "seconds": round(clock() - started, 1), "passes": passes} | _runtime_versions(options.runtime),
        widths=widths,
        reference={"model": stock_is, **reference},
    )
    table.reference["table_dense_predicted_ms"] = round(predict_ms(table, spec), 4)
    try:  # the reader's checks: a table it would refuse is not written
        check_cost_table(table.to_dict())
    except ValueError as error:
        raise SpeechpruneError(f"the measured cost table is unusable ({error}): the timings are too noisy to fit; "
                               "measure again on an idle machine, with a larger --min-time") from None
    table.write(out)
    return table


def _runtime_versions(runtime: str) -> dict:
    """The version of the runtime a table was measured in, besides torch's."""
    if runtime != "onnxruntime":
        return {}
    import onnxruntime

    return {"onnxruntime": onnxruntime.__version__, "exporter": "torch.onnx TorchScript, fixed shapes"}
