"""Generate the quality benchmark's synthetic speech dataset with offline TTS (espeak-ng, flite).

A *speaker* is one fixed TTS setting: engine, voice, variant, base pitch and base speed. About a
quarter of the speakers are flite voices, the rest espeak-ng accent + voice-variant pairs. Some
speakers are held out for testing (both engines on both sides). Every utterance jitters pitch and
speed a little around its speaker's base, and gets its own gain and a faint white noise floor.

Layout of ``--out DIR`` (paths in the manifests are relative to DIR)::

    dataset.json                  arguments, seed, TTS versions, speakers, files and seconds per part
    speakers.json                 the speakers: id, engine, voice, variant, pitch, speed, split
    corpus/<speaker>/<n>.wav      unlabelled distillation audio: passages of 2-4 sentences, about 4-8 s,
                                  train speakers only
    corpus.jsonl                  {"path", "speaker", "text", "seconds"} per passage
    sentences/train/<speaker>_<n>.wav, sentences/test/<speaker>_<n>.wav
                                  single sentences of 5-10 words by train / test speakers
    sentences/train.jsonl, sentences/test.jsonl
                                  {"path", "speaker", "text", "phones", "seconds"} per sentence
    phones.json                   sorted phone inventory of the train + test transcripts
    keywords/<word>/<speaker>.wav the 35 Speech Commands words, once by every speaker
    keywords.jsonl                {"path", "speaker", "word", "seconds"} per keyword

Phones are espeak-ng's phoneme mnemonics (``espeak-ng -x``) for the speaker's accent (``en-us`` for
flite speakers), stress marks removed: accent-dependent by design. Sentence texts are distinct across
the whole dataset, so no test text is ever heard in training. Audio is mono 16 kHz PCM_16, silence
trimmed to at most 0.1 s at either end.

    bash benchmarks/quality/setup.sh      # espeak-ng and flite, if missing
    python benchmarks/quality/tts_data.py --out work/data

The output is byte-identical for the same arguments and machine set-up, whatever ``--jobs``: every
random choice is drawn up front from ``numpy.random.default_rng(seed)`` and each job is fully
specified before the workers start.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16000
KEYWORDS = ["backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward", "four", "go", "happy", "house", "learn", "left", "marvin", "nine", "no", "off", "on", "one", "right", "seven", "sheila", "six", "stop", "three", "tree", "two", "up", "visual", "wow", "yes", "zero"]

# espeak-ng English accents (voice names as `-v` takes them).
ESPEAK_ACCENTS = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
# Voice variants from espeak-ng's `voices/!v` that still sound like a person talking. Left out: whisper and
# whisperf (unvoiced), croak and the novelty voices (robots, Demonic, Tweaky, ...), klatt5 (another Klatt
# source, kept to the four common ones) and klatt6 (byte-identical to klatt in espeak-ng 1.51).
ESPEAK_VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3", "klatt4", "iven", "iven2", "john", "max", "michel", "norbert", "paul", "pedro", "robert", "steph", "steph2", "steph3"]
# Fixed `-a`: at the default 100 the loudest variants (iven, steph2) clip inside espeak-ng.
ESPEAK_AMPLITUDE = 25
ESPEAK_PITCH = (25, 75)        # base `-p`, 0-99
ESPEAK_SPEED = (140, 190)      # base `-s`, words per minute
# flite voices and their own mean f0 in Hz, measured; int_f0_target_mean replaces it. rms ignores the
# setting (None), so its speakers differ in speed only. awb_time only knows how to say the time.
FLITE_VOICES = {"kal": 95.0, "kal16": 95.0, "awb": 130.0, "rms": None, "slt": 170.0}
# Up to three speakers per flite voice: (f0 factor, duration_stretch), far enough apart to tell apart.
FLITE_SETTINGS = ((0.86, 1.12), (1.0, 0.88), (1.15, 1.0))
PITCH_JITTER = 6               # espeak `-p` units, +-
F0_JITTER = 0.06               # flite f0, +- relative
SPEED_JITTER = 0.08            # both engines, +- relative
GAIN = (0.5, 1.0)              # after peak normalisation to PEAK
PEAK = 0.9
SNR_DB = (40.0, 50.0)          # white noise floor, so no file holds digital silence
TRIM_DB = -40.0                # silence threshold for 10 ms frames, relative to the loudest
KEEP_SILENCE = 0.1             # seconds kept at either end
PASSAGE_SECONDS = (4.0, 8.0)
PASSAGE_SENTENCES = (2, 4)
SENTENCE_WORDS = (5, 10)
# espeak-ng -x marks that are not phones: stress (primary ', secondary , unstressed %, =) before a vowel,
# and two tokens that its own --ipa output leaves empty: ';' (a break between vowels, as in "piano")
# and '@-' (a schwa it elides, as in "camera").
STRESS_MARKS = "',%="
SILENT_TOKENS = {";", "@-"}

# The sentence vocabulary. Verbs are in the past tense so that no subject-verb agreement is needed;
# words with two pronunciations (read, live, wind, tear, lead, ...) are left out.
WORDS = {
    "pron_s": "he she we they you",
    "pron_o": "him her them us you me it",
    "name": "anna peter maria thomas lucy david sarah james emma daniel laura susan michael helen paul linda "
            "george kate oliver jack",
    "det": "the the the a a this that my your his her our their every",
    "adj": "big small old new red blue green yellow black white brown heavy warm cold wet dry clean dirty empty full "
           "quiet noisy tall short long round soft hard bright dark sad young strange lovely tiny huge broken shiny "
           "wooden famous funny sleepy hungry friendly lazy busy pretty ugly gentle simple golden purple silver",
    "agent": "dog cat bird horse cow sheep fish rabbit mouse duck goat teacher doctor farmer baker sailor child "
             "girl boy man woman neighbour friend brother sister king queen student driver nurse",
    "thing": "house door window table chair box bag book letter key lamp clock phone cup plate bowl bottle glass "
             "knife spoon basket bucket ladder rope coat hat shoe shirt jacket blanket pillow ball kite bike car "
             "boat train truck bus wagon garden river lake hill road bridge flower apple orange banana bread cake "
             "cheese soup egg candle mirror picture map ticket wallet umbrella camera radio guitar drum piano "
             "pencil paper ring watch bell fence gate wall roof kitchen bench tent stone shell feather leaf island "
             "forest village market",
    "vt": "found carried opened closed painted cleaned washed bought sold brought moved dropped lifted pushed "
          "pulled watched visited helped called kicked packed fixed built cooked baked drew filled covered "
          "touched held kept lost caught threw chose wanted needed liked loved missed noticed shared showed hid "
          "dried turned checked counted borrowed ordered planted",
    "vi": "walked ran slept waited laughed smiled danced jumped sat stood swam rested worked played sang shouted "
          "arrived stayed cried hurried wandered listened whistled talked",
    "prep": "near behind under beside across around along toward past inside through over by with",
    "adv": "quickly slowly quietly loudly carefully happily gently again early later alone together twice "
           "softly suddenly",
    "time": "today yesterday tonight recently afterwards",
    "time2": "last+night last+week this+morning every+day at+noon at+dawn on+sunday on+monday",
    "time3": "in+the+evening after+the+storm before+the+rain during+the+summer after+the+game in+the+morning",
}
VOCABULARY = {slot: [w.replace("+", " ") for w in words.split()] for slot, words in WORDS.items()}
VOCABULARY["noun"] = VOCABULARY["agent"] + VOCABULARY["thing"]
SLOT_WORDS = {"time2": 2, "time3": 3}  # words per slot, where not 1


# ---------------------------------------------------------------------------------------------- sentences

def sentence_templates() -> dict[int, list[tuple[str, ...]]]:
    """Slot sequences of subject + predicate + optional time phrase, by number of words. Subjects are
    people and animals and prepositions take things, so that the sentences mostly make sense."""
    subjects = [("pron_s",), ("name",), ("det", "agent"), ("det", "adj", "agent")]
    objects = [("pron_o",), ("name",), ("det", "noun"), ("det", "adj", "noun")]
    places = [("prep", "det", "thing"), ("prep", "det", "adj", "thing")]
    predicates = [("vi",), ("vi", "adv")] + [("vi",) + p for p in places]
    predicates += [("vt",) + o for o in objects] + [("vt",) + o + ("adv",) for o in objects]
    predicates += [("vt",) + o + p for o in objects for p in places]
    tails = [(), ("time",), ("time2",), ("time3",)]
    templates: dict[int, list[tuple[str, ...]]] = {}
    for subject in subjects:
        for predicate in predicates:
            for tail in tails:
                slots = subject + predicate + tail
                templates.setdefault(sum(SLOT_WORDS.get(s, 1) for s in slots), []).append(slots)
    return templates


def fill_template(rng: np.random.Generator, slots: tuple[str, ...]) -> str:
    words = [VOCABULARY[slot][rng.integers(len(VOCABULARY[slot]))] for slot in slots]
    for i, word in enumerate(words[:-1]):  # a -> an before a vowel letter (the vocabulary has no 'hour' or 'use')
        if word == "a" and words[i + 1][0] in "aeiou":
            words[i] = "an"
    return " ".join(words)


class SentenceSource:
    """Random sentences of a requested length, never the same text twice."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.templates = sentence_templates()
        self.seen: set[str] = set()

    def __call__(self, words: int) -> str:
        options = self.templates[words]
        while True:
            text = fill_template(self.rng, options[self.rng.integers(len(options))])
            if text not in self.seen:
                self.seen.add(text)
                return text


