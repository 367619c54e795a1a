"""`speechprune eval`: a SUPERB-style classification probe of a model's frozen features on the
user's labelled folder, as a short table, or one JSON document."""

from __future__ import annotations

from typing import Optional

import typer

from .options import DeviceOption, JsonOption, QuietOption, ReportOption, TargetArgument, seed_option, teacher_option
from .output import Output

SPARK = "▁▂▃▄▅▆▇█"

SeedOption = seed_option("the clip choice, the split and the probe")
TeacherOption = teacher_option("Dense model to compare with: its own probe, and hidden-state similarity.")


def command(
    model: TargetArgument,
    data: str = typer.Option(..., help="Labelled audio: FOLDER/<label>/*.wav (any format soundfile reads)."),
    test_data: Optional[str] = typer.Option(None, help="Labelled test audio, same layout (labels: a subset of --data's)."),
    test_fraction: Optional[float] = typer.Option(None, help="Without --test-data: hold out this share of each label [default: 0.25]."),
    teacher: TeacherOption = None,
    max_per_class: Optional[int] = typer.Option(None, help="At most N clips per label (chosen by --seed)."),
    max_seconds_per_clip: float = typer.Option(4.0, help="Longer clips keep their centre N seconds."),
    batch_seconds: float = typer.Option(32.0, help="Padded audio seconds per forward pass."),
    epochs: int = typer.Option(200, help="Probe training epochs (full-batch Adam steps up to 4096 clips)."),
    per_layer: bool = typer.Option(True, "--per-layer/--no-per-layer", help="Also fit one probe per hidden state alone."),
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
    quantize: Optional[str] = typer.Option(None, help="Probe the model quantized: int8 (dynamic, Linear layers; CPU); int8-static (with --runtime onnxruntime: the convolutions too, calibrated on training clips of --data); compared with its float32 self."),
    runtime: str = typer.Option("torch", help="Run the model in torch or onnxruntime (a checked ONNX export with hidden states; CPU), compared with float32 torch."),
    out: ReportOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Probe accuracy of the frozen features on labelled audio (keywords, speakers, ...).

    \b
    Example: speechprune eval models/w2v2-72 --data /data/keywords --teacher facebook/wav2vec2-base
    """
    from ..eval.job import EvalOptions, evaluate

    output = Output(json_mode=json_output, quiet=quiet)
    options = EvalOptions(model=model, data=data, test_data=test_data, test_fraction=test_fraction, teacher=teacher,
                          max_per_class=max_per_class, max_seconds_per_clip=max_seconds_per_clip,
                          batch_seconds=batch_seconds, epochs=epochs, per_layer=per_layer, seed=seed, device=device,
                          out=out, quantize=quantize, runtime=runtime)
    report = evaluate(options, reporter=output.reporter(log_every=1))
    output.result(report, plain(report))


def sparkline(values: list[float]) -> str:
    """One block per value, scaled from 0 to the largest."""
    top = max(values, default=0.0)
    if top <= 0:
        return SPARK[0] * len(values)
    return "".join(SPARK[min(int(v / top * (len(SPARK) - 1) + 0.5), len(SPARK) - 1)] for v in values)


def plain(report: dict) -> str:
    data, probe = report["data"], report["probe"]
    teacher = report["teacher"]
    test_from = (f"{data['split']['test_fraction']:g} of each label held out" if data["split"]["method"] == "stratified"
                 else f"test clips from {data['test_source']}")
    quantization = report["quantization"]
    lines = [
        f"speechprune eval {report['model']} ({report['kind']}, {report['family']}, {report['layers']} layers)"
        + (f", {_ran_as(quantization)}" if quantization else ""),
        (f"data: {data['train_clips']} training and {data['test_clips']} test clips, {len(data['classes'])} labels, "
         f"from {data['source']} ({test_from}; seed {report['seed']})"),
        "",
        f"accuracy {probe['accuracy']:.3f}   chance {probe['chance']:.3f}   train {probe['train_accuracy']:.3f}"
        + (f"   teacher {teacher['probe']['accuracy']:.3f}" if teacher else ""),
    ]
    if report["best_layer"]:
        best = report["best_layer"]
        lines.append(f"best single state: {best['state']} ({best['accuracy']:.3f})")
    weights = probe["layer_weights"]
    lines += ["", f"layer weights {sparkline(weights)}  (state 0 = input of layer 1)"]
    header = f"{'state':>5} {'weight':>7}"
    if report["per_layer_accuracy"]:
        header += f" {'alone':>6}"
    if teacher:
        header += f" {'t.weight':>8}" + (f" {'t.alone':>7}" if teacher["per_layer_accuracy"] else "")
        header += f" {'cosine':>7} {'CKA':>6}"
    if quantization:
        header += f" {'q.cos':>7}"
    lines.append(header)
    for k, weight in enumerate(weights):
        row = f"{k:>5} {weight:7.3f}"
        if report["per_layer_accuracy"]:
            row += f" {report['per_layer_accuracy'][k]:6.3f}"
        if teacher:
            row += f" {teacher['probe']['layer_weights'][k]:8.3f}"
            if teacher["per_layer_accuracy"]:
                row += f" {teacher['per_layer_accuracy'][k]:7.3f}"
            row += f" {teacher['fidelity']['cosine'][k]:7.4f} {teacher['fidelity']['cka'][k]:6.3f}"
        if quantization:
            row += f" {quantization['fidelity']['cosine'][k]:7.4f}"
        lines.append(row)
    if teacher:
        lines.append(f"cosine, CKA: similarity to teacher {teacher['model']} on the "
                     f"{teacher['fidelity']['clips']} test clips ({teacher['fidelity']['frames']} frames)")
    if quantization:
        from ..eval.sections import ran_as

        ran = ran_as(quantization["scheme"], quantization["runtime"])
        lines.append(f"q.cos: cosine of the {ran} model's hidden states to the float32 torch model on the "
                     f"{quantization['fidelity']['clips']} test clips ({quantization['fidelity']['frames']} frames)")
        if quantization.get("graph"):
            lines.append(f"graph: {quantization['graph']}")
    return "\n".join(lines)


def _ran_as(quantization: dict) -> str:
    """How the model ran, for the title line: quantized (how), in ONNX Runtime, or both."""
    parts = ["in ONNX Runtime (CPU)"] if quantization["runtime"] == "onnxruntime" else []
    if quantization["quantized"]:
        parts.append(f"quantized ({quantization['quantized']})")
    return ", ".join(parts)
