"""Regenerate the quality benchmark from nothing: TTS data, teacher, students, probes, table, plot.

    bash benchmarks/quality/run.sh            # setup (apt) + this script with its defaults

Stages (each cached in --work and skipped when its output exists, so an interrupted run resumes):

1. data      generated speech (tts_data.py): unlabelled corpus, keywords, phone-labelled sentences
2. teacher   a small wav2vec 2.0 trained with CTC on phones (train_teacher.py), and the same
             architecture with random weights as a floor for every probe
3. students  `speechprune prune` + `speechprune shrink` for each row of ROWS: the full method at
             three parameter sparsities and the ablations at 0.72; students pruned for speed
             (a MACs budget, and a latency budget from a cost table `speechprune bench
             --cost-model` measures first); the one-shot baseline ranks gates by `speechprune
             analyze` scores; the from-scratch baseline copies the 0.72 architecture
4. probes    keyword (speaker-disjoint), speaker (word-disjoint), phones (linear CTC, held-out
             speakers), fidelity to the teacher, all on frozen features (speechprune.eval.probe);
             int8 rows probe a student with its Linear layers quantized (speechprune.deploy.quantize)
5. speed     `speechprune bench` of every model against the teacher on the CPU (int8 rows with
             `--quantize int8`)
6. report    docs/results.md, docs/results.json, docs/images/quality-vs-sparsity.png

A second table (``--table ssl``; both by default) repeats stages 2-6 on a self-supervised teacher:
a small HuBERT trained by masked prediction (train_ssl_teacher.py), both teachers probed with every
attention output zeroed, the method and its baselines, and the full method against whole heads and
against relaxed gates over seeds (``ssl_rows``); its report is docs/results-ssl.md (report_ssl.py).

Every number in the report comes from this run; the report says how long each stage took.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from speechprune.io.atomic import write_text

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
KEYWORD_TRAIN_WORDS = 25  # speaker probe: train on 25 of the 35 words, test on the other 10


@dataclass
class Row:
    name: str
    label: str
    sparsity: float | None = None  # parameter budget (--sparsity)
    prune_args: list[str] = field(default_factory=list)
    kind: str = "pruned"  # teacher | random | pruned | oneshot | scratch | int8 | noattn | state0
    budget: str = "params"  # params | macs | latency: the currency of the row's budget
    target: float | None = None  # --macs-sparsity or --speedup of a speed row
    of: str | None = None  # int8 rows: the row whose model is quantized; scratch rows: the row it copies
    teacher: str = "ctc"  # ctc | ssl: the teacher the row is pruned from (noattn, state0 rows: the teacher probed)
    arm: str | None = None  # seeded comparison rows: full | heads | noste
    seed: int = 0  # added to --seed for the prune run (seeded comparison rows)


ROWS = [
    Row("teacher", "teacher (dense)", kind="teacher"),
    Row("random", "teacher architecture, random weights", kind="random"),
    Row("full-0.50", "full method", 0.50),
    Row("full-0.72", "full method", 0.72),
    Row("full-0.85", "full method", 0.85),
    Row("heads-0.72", "ablation: whole heads only (no qk/vo dims)", 0.72, ["--structures", "conv,mha,head,ffn,int"]),
    Row("noste-0.72", "ablation: no STE (relaxed gates)", 0.72, ["--no-ste"]),
    Row("nocnn-0.72", "ablation: no CNN channel pruning", 0.72, ["--structures", "mha,head,qk,vo,ffn,int"]),
    Row("oneshot-0.72", "baseline: one-shot from analyze scores, no training", 0.72, kind="oneshot"),
    Row("scratch-0.72", "baseline: same size as full-0.72, trained from scratch", 0.72, kind="scratch", of="full-0.72"),
    Row("macs-0.50", "for speed: MACs budget", budget="macs", target=0.50),
    Row("macs-0.72", "for speed: MACs budget", budget="macs", target=0.72),
    Row("macs-heads-0.72", "for speed: MACs budget, whole heads only", budget="macs", target=0.72,
        prune_args=["--structures", "conv,mha,head,ffn,int"]),
    Row("speed-2x", "for speed: latency budget (cost table)", budget="latency", target=2.0),
    Row("speed-2.5x", "for speed: latency budget (cost table)", budget="latency", target=2.5),
    Row("speed-3x", "for speed: latency budget (cost table)", budget="latency", target=3.0),
    Row("full-0.72-int8", "full-0.72, dynamic int8 Linear layers", kind="int8", of="full-0.72"),
    Row("speed-3x-int8", "speed-3x, dynamic int8 Linear layers", kind="int8", of="speed-3x"),
]
WHOLE_HEADS = ["--structures", "conv,mha,head,ffn,int"]
ARMS = {"full": ("full method", []), "heads": ("whole heads only", WHOLE_HEADS), "noste": ("no STE", ["--no-ste"])}


def ssl_rows(seeds: int) -> list[Row]:
    """The second table: the self-supervised teacher, what removing attention costs both teachers, the
    method and its baselines, and the seeded comparison of fine-grained heads against whole heads and of
    STE against relaxed gates, at 0.72 and at --speedup 3 (``seeds`` prune runs per arm and budget)."""
    rows = [
        Row("ssl-teacher", "SSL teacher (dense)", kind="teacher", teacher="ssl"),
        Row("ssl-random", "SSL teacher architecture, random weights", kind="random", teacher="ssl"),
        ROWS[0],  # the CTC teacher, against which removing attention is compared
        Row("ssl-teacher-noattn", "SSL teacher, every attention output zeroed", kind="noattn", teacher="ssl"),
        Row("teacher-noattn", "CTC teacher, every attention output zeroed", kind="noattn", teacher="ctc"),
        # what no change to attention can take away: the probes may always fall back on hidden state 0
        Row("ssl-teacher-state0", "SSL teacher, probed on hidden state 0 alone", kind="state0", teacher="ssl"),
        Row("teacher-state0", "CTC teacher, probed on hidden state 0 alone", kind="state0", teacher="ctc"),
        Row("ssl-full-0.50", "full method", 0.50, teacher="ssl"),
        Row("ssl-full-0.85", "full method", 0.85, teacher="ssl"),
        Row("ssl-speed-2x", "for speed: latency budget (cost table)", budget="latency", target=2.0, teacher="ssl"),
        Row("ssl-oneshot-0.72", "baseline: one-shot from analyze scores, no training", 0.72, kind="oneshot",
            teacher="ssl"),
    ]
    for arm, (label, args) in ARMS.items():
        for seed in range(seeds):
            suffix = f"-s{seed}" if seed else ""
            rows.append(Row(f"ssl-{arm}-0.72{suffix}", f"{label}, seed {seed}", 0.72, args, teacher="ssl", arm=arm,
                            seed=seed))
            rows.append(Row(f"ssl-{arm}-speed-3x{suffix}", f"for speed (--speedup 3): {label}, seed {seed}", None,
                            args, budget="latency", target=3.0, teacher="ssl", arm=arm, seed=seed))
    rows.append(Row("ssl-scratch-0.72", "baseline: same size as ssl-full-0.72, trained from scratch", 0.72,
                    kind="scratch", of="ssl-full-0.72", teacher="ssl"))
    return rows


ROW_BY_NAME = {row.name: row for row in ROWS}
PROBED_TEACHER = ("teacher", "noattn", "state0")  # row kinds whose model is a teacher, unpruned
TABLES = ("ctc", "ssl")  # the CTC teacher's table (ROWS), the SSL teacher's (ssl_rows)

SCALES = {
    # the published configuration (docs/results.md)
    "full": dict(data=[], teacher=["--steps", "800", "--batch-seconds", "16", "--lr", "3e-4"], prune_steps=300, final_steps=60,
                 batch_seconds=6.0, crop_seconds=2.0, gate_lr=0.05, lambda_lr=0.05, sentences_probe=300, bench_seconds=4.0,
                 bench_rounds=[], speedup_shrink=1.0, seeds=3,
                 ssl_teacher=["--steps", "2500", "--lr", "8e-4", "--hidden", "256", "--layers", "4", "--heads", "4",
                              "--ffn", "1024", "--conv", "128", "--pos-conv", "16", "--threads", "1",
                              "--eval-every", "500"]),
    # a quick end-to-end check of the pipeline itself (numbers meaningless)
    "smoke": dict(data=["--speakers", "8", "--test-speakers", "2", "--corpus-per-speaker", "2",
                        "--train-sentences-per-speaker", "4", "--test-sentences-per-speaker", "2"],
                  teacher=["--steps", "6", "--batch-seconds", "8", "--hidden", "64", "--layers", "3", "--heads", "4",
                           "--ffn", "1024", "--conv", "32", "--eval-every", "6"],
                  prune_steps=6, final_steps=2, batch_seconds=4.0, crop_seconds=1.0, gate_lr=0.05, lambda_lr=0.05,
                  sentences_probe=16,
                  # the tiny teacher's fixed costs leave ~1.3x at most: its latency rows ask 1 + 5 % of (x - 1)
                  bench_seconds=1.0, speedup_shrink=0.05, seeds=1,
                  bench_rounds=["--warmup", "1", "--repeat", "2", "--min-time", "0"],  # bench's defaults: the full scale's
                  ssl_teacher=["--steps", "6", "--hidden", "64", "--layers", "3", "--heads", "4", "--ffn", "1024",
                               "--conv", "32", "--clusters", "20", "--eval-every", "6"]),
}


def log(text: str) -> None:
    print(f"[quality {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def run(command: list[str], *, capture: bool = False) -> str:
    """Run a stage's command; its progress goes to our stderr, its stdout is returned when captured."""
    log("$ " + " ".join(str(c) for c in command))
    done = subprocess.run([str(c) for c in command], stdout=subprocess.PIPE if capture else None, text=True,
                          cwd=REPO, env={**os.environ, "NO_COLOR": "1"}, check=False)
    if done.returncode != 0:
        raise SystemExit(f"error: stage command failed with exit code {done.returncode}: {' '.join(map(str, command))}")
    return done.stdout or ""


