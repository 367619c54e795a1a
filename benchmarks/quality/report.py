"""Turn the quality benchmark's measurements into docs/results.md, docs/results.json and a plot.

Called by reproduce.py at its end; everything written here comes from that run's files.
"""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path

from speechprune.atomic import write_text

PLOT = "images/quality-vs-sparsity.png"


def _speed_by_model(speed: dict) -> dict[str, dict]:
    """Bench results keyed by model folder name (labels are folder names)."""
    return {r["model"]: r for r in speed["results"] if not r["compiled"]}


def collect(pipeline, rows, results: dict, speed: dict) -> list[dict]:
    """One flat record per row: structure, size, speed, probe scores, fidelity."""
    by_label = _speed_by_model(speed)
    params = {m["label"]: m["params"] for m in speed["models"]}
    dense = params[speed["baseline"]]
    records = []
    for row in rows:
        label = speed["baseline"] if row.kind == "teacher" else pipeline.model(row).name
        measured = results[row.name]
        bench = by_label[label]
        cosine = measured["fidelity_cosine"]
        records.append({
            "row": row.name,
            "label": row.label,
            "kind": row.kind,
            "target_sparsity": row.sparsity,
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


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = sorted((r for r in records if r["kind"] in ("teacher",) or r["row"].startswith("full-")),
                   key=lambda r: r["sparsity"])
    others = [r for r in records if r not in curve and r["kind"] != "random"]
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
    env = speed["environment"]
    plot(records, docs / PLOT)
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

## Schedule

Students: `speechprune prune` for {scale['prune_steps']} steps plus {scale['final_steps']} steps with frozen masks,
batches of {scale['batch_seconds']:g} s in {scale['crop_seconds']:g} s crops; the from-scratch baseline gets as many steps.

| stage | minutes |
|---|---|
{timing_lines}

Total: {document['total_minutes']} minutes, the sum of the stages (a resumed run adds up the stages of every
invocation).
"""
