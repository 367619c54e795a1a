"""The quality benchmark's second table: the self-supervised teacher (docs/results-ssl.md and .json).

Called by reproduce.py at its end; every number written here comes from that run's files:
what removing attention costs each teacher, the method and its baselines on the SSL teacher, what
each student keeps, and the seeded comparisons (fine-grained heads against whole heads, STE against
relaxed gates) with their spread and a verdict.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

from report import _pct, collect, table

from speechprune.io.atomic import write_text

# Two-sided 95 % critical values of Student's t by degrees of freedom (Welch's df, rounded down).
T_CRITICAL = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23}
PROBES = (("keyword_accuracy", "keyword acc %", +1), ("phone_error_rate", "PER %", -1),
          ("speaker_accuracy", "speaker acc %", +1))


def attention_rows(results: dict, ssl_teacher: dict) -> list[dict]:
    """Each teacher with and without attention: probe scores and the change; and, where its
    ``-state0`` row was probed, the probes on hidden state 0 alone (the CNN and the positional
    convolution), which zeroing attention leaves as it is: a probe can always fall back on that state,
    so full minus state 0 is the most that removing attention can cost it."""
    rows = []
    for teacher, label in (("teacher", "CTC teacher"), ("ssl-teacher", "SSL teacher")):
        full, without, state0 = results[teacher], results[f"{teacher}-noattn"], results.get(f"{teacher}-state0")
        rows.append({
            "teacher": label,
            **{f"{key}": full[key] for key, _, _ in PROBES},
            **{f"{key}_without_attention": without[key] for key, _, _ in PROBES},
            **{f"{key}_change": round(without[key] - full[key], 4) for key, _, _ in PROBES},
            **({f"{key}_state0": state0[key] for key, _, _ in PROBES} if state0 else {}),
            "cosine_last_without_attention": without["fidelity_cosine"][-1],
        })
    rows[1]["masked_accuracy"] = ssl_teacher["test_masked_accuracy"]
    rows[1]["masked_accuracy_without_attention"] = ssl_teacher["test_masked_accuracy_without_attention"]
    return rows


def attention_table(rows: list[dict]) -> str:
    lines = ["| teacher | probe | full | no attention (change) | hidden state 0 alone "
             "| last-layer cosine without attention |", "|---|---|---|---|---|---|"]
    for r in rows:
        for key, name, _ in PROBES:
            state0 = _pct(r[key + "_state0"]) if key + "_state0" in r else "not run"
            lines.append(f"| {r['teacher']} | {name} | {_pct(r[key])} | {_pct(r[key + '_without_attention'])} "
                         f"({100 * r[key + '_change']:+.1f}) | {state0} | {r['cosine_last_without_attention']:.3f} |")
    return "\n".join(lines)


def attention_verdict(rows: list[dict]) -> dict:
    """The issue's bar: the SSL teacher loses at least 3x what the CTC teacher loses on keywords and on
    PER, and at least 5 PER points."""
    ctc, ssl = rows
    keyword_cost = {"ctc": -ctc["keyword_accuracy_change"], "ssl": -ssl["keyword_accuracy_change"]}
    per_cost = {"ctc": ctc["phone_error_rate_change"], "ssl": ssl["phone_error_rate_change"]}

    def ratio(cost):
        return round(cost["ssl"] / cost["ctc"], 2) if cost["ctc"] > 0 else None

    ceiling = {}  # the most removing attention could cost: full minus hidden state 0 alone, in points
    for name, r in (("ctc", ctc), ("ssl", ssl)):
        if "phone_error_rate_state0" in r:
            ceiling[name] = {"keyword": round(100 * (r["keyword_accuracy"] - r["keyword_accuracy_state0"]), 1),
                             "per": round(100 * (r["phone_error_rate_state0"] - r["phone_error_rate"]), 1)}
    return {
        "largest_possible_cost": ceiling or None,
        "keyword_points_lost": {k: round(100 * v, 1) for k, v in keyword_cost.items()},
        "per_points_gained": {k: round(100 * v, 1) for k, v in per_cost.items()},
        "keyword_ratio": ratio(keyword_cost),
        "per_ratio": ratio(per_cost),
        "met": (keyword_cost["ssl"] >= 3 * max(keyword_cost["ctc"], 0) and per_cost["ssl"] >= 3 * max(per_cost["ctc"], 0)
                and per_cost["ssl"] >= 0.05),
    }


def kept_structure(model: Path) -> dict:
    """What a shrunk student keeps, layer by layer, from its config.json."""
    spec = json.loads((model / "config.json").read_text())["encoder"]
    layers = []
    for layer in spec["layers"]:
        heads = len(layer["heads"]) if layer["attention"] else 0
        qk = layer["qk_dims"] or [layer["qk_dim"]] * len(layer["heads"])
        vo = layer["vo_dims"] or [layer["vo_dim"]] * len(layer["heads"])
        layers.append({"heads": heads, "qk": sum(qk) if heads else 0, "vo": sum(vo) if heads else 0,
                       "ffn": layer["ffn_dim"] if layer["ffn"] else 0})
    return {"layers": layers, "conv": spec["conv_channels"], "num_heads": spec["num_heads"],
            "head_dim": spec["head_dim"]}


def structure_table(records: list[dict]) -> str:
    """Per student: heads kept per layer (with their summed q/k and v/o widths), FFN units, CNN widths."""
    first = next((r for r in records if r.get("kept")), None)
    if first is None:
        return "(no student yet)"
    depth, full = len(first["kept"]["layers"]), first["kept"]["num_heads"] * first["kept"]["head_dim"]
    lines = ["| row | heads kept | " + " | ".join(f"layer {i + 1}: heads (qk / vo dims) / FFN" for i in range(depth))
             + " | CNN channels |", "|---|---|" + "---|" * depth + "---|"]
    for r in records:
        if not r.get("kept"):
            continue
        layers = r["kept"]["layers"]
        cells = [f"{l['heads']} ({l['qk']} / {l['vo']}) / {l['ffn']}" for l in layers]
        lines.append(f"| {r['row']} | {sum(l['heads'] for l in layers)} | " + " | ".join(cells)
                     + f" | {', '.join(map(str, r['kept']['conv']))} |")
    return "\n".join(lines) + f"\n\n(q/k and v/o dims are summed over a layer's kept heads; the dense layer has {full} of each.)"


def arm_statistics(records: list[dict]) -> dict:
    """Mean and sample standard deviation over seeds, per arm and budget point."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        if r.get("arm"):
            point = "--speedup 3" if r["budget"] == "latency" else f"--sparsity {r['target_sparsity']:g}"
            groups.setdefault((point, r["arm"]), []).append(r)
    stats = {}
    for (point, arm), members in groups.items():
        entry = {"seeds": len(members), "rows": [m["row"] for m in members]}
        for key in ("keyword_accuracy", "phone_error_rate", "speaker_accuracy", "fidelity_last", "speedup", "heads"):
            values = [m[key] for m in members]
            entry[key] = {"mean": statistics.fmean(values),
                          "sd": statistics.stdev(values) if len(values) > 1 else None, "values": values}
        stats.setdefault(point, {})[arm] = entry
    return stats