# ---------------------------------------------------------------------------------------------- speakers

def installed_voices() -> tuple[list[str], list[str], list[str]]:
    """The ESPEAK_ACCENTS, ESPEAK_VARIANTS and FLITE_VOICES that this machine has, in list order."""
    listing = run_text(["espeak-ng", "--voices=en"]).splitlines()[1:]
    names = {name.lower() for line in listing for name in (line.split()[1], line.split()[4].rsplit("/", 1)[-1])}
    data = Path(re.search(r"Data at:\s*(\S+)", run_text(["espeak-ng", "--version"])).group(1))
    variants = {path.name for path in (data / "voices" / "!v").iterdir()}
    flite = set(run_text(["flite", "-lv"]).split(":", 1)[1].split())
    return ([a for a in ESPEAK_ACCENTS if a in names], [v for v in ESPEAK_VARIANTS if v in variants],
            [v for v in FLITE_VOICES if v in flite])


def espeak_speakers(rng: np.random.Generator, count: int, accents: list[str], variants: list[str]) -> list[dict]:
    """Distinct accent + variant pairs, accents taken in turn and the least-used variants first."""
    accent_order = [accents[i] for i in rng.permutation(len(accents))]
    variant_rank = {variants[i]: rank for rank, i in enumerate(rng.permutation(len(variants)))}
    used: Counter[str] = Counter()
    taken: set[tuple[str, str]] = set()
    speakers = []
    for i in range(count):
        accent = accent_order[i % len(accent_order)]
        variant = min((v for v in variants if (accent, v) not in taken), key=lambda v: (used[v], variant_rank[v]))
        used[variant] += 1
        taken.add((accent, variant))
        speakers.append({"engine": "espeak-ng", "voice": accent, "variant": variant,
                         "pitch": int(rng.integers(ESPEAK_PITCH[0], ESPEAK_PITCH[1] + 1)),
                         "speed": int(rng.integers(ESPEAK_SPEED[0], ESPEAK_SPEED[1] + 1))})
    return speakers


