"""`speechprune bench`: latency, throughput, memory and speedup, as a table or one JSON document."""

from __future__ import annotations

from typing import Optional

import typer

from ..errors import UsageError
from ..model.device import DTYPES
from .lists import comma_list
from .options import DeviceOption, JsonOption, QuietOption, seed_option
from .output import Output

BREAKDOWN = (("cnn", "CNN"), ("projection", "projection"), ("pos_conv", "pos conv"), ("layers", "layers"),
             ("other", "other"))

SeedOption = seed_option("the generated input audio")


def _measure_cost_table(options, cost_model: str, block_step: int | None, output: Output) -> None:
    """--cost-model: the table measured under its output lock, and printed."""
    from ..bench.cost_model import check_cost_model_options, measure_cost_table
    from ..io.outputs import holding

    check_cost_model_options(options, cost_model, block_step)  # before its lock, which is held while measuring
    with holding({"--cost-model": cost_model}):
        table = measure_cost_table(options, cost_model, reporter=output.reporter(log_every=1), block=block_step)
    output.result({"cost_table": cost_model, **table.to_dict()}, cost_table_summary(cost_model, table))


def command(
    models: list[str] = typer.Argument(..., metavar="MODEL...", help="Models to time: shrunk folders, stock transformers folders or hub ids, prune run folders."),
    baseline: Optional[str] = typer.Option(None, help="Model to compute speedups against, timed interleaved with the others."),
    device: DeviceOption = "auto",
    dtype: str = typer.Option("float32", help=f"Comma-separated precisions: {','.join(DTYPES)}."),
    seconds: str = typer.Option("10", help="Comma-separated audio lengths in seconds, e.g. 1,5,10,30."),
    batch: str = typer.Option("1", help="Comma-separated batch sizes, e.g. 1,8."),
    threads: Optional[int] = typer.Option(None, help="CPU threads. [default: every core]"),
    warmup: int = typer.Option(2, help="Untimed calls per model and setting."),
    repeat: int = typer.Option(5, help="At least this many timed rounds per setting."),
    min_time: Optional[float] = typer.Option(None, help="More rounds until every model (with --cost-model: every timed shape) has this many seconds timed. [default: 1; 0.1 with --cost-model]"),
    compile_: bool = typer.Option(False, "--compile", help="Also time under torch.compile (CUDA graphs on GPUs)."),
    breakdown: bool = typer.Option(False, "--breakdown", help="Also time the CNN, projection, positional conv and layers."),
    seed: SeedOption = 0,
    quantize: Optional[str] = typer.Option(None, help="Quantize the models under test (with --cost-model: the parts timed): int8 (dynamic, Linear layers; CPU); int8-static (with --runtime onnxruntime and --data: the convolutions too, calibrated on audio)."),
    baseline_quantize: Optional[str] = typer.Option(None, help="Quantize the baseline too: int8; int8-static with --baseline-runtime onnxruntime and --data. [default: it stays float32]"),
    runtime: str = typer.Option("torch", help="Run the models under test in torch or onnxruntime (exported and checked; CPU). With --cost-model: the runtime the table is measured in."),
    baseline_runtime: str = typer.Option("torch", help="Run the baseline in torch or onnxruntime: with --runtime onnxruntime and the dense model as --baseline, the speedups are the ones prune --speedup targets with that runtime's table."),
    cost_model: Optional[str] = typer.Option(None, help="Measure a cost table of MODEL for this device, --threads, --dtype, --batch and --seconds (one each), --runtime and --quantize and write it to this JSON file, for prune --latency-table."),
    block_step: Optional[int] = typer.Option(None, help="With --cost-model: the channel block the width steps are measured at. [default: detected: 16 with AVX-512, 8 with AVX2 or on a GPU]"),
    latency_table: Optional[str] = typer.Option(None, help="Cost table from --cost-model: adds each model's predicted latency beside the measured one."),
    data: Optional[str] = typer.Option(None, help="Audio (folder or manifest) that --quantize int8-static calibrates on (16 clips chosen by --seed)."),
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Latency, throughput, memory and speedup against a baseline model; or, with --cost-model, a cost table.

    \b
    Example: speechprune bench models/w2v2-72 --baseline facebook/wav2vec2-base --device cpu --seconds 10 --quantize int8

    \b
    Against the dense model in the runtime a --speedup was pruned for:
      speechprune bench models/w2v2-x3 --baseline facebook/wav2vec2-base --runtime onnxruntime --quantize int8 --baseline-runtime onnxruntime --baseline-quantize int8 --latency-table ort-int8.json
    """
    from ..bench.cost_model import COST_MODEL_MIN_TIME
    from ..bench.job import BenchOptions, bench

    output = Output(json_mode=json_output, quiet=quiet)
    options = BenchOptions(
        models=models, baseline=baseline, device=device, dtypes=comma_list("--dtype", dtype, str),
        seconds=comma_list("--seconds", seconds, float), batches=comma_list("--batch", batch, int),
        threads=threads, warmup=warmup, repeat=repeat,
        min_time=(COST_MODEL_MIN_TIME if cost_model is not None else 1.0) if min_time is None else min_time,
        compile=compile_, breakdown=breakdown, seed=seed, quantize=quantize, baseline_quantize=baseline_quantize,
        runtime=runtime, baseline_runtime=baseline_runtime, latency_table=latency_table, data=data,
    )
    if block_step is not None and cost_model is None:
        raise UsageError("--block-step is the block --cost-model measures width steps at; give it with --cost-model")
    if cost_model is not None:  # "" too: refused as empty, not a plain bench
        return _measure_cost_table(options, cost_model, block_step, output)
    report = bench(options, reporter=output.reporter(log_every=1))
    if output.json_mode or output.quiet or not output.out.is_terminal:
        output.result(report, plain(report))
    else:
        show_rich(output, report)


def cost_table_summary(path: str, table) -> str:
    c, dense, stock = table.conditions, table.fit["encoder"][0], table.reference
    residuals = [abs(row["residual"]) for rows in table.fit.values() for row in rows]
    return (
        f"cost table of {table.provenance['model']} for {c['seconds']:g} s x{c['batch']} {c['dtype']} on {c['device']} "
        f"({c['device_name']}), {c['threads']} threads, in {table.runtime}: {len(residuals)} shapes timed, largest "
        f"fit residual {max(residuals):.1%}; dense encoder {dense['measured_ms']:.1f} ms, fitted "
        f"{dense['fitted_ms']:.1f} ms; {_stock_line(stock['model'], stock['dense_ms'], stock['table_dense_ms'])}; "
        f"{_passes_phrase(table.provenance.get('passes'))}written to {path}"
    )


def _passes_phrase(passes: dict | None) -> str:
    """How far the dense parts moved between the table's two passes of the fit's shapes (older tables have one)."""
    if not passes:
        return ""
    return (f"the fit's shapes timed twice, the faster kept (the dense encoder's parts "
            f"{passes['encoder_parts_change']:+.1%} in the second pass, all {passes['shapes']} shapes "
            f"{passes['median_change']:+.1%} at the median); ")


def _stock_line(stock: str, stock_ms: float, dense_ms: float) -> str:
    """The stock model's time beside a runtime's dense model's, as one phrase."""
    return f"{stock} {stock_ms:.1f} ms in the same rounds ({stock_ms / dense_ms:.2f}x the dense encoder's time)"


# --- the report as tables: rich on a terminal, Markdown when piped ------------------------------


def header(report: dict) -> str:
    env, method = report["environment"], report["method"]
    return (
        f"speechprune {env['speechprune']}, torch {env['torch']}, {env['device']} ({env['device_name']}), "
        f"{env['threads']} threads, {'/'.join(env['dtypes'])}; warm-up {method['warmup']}, "
        f"interleaved rounds (at least {method['repeat']} and {method['min_time']:g} s per model), median"
    )


def main_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    models = {m["label"]: m for m in report["models"]}
    columns = ["model", "input", "median ms", "p90 ms", "audio s/s", "RTF", "peak MB", "params", "GMACs",
               "file MB", "speedup", "efficiency"]
    predicted, against_stock = report["latency_table"] is not None, report["latency_reference"] is not None
    if predicted:
        columns += ["predicted ms", "prediction error"] + (["predicted vs stock float32 torch"] if against_stock else [])
    rows = []
    for r in report["results"]:
        model = models[r["model"]]
        speedup = "-"
        if r["model"] == report["baseline"]:
            speedup = "1.00x"
        elif r["speedup"] is not None:
            low, high = r["speedup_spread"]
            speedup = f"{r['speedup']:.2f}x ({low:.2f}-{high:.2f})"
        rows.append([
            r["model"],
            _setting(r),
            f"{r['latency_ms']['median']:.1f}",
            f"{r['latency_ms']['p90']:.1f}",
            f"{r['audio_seconds_per_second']:.1f}",
            f"{r['real_time_factor']:.3f}",
            "-" if r["peak_memory_bytes"] is None else f"{r['peak_memory_bytes'] / 1e6:.0f}",
            f"{model['params'] / 1e6:.2f}M",
            f"{r['macs'] / 1e9:.2f}",
            "-" if model["file_bytes"] is None else f"{model['file_bytes'] / 1e6:.1f}",
            speedup,
            "-" if r["efficiency"] is None else f"{r['efficiency']:.2f}",
        ] + (_predicted(r, against_stock) if predicted else []))
    return columns, rows


def _predicted(r: dict, against_stock: bool) -> list[str]:
    """A row's predicted cells; "-" for a model in another runtime than the table's (a torch baseline)."""
    if r["predicted_ms"] is None:
        return ["-"] * (3 if against_stock else 2)
    cells = [f"{r['predicted_ms']:.1f}", f"{r['prediction_error']:+.1%}"]
    return cells + ([f"{r['predicted_speedup_vs_stock']:.2f}x"] if against_stock else [])


def breakdown_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    columns = ["model", "input"] + [f"{title} ms" for _, title in BREAKDOWN] + ["total ms"]
    rows = []
    for r in report["results"]:
        parts = r["breakdown_ms"]
        if parts is not None:
            cells = [f"{parts[key]:.1f} ({parts[key] / parts['total']:.0%})" for key, _ in BREAKDOWN]
            rows.append([r["model"], _setting(r), *cells, f"{parts['total']:.1f}"])
    return columns, rows


def notes(report: dict) -> list[str]:
    lines = [f"{m['label']}: {m['note']}" for m in report["models"] if m["note"]]
    if report["baseline"]:
        lines.append("speedup: median over rounds of baseline / model in the same round (10th-90th percentile of "
                     "those ratios); efficiency: speedup / (baseline MACs / model MACs)")
    if report["latency_table"]:
        lines.append(f"predicted: from the cost table {report['latency_table']}; "
                     "prediction error: predicted / measured median - 1")
    if (reference := report["latency_reference"]) is not None:
        lines.append(f"the table's runtime, {reference['runtime']}: its dense encoder {reference['dense_ms']:.1f} ms; "
                     f"{_stock_line(reference['stock'], reference['stock_dense_ms'], reference['dense_ms'])}")
    return lines


def _setting(r: dict) -> str:
    return f"{r['seconds']:g} s x{r['batch']} {r['dtype']}" + (" compiled" if r["compiled"] else "")


def plain(report: dict) -> str:
    parts = [header(report), "", _markdown(*main_rows(report))]
    columns, rows = breakdown_rows(report)
    if rows:
        parts += ["", _markdown(columns, rows)]
    return "\n".join(parts + [""] + notes(report))


def _markdown(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def show_rich(output: Output, report: dict) -> None:
    from rich.table import Table
    from rich.text import Text

    for title, (columns, rows) in ((header(report), main_rows(report)), ("time per part", breakdown_rows(report))):
        if not rows:
            continue
        table = Table(title=title, title_justify="left")
        for i, column in enumerate(columns):
            table.add_column(column, justify="left" if i < 2 else "right")
        for row in rows:
            table.add_row(*map(Text, row))  # Text: a model label like run[exp1] is not markup
        output.out.print(table)
    for line in notes(report):
        output.out.print(line, markup=False, soft_wrap=True)