def compare(a: dict, b: dict, sign: int) -> str:
    """Welch's t-test of arm a against arm b on one probe: better, worse or no difference at 95 %."""
    n_a, n_b = len(a["values"]), len(b["values"])
    if n_a < 2 or n_b < 2:
        return "too few seeds"
    var_a, var_b = a["sd"] ** 2 / n_a, b["sd"] ** 2 / n_b
    difference = a["mean"] - b["mean"]
    if var_a + var_b == 0:
        return "no difference" if difference == 0 else ("better" if sign * difference > 0 else "worse")
    t = difference / (var_a + var_b) ** 0.5
    df = (var_a + var_b) ** 2 / ((var_a ** 2 / (n_a - 1)) + (var_b ** 2 / (n_b - 1)))
    critical = T_CRITICAL[max(1, min(10, int(df)))]
    verdict = "no difference" if abs(t) < critical else ("better" if sign * t > 0 else "worse")
    return f"{verdict} (t = {t:+.2f}, df {df:.1f})"


def seeds_table(stats: dict) -> str:
    lines = ["| budget | arm | seeds | keyword acc % | PER % | speaker acc % | heads kept | measured speedup |",
             "|---|---|---|---|---|---|---|---|"]
    for point, arms in stats.items():
        for arm, e in arms.items():
            def cell(key, scale=100.0, digits=1):
                sd = e[key]["sd"]
                spread = f" ± {scale * sd:.{digits}f}" if sd is not None else ""
                return f"{scale * e[key]['mean']:.{digits}f}{spread}"
            lines.append(f"| `{point}` | {arm} | {e['seeds']} | {cell('keyword_accuracy')} | {cell('phone_error_rate')} "
                         f"| {cell('speaker_accuracy')} | {cell('heads', 1.0)} | {cell('speedup', 1.0, 2)}x |")
    return "\n".join(lines)


