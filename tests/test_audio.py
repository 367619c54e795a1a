"""Finding, checking, reading and batching audio; and the synthetic speech used to test it."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechprune.errors import DataError
from speechprune.io.audio import AudioCorpus, AudioFile, AudioReadError, SkipCounts, load_audio, scan_audio
from speechprune.io.batches import CropSampler, split_validation, validation_batches
from speechprune.io.synth import speechlike, write_corpus

SR = 16000


def write(path: Path, audio: np.ndarray, sample_rate: int = SR, subtype: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sample_rate, subtype=subtype)
    return path


def speech(seconds: float, seed: int = 0, sample_rate: int = SR) -> np.ndarray:
    return speechlike(seconds, sample_rate, np.random.default_rng(seed))


def sine(freq: float, seconds: float, sample_rate: int) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(round(seconds * sample_rate)) / sample_rate)).astype(np.float32)


def corrupt(path: Path, n_bytes: int = 4000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(0).integers(0, 256, n_bytes, dtype=np.uint8).tobytes())
    return path


def sampler(corpus: AudioCorpus, **overrides) -> CropSampler:
    options = dict(sample_rate=SR, crop_seconds=1.0, batch_seconds=4.0, normalize=False, seed=7)
    return CropSampler(corpus, **{**options, **overrides})


def equal(a, b) -> bool:
    return (
        torch.equal(a.waveforms, b.waveforms)
        and torch.equal(a.attention_mask, b.attention_mask)
        and a.seconds == b.seconds
    )


# ---------------------------------------------------------------- scanning


def test_folder_scan_is_recursive_case_insensitive_and_survives_symlink_loops(tmp_path):
    data = tmp_path / "data"
    write_corpus(data, n_files=2, seconds=1.5)
    write(data / "deep" / "er" / "LOUD.WAV", speech(1.2, 1))
    write(data / "deep" / "b.flac", speech(1.3, 2))
    write(data / "c.Ogg", speech(1.4, 3), subtype="VORBIS")
    (data / "notes.txt").write_text("not audio")
    os.symlink(data, data / "deep" / "loop")  # would list everything twice, or forever

    corpus = scan_audio(data)

    names = [Path(file.path).name for file in corpus.files]
    assert sorted(names) == ["LOUD.WAV", "b.flac", "c.Ogg", "utt_0000.wav", "utt_0001.wav"]
    assert [file.path for file in corpus.files] == sorted(file.path for file in corpus.files)
    assert all(os.path.isabs(file.path) for file in corpus.files)
    assert corpus.skipped.total == 0
    assert corpus.seconds == pytest.approx(1.5 + 1.5 + 1.2 + 1.3 + 1.4, abs=0.01)


def test_manifest_with_counts_comments_relative_paths_and_duplicates(tmp_path):
    a, b = write_corpus(tmp_path / "audio", n_files=2, seconds=1.5)
    manifest = tmp_path / "train.tsv"
    manifest.write_text(
        f"# my corpus\n\n{a}\t24000\naudio/{b.name}\t999\n{a}\n" f"{tmp_path / 'audio' / 'missing.wav'}\n"
    )

    corpus = scan_audio(manifest)

    assert [file.path for file in corpus.files] == [str(a), str(b)]
    assert corpus.files[0].frames == 24000  # from the header, not the manifest's 999
    assert corpus.skipped.to_dict() == {"unreadable": 0, "missing": 1, "empty": 0, "too_short": 0, "silent": 0, "non_finite": 0}
    assert corpus.skipped.describe() == f"1 missing ({tmp_path / 'audio' / 'missing.wav'})"


def test_fairseq_manifest_root_line(tmp_path):
    paths = write_corpus(tmp_path / "corpus" / "clips", n_files=2, seconds=1.2)
    manifest = tmp_path / "manifests" / "train.tsv"
    manifest.parent.mkdir()
    manifest.write_text(f"{tmp_path / 'corpus'}\nclips/utt_0000.wav\t19200\nclips/utt_0001.wav\t19200\n")

    assert [file.path for file in scan_audio(manifest).files] == [str(p) for p in paths]


def test_single_audio_file_source(tmp_path):
    path = write(tmp_path / "one.wav", speech(1.5))
    assert [file.path for file in scan_audio(path).files] == [str(path)]


def test_skip_counts_by_reason(tmp_path):
    write_corpus(tmp_path, n_files=2, seconds=1.5)
    corrupt(tmp_path / "corrupt.wav")
    write(tmp_path / "empty.wav", np.zeros(0, np.float32))
    write(tmp_path / "short.wav", speech(0.5))
    write(tmp_path / "silent.wav", np.zeros(2 * SR, np.float32))

    corpus = scan_audio(tmp_path, min_seconds=1.0)

    assert len(corpus.files) == 2
    assert corpus.skipped.to_dict() == {"unreadable": 1, "missing": 0, "empty": 1, "too_short": 1, "silent": 1, "non_finite": 0}
    assert corpus.skipped.total == 4
    assert corpus.skipped.describe() == "1 unreadable, 1 empty, 1 too short, 1 silent"


def test_no_usable_audio_is_a_data_error_with_counts(tmp_path):
    corrupt(tmp_path / "a.wav")
    corrupt(tmp_path / "b.wav")
    write(tmp_path / "quiet.flac", np.zeros(2 * SR, np.float32))

    with pytest.raises(DataError) as caught:
        scan_audio(tmp_path)
    message = str(caught.value)
    assert str(tmp_path) in message and "3 files skipped (2 unreadable, 1 silent)" in message
    assert "\n" not in message


def test_missing_source_and_folder_without_audio_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        scan_audio(tmp_path / "nope")
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match="no audio files found"):
        scan_audio(tmp_path)


def test_progress_counts_every_file_of_both_passes(tmp_path):
    write_corpus(tmp_path, n_files=3, seconds=1.2)
    calls = []
    scan_audio(tmp_path, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3), (4, 6), (5, 6), (6, 6)]


def test_big_corpus_skips_the_full_check(tmp_path):
    write_corpus(tmp_path, n_files=2, seconds=1.5)
    write(tmp_path / "silent.wav", np.zeros(2 * SR, np.float32))
    calls = []
    corpus = scan_audio(tmp_path, full_check_max_seconds=1.0, progress=lambda *call: calls.append(call))
    assert len(corpus.files) == 3 and corpus.skipped.total == 0
    assert calls[-1] == (3, 3)


# ---------------------------------------------------------------- reading


def test_stereo_is_mixed_to_mono(tmp_path):
    left, right = sine(300, 1.5, SR), 0.3 * sine(1234, 1.5, SR)
    path = write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), subtype="FLOAT")
    file = scan_audio(path).files[0]
    assert file.channels == 2
    np.testing.assert_allclose(load_audio(file, SR), (left + right) / 2, atol=1e-7)


@pytest.mark.parametrize("native_rate", [8000, 44100])
def test_resampled_to_16k_keeps_length_and_frequency(tmp_path, native_rate):
    path = write(tmp_path / f"tone_{native_rate}.wav", sine(440.0, 2.0, native_rate), native_rate, "FLOAT")
    file = scan_audio(path).files[0]
    assert file.sample_rate == native_rate

    audio = load_audio(file, SR)

    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 2 * SR) <= 1
    spectrum = np.abs(np.fft.rfft(audio))
    peak_hz = np.fft.rfftfreq(len(audio), 1 / SR)[spectrum.argmax()]
    assert peak_hz == pytest.approx(440.0, abs=1.0)


def test_load_audio_reads_the_requested_window(tmp_path):
    ramp = np.linspace(-0.9, 0.9, 3 * SR, dtype=np.float32)
    file = scan_audio(write(tmp_path / "ramp.wav", ramp, subtype="FLOAT")).files[0]

    np.testing.assert_array_equal(load_audio(file, SR, offset_seconds=0.5, seconds=1.25), ramp[8000:28000])
    np.testing.assert_array_equal(load_audio(file, SR, offset_seconds=2.5), ramp[40000:])
    assert len(load_audio(file, SR, offset_seconds=2.5, seconds=2.0)) == SR // 2  # runs past the end
    assert len(load_audio(file, SR, seconds=0.123456)) == round(0.123456 * SR)


def test_load_audio_window_at_another_rate_has_the_target_length(tmp_path):
    file = scan_audio(write(tmp_path / "a.wav", sine(200, 3.0, 44100), 44100)).files[0]
    for seconds in (1.1, 1.10003, 0.123456):
        assert len(load_audio(file, SR, offset_seconds=0.37, seconds=seconds)) == round(seconds * SR)


def test_load_audio_raises_audio_read_error(tmp_path):
    file = AudioFile(str(corrupt(tmp_path / "bad.wav")), frames=SR, sample_rate=SR, channels=1)
    with pytest.raises(AudioReadError, match="bad.wav"):
        load_audio(file, SR)
    assert issubclass(AudioReadError, DataError)


# ---------------------------------------------------------------- validation


def fake_corpus(n_files: int) -> AudioCorpus:
    files = [AudioFile(f"/x/{index:03d}.wav", SR, SR, 1) for index in range(n_files)]
    return AudioCorpus(files, SkipCounts(unreadable=2), "/x")


def test_split_validation_is_disjoint_and_deterministic():
    corpus = fake_corpus(300)
    train, validation = split_validation(corpus, fraction=0.02, seed=1)

    assert len(validation.files) == 6 and len(train.files) == 294
    assert not {f.path for f in train.files} & {f.path for f in validation.files}
    assert sorted(train.files + validation.files, key=lambda f: f.path) == corpus.files
    assert split_validation(corpus, fraction=0.02, seed=1) == (train, validation)
    assert split_validation(corpus, fraction=0.02, seed=2)[1] != validation
    assert train.skipped.unreadable == 2 and validation.skipped.total == 0
    assert len(split_validation(corpus, fraction=0.5, max_files=10)[1].files) == 10


def test_split_validation_small_corpora():
    assert [len(c.files) for c in split_validation(fake_corpus(1))] == [1, 0]
    assert [len(c.files) for c in split_validation(fake_corpus(2))] == [1, 1]
    assert [len(c.files) for c in split_validation(fake_corpus(10), fraction=0.001)] == [9, 1]


def test_validation_batches_drop_bad_files_and_pad_short_ones(tmp_path):
    write_corpus(tmp_path, n_files=2, seconds=2.5)
    write(tmp_path / "short.wav", speech(0.5, 9))
    write(tmp_path / "silent.wav", np.zeros(2 * SR, np.float32))
    corpus = scan_audio(tmp_path, min_seconds=0.2, full_check_max_seconds=0.0)  # keeps the silent file
    bad = AudioFile(str(corrupt(tmp_path / "bad.wav")), SR, SR, 1)
    corpus.files.insert(0, bad)

    batches = validation_batches(corpus, sample_rate=SR, crop_seconds=1.0, batch_seconds=2.0, normalize=False)

    assert [tuple(b.waveforms.shape) for b in batches] == [(2, SR), (1, SR)]
    assert [b.seconds for b in batches] == [1.5, 1.0]  # kept, in path order: short, utt_0000, utt_0001
    assert batches[0].attention_mask[0].sum() == SR // 2
    assert torch.all(batches[0].waveforms[0, SR // 2 :] == 0)
    again = validation_batches(corpus, sample_rate=SR, crop_seconds=1.0, batch_seconds=2.0, normalize=False)
    assert all(equal(a, b) for a, b in zip(batches, again))


# ---------------------------------------------------------------- training crops


@pytest.fixture
def speech_corpus(tmp_path) -> AudioCorpus:
    write_corpus(tmp_path / "speech", n_files=6, seconds=(1.5, 4.0))
    return scan_audio(tmp_path / "speech")


def test_crop_sampler_is_deterministic(speech_corpus):
    first, second = sampler(speech_corpus), sampler(speech_corpus)
    batch = first.batch(3)

    assert batch.waveforms.shape == (4, SR) and batch.waveforms.dtype == torch.float32
    assert batch.attention_mask.dtype == torch.long
    assert equal(batch, first.batch(3))
    assert equal(batch, second.batch(3))
    assert not torch.equal(batch.waveforms, first.batch(4).waveforms)
    assert not torch.equal(batch.waveforms, sampler(speech_corpus, seed=8).batch(3).waveforms)


def test_crops_come_from_the_files(speech_corpus):
    whole = {file.path: load_audio(file, SR) for file in speech_corpus.files}
    batch = sampler(speech_corpus).batch(0)
    for crop in batch.waveforms.numpy():
        assert any(found_in(crop, audio) for audio in whole.values())


def found_in(crop: np.ndarray, audio: np.ndarray) -> bool:
    heads = np.lib.stride_tricks.sliding_window_view(audio[: len(audio) - len(crop) + 16], 16)  # (starts, 16)
    starts = np.flatnonzero((heads == crop[:16]).all(axis=1))
    return any(np.array_equal(audio[start : start + len(crop)], crop) for start in starts)


def test_ranks_get_disjoint_shards(tmp_path):
    write_corpus(tmp_path, n_files=7, seconds=1.2)
    corpus = scan_audio(tmp_path)
    shards = [{f.path for f in sampler(corpus, rank=rank, world_size=3).files} for rank in range(3)]

    assert [len(shard) for shard in shards] == [3, 2, 2]
    assert set.union(*shards) == {f.path for f in corpus.files}
    assert not (shards[0] & shards[1]) and not (shards[1] & shards[2]) and not (shards[0] & shards[2])
    assert not equal(sampler(corpus, rank=0, world_size=3).batch(0), sampler(corpus, rank=1, world_size=3).batch(0))
    with pytest.raises(DataError, match="rank 7 of 8 gets no audio file"):
        sampler(corpus, rank=7, world_size=8)


def test_short_files_are_padded_and_masked(tmp_path):
    write(tmp_path / "short.wav", speech(0.6))
    corpus = scan_audio(tmp_path, min_seconds=0.1)
    real = round(0.6 * SR)

    batch = sampler(corpus, crop_seconds=1.0, batch_seconds=3.0).batch(0)

    assert batch.waveforms.shape == (3, SR)
    assert torch.all(batch.attention_mask[:, :real] == 1) and torch.all(batch.attention_mask[:, real:] == 0)
    assert torch.all(batch.waveforms[:, real:] == 0)
    assert batch.seconds == pytest.approx(3 * 0.6)
    np.testing.assert_array_equal(batch.waveforms[0, :real].numpy(), load_audio(corpus.files[0], SR))


def test_normalize_over_real_samples_only(tmp_path):
    write(tmp_path / "short.wav", 0.2 * speech(0.6) + 0.05)
    write(tmp_path / "long.wav", 0.1 * speech(3.0, 1))
    corpus = scan_audio(tmp_path, min_seconds=0.1)

    batch = sampler(corpus, normalize=True, batch_seconds=8.0).batch(0)

    for waveform, mask in zip(batch.waveforms, batch.attention_mask):
        real = waveform[mask == 1].double()
        assert real.mean().item() == pytest.approx(0.0, abs=1e-4)
        assert real.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-2)  # eps lowers quiet crops a bit
        assert torch.all(waveform[mask == 0] == 0)
    assert (batch.attention_mask == 0).any()  # the short file was drawn


def test_state_dict_round_trip_after_a_bad_file(tmp_path, speech_corpus):
    broken = Path(speech_corpus.files[2].path)
    corrupt(broken)  # damaged after the scan: only reading finds out
    original = sampler(speech_corpus)
    step = 0
    while original.skipped.unreadable == 0:
        original.batch(step)
        step += 1
        assert step < 50, "the damaged file was never drawn"

    state = json.loads(json.dumps(original.state_dict()))
    assert state["bad_files"] == {str(broken): "unreadable"}
    resumed = sampler(speech_corpus)
    resumed.load_state_dict(state)

    assert resumed.skipped == original.skipped
    for later in range(step, step + 5):
        assert equal(original.batch(later), resumed.batch(later))


def test_prefetched_batches_and_saved_states_are_those_of_a_synchronous_run(speech_corpus):
    from speechprune.io.prefetch import Prefetcher

    corrupt(Path(speech_corpus.files[2].path))  # damaged after the scan: only reading finds out
    plain = sampler(speech_corpus)
    batches, states = {}, {}
    ahead = Prefetcher(sampler(speech_corpus), last_step=30, ahead=2)
    try:
        for step in range(1, 31):
            batches[step], states[step] = plain.batch(step), plain.state_dict()
            assert equal(ahead.batch(step), batches[step])
            # never what the batches drawn ahead have found: a checkpoint saves the state of this step
            assert ahead.state_dict() == states[step]
        assert not ahead._pending  # nothing drawn past the last step
    finally:
        ahead.close()
    found = min(step for step in states if states[step]["bad_files"])
    assert 1 < found < 30, "the damaged file was never drawn"
    # resumed from the step before the damaged file turned up, the same batches follow
    resumed = Prefetcher(sampler(speech_corpus), last_step=30, ahead=2)
    try:
        resumed.load_state_dict(json.loads(json.dumps(states[found - 1])))
        for step in range(found, 31):
            assert equal(resumed.batch(step), batches[step])
    finally:
        resumed.close()


def test_lazy_check_marks_silent_files_but_keeps_pauses(tmp_path):
    pause_then_speech = np.concatenate([np.zeros(3 * SR, np.float32), speech(1.0)])
    write(tmp_path / "pause.wav", pause_then_speech)
    write(tmp_path / "silent.wav", np.zeros(4 * SR, np.float32))
    corpus = scan_audio(tmp_path, full_check_max_seconds=1.0)
    assert len(corpus.files) == 2 and corpus.skipped.silent == 0

    crop_sampler = sampler(corpus)
    batches = [crop_sampler.batch(step) for step in range(5)]

    assert crop_sampler.state_dict()["bad_files"] == {str(tmp_path / "silent.wav"): "silent"}
    assert crop_sampler.skipped.silent == 1
    crops = torch.cat([b.waveforms for b in batches])
    assert (crops.abs().amax(dim=1) == 0).any()  # a crop of the pause was kept


def test_every_file_bad_is_a_data_error(tmp_path):
    write(tmp_path / "silent.wav", np.zeros(2 * SR, np.float32))
    corpus = scan_audio(tmp_path, full_check_max_seconds=0.0)
    with pytest.raises(DataError, match=r"turned out unusable while reading \(1 silent\)"):
        sampler(corpus).batch(0)


def with_bad_sample(audio: np.ndarray, index: int, value: float) -> np.ndarray:
    audio = audio.copy()
    audio[index] = value
    return audio


@pytest.mark.parametrize("value,index", [(np.inf, 100), (np.nan, (1 << 20) + 5), (-np.inf, -1)])
def test_whole_file_check_skips_non_finite_files_and_names_them(tmp_path, value, index):
    # NaN after the first decode block used to pass (max(peak, nan) drops the NaN)
    write(tmp_path / "good.wav", speech(2.0))
    bad = write(tmp_path / "bad.wav", with_bad_sample(speech(70.0, seed=1), index, value), subtype="FLOAT")
    warnings = []
    corpus = scan_audio(tmp_path, warn=warnings.append)
    assert [Path(f.path).name for f in corpus.files] == ["good.wav"]
    assert corpus.skipped.non_finite == 1 and corpus.skipped.silent == 0
    assert "1 non-finite" in corpus.skipped.describe()
    assert len(warnings) == 1 and str(bad) in warnings[0] and "NaN or infinite" in warnings[0]


def test_every_crop_is_checked_for_non_finite_samples(tmp_path):
    write(tmp_path / "good.wav", speech(3.0))
    inf_everywhere = np.full(3 * SR, np.inf, np.float32)
    write(tmp_path / "bad.wav", inf_everywhere, subtype="FLOAT")
    corpus = scan_audio(tmp_path, full_check_max_seconds=0.0)  # big-corpus mode: no up-front check
    warnings = []
    crop_sampler = sampler(corpus, warn=warnings.append)
    batches = [crop_sampler.batch(step) for step in range(4)]
    assert all(torch.isfinite(b.waveforms).all() for b in batches)
    assert crop_sampler.state_dict()["bad_files"] == {str(tmp_path / "bad.wav"): "non_finite"}
    assert crop_sampler.skipped.non_finite == 1 and crop_sampler.skipped.silent == 0
    assert len(warnings) == 1 and "bad.wav" in warnings[0]
    validation = validation_batches(corpus, sample_rate=SR, crop_seconds=1.0, batch_seconds=4.0, normalize=True)
    assert sum(len(b.waveforms) for b in validation) == 1 and torch.isfinite(validation[0].waveforms).all()


# ---------------------------------------------------------------- synthetic speech


def test_speechlike_is_deterministic_and_speech_shaped():
    """(Its speed is a benchmark, benchmarks/synth_speed.py: no unit test times anything.)"""
    audio = speech(10.0, 5)
    assert audio.dtype == np.float32 and audio.shape == (10 * SR,)
    assert np.abs(audio).max() == pytest.approx(0.5, abs=1e-3)
    np.testing.assert_array_equal(audio, speech(10.0, 5))
    assert not np.array_equal(audio, speech(10.0, 6))
    frame_rms = np.sqrt((audio.reshape(-1, 320) ** 2).mean(axis=1))  # 20 ms frames
    assert 0.02 < (frame_rms < 0.01 * frame_rms.max()).mean() < 0.5  # pauses, but mostly sound
    power = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / SR)
    assert power[(freqs > 200) & (freqs < 4000)].sum() > 0.8 * power.sum()


def test_write_corpus(tmp_path):
    paths = write_corpus(tmp_path / "c", n_files=3, seconds=(1.0, 2.0), seed=3)

    assert [p.name for p in paths] == ["utt_0000.wav", "utt_0001.wav", "utt_0002.wav"]
    infos = [sf.info(p) for p in paths]
    assert all(i.samplerate == SR and i.subtype == "PCM_16" and 1.0 <= i.duration <= 2.0 for i in infos)
    assert len({i.frames for i in infos}) == 3
    again = write_corpus(tmp_path / "d", n_files=3, seconds=(1.0, 2.0), seed=3)
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(paths, again))