def flite_speakers(rng: np.random.Generator, count: int, voices: list[str]) -> list[dict]:
    """``count`` (voice, setting) pairs, spread evenly over the voices.

    pitch is the target mean f0 in Hz (None for rms, which has no such setting), speed the
    duration_stretch (above 1 is slower)."""
    voice_order = rng.permutation(len(voices))
    pairs = sorted((rank, order, voices[v], setting) for order, v in enumerate(voice_order)
                   for rank, setting in enumerate(rng.permutation(len(FLITE_SETTINGS))))
    speakers = []
    for _, _, voice, setting in pairs[:count]:
        f0_factor, stretch = FLITE_SETTINGS[setting]
        base_f0 = FLITE_VOICES[voice]
        speakers.append({"engine": "flite", "voice": voice, "variant": None,
                         "pitch": None if base_f0 is None else round(base_f0 * f0_factor), "speed": stretch})
    return speakers


def draw_speakers(rng: np.random.Generator, args: argparse.Namespace, accents: list[str], variants: list[str],
                  flite_voices: list[str]) -> list[dict]:
    """``args.speakers`` speakers with ids spk000..., ``args.test_speakers`` of them split off for
    testing with each engine on both sides in proportion."""
    flite_count = min(max(2, round(args.speakers / 4)), len(flite_voices) * len(FLITE_SETTINGS))
    espeak_count = args.speakers - flite_count
    if espeak_count > len(accents) * len(variants):
        raise SystemExit(f"error: at most {len(accents) * len(variants) + flite_count} speakers with these voices")
    speakers = espeak_speakers(rng, espeak_count, accents, variants) + flite_speakers(rng, flite_count, flite_voices)
    speakers = [speakers[i] for i in rng.permutation(len(speakers))]
    flite_test = min(max(1, round(args.test_speakers * flite_count / args.speakers)), flite_count - 1)
    test = set()
    for engine, n_test in (("flite", flite_test), ("espeak-ng", args.test_speakers - flite_test)):
        members = [i for i, s in enumerate(speakers) if s["engine"] == engine]
        if not 1 <= n_test < len(members):
            raise SystemExit(f"error: cannot hold out {n_test} of {len(members)} {engine} speakers; "
                             "change --test-speakers")
        test.update(members[i] for i in rng.choice(len(members), n_test, replace=False))
    return [{"id": f"spk{i:03d}", **s, "split": "test" if i in test else "train"} for i, s in enumerate(speakers)]