def verdicts(stats: dict) -> dict:
    """Fine-grained (full) against whole heads, and STE (full) against relaxed gates, per budget point."""
    out = {}
    for point, arms in stats.items():
        for other, claim in (("heads", "fine-grained vs whole heads"), ("noste", "STE vs relaxed gates")):
            if "full" in arms and other in arms:
                out[f"{claim}, {point}"] = {key: compare(arms["full"][key], arms[other][key], sign)
                                            for key, _, sign in PROBES}
    return out


def verdict_table(found: dict) -> str:
    lines = ["| comparison (full method against) | " + " | ".join(name for _, name, _ in PROBES) + " |",
             "|---|" + "---|" * len(PROBES)]
    for claim, cells in found.items():
        lines.append(f"| {claim} | " + " | ".join(cells[key] for key, _, _ in PROBES) + " |")
    return "\n".join(lines)


def write_ssl_report(pipeline, rows, results: dict, speed: dict, timings: dict, docs: Path,
                     missing: list[str] = ()) -> None:
    """The report of the rows built (``rows``); ``missing`` names the table's rows not yet run (a partial
    report, ``reproduce.py --rows ... --only --partial``)."""
    ssl_teacher = json.loads((pipeline.teachers["ssl"] / "teacher.json").read_text())
    benched = [r for r in rows if r.kind not in ("noattn", "state0") and r.teacher == "ssl"]
    records = collect(pipeline, benched, results, speed)
    for record, row in zip(records, benched):
        record["arm"] = row.arm
        if row.kind in ("pruned", "oneshot", "scratch"):
            record["kept"] = kept_structure(pipeline.model(row))
            record["heads"] = sum(layer["heads"] for layer in record["kept"]["layers"])
    probed = {"teacher", "teacher-noattn", "ssl-teacher", "ssl-teacher-noattn"} <= set(results)
    attention = attention_rows(results, ssl_teacher) if probed else None
    stats = arm_statistics(records)
    document = {
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "scale": pipeline.scale_name,
        "seed": pipeline.seed,
        "environment": speed["float32"]["environment"] | {"machine": platform.machine(),
                                                          "processor": platform.processor()},
        "ssl_teacher": {k: v for k, v in ssl_teacher.items() if k != "args"} | {"args": ssl_teacher.get("args")},
        "attention": attention,
        "attention_verdict": attention_verdict(attention) if attention else None,
        "missing_rows": list(missing),
        "schedule": pipeline.scale,
        "rows": records,
        "seeds": stats,
        "verdicts": verdicts(stats),
        "timings_seconds": timings,
    }
    write_text(docs / "results-ssl.json", json.dumps(document, indent=1) + "\n")
    write_text(docs / "results-ssl.md", markdown(document, records))


def _ratio(value: float | None) -> str:
    return "n/a (the CTC teacher lost nothing)" if value is None else f"{value:.1f}x"


def attention_section(document: dict) -> str:
    bar = document["attention_verdict"]
    if bar is None:
        return "(not run yet)"
    return f"""{attention_table(document['attention'])}

Removing attention costs the SSL teacher {bar['keyword_points_lost']['ssl']} keyword points and
{bar['per_points_gained']['ssl']} PER points; the CTC teacher {bar['keyword_points_lost']['ctc']} and
{bar['per_points_gained']['ctc']} (ratios {_ratio(bar['keyword_ratio'])} and {_ratio(bar['per_ratio'])}).
The bar set for this teacher (3x the CTC teacher's cost on both probes, and at least 5 PER points):
{'met' if bar['met'] else 'not met'}.{_ceiling_sentence(bar['largest_possible_cost'])}"""


