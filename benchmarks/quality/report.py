"""Turn the quality benchmark's measurements into docs/results.md, docs/results.json and a plot.

Called by reproduce.py at its end; everything written here comes from that run's files.
"""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path

from speechprune.io.atomic import write_text

PLOT = "images/quality-vs-sparsity.png"
SPEED_PLOT = "images/quality-vs-speedup.png"
CURVES = {"params": "parameter budget (--sparsity)", "macs": "MACs budget (--macs-sparsity)",
          "latency": "latency budget (--speedup, cost table)"}


def _speed_by_model(speed: dict) -> dict[str, dict]:
    """Bench results keyed by model folder name (labels are folder names)."""
    return {r["model"]: r for r in speed["results"] if not r["compiled"]}


def _run_summary(pipeline, row) -> dict:
    """The prune run's summary (budgets, binding budget, gates the decision adjusted); {} for other rows."""
    path = pipeline.work / "runs" / row.name / "summary.json"
    return json.loads(path.read_text()) if row.kind in ("pruned", "oneshot") and path.exists() else {}


def collect(pipeline, rows, results: dict, speed: dict) -> list[dict]:
    """One flat record per row: structure, size, speed, probe scores, fidelity.

    ``speed`` holds two bench runs against the float32 teacher: "float32" (every model) and
    "int8" (the int8 rows' models, quantized).
    """
    by_precision = {precision: _speed_by_model(run) for precision, run in speed.items()}
    params = {m["label"]: m["params"] for m in speed["float32"]["models"]}
    baseline = speed["float32"]["baseline"]
    dense = params[baseline]
    records = []
    for row in rows:
        label = baseline if row.kind == "teacher" else pipeline.model(row).name
        measured = results[row.name]
        bench = by_precision["int8"][f"{label} [int8]"] if row.kind == "int8" else by_precision["float32"][label]
        cosine = measured["fidelity_cosine"]
        summary = _run_summary(pipeline, row)
        records.append({
            "row": row.name,
            "label": row.label,
            "kind": row.kind,
            "budget": row.budget,
            "ablation": bool(row.prune_args),
            "of": row.of,
            "target_sparsity": row.sparsity,
            "target": row.target,
            "budgets": summary.get("budgets"),
            "binding_budget": summary.get("binding_budget"),
            "decision_adjusted": summary.get("decision_adjusted"),
            "decision_adjusted_share": summary.get("decision_adjusted_share"),
            "predicted_speedup": summary.get("predicted_speedup"),
            "params": params[label],
            "sparsity": round(1 - params[label] / dense, 4),
            "gmacs": round(bench["macs"] / 1e9, 3),
            "latency_ms": bench["latency_ms"]["median"],
            "speedup": bench["speedup"],
            "speedup_spread": bench["speedup_spread"],
            "keyword_accuracy": measured["keyword_accuracy"],
            "speaker_accuracy": measured["speaker_accuracy"],
            "phone_error_rate": measured["phone_error_rate"],
            "fidelity_last": cosine[-1],
            "fidelity_mean": round(sum(cosine[1:]) / max(1, len(cosine) - 1), 4),
            "cosine_to_float32_last": measured["cosine_to_float32"][-1] if "cosine_to_float32" in measured else None,
            "probes": measured,
        })
    return records


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def table(records: list[dict]) -> str:
    lines = [
        "| row | model | params | sparsity | GMACs | CPU speedup | keyword acc % | speaker acc % | PER % | cosine last / mean |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        spread = r["speedup_spread"]
        speed = f"{r['speedup']:.2f}x ({spread[0]:.2f}-{spread[1]:.2f})" if spread else f"{r['speedup']:.2f}x"
        lines.append(
            f"| {r['row']} | {r['label']} | {r['params'] / 1e6:.2f}M | {r['sparsity']:.3f} | {r['gmacs']:.2f} | {speed} "
            f"| {_pct(r['keyword_accuracy'])} | {_pct(r['speaker_accuracy'])} | {_pct(r['phone_error_rate'])} "
            f"| {r['fidelity_last']:.3f} / {r['fidelity_mean']:.3f} |"
        )
    return "\n".join(lines)


def curve(records: list[dict], budget: str) -> list[dict]:
    """The teacher and the full-method float32 students of one budget (no ablation), by measured speedup."""
    members = [r for r in records if r["kind"] == "teacher" or (
        r["kind"] == "pruned" and r["budget"] == budget and not r["ablation"])]
    return sorted(members, key=lambda r: r["speedup"])


def at_speedup(points: list[dict], key: str, speedup: float) -> float | None:
    """``key`` linearly interpolated at ``speedup`` along a curve; None outside the measured range."""
    for a, b in zip(points, points[1:]):
        if a["speedup"] <= speedup <= b["speedup"] and b["speedup"] > a["speedup"]:
            w = (speedup - a["speedup"]) / (b["speedup"] - a["speedup"])
            return a[key] + w * (b[key] - a[key])
    return None


def equal_latency_table(records: list[dict]) -> str:
    """Quality of each budget's curve at the same measured speedups (interpolated between students)."""
    curves = {budget: curve(records, budget) for budget in CURVES}
    top = min(max(r["speedup"] for r in points) for points in curves.values())
    speedups = [1 + 0.25 * k for k in range(1, int((top - 1) / 0.25) + 1)]  # 1.25x, 1.5x, ... up to the slowest curve's end
    lines = ["| measured speedup | " + " | ".join(f"{b}: keyword acc % / PER %" for b in CURVES) + " |",
             "|---|" + "---|" * len(CURVES)]
    for x in speedups:
        cells = []
        for budget, points in curves.items():
            kws, per = at_speedup(points, "keyword_accuracy", x), at_speedup(points, "phone_error_rate", x)
            cells.append("-" if kws is None else f"{_pct(kws)} / {_pct(per)}")
        lines.append(f"| {x:.1f}x | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def budget_table(records: list[dict]) -> str:
    lines = ["| row | budget | binding | predicted speedup | measured speedup | gates adjusted by the decision |",
             "|---|---|---|---|---|---|"]
    for r in records:
        if r["binding_budget"] is None:
            continue
        target = " ".join(f"{b['option']} {b['option_value']:g}" for b in r["budgets"].values())
        predicted = f"{r['predicted_speedup']:.2f}x" if r["predicted_speedup"] else "-"
        adjusted = "all removed (one-shot)" if r["kind"] == "oneshot" else (
            f"{r['decision_adjusted']:,} ({100 * r['decision_adjusted_share']:.1f} %)")
        lines.append(f"| {r['row']} | `{target}` | {r['binding_budget']} | {predicted} | {r['speedup']:.2f}x | {adjusted} |")
    return "\n".join(lines)


def int8_table(records: list[dict]) -> str:
    by_row = {r["row"]: r for r in records}
    lines = ["| row | float32 speedup | int8 speedup | keyword acc % (float32 -> int8) | PER % (float32 -> int8) "
             "| last-layer cosine int8 vs float32 |", "|---|---|---|---|---|---|"]
    for r in records:
        if r["kind"] != "int8":
            continue
        base = by_row[r["of"]]
        lines.append(f"| {r['of']} | {base['speedup']:.2f}x | {r['speedup']:.2f}x | {_pct(base['keyword_accuracy'])} -> "
                     f"{_pct(r['keyword_accuracy'])} | {_pct(base['phone_error_rate'])} -> {_pct(r['phone_error_rate'])} "
                     f"| {r['cosine_to_float32_last']:.4f} |")
    return "\n".join(lines)


def speed_plot(records: list[dict], path: Path) -> None:
    """Keyword accuracy and PER against measured speedup, one curve per budget currency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (budget, name), colour in zip(CURVES.items(), ("tab:blue", "tab:orange", "tab:green")):
        points = curve(records, budget)
        x = [r["speedup"] for r in points]
        left.plot(x, [100 * r["keyword_accuracy"] for r in points], "o-", color=colour, label=name)
        right.plot(x, [100 * r["phone_error_rate"] for r in points], "o-", color=colour, label=name)
    for axis, label in ((left, "keyword accuracy % (held-out speakers)"), (right, "phone error rate % (held-out)")):
        axis.set_xlabel("measured CPU speedup over the teacher")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    left.set_title("keywords vs speed, by budget currency")
    right.set_title("phones vs speed, by budget currency")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = sorted((r for r in records if r["kind"] in ("teacher",) or r["row"].startswith("full-")),
                   key=lambda r: r["sparsity"])
    others = [r for r in records if r not in curve and r["kind"] not in ("random", "int8") and r["budget"] == "params"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    x = [r["sparsity"] for r in curve]
    for key, name, colour in (("keyword_accuracy", "keyword accuracy", "tab:blue"),
                              ("speaker_accuracy", "speaker accuracy", "tab:orange"),
                              ("phone_error_rate", "1 - PER", "tab:green")):
        values = [1 - r[key] if key == "phone_error_rate" else r[key] for r in curve]
        left.plot(x, values, "o-", color=colour, label=f"{name} (full method)")
        for r in others:
            value = 1 - r[key] if key == "phone_error_rate" else r[key]
            left.scatter([r["sparsity"]], [value], color=colour, marker="x", s=30)
    left.set_xlabel("sparsity (share of encoder parameters removed)")
    left.set_ylabel("probe score (held-out)")
    left.set_ylim(0, 1.02)
    left.set_title("quality vs sparsity (x: the ablations and baselines at 0.72)")
    left.legend(fontsize=8, loc="lower left")
    right.plot(x, [r["speedup"] for r in curve], "o-", color="black", label="full method")
    for rank, r in enumerate(sorted(others, key=lambda r: r["speedup"])):
        right.scatter([r["sparsity"]], [r["speedup"]], marker="x", color="grey")
        right.annotate(r["row"].removesuffix("-0.72"), (r["sparsity"], r["speedup"]), fontsize=7,
                       xytext=(-60, -14 + 11 * rank), textcoords="offset points",  # spread: the points bunch up
                       arrowprops={"arrowstyle": "-", "color": "lightgrey"})
    right.set_xlabel("sparsity")
    right.set_ylabel("CPU speedup over the teacher")
    right.set_title("speed vs sparsity")
    right.grid(alpha=0.3)
    left.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(pipeline, rows, results: dict, speed: dict, timings: dict, docs: Path) -> None:
    records = collect(pipeline, rows, results, speed)
    teacher = json.loads((pipeline.teacher / "teacher.json").read_text())
    dataset = json.loads((pipeline.data / "dataset.json").read_text())
    scale = pipeline.scale
    env = speed["float32"]["environment"]
    plot(records, docs / PLOT)
    speed_plot(records, docs / SPEED_PLOT)
    test_clips = pipeline.test_clip_counts()
    teacher_row = records[0]
    standard_error = {
        part: round(100 * math.sqrt(p * (1 - p) / test_clips[part]), 2)
        for part, p in (("keywords", teacher_row["keyword_accuracy"]), ("speakers", teacher_row["speaker_accuracy"]))
    }
    document = {
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "scale": pipeline.scale_name,
        "seed": pipeline.seed,
        "environment": env | {"machine": platform.machine(), "processor": platform.processor()},
        "teacher": {k: v for k, v in teacher.items() if k != "args"} | {"args": teacher.get("args")},
        "dataset": {k: v for k, v in dataset.items() if k != "speakers"},
        "schedule": scale,
        "rows": records,
        "test_clips": test_clips,
        "standard_error": standard_error,
        "timings_seconds": timings,
        "total_minutes": round(sum(timings.values()) / 60, 1),
    }
    write_text(docs / "results.json", json.dumps(document, indent=1) + "\n")
    write_text(docs / "results.md", markdown(document, records))


def markdown(document: dict, records: list[dict]) -> str:
    teacher, scale, env = document["teacher"], document["schedule"], document["environment"]
    timings = document["timings_seconds"]
    timing_lines = "\n".join(f"| {name} | {seconds / 60:.1f} |" for name, seconds in timings.items())
    return f"""# Quality benchmark: what pruning costs on a model that has learned something

Generated by `bash benchmarks/quality/run.sh` ({document['scale']} scale, seed {document['seed']}) on
{document['generated']}; every number below is from that run. Raw numbers: [results.json](results.json).
How the data, teacher and probes are built: [quality-benchmark.md](quality-benchmark.md).
The same method on a self-supervised (HuBERT) teacher, with the seeded verdicts on fine-grained
against whole heads and STE against relaxed gates: [results-ssl.md](results-ssl.md).

## Results

{table(records)}

- **params / sparsity**: encoder parameters of the shrunk model and the share removed from the teacher's
  {records[0]['params']:,}.
- **GMACs / CPU speedup**: `speechprune bench` of every model against the teacher on {scale['bench_seconds']:g} s of audio,
  batch 1, float32, {env['threads']} threads on {env['device_name']}; speedup is the median of interleaved rounds
  with the 10th-90th percentile in brackets.
- **keyword acc**: 35 Speech Commands words, linear probe on mean-pooled features, trained on
  training speakers and tested on the {document['test_clips']['keywords']} clips of held-out speakers
  (chance {100 / 35:.1f}%; binomial standard error at the teacher's accuracy
  {document['standard_error']['keywords']:.1f} points).
- **speaker acc**: speaker identification over all speakers, trained on 25 words and tested on the
  {document['test_clips']['speakers']} clips of the other 10 (word-disjoint; chance
  {100 * records[0]['probes']['speaker_chance']:.1f}%; standard error {document['standard_error']['speakers']:.1f} points).
- **PER**: phone error rate of a linear CTC head on frame features, trained on training speakers'
  sentences and tested on held-out speakers' sentences.
- **cosine**: cosine similarity to the teacher's hidden states on held-out sentences, last layer /
  mean over layers.

Every probe reads a learned softmax-weighted sum of all hidden states of the frozen model (SUPERB
style). The teacher's own CTC head reaches a PER of {100 * teacher['test_per']:.1f}% on the held-out
speakers ({teacher['steps']} steps, {teacher['train_minutes']:.1f} min of training).

![quality and speed vs sparsity]({PLOT})

## Pruned for speed: parameters, MACs or measured latency as the budget

Each budget's students against the speedup `speechprune bench` measured (same bench run as
the table above). The parameter curve is the full method at 0.50/0.72/0.85; the MACs curve
prunes to a share of the MACs of {scale['bench_seconds']:g} s of audio (`--macs-sparsity`,
`--macs-seconds {scale['bench_seconds']:g}`); the latency curve prunes to a speedup predicted by a cost table
of the teacher measured on this CPU first (`speechprune bench teacher --cost-model`, then
`prune --latency-table --speedup`). The teacher is every curve's first point.

![quality vs measured speedup]({SPEED_PLOT})

Quality at equal measured speedup, interpolated linearly between each curve's neighbouring
students (`-`: outside the speedups that curve reached):

{equal_latency_table(records)}

What each prune run landed on: the budget that binds, the cost table's predicted speedup
(latency rows), and how many gates the final decision flipped against the trained
`1[log_alpha > 0]` to land within the tolerance:

{budget_table(records)}

## int8 on top of pruning

`speechprune.deploy.quantize` (dynamic int8 on every `nn.Linear`; the CNN, positional convolution
and norms stay float32) applied to shrunk students, timed by `speechprune bench --quantize
int8` against the float32 teacher and probed like every row (the probes are retrained on the
int8 features):

{int8_table(records)}

## Schedule

Students: `speechprune prune` for {scale['prune_steps']} steps plus {scale['final_steps']} steps with frozen masks,
batches of {scale['batch_seconds']:g} s in {scale['crop_seconds']:g} s crops; the from-scratch baseline gets as many steps.

| stage | minutes |
|---|---|
{timing_lines}

Total: {document['total_minutes']} minutes, the sum of the stages (a resumed run adds up the stages of every
invocation).
"""