def speechprune(*args) -> list[str]:
    return [sys.executable, "-m", "speechprune", *args]


class Pipeline:
    def __init__(self, work: Path, scale: str, seed: int):
        self.work = work
        self.scale = SCALES[scale]
        self.scale_name = scale
        self.seed = seed
        self.data = work / "data"
        self.teacher = work / "teacher"
        self.random = work / "random"
        self.teachers = {"ctc": self.teacher, "ssl": work / "ssl-teacher"}
        self.ssl_rows = ssl_rows(self.scale["seeds"])

    def model(self, row: Row) -> Path:
        if row.kind == "int8":
            return self.model(ROW_BY_NAME[row.of])
        if row.kind in PROBED_TEACHER:
            return self.teachers[row.teacher]
        if row.kind == "random":
            return self.random if row.teacher == "ctc" else self.work / "ssl-random"
        return self.work / "models" / row.name

    def cost_table(self, teacher: str) -> Path:
        """The latency rows' cost table of one teacher."""
        return self.work / ("cost-table.json" if teacher == "ctc" else f"{teacher}-cost-table.json")

    def stage(self, name: str, output: Path, build) -> None:
        """Build ``output`` unless an earlier run finished it (each builder writes atomically)."""
        if output.exists():
            log(f"{name}: {output} exists, kept")
            return
        started = time.time()
        build()
        self.record_time(name, time.time() - started)

    def record_time(self, name: str, seconds: float) -> None:
        """Keep every stage's duration in --work, so a resumed run still reports all of them."""
        timings_file = self.work / "timings.json"
        timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
        timings[name] = round(seconds, 1)
        write_text(timings_file, json.dumps(timings, indent=1) + "\n")
        log(f"{name}: done in {seconds:.0f} s")

    # --- 1-2: data and teacher ------------------------------------------------------------------

    def make_data(self) -> None:
        self.stage("data", self.data, lambda: run([sys.executable, HERE / "tts_data.py", "--out", self.data,
                                                  "--seed", self.seed, *self.scale["data"]]))

    def make_teacher(self, teacher: str) -> None:
        """A teacher and its architecture with random weights: "ctc" (train_teacher.py) or "ssl"
        (train_ssl_teacher.py)."""
        script, args, name = {"ctc": ("train_teacher.py", self.scale["teacher"], "teacher"),
                              "ssl": ("train_ssl_teacher.py", self.scale["ssl_teacher"], "ssl teacher")}[teacher]
        folder = self.teachers[teacher]
        self.stage(name, folder, lambda: run([sys.executable, HERE / script, "--data", self.data, "--out", folder,
                                              "--seed", self.seed, *args]))
        random = self.model(Row("", "", kind="random", teacher=teacher))
        self.stage(f"{name} random" if teacher != "ctc" else "random", random, lambda: self._save_random(folder, random))

    def make_cost_table(self, teacher: str) -> None:
        """A teacher's latency table on this CPU, at the bench's length, for the latency rows."""
        table = self.cost_table(teacher)
        self.stage("cost table" if teacher == "ctc" else f"{teacher} cost table", table, lambda: run(speechprune(
            "bench", self.teachers[teacher], "--cost-model", table, "--device", "cpu", "--seconds",
            self.scale["bench_seconds"], "--batch", 1, "-q")))

    def _save_random(self, teacher: Path, out: Path) -> None:
        """A teacher's architecture with seeded random weights: the floor of every probe."""
        import torch
        import transformers

        from speechprune.model.loading import quiet_transformers

        config = transformers.AutoConfig.from_pretrained(teacher)
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        torch.manual_seed(self.seed + 1)
        with quiet_transformers():
            transformers.AutoModel.from_config(config).save_pretrained(tmp)  # the base model of a ...ForCTC config
        shutil.copy(teacher / "preprocessor_config.json", tmp)
        tmp.rename(out)

    # --- 3: students ----------------------------------------------------------------------------

    def prune_args(self, row: Row) -> list[str]:
        s = self.scale
        if row.budget == "macs":  # MACs counted on the bench's input, the length every speedup is measured at
            budget = ["--macs-sparsity", row.target, "--macs-seconds", s["bench_seconds"]]
        elif row.budget == "latency":
            budget = ["--speedup", self.speedup(row), "--latency-table", self.cost_table(row.teacher)]
        else:
            budget = ["--sparsity", row.sparsity]
        return [*budget, "--data", self.data / "corpus", "--seed", self.seed + row.seed,
                "--batch-seconds", s["batch_seconds"], "--crop-seconds", s["crop_seconds"], "--device", "cpu",
                # gates start at log_alpha 3; the default rates (0.02) need most of a 300-step run to move them
                "--gate-lr", s["gate_lr"], "--lambda-lr", s["lambda_lr"],
                "--checkpoint-every", 50, "--json", "-q"]

    def speedup(self, row: Row) -> float:
        """A latency row's --speedup at this scale."""
        return round(1 + (row.target - 1) * self.scale["speedup_shrink"], 4)

    def make_student(self, row: Row) -> None:
        s = self.scale
        run_dir = self.work / "runs" / row.name
        teacher = self.teachers[row.teacher]
        if row.kind == "pruned":
            command = speechprune("prune", teacher, *self.prune_args(row), "--steps", s["prune_steps"],
                                  "--final-steps", s["final_steps"], "--out", run_dir, "--resume", *row.prune_args)
        elif row.kind == "oneshot":
            scores = self.work / ("scores.json" if row.teacher == "ctc" else f"{row.teacher}-scores.json")
            if not scores.exists():
                run(speechprune("analyze", teacher, "--data", self.data / "corpus", "--no-drop-one", "--max-seconds",
                                60, "--seed", self.seed, "--device", "cpu", "--out", scores, "-q"))
            command = speechprune("prune", teacher, *self.prune_args(row), "--steps", 0, "--scores", scores,
                                  "--out", run_dir, "--overwrite")
        else:  # scratch: the architecture of the row it copies, distilled from random init for as many steps
            run([sys.executable, HERE / "train_scratch.py", "--like", self.work / "models" / row.of, "--teacher",
                 teacher, "--data", self.data / "corpus", "--out", self.model(row), "--steps",
                 s["prune_steps"] + s["final_steps"], "--distill-layers", ",".join(map(str, self.distill_layers(row.of))),
                 "--crop-seconds", s["crop_seconds"], "--batch-seconds", s["batch_seconds"], "--seed", self.seed])
            return
        run(command, capture=True)
        run(speechprune("shrink", run_dir, "--out", self.model(row), "--json", "-q"), capture=True)

    def distill_layers(self, name: str) -> list[int]:
        config = json.loads((self.work / "runs" / name / "config.json").read_text())
        return config["options"]["distill_layers"]

    # --- 4: probes ------------------------------------------------------------------------------

    def probe_sets(self) -> dict:
        """Clips and labels of the three probes, read once."""
        speakers = json.loads((self.data / "dataset.json").read_text())["speakers"]
        split = {s["id"]: s["split"] for s in speakers}
        words = sorted(p.name for p in (self.data / "keywords").iterdir() if p.is_dir())
        rng = np.random.default_rng(self.seed)
        speaker_train_words = set(rng.permutation(words)[:KEYWORD_TRAIN_WORDS].tolist())
        keywords = []  # (clip, word, speaker)
        for word in words:
            for path in sorted((self.data / "keywords" / word).glob("*.wav")):
                keywords.append((_read(path), word, path.stem))
        sentences = {}
        for part in ("train", "test"):
            entries = [json.loads(line) for line in (self.data / "sentences" / f"{part}.jsonl").read_text().splitlines()]
            if part == "train":
                chosen = rng.permutation(len(entries))[: self.scale["sentences_probe"]]
                entries = [entries[i] for i in sorted(chosen)]
            sentences[part] = entries
        phones = json.loads((self.data / "phones.json").read_text())
        index = {p: i for i, p in enumerate(phones)}
        return {
            "keywords": keywords,
            "split": split,
            "words": words,
            "speaker_train_words": speaker_train_words,
            "speakers": sorted(split),
            "phones": phones,
            "sentence_clips": {part: [_read(self.data / e["path"]) for e in entries] for part, entries in sentences.items()},
            "sentence_labels": {part: [[index[p] for p in e["phones"]] for e in entries] for part, entries in sentences.items()},
        }

    def test_clip_counts(self) -> dict:
        """Test clips of the two classification probes (for their standard errors)."""
        speakers = json.loads((self.data / "dataset.json").read_text())["speakers"]
        words = sum(1 for p in (self.data / "keywords").iterdir() if p.is_dir())
        held_out = sum(s["split"] == "test" for s in speakers)
        return {"keywords": held_out * words, "speakers": len(speakers) * (words - KEYWORD_TRAIN_WORDS)}

    def probe(self, row: Row, sets: dict, teacher_nets: dict, deploy=None) -> dict:
        """The probes of ``row``'s model; ``deploy(target, net)``, if given, is the model as a runtime
        runs it (deployed_probes.py), probed instead and compared with its float32 self."""
        import torch

        from speechprune.eval.features import FrozenFeatures, clip_batches
        from speechprune.eval.probe import fit_classifier, fit_ctc
        from speechprune.folders.target import load_target, read_target
        from speechprune.model.compare import compare_hidden_states

        target = read_target(str(self.model(row)))
        net, masks, _ = load_target(target, torch.device("cpu"))
        if row.kind == "noattn":
            masks = attention_removed(target.spec)
        float_net = net
        if row.kind == "int8":
            from speechprune.deploy.quantize import quantize

            net = quantize(net, "int8")
        if deploy is not None:
            net = deploy(target, net)
        audio = dict(attention_mask=target.attention_mask, normalize=target.normalize,
                     sampling_rate=target.sampling_rate)
        features = FrozenFeatures(net, masks=masks, **audio)
        clips = [c for c, _, _ in sets["keywords"]]
        pooled = features.pooled(clips)  # (N, L + 1, D)
        states = slice(0, 1) if row.kind == "state0" else slice(None)  # state0 rows: (N, 1, D)
        pooled = pooled[:, states]
        word = np.array([sets["words"].index(w) for _, w, _ in sets["keywords"]])
        speaker = np.array([sets["speakers"].index(s) for _, _, s in sets["keywords"]])
        test_speaker = np.array([sets["split"][s] == "test" for _, _, s in sets["keywords"]])
        test_word = np.array([w not in sets["speaker_train_words"] for _, w, _ in sets["keywords"]])
        kws = fit_classifier(pooled[~test_speaker], word[~test_speaker], pooled[test_speaker], word[test_speaker],
                             classes=sets["words"], seed=self.seed)
        sid = fit_classifier(pooled[~test_word], speaker[~test_word], pooled[test_word], speaker[test_word],
                             classes=sets["speakers"], seed=self.seed)
        frames = {part: [clip[states] for clip in features.frames(sets["sentence_clips"][part])]
                  for part in ("train", "test")}  # per clip (L + 1 or 1, T_real, D)
        ctc = fit_ctc(frames["train"], sets["sentence_labels"]["train"], frames["test"], sets["sentence_labels"]["test"],
                      tokens=len(sets["phones"]), seed=self.seed)
        teacher_target, teacher_model = teacher_nets[row.teacher]
        batches = [batch for _, batch in clip_batches(sets["sentence_clips"]["test"], batch_seconds=32.0, **{
            k: audio[k] for k in ("sampling_rate", "normalize")})]
        fidelity = compare_hidden_states(net, teacher_model, batches, student_mask=target.attention_mask,
                                         teacher_mask=teacher_target.attention_mask, device=torch.device("cpu"),
                                         student_masks=masks)
        int8 = {}
        if net is not float_net:  # the quantized (or deployed) model against its own float32 weights
            against_float = compare_hidden_states(net, float_net, batches, student_mask=target.attention_mask,
                                                  teacher_mask=target.attention_mask, device=torch.device("cpu"),
                                                  student_masks=masks, teacher_masks=masks)
            int8 = {"cosine_to_float32": against_float["cosine"]}
        return {
            **int8,
            "keyword_accuracy": kws.accuracy,
            "keyword_chance": kws.chance,
            "keyword_layer_weights": kws.layer_weights,
            "speaker_accuracy": sid.accuracy,
            "speaker_chance": sid.chance,
            "speaker_layer_weights": sid.layer_weights,
            "phone_error_rate": ctc.per,
            "phone_layer_weights": ctc.layer_weights,
            "fidelity_cosine": fidelity["cosine"],
            "fidelity_cka": fidelity["cka"],
        }

    # --- 5: speed -------------------------------------------------------------------------------

    def bench(self, rows: list[Row], teacher: str, quantized: bool = False) -> dict:
        """Every model of ``rows`` pruned from ``teacher`` (or every int8 row's, quantized) against the float32
        teacher, interleaved."""
        models = [self.model(row) for row in rows if row.teacher == teacher
                  and row.kind not in PROBED_TEACHER and (row.kind == "int8") == quantized]
        out = run(speechprune("bench", *models, "--baseline", self.teachers[teacher], "--device", "cpu", "--seconds",
                              self.scale["bench_seconds"], "--batch", 1, *self.scale["bench_rounds"],
                              *(["--quantize", "int8"] if quantized else []),
                              "--json", "-q"), capture=True)
        return json.loads(out)

    def speed(self, table: str, rows: list[Row], *, partial: bool) -> dict:
        """``bench`` of a table's rows against their teacher, per precision: "bench", "bench int8" (CTC
        table), "ssl bench"; cached in --work, except a partial report's, which is measured anew."""
        speed = {}
        for precision in ("float32", "int8") if table == "ctc" else ("float32",):
            words = [table != "ctc" and table, "bench", precision != "float32" and precision, partial and "partial"]
            name = " ".join(word for word in words if word)
            file = self.work / (name.replace(" ", "-") + ".json")
            if partial:
                file.unlink(missing_ok=True)
            quantized = precision == "int8"
            self.stage(name, file, lambda: write_text(
                file, json.dumps(self.bench(rows, table, quantized=quantized), indent=1) + "\n"))
            speed[precision] = json.loads(file.read_text())
        return speed