def _ceiling_sentence(ceiling: dict | None) -> str:
    if not ceiling or "ssl" not in ceiling:
        return ""
    ctc, ssl = ceiling["ctc"], ceiling["ssl"]

    def added(points: dict) -> str:
        return f"{points['keyword']:+.1f} keyword points and {-points['per']:+.1f} PER points"

    return f"""

A probe can always fall back on hidden state 0 (the CNN and the positional convolution), which
zeroing attention leaves as it is. What the transformer layers add to the probes over that state
alone: {added(ctc)} for the CTC teacher, {added(ssl)} for the SSL teacher. So removing
attention can cost the SSL teacher's probes at most {max(ssl['keyword'], 0):.1f} keyword and {max(ssl['per'], 0):.1f} PER
points: the bar needs a teacher whose transformer layers add more than 5 PER points to its hidden
state 0."""


def markdown(document: dict, records: list[dict]) -> str:
    teacher, scale, env = document["ssl_teacher"], document["schedule"], document["environment"]
    main_rows = [r for r in records if not r["arm"] or r["row"].endswith(("-0.72", "-speed-3x"))]
    missing = document["missing_rows"]
    partial = (f"\n**Partial report**: {len(missing)} rows of the table are not run yet: "
               f"{', '.join(f'`{name}`' for name in missing)}.\n" if missing else "")
    seeds = max((e["seeds"] for arms in document["seeds"].values() for e in arms.values()), default=0)
    return f"""# Quality benchmark, second table: a self-supervised teacher

Generated by `bash benchmarks/quality/run.sh` ({document['scale']} scale, seed {document['seed']}; this table alone:
`python benchmarks/quality/reproduce.py --table ssl`) on {document['generated']}; every number below is
from that run. Raw numbers: [results-ssl.json](results-ssl.json). The first table, on the CTC teacher:
[results.md](results.md); how data and probes are built: [quality-benchmark.md](quality-benchmark.md).
{partial}
## The teacher

A `transformers` `HubertModel` ({teacher['parameters']:,} parameters; {teacher['args']['layers']} layers of width
{teacher['args']['hidden']}, {teacher['args']['heads']} heads, FFN {teacher['args']['ffn']}, CNN {teacher['args']['conv']} wide, pre-LN) trained from
random weights by HuBERT's masked prediction (`benchmarks/quality/train_ssl_teacher.py`): targets are
{teacher['targets']['clusters']} k-means clusters of 39 MFCC features per 20 ms frame, spans of
{teacher['args']['mask_length']} frames start at {100 * teacher['args']['mask_start']:g} % of frames, cross-entropy on the masked
frames; {teacher['steps']} steps of {teacher['args']['batch']} x {teacher['args']['crop_seconds']:g} s crops of the
training speakers' unlabelled audio, {teacher['train_minutes']:.1f} min. On the held-out speakers it predicts
the cluster of {100 * teacher['test_masked_accuracy']:.1f} % of masked frames (chance {100 * teacher['chance']:.0f} %);
with every attention output zeroed, {100 * teacher['test_masked_accuracy_without_attention']:.1f} %.

## Does attention matter?

Each teacher probed as it is and with every layer's attention block zeroed (the method's own `mha`
gates all off, no retraining; the probes are retrained on the features):

{attention_section(document)}

## The method on the SSL teacher

{table(main_rows)}

Speed: `speechprune bench` of every student against the SSL teacher, {scale['bench_seconds']:g} s of audio, batch 1,
float32, {env['threads']} threads on {env['device_name']}. Students: `speechprune prune` for
{scale['prune_steps']} steps plus {scale['final_steps']} with frozen masks, batches of {scale['batch_seconds']:g} s in
{scale['crop_seconds']:g} s crops; `--speedup` rows from a cost table of the SSL teacher measured on this CPU.

### What each student keeps

{structure_table(records)}

## Fine-grained heads and STE, over seeds

Each arm pruned with up to {seeds} seeds (`--seed`), mean ± sample standard deviation:

{seeds_table(document['seeds'])}

Verdicts (Welch's t-test, 95 %, of the full method against each ablation; "better" means the full
method scores better):

{verdict_table(document['verdicts'])}
"""
