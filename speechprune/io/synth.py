"""Speech-like audio made from scratch, for the offline demo and tests: no downloads, no TTS engine.

Syllables at 3-6 Hz with short pauses; vowels are glottal pulse trains at a smoothly varying f0,
shaped by three formant resonances gliding between vowel targets; some syllables open with a
fricative burst of band-passed noise. Filtering is done frame by frame in the frequency domain.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import soundfile as sf

VOWEL_FORMANTS_HZ = np.array(  # (vowels, 3): F1, F2, F3 of adult male vowels (Peterson & Barney, 1952)
    [
        [730, 1090, 2440],  # a
        [270, 2290, 3010],  # i
        [300, 870, 2240],  # u
        [530, 1840, 2480],  # e
        [570, 840, 2410],  # o
        [660, 1720, 2410],  # ae
        [520, 1190, 2390],  # uh
    ],
    dtype=np.float64,
)
FORMANT_BANDWIDTHS_HZ = np.array([80.0, 100.0, 150.0])
F0_RANGE_HZ = (90.0, 250.0)
SYLLABLE_SECONDS = (1 / 6, 1 / 3)  # 3-6 syllables per second
PAUSE_SECONDS = (0.1, 0.4)
PAUSE_PROBABILITY = 0.15
FRICATIVE_PROBABILITY = 0.35
PEAK = 0.5


def speechlike(seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """`seconds` of speech-like float32 mono audio at `sample_rate`, peak 0.5, deterministic from `rng`."""
    n_samples = round(seconds * sample_rate)
    times = np.arange(n_samples) / sample_rate  # (N,)
    plan = _plan_syllables(seconds, rng)
    voiced_envelope, fricative_envelope = _envelopes(times, plan)

    base_f0 = rng.uniform(100.0, 200.0)  # the speaker
    formant_scale = rng.uniform(0.9, 1.15)  # vocal tract length
    f0 = _smooth_curve(times, seconds, 0.25, rng) * 0.15 + 1.0  # (N,) relative, gently wandering
    f0 = np.clip(base_f0 * f0 * (1.0 - 0.1 * times / max(seconds, 1e-9)), *F0_RANGE_HZ)  # with declination
    glottal_phase = np.cumsum(f0 / sample_rate)
    pulses = np.diff(np.floor(glottal_phase), prepend=0.0)  # (N,) 1 at each glottal closure
    noise = rng.standard_normal(n_samples)

    frame = 2 ** round(math.log2(0.032 * sample_rate))  # ~32 ms
    hop = frame // 2
    frame_times = np.arange(math.ceil(n_samples / hop) + 1) * hop / sample_rate  # (F,) frame centres
    freqs = np.fft.rfftfreq(2 * frame, 1 / sample_rate)  # (K,)
    nyquist_cap = 0.45 * sample_rate

    centres = plan["start"] + plan["duration"] / 2
    formants = np.stack(  # (F, 3)
        [np.interp(frame_times, centres, VOWEL_FORMANTS_HZ[plan["vowel"], i]) for i in range(3)], axis=1
    )
    formants = np.minimum(formants * formant_scale, nyquist_cap)
    vowel_response = np.prod(  # (F, K)
        _resonance(freqs[None, None, :], formants[:, :, None], FORMANT_BANDWIDTHS_HZ[None, :, None]), axis=1
    )
    vowel_response /= np.sqrt(1.0 + (freqs / 300.0) ** 2)  # glottal spectral tilt

    syllable_of_frame = np.clip(np.searchsorted(plan["start"], frame_times, side="right") - 1, 0, None)
    hiss_centre = np.minimum(plan["hiss_hz"][syllable_of_frame], 0.4 * sample_rate)[:, None]  # (F, 1)
    hiss_highpass = freqs**2 / (freqs**2 + (0.7 * hiss_centre) ** 2)  # (F, K)
    hiss_response = _resonance(freqs, hiss_centre, 0.6 * hiss_centre) * hiss_highpass

    voiced = _filter(pulses * voiced_envelope, vowel_response, frame)
    fricative = _filter(noise * fricative_envelope, hiss_response, frame)
    audio = voiced / _peak(voiced) + 0.3 * fricative / _peak(fricative)
    audio += 10 ** (-55 / 20) * rng.standard_normal(n_samples)  # a quiet recording noise floor
    return (PEAK / _peak(audio) * audio).astype(np.float32)


def write_corpus(
    folder: str | os.PathLike,
    *,
    n_files: int,
    seconds: float | tuple[float, float],
    sample_rate: int = 16000,
    seed: int = 0,
) -> list[Path]:
    """Write `n_files` 16-bit WAVs utt_0000.wav... into `folder`; `seconds` long, or uniform in a (low, high) range."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(n_files):
        rng = np.random.default_rng([seed, index])
        length = rng.uniform(*seconds) if isinstance(seconds, tuple) else seconds
        path = folder / f"utt_{index:04d}.wav"
        sf.write(path, speechlike(length, sample_rate, rng), sample_rate, subtype="PCM_16")
        paths.append(path)
    return paths