def attention_removed(spec):
    """Masks that zero every layer's attention block (its output bias too): the method's own ``mha`` gates,
    all off, and nothing else."""
    import torch

    from speechprune.model.masks import EncoderMasks

    return EncoderMasks({("mha", l): torch.zeros(()) for l in range(len(spec.layers))})


def _read(path: Path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32")
    if rate != 16000:
        raise SystemExit(f"error: {path} is {rate} Hz; regenerate the data")
    return audio


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default=str(HERE / "work"), help="cache of every stage (default: %(default)s)")
    parser.add_argument("--docs", default=str(REPO / "docs"), help="where the reports and their plots go")
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--table", choices=("all", *TABLES), default="all",
                        help="ctc: the CTC teacher's table (results.md); ssl: the self-supervised teacher's "
                        "(results-ssl.md); all: both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", action="store_true", help="delete --work first and rebuild every stage")
    parser.add_argument("--rows", help="comma-separated rows to build and probe first, in this order (the rest, the "
                        "bench and the report follow unless --only)")
    parser.add_argument("--only", action="store_true", help="with --rows: stop after those rows' students and probes")
    parser.add_argument("--partial", action="store_true", help="with --rows --only: then bench the rows built so far and "
                        "write the SSL report from them, naming the rows not yet run")
    args = parser.parse_args(argv)
    work = Path(args.work)
    pipeline = Pipeline(work, args.scale, args.seed)
    tables = {name: rows for name, rows in (("ctc", ROWS), ("ssl", pipeline.ssl_rows)) if args.table in ("all", name)}
    by_name = {row.name: row for rows in tables.values() for row in rows}
    first = args.rows.split(",") if args.rows else []
    unknown = sorted(set(first) - set(by_name))
    if unknown:
        parser.error(f"unknown --rows {', '.join(unknown)}; rows: {', '.join(by_name)}")
    order = [by_name[name] for name in first]
    order += [] if args.only else [row for row in by_name.values() if row.name not in first]
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    from report import write_report
    from report_ssl import write_ssl_report

    started = time.time()
    pipeline.make_data()
    teachers = sorted({row.teacher for row in order})  # what the rows to build need
    for teacher in teachers:
        pipeline.make_teacher(teacher)
    for teacher in sorted({row.teacher for row in order if row.budget == "latency"}):
        pipeline.make_cost_table(teacher)
    for row in order:
        if row.kind not in ("random", "int8", *PROBED_TEACHER):
            pipeline.stage(f"student {row.name}", pipeline.model(row), lambda row=row: pipeline.make_student(row))

    results_file = work / "probes.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    sets = None
    from speechprune.folders.target import load_target, read_target

    teacher_nets = {}
    for teacher in teachers:
        target = read_target(str(pipeline.teachers[teacher]))
        teacher_nets[teacher] = (target, load_target(target, torch.device("cpu"))[0])
    for row in order:
        if row.name in results:
            continue
        sets = sets or pipeline.probe_sets()
        probe_started = time.time()
        log(f"probes: {row.name}")
        results[row.name] = pipeline.probe(row, sets, teacher_nets)
        write_text(results_file, json.dumps(results, indent=1) + "\n")
        pipeline.record_time(f"probes {row.name}", time.time() - probe_started)
    if args.only and not (args.partial and "ssl" in tables):
        log(f"--only: {', '.join(first)} built and probed; run without --only for the bench and the report")
        return
    for table, rows in tables.items():
        if args.partial:  # the rows probed so far; the report names the others
            if table != "ssl":
                continue
            rows = [row for row in rows if row.name in results]
        speed = pipeline.speed(table, rows, partial=args.partial)
        timings = json.loads((work / "timings.json").read_text())
        if table == "ctc":
            write_report(pipeline, rows, results, speed, timings, Path(args.docs))
        else:
            write_ssl_report(pipeline, rows, results, speed, timings, Path(args.docs),
                             missing=[row.name for row in pipeline.ssl_rows if row not in rows])
    log(f"done in {(time.time() - started) / 60:.1f} min; reports in {args.docs}")


if __name__ == "__main__":
    main()
