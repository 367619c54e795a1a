"""SUPERB-style probes (`speechprune.eval.probe`) and `speechprune eval`: probes that find the layer
carrying a planted signal, CTC on planted phones, features that do not depend on padding or
batch companions, prune-run masks, and the command end to end on labelled tones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from speechprune.eval.features import FrozenFeatures, clip_batches
from speechprune.errors import FormatError
from speechprune.eval.job import EvalOptions, evaluate
from speechprune.eval.labelled import split_by_class
from speechprune.eval.report import EvalReport
from speechprune.eval.probe import edit_distance, fit_classifier, fit_ctc
from speechprune.folders.target import load_target, read_target
from speechprune.io.synth import speechlike
from helpers.commands import cli
from helpers.data import RATE, TONES_HZ, write_tones


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Probes on a few dozen tiny vectors: a second thread only adds waiting, a lot of it on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tones(tmp_path_factory) -> Path:
    return write_tones(tmp_path_factory.mktemp("tones"))


@pytest.fixture
def run_dir(finished_run) -> Path:
    """The shared finished run of the Large-style tiny wav2vec2 (which takes attention masks)."""
    return finished_run("wav2vec2", "large")


# ---------------------------------------------------------------- probes on synthetic features


def planted(n: int, states: int = 4, width: int = 16, classes: int = 3, signal_state: int = 2, seed: int = 0):
    """Gaussian features; only state ``signal_state`` carries a class mean."""
    rng = np.random.default_rng(seed)
    y = rng.integers(classes, size=n)
    x = rng.standard_normal((n, states, width)).astype(np.float32)
    x[:, signal_state] += 1.5 * rng.standard_normal((classes, width)).astype(np.float32)[y]
    return x, y


def test_classifier_finds_the_layer_that_carries_the_labels():
    x, y = planted(120)
    probe = fit_classifier(x[:90], y[:90], x[90:], y[90:], classes=["a", "b", "c"])
    assert probe.accuracy >= 0.95 and probe.train_accuracy == 1.0
    assert int(np.argmax(probe.layer_weights)) == 2 and probe.layer_weights[2] > 0.4
    assert sum(probe.layer_weights) == pytest.approx(1.0, abs=1e-5)
    assert np.array(probe.confusion).sum() == 30 and np.trace(np.array(probe.confusion)) == round(30 * probe.accuracy)
    assert probe.chance == pytest.approx(np.mean(y[90:] == np.bincount(y[:90]).argmax()))
    assert fit_classifier(x[:90], y[:90], x[90:], y[90:], classes=["a", "b", "c"]) == probe  # deterministic


def test_classifier_is_near_chance_on_random_labels():
    x, _ = planted(120)
    y = np.random.default_rng(1).integers(3, size=120)
    probe = fit_classifier(x[:90], y[:90], x[90:], y[90:], classes=["a", "b", "c"])
    assert probe.accuracy < 0.6 and probe.train_accuracy > probe.accuracy


def test_ctc_probe_reads_planted_phones():
    rng = np.random.default_rng(0)
    tokens, means = 5, 2.0 * rng.standard_normal((5, 16))

    def sequences(n):
        feats, labels = [], []
        for _ in range(n):
            seq = [int(rng.integers(tokens))]
            while len(seq) < rng.integers(4, 9):
                token = int(rng.integers(tokens))
                if token != seq[-1]:
                    seq.append(token)
            frames = np.repeat(seq, 4)  # each phone lasts 4 frames
            f = 0.5 * rng.standard_normal((3, len(frames), 16))  # (L + 1, T, D)
            f[1] += means[frames]  # only state 1 says which phone
            feats.append(f.astype(np.float16))
            labels.append(seq)
        return feats, labels

    train, test = sequences(64), sequences(16)
    probe = fit_ctc(*train, *test, tokens=tokens, lr=2e-2, epochs=20)
    assert probe.per < 0.1 and probe.train_per < 0.1 and probe.blank == tokens
    assert probe.reference_phones == sum(map(len, test[1])) and probe.errors == round(probe.per * probe.reference_phones)
    assert int(np.argmax(probe.layer_weights)) == 1


@pytest.mark.parametrize("a,b,distance", [
    ([], [], 0), ([], [1, 2], 2), ([1, 2, 3], [], 3), ([1, 2, 3], [1, 2, 3], 0),
    ([1, 2, 3], [1, 3], 1), ([1, 3], [1, 2, 3], 1), ([1, 2, 3], [1, 9, 3], 1),
    ("kitten", "sitting", 3), ([1, 2], [2, 1], 2),
])
def test_edit_distance(a, b, distance):
    assert edit_distance(list(a), list(b)) == distance


def test_split_holds_out_part_of_every_label_with_two_clips_or_more():
    files = {"a": list("xy"), "b": list("vwxyz"), "c": ["x"], "d": list("abcdefgh")}
    train, test = split_by_class(files, 0.25, np.random.default_rng(0))
    assert {k: len(v) for k, v in test.items()} == {"a": 1, "b": 1, "c": 0, "d": 2}
    assert all(sorted(train[k] + test[k]) == sorted(v) for k, v in files.items())


# ---------------------------------------------------------------- features of a real (tiny) model


def loaded(source):
    target = read_target(str(source))
    net, masks, _ = load_target(target, torch.device("cpu"))
    settings = {"attention_mask": target.attention_mask, "normalize": target.normalize,
                "sampling_rate": target.sampling_rate}
    return net, masks, settings


@pytest.mark.parametrize("style", ["large", "base"])  # with and without attention masks
def test_features_do_not_depend_on_batch_companions(model_dir, style):
    net, _, settings = loaded(model_dir("wav2vec2", style))
    rng = np.random.default_rng(0)
    short, long = speechlike(0.4, RATE, rng), speechlike(1.0, RATE, rng)
    batches = clip_batches([short, long], batch_seconds=10.0, sampling_rate=RATE, normalize=True,
                           same_length=not settings["attention_mask"])
    assert [indices for indices, _ in batches] == ([[1, 0]] if style == "large" else [[1], [0]])  # longest first
    together = FrozenFeatures(net, batch_seconds=10.0, **settings).pooled([short, long])
    alone = FrozenFeatures(net, **settings).pooled([short])
    assert together.shape == (2, 4, 48) and together.dtype == np.float32
    np.testing.assert_allclose(together[0], alone[0], atol=1e-4)
    frames = FrozenFeatures(net, batch_seconds=10.0, **settings).frames([short, long])
    assert [f.shape for f in frames] == [(4, 19, 48), (4, 49, 48)] and frames[0].dtype == np.float16
    np.testing.assert_allclose(frames[0].astype(np.float32).mean(1), together[0], atol=5e-3)
    np.testing.assert_allclose(np.linalg.norm(frames[1][2].astype(np.float32), axis=-1), 48 ** 0.5, rtol=1e-2)  # layer-normed


def test_a_runs_masks_change_its_features(run_dir):
    net, masks, settings = loaded(run_dir)
    assert masks is not None
    clips = [speechlike(0.6, RATE, np.random.default_rng(1))]
    masked = FrozenFeatures(net, masks=masks, **settings).pooled(clips)
    dense = FrozenFeatures(net, **settings).pooled(clips)
    assert np.abs(masked[0, -1] - dense[0, -1]).max() > 0.1


# ---------------------------------------------------------------- the command


def test_eval_end_to_end(model_dir, tones, tmp_path, capsys):
    out = tmp_path / "report.json"
    code, stdout, err = cli(capsys, "eval", model_dir("wav2vec2", "large"), "--data", tones, "--json", "--out", out)
    assert code == 0, err
    report = json.loads(stdout)
    assert report == json.loads(out.read_text())
    data, probe = report["data"], report["probe"]
    assert data["classes"] == ["high", "low", "mid"] and (data["train_clips"], data["test_clips"]) == (12, 6)
    assert data["per_class"] == {label: {"train": 4, "test": 2} for label in TONES_HZ}
    assert 0.8 <= probe["accuracy"] <= 1 and probe["chance"] == pytest.approx(1 / 3, abs=1e-5)
    assert len(probe["layer_weights"]) == 4 and len(report["per_layer_accuracy"]) == 4
    assert report["passes"] == {"student_forward": 1, "teacher_forward": 0, "float32_forward": 0, "classifier_fits": 5}
    assert report["kind"] == "stock" and report["teacher"] is None and "features: batch 1/1" in err


def test_eval_of_a_run_against_its_teacher(run_dir, model_dir, tones, capsys):
    code, stdout, err = cli(capsys, "eval", run_dir, "--data", tones, "--teacher", model_dir("wav2vec2", "large"),
                            "--no-per-layer", "--epochs", 50, "--max-per-class", 4)
    assert code == 0, err
    assert "accuracy" in stdout and "teacher" in stdout and "cosine" in stdout
    rows = [line.split() for line in stdout.splitlines() if line.strip()[:1].isdigit()]
    assert [int(row[0]) for row in rows] == [0, 1, 2, 3]
    cosine = [float(row[3]) for row in rows]  # state, weight, teacher weight, cosine, CKA
    assert cosine[-1] < 0.99  # the run's masks are applied


def test_eval_with_a_test_folder(model_dir, tones, tmp_path, capsys):
    test = write_tones(tmp_path / "test", {"low": 300.0, "mid": 900.0}, per_class=2, seed=1)
    code, stdout, err = cli(capsys, "eval", model_dir("wav2vec2", "large"), "--data", tones, "--test-data", test,
                            "--json", "--no-per-layer", "--max-per-class", 3, "-q")
    assert code == 0 and err == "", err
    report = json.loads(stdout)
    again = json.loads(cli(capsys, "eval", model_dir("wav2vec2", "large"), "--data", tones, "--test-data", test,
                           "--json", "--no-per-layer", "--max-per-class", 3, "-q")[1])
    assert {**report, "time_seconds": None} == {**again, "time_seconds": None}  # reproducible
    data = report["data"]
    assert data["split"]["method"] == "test-data" and (data["train_clips"], data["test_clips"]) == (9, 4)
    assert data["per_class"]["high"] == {"train": 3, "test": 0}


def test_the_report_is_typed_and_versioned(run_dir, model_dir, tones):
    options = EvalOptions(model=str(run_dir), data=str(tones), teacher=str(model_dir("wav2vec2", "large")),
                          max_per_class=4, epochs=20, per_layer=False, device="cpu")
    data = json.loads(json.dumps(evaluate(options)))  # as --out writes it
    report = EvalReport.from_dict(data)
    assert report.format == 1 and report.kind == "run" and report.teacher["kind"] == "stock"
    assert report.to_dict() == data
    with pytest.raises(FormatError, match="eval report of format 2: this speechprune reads format 1"):
        EvalReport.from_dict({**data, "format": 2})


def broken_model(folder: Path, source: Path) -> Path:
    """A stock model folder whose config reads fine but whose weights are garbage."""
    folder.mkdir()
    (folder / "config.json").write_text((source / "config.json").read_text())
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    return folder


def test_bad_data_fails_before_weights_load(model_dir, tones, tmp_path, capsys):
    broken = broken_model(tmp_path / "broken", model_dir("wav2vec2", "large"))
    single = write_tones(tmp_path / "single", {"low": 300.0}, per_class=2)
    unknown = write_tones(tmp_path / "unknown", {"low": 300.0, "zzz": 700.0}, per_class=1)
    (tmp_path / "empty-label" / "a").mkdir(parents=True)
    write_tones(tmp_path / "empty-label", {"b": 300.0}, per_class=2)
    for args, code, text in [
        (["--data", tmp_path / "nowhere"], 1, "does not exist"),
        (["--data", single], 1, "at least 2"),
        (["--data", tmp_path / "empty-label"], 1, "has no usable audio"),
        (["--data", tones, "--test-data", unknown], 1, "lacks: zzz"),
        (["--data", tones, "--test-fraction", "1"], 2, "--test-fraction must be between 0 and 1"),
        (["--data", tones, "--test-fraction", "0.5", "--test-data", tones], 2, "not both"),
        (["--data", tones, "--epochs", "0"], 2, "--epochs must be at least 1"),
        (["--data", tones, "--max-seconds-per-clip", "0"], 2, "must be a finite positive number"),
    ]:
        got, stdout, err = cli(capsys, "eval", broken, *args)
        assert got == code and stdout == "" and text in err and len(err.strip().splitlines()) == 1, (args, err)
    got, _, err = cli(capsys, "eval", broken, "--data", tones, "--no-per-layer")  # data fine: now the weights fail
    assert got == 1 and "weights" in err and "unexpected" not in err