def words_per_second(speaker: dict) -> float:
    """Rough speaking rate, to size passages; measured on this vocabulary (espeak talks faster than its wpm)."""
    if speaker["engine"] == "espeak-ng":
        return 1.25 * speaker["speed"] / 60
    return 3.0 / speaker["speed"]


# ---------------------------------------------------------------------------------------------- planning

def utterance(rng: np.random.Generator, speaker: dict, path: str, text: str) -> dict:
    """One fully specified synthesis job: the speaker's setting jittered, plus gain and noise."""
    if speaker["engine"] == "espeak-ng":
        pitch = int(np.clip(speaker["pitch"] + rng.integers(-PITCH_JITTER, PITCH_JITTER + 1), 0, 99))
        speed = round(speaker["speed"] * (1 + rng.uniform(-SPEED_JITTER, SPEED_JITTER)))
    else:
        f0_scale = 1 + rng.uniform(-F0_JITTER, F0_JITTER)
        pitch = None if speaker["pitch"] is None else round(speaker["pitch"] * f0_scale, 1)
        speed = round(speaker["speed"] * (1 + rng.uniform(-SPEED_JITTER, SPEED_JITTER)), 3)
    return {"path": path, "speaker": speaker["id"], "text": text, "engine": speaker["engine"],
            "voice": speaker["voice"], "variant": speaker["variant"], "pitch": pitch, "speed": speed,
            "gain": round(float(rng.uniform(*GAIN)), 4), "snr_db": round(float(rng.uniform(*SNR_DB)), 2),
            "noise_seed": int(rng.integers(2**63))}


