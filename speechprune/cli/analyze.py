"""`speechprune analyze`: head statistics, run structure and student-teacher similarity, as
heatmaps on a terminal, plain text when piped, or one JSON document."""

from __future__ import annotations

from typing import Optional

import typer

from .options import DeviceOption, JsonOption, QuietOption, ReportOption, TargetArgument, seed_option, teacher_option
from .output import Output

HEATMAPS = (
    ("drop_one", "drop-one: relative change of the output when the head alone is masked"),
    ("grad_importance", "gradient importance: first-order relative squared change of the output"),
    ("entropy", "attention entropy (nats)"),
    ("mean_distance", "mean attention distance (frames)"),
    ("contribution_norm", "mean norm of the head's output in the residual stream"),
)
BLOCK_COLOURS = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")  # viridis, low -> high
SHADES = " ░▒▓█"  # the same five levels without colour (NO_COLOR): the shade carries the value

SeedOption = seed_option("the file choice and of the random projections")
TeacherOption = teacher_option("Dense model to compare hidden states with (cosine, L1, CKA per layer).")


def command(
    model: TargetArgument,
    data: Optional[str] = typer.Option(None, envvar="SPEECHPRUNE_DATA", help="Audio folder or manifest (not needed for a run's structure report)."),
    max_seconds: float = typer.Option(120.0, help="At most this much audio in all."),
    crop_seconds: float = typer.Option(4.0, help="Each chosen file contributes its first N seconds."),
    batch_seconds: float = typer.Option(16.0, help="Audio seconds per batch."),
    projections: int = typer.Option(4, help="Random projections per batch for the gradient importance."),
    drop_one: bool = typer.Option(True, "--drop-one/--no-drop-one", help="Compute drop-one sensitivity (L x H partial forwards per batch)."),
    teacher: TeacherOption = None,
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
    out: ReportOption = None,
    png: Optional[str] = typer.Option(None, help="Save the heatmaps as a PNG (needs matplotlib: pip install 'speechprune[plot]')."),
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Attention-head importance per layer, head and head dimension; what a prune run kept.

    \b
    Example: speechprune analyze facebook/wav2vec2-base --data /data/LibriSpeech/dev-clean --no-drop-one --out heads.json
    """
    from ..analyze.job import AnalyzeOptions, analyze

    output = Output(json_mode=json_output, quiet=quiet)
    options = AnalyzeOptions(model=model, data=data, max_seconds=max_seconds, crop_seconds=crop_seconds,
                             batch_seconds=batch_seconds, projections=projections, drop_one=drop_one, teacher=teacher,
                             seed=seed, device=device, png=png, out=out)
    report = analyze(options, reporter=output.reporter(log_every=1))
    if output.json_mode or output.quiet or not output.out.is_terminal:
        output.result(report, plain(report))
    else:
        show_rich(output, report)


# --- text -------------------------------------------------------------------------------------


def _grid_range(rows: list[list[float]]) -> tuple[float, float]:
    values = [v for row in rows for v in row]
    return (min(values), max(values)) if values else (0.0, 0.0)


def plain(report: dict) -> str:
    """Every statistic as a layers x heads table of numbers, the run and teacher sections as lines."""
    lines = [f"speechprune analyze {report['model']} ({report['kind']}, {report['family']}, {report['layers']} layers)"]
    if report["audio"]:
        a = report["audio"]
        lines.append(f"audio: {a['seconds']:g} s from {a['files']} files of {a['source']} in {a['batches']} batches; seed {report['seed']}")
    heads = report["heads"] or {}
    for key, title in HEATMAPS:
        if key not in heads:
            continue
        lines += ["", f"{title} (rows: layers, columns: heads)"]
        for l, row in enumerate(heads[key]):
            lines.append(f"L{l + 1:<3}" + " ".join(f"{v:9.4g}" for v in row))
    lines += run_lines(report) + teacher_lines(report)
    return "\n".join(lines)


def run_lines(report: dict, width: int = 40) -> list[str]:
    run = report["run"]
    if not run:
        return []
    lines = ["", f"run {run['run_dir']} ({'finished' if run['finished'] else 'checkpoint at step ' + str(run['step'])}): "
             f"{run['params_dense']:,} -> {run['params_pruned']:,} parameters"]
    for name in run["params_by_component"]["dense"]:
        lines.append(f"  {name:<11}{run['params_by_component']['dense'][name]:>12,} -> {run['params_by_component']['pruned'][name]:>12,}")
    lines.append(f"{run['macs_dense'] / 1e9:.2f} -> {run['macs_pruned'] / 1e9:.2f} GMACs for {run['macs_seconds']:g} s of audio; "
                 "budgets: " + ", ".join(f"{b['option']} {b['sparsity']}" for b in run["budgets"].values()))
    lines.append("parameters per layer (# before, = after):")
    top = max((l["dense"] for l in run["params_by_layer"]), default=1) or 1
    for entry, kept in zip(run["params_by_layer"], run["kept"]["layers"]):
        before = "#" * round(width * entry["dense"] / top)
        after = "=" * round(width * entry["pruned"] / top)
        lines.append(f"L{entry['layer'] + 1:<3}{before:<{width}} {entry['dense']:>11,}")
        lines.append(f"    {after:<{width}} {entry['pruned']:>11,}  heads {len(kept['heads'])}, ffn units {kept['ffn_units']}")
    if run["removed_blocks"]:
        lines.append("removed blocks: " + ", ".join(f"{b['block']} of layer {b['layer'] + 1}" for b in run["removed_blocks"]))
    return lines


def teacher_lines(report: dict) -> list[str]:
    teacher = report["teacher"]
    if not teacher:
        return []
    lines = ["", f"similarity to teacher {teacher['model']} per hidden state (0 = input of layer 1):",
             f"{'state':>5} {'cosine':>8} {'L1':>9} {'CKA':>7}"]
    for k, (c, l1, cka) in enumerate(zip(teacher["cosine"], teacher["l1"], teacher["cka"])):
        lines.append(f"{k:>5} {c:8.4f} {l1:9.4g} {cka:7.4f}")
    return lines


def show_rich(output: Output, report: dict) -> None:
    """Heatmaps of coloured blocks (two characters per head; shades under NO_COLOR), then the run
    and teacher sections."""
    from rich.text import Text

    console = output.out

    def cell(level: int) -> Text:
        if console.no_color or console.color_system is None:  # NO_COLOR, or a terminal without colours
            return Text(SHADES[level] * 2)
        return Text("██", style=BLOCK_COLOURS[level])

    text = plain(report).split("\n")
    console.print(text[0], markup=False)
    if report["audio"]:
        console.print(text[1], markup=False)
    heads = report["heads"] or {}
    for key, title in HEATMAPS:
        if key not in heads:
            continue
        low, high = _grid_range(heads[key])
        console.print()
        console.print(f"{title}: {low:.3g} ", end="", markup=False)
        legend = Text()
        for level in range(len(SHADES)):
            legend.append(cell(level))
        console.print(legend, end="")
        console.print(f" {high:.3g}", markup=False)
        for l, row in enumerate(heads[key]):
            line = Text(f"L{l + 1:<3}")
            for value in row:
                share = 0.0 if high == low else (value - low) / (high - low)
                line.append(cell(min(int(share * len(SHADES)), len(SHADES) - 1)))
            console.print(line)
    for line in run_lines(report) + teacher_lines(report):
        console.print(line, markup=False, soft_wrap=True)