def _plan_syllables(seconds: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per syllable slot (S,): start, duration, vowel, loudness (0 for pauses), fricative share, hiss centre."""
    count = math.ceil(seconds / SYLLABLE_SECONDS[0]) + 1
    is_pause = rng.random(count) < PAUSE_PROBABILITY
    is_pause[0] = False
    duration = np.where(is_pause, rng.uniform(*PAUSE_SECONDS, count), rng.uniform(*SYLLABLE_SECONDS, count))
    has_fricative = rng.random(count) < FRICATIVE_PROBABILITY
    return {
        "start": np.concatenate([[0.0], np.cumsum(duration)[:-1]]),
        "duration": duration,
        "vowel": rng.integers(len(VOWEL_FORMANTS_HZ), size=count),
        "loudness": np.where(is_pause, 0.0, rng.uniform(0.5, 1.0, count)),
        "fricative_share": np.where(has_fricative, rng.uniform(0.2, 0.4, count), 0.0),
        "hiss_hz": rng.uniform(2500.0, 6500.0, count),
    }


def _envelopes(times: np.ndarray, plan: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(voiced, fricative) amplitude envelopes (N,): a fricative onset, then a vowel swelling and fading."""
    syllable = np.searchsorted(plan["start"], times, side="right") - 1  # (N,)
    position = (times - plan["start"][syllable]) / plan["duration"][syllable]  # (N,) 0..1 within the syllable
    share = plan["fricative_share"][syllable]
    loudness = plan["loudness"][syllable]
    in_vowel = position >= share
    vowel_position = np.clip((position - share) / (1.0 - share), 0.0, 1.0)
    voiced = np.where(in_vowel, np.sin(np.pi * vowel_position) ** 0.6, 0.0) * loudness
    fricative_position = np.divide(position, share, out=np.zeros_like(position), where=share > 0)
    fricative = np.where(in_vowel, 0.0, np.sin(np.pi * fricative_position)) * loudness
    return voiced, fricative


def _smooth_curve(times: np.ndarray, seconds: float, spacing: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth random curve over `times`, about unit scale: random knots every `spacing` s, interpolated."""
    knots = np.arange(0.0, seconds + 2 * spacing, spacing)
    values = np.convolve(rng.standard_normal(len(knots) + 2), np.ones(3) / np.sqrt(3), mode="valid")
    return np.interp(times, knots, values)


def _resonance(freqs: np.ndarray, centre: np.ndarray, bandwidth: np.ndarray) -> np.ndarray:
    """Magnitude response of a two-pole resonator, 1 at 0 Hz, about centre/bandwidth at its peak."""
    return centre**2 / np.sqrt((centre**2 - freqs**2) ** 2 + (bandwidth * freqs) ** 2)


def _filter(signal: np.ndarray, response: np.ndarray, frame: int) -> np.ndarray:
    """Filter `signal` (N,) by a zero-phase magnitude `response` (F, frame + 1), one row per frame // 2 samples.

    Hann-windowed frames centred at multiples of the hop are zero-padded to twice their length (so the
    filter's ringing does not wrap around), filtered, and overlap-added.
    """
    hop = frame // 2
    n_samples, n_frames = len(signal), len(response)
    padded = np.zeros(n_frames * hop + frame)
    padded[hop : hop + n_samples] = signal
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame)[::hop][:n_frames]  # (F, frame)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(frame) / frame)  # periodic Hann: sums to 1 at 50% overlap
    buffers = np.zeros((n_frames, 2 * frame))  # (F, 2 * frame)
    buffers[:, hop : hop + frame] = frames * window
    filtered = np.fft.irfft(np.fft.rfft(buffers, axis=1) * response, n=2 * frame, axis=1)  # (F, 2 * frame)
    out = np.zeros((n_frames + 3) * hop)
    for quarter in range(4):  # each filtered frame spans 4 hops
        quarter_of_frames = filtered[:, quarter * hop : (quarter + 1) * hop].reshape(-1)  # (F * hop,)
        out[quarter * hop : quarter * hop + n_frames * hop] += quarter_of_frames
    return out[frame : frame + n_samples]


def _peak(audio: np.ndarray) -> float:
    return max(float(np.abs(audio).max(initial=0.0)), 1e-12)