def plan(rng: np.random.Generator, args: argparse.Namespace, speakers: list[dict]) -> dict[str, list[dict]]:
    """Every utterance of every part, in a fixed order; passages and sentences share one pool of
    distinct sentences."""
    sentence = SentenceSource(rng)
    train = [s for s in speakers if s["split"] == "train"]
    test = [s for s in speakers if s["split"] == "test"]

    def sentences(group: list[dict], split: str, count: int) -> list[dict]:
        return [utterance(rng, s, f"sentences/{split}/{s['id']}_{n:04d}.wav",
                          sentence(int(rng.integers(SENTENCE_WORDS[0], SENTENCE_WORDS[1] + 1))))
                for s in group for n in range(count)]

    def passage(speaker: dict) -> str:
        words = round(rng.uniform(*PASSAGE_SECONDS) * words_per_second(speaker))
        count = min(int(rng.integers(PASSAGE_SENTENCES[0], PASSAGE_SENTENCES[1] + 1)), words // 3)
        lengths = np.clip(np.diff(np.round(np.linspace(0, words, count + 1))).astype(int), 3, 10)
        return " ".join(sentence(int(n)) + "." for n in lengths)

    parts = {"corpus": [utterance(rng, s, f"corpus/{s['id']}/{n:04d}.wav", passage(s))
                        for s in train for n in range(args.corpus_per_speaker)],
             "sentences_train": sentences(train, "train", args.train_sentences_per_speaker),
             "sentences_test": sentences(test, "test", args.test_sentences_per_speaker)}
    parts["keywords"] = [utterance(rng, s, f"keywords/{word}/{s['id']}.wav", word)
                         for word in KEYWORDS for s in speakers]
    return parts


# ---------------------------------------------------------------------------------------------- workers

def tts_command(job: dict, wav: str) -> list[str]:
    """The espeak-ng or flite command line that writes the job's speech to ``wav``."""
    if job["engine"] == "espeak-ng":
        return ["espeak-ng", "-v", f"{job['voice']}+{job['variant']}", "-p", str(job["pitch"]),
                "-s", str(job["speed"]), "-a", str(ESPEAK_AMPLITUDE), "-w", wav, job["text"]]
    f0 = [] if job["pitch"] is None else ["--setf", f"int_f0_target_mean={job['pitch']}"]
    return ["flite", "-voice", job["voice"], *f0, "--setf", f"duration_stretch={job['speed']}",
            "-t", job["text"], "-o", wav]


def synthesize(job: dict) -> np.ndarray:
    """The job's raw TTS output at SAMPLE_RATE, float64."""
    with tempfile.TemporaryDirectory(prefix="tts_data.") as tmp:
        wav = os.path.join(tmp, "tts.wav")
        result = subprocess.run(tts_command(job, wav), capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{job['path']}: {' '.join(result.args)} failed: {result.stderr.strip()}")
        audio, rate = sf.read(wav, dtype="float64")
    if audio.ndim != 1 or not np.any(audio):
        raise RuntimeError(f"{job['path']}: {job['engine']} produced no mono audio for {job['text']!r}")
    return audio if rate == SAMPLE_RATE else soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ")


def trim_silence(audio: np.ndarray) -> np.ndarray:
    """Cut the ends quieter than TRIM_DB, keeping up to KEEP_SILENCE of them.

    Measured on 10 ms frames' RMS rather than on samples: flite's diphone voices (kal, kal16) open
    with ~0.2 s of recorded room noise whose sample peaks reach -43 dB of the speech peak."""
    frame = SAMPLE_RATE // 100
    padded = np.pad(audio, (0, -len(audio) % frame))
    rms = np.sqrt(np.mean(padded.reshape(-1, frame) ** 2, axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10 ** (TRIM_DB / 20))
    keep = int(KEEP_SILENCE * SAMPLE_RATE)
    return audio[max(loud[0] * frame - keep, 0):(loud[-1] + 1) * frame + keep]


def make_utterance(job: dict, out: str) -> int:
    """Synthesise, trim, level and write one job under ``out``; returns its length in samples."""
    audio = trim_silence(synthesize(job))
    audio *= PEAK * job["gain"] / np.abs(audio).max()
    noise_rms = np.sqrt(np.mean(audio**2)) * 10 ** (-job["snr_db"] / 20)
    audio += noise_rms * np.random.default_rng(job["noise_seed"]).standard_normal(len(audio))
    pcm = np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)
    sf.write(os.path.join(out, job["path"]), pcm, SAMPLE_RATE, subtype="PCM_16")
    return len(pcm)


def phonemize(voice_text: tuple[str, str]) -> list[str]:
    """espeak-ng's phones for a text in an accent, without stress marks and silent tokens."""
    voice, text = voice_text
    mnemonics = run_text(["espeak-ng", "-q", "-x", "--sep= ", "-v", voice, text])
    return [p for p in (token.strip(STRESS_MARKS) for token in mnemonics.split()) if p and p not in SILENT_TOKENS]


# ---------------------------------------------------------------------------------------------- main

def run_text(command: list[str], check: bool = True) -> str:
    """stdout of a command (stderr would mix warnings into phones)."""
    return subprocess.run(command, check=check, capture_output=True, text=True).stdout


def tool_versions() -> dict[str, str]:
    espeak = re.search(r"text-to-speech:\s*(\S+)", run_text(["espeak-ng", "--version"])).group(1)
    flite = re.search(r"version:\s*(\S+)", run_text(["flite", "--version"], check=False)).group(1)  # it exits 1
    return {"espeak-ng": espeak, "flite": flite}


def run_jobs(pool: concurrent.futures.Executor, function, jobs: list, label: str) -> list:
    """``function`` over ``jobs`` in order, with a progress line at every quarter."""
    results, started, step = [], time.time(), max(1, len(jobs) // 4)
    for result in pool.map(function, jobs, chunksize=8):
        results.append(result)
        if len(results) % step == 0 or len(results) == len(jobs):
            print(f"{label}: {len(results)}/{len(jobs)} ({time.time() - started:.0f} s)", file=sys.stderr, flush=True)
    return results


def write_jsonl(path: Path, entries: list[dict]) -> None:
    path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))


def generate(args: argparse.Namespace, tmp: Path) -> dict:
    """Write the whole dataset into ``tmp``; returns the per-part file counts and seconds."""
    rng = np.random.default_rng(args.seed)
    accents, variants, flite_voices = installed_voices()
    speakers = draw_speakers(rng, args, accents, variants, flite_voices)
    parts = plan(rng, args, speakers)
    jobs = [job for part in parts.values() for job in part]
    for folder in sorted({os.path.dirname(job["path"]) for job in jobs}):
        (tmp / folder).mkdir(parents=True, exist_ok=True)
    accent_of = {s["id"]: s["voice"] if s["engine"] == "espeak-ng" else "en-us" for s in speakers}
    sentence_jobs = parts["sentences_train"] + parts["sentences_test"]
    voice_texts = sorted({(accent_of[job["speaker"]], job["text"]) for job in sentence_jobs})

    with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
        phones = dict(zip(voice_texts, run_jobs(pool, phonemize, voice_texts, "phones"), strict=True))
        samples = run_jobs(pool, functools.partial(make_utterance, out=str(tmp)), jobs, "audio")
    seconds = {job["path"]: round(n / SAMPLE_RATE, 3) for job, n in zip(jobs, samples, strict=True)}

    def entry(job: dict, *fields: str) -> dict:
        return {"path": job["path"], "speaker": job["speaker"], **{f: job[f] for f in fields}}

    for split in ("train", "test"):
        write_jsonl(tmp / "sentences" / f"{split}.jsonl",
                    [{**entry(job, "text"), "phones": phones[accent_of[job["speaker"]], job["text"]],
                      "seconds": seconds[job["path"]]} for job in parts[f"sentences_{split}"]])
    write_jsonl(tmp / "corpus.jsonl", [{**entry(job, "text"), "seconds": seconds[job["path"]]}
                                       for job in parts["corpus"]])
    write_jsonl(tmp / "keywords.jsonl", [{"path": job["path"], "speaker": job["speaker"], "word": job["text"],
                                          "seconds": seconds[job["path"]]} for job in parts["keywords"]])
    inventory = sorted({p for job in sentence_jobs for p in phones[accent_of[job["speaker"]], job["text"]]})
    (tmp / "phones.json").write_text(json.dumps(inventory, ensure_ascii=False) + "\n")

    totals = {name: {"files": len(part), "seconds": round(sum(seconds[j["path"]] for j in part), 1)}
              for name, part in parts.items()}
    description = {
        "arguments": {k: v for k, v in vars(args).items() if k not in ("out", "jobs", "overwrite")},
        "seed": args.seed, "sample_rate": SAMPLE_RATE, "versions": tool_versions(),
        "phones": len(inventory), "parts": totals, "speakers": speakers,
    }
    (tmp / "dataset.json").write_text(json.dumps(description, indent=2) + "\n")
    (tmp / "speakers.json").write_text(json.dumps(speakers, indent=2) + "\n")
    return {**totals, "phones": len(inventory), "speakers": Counter(s["engine"] for s in speakers)}


def check_tools() -> None:
    """Exits with a hint when a TTS engine is missing."""
    missing = [tool for tool in ("espeak-ng", "flite") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"error: {' and '.join(missing)} not found; run benchmarks/quality/setup.sh")


def prepare_out(out: Path, overwrite: bool) -> Path:
    """Refuses a non-empty ``out`` unless ``overwrite``; returns a fresh temp folder next to it."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise SystemExit(f"error: {out} exists and is not an empty folder; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    return tmp


def move_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an old ``out`` is moved aside first and deleted after."""
    old = None
    if out.exists() or out.is_symlink():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, old)
    os.rename(tmp, out)
    if old is None:
        return
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old)
    else:
        old.unlink()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="dataset folder to create")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speakers", type=int, default=48, help="about a quarter of them flite voices")
    parser.add_argument("--test-speakers", type=int, default=12, help="held out: test sentences and keywords only")
    parser.add_argument("--corpus-per-speaker", type=int, default=12, help="passages per train speaker")
    parser.add_argument("--train-sentences-per-speaker", type=int, default=40)
    parser.add_argument("--test-sentences-per-speaker", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes; the output does not depend on it")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    args = parser.parse_args(argv)
    if args.speakers < 4 or not 2 <= args.test_speakers <= args.speakers - 2 or args.jobs < 1 or min(
            args.corpus_per_speaker, args.train_sentences_per_speaker, args.test_sentences_per_speaker) < 0:
        parser.error("need --speakers >= 4, 2 <= --test-speakers <= speakers - 2, --jobs >= 1, counts >= 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.time()
    check_tools()
    out = Path(args.out)
    tmp = prepare_out(out, args.overwrite)
    try:
        summary = generate(args, tmp)
        move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    parts = ", ".join(f"{name} {summary[name]['files']} files {summary[name]['seconds']:.0f} s"
                      for name in ("corpus", "sentences_train", "sentences_test", "keywords"))
    engines = summary["speakers"]
    print(f"wrote {out}: {engines['espeak-ng']} espeak-ng + {engines['flite']} flite speakers; {parts}; "
          f"{summary['phones']} phones; {time.time() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
