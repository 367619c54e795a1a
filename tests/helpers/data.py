"""Generated inputs: speech and labelled tones, padded batches, gate scores, cost tables."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from speechprune.io.synth import speechlike
from speechprune.method.gates import GATE_KINDS, GateLayout, gate_dict
from speechprune.method.latency import CostTable, architecture
from speechprune.model.loading import inspect_model

RATE = 16000
TONES_HZ = {"high": 2500.0, "low": 300.0, "mid": 900.0}


def write_tones(folder: Path, labels=TONES_HZ, per_class: int = 6, seconds: float = 0.5, seed: int = 0) -> Path:
    """folder/<label>/<i>.wav: a sine near the label's frequency (random length, phase, +-5% pitch) in noise."""
    rng = np.random.default_rng(seed)
    for label, hz in labels.items():
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            t = np.arange(round(seconds * RATE * rng.uniform(0.8, 1.2))) / RATE
            x = 0.3 * np.sin(2 * np.pi * hz * rng.uniform(0.95, 1.05) * t + rng.uniform(0, 2 * np.pi))
            sf.write(folder / label / f"{i}.wav", (x + 0.02 * rng.standard_normal(len(t))).astype(np.float32), RATE)
    return folder


def speech_input(seconds: float = 2.0, seed: int = 0) -> torch.Tensor:
    """(1, T) generated speech, normalised like the models' inputs."""
    audio = torch.from_numpy(speechlike(seconds, RATE, np.random.default_rng(seed)))[None]
    return (audio - audio.mean()) / audio.std()


def batch_of_unequal_lengths():
    """(3, 8000) waveforms zeroed past their lengths of 8000, 6000 and 3000 samples, and their mask."""
    torch.manual_seed(1)
    waveforms = torch.randn(3, 8000)
    attention_mask = torch.ones(3, 8000, dtype=torch.long)
    attention_mask[1, 6000:] = 0
    attention_mask[2, 3000:] = 0
    return waveforms * attention_mask, attention_mask


def write_scores(path, model, structures=None, seed=0):
    """An analyze-style file of random `gate_scores` for ``model``'s gates: (layout, scores)."""
    layout = GateLayout(inspect_model(str(model)).spec, structures or GATE_KINDS)
    scores = torch.rand(layout.size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    path.write_text(json.dumps({"gate_scores": gate_dict(layout, scores)}))
    return layout, scores


def synthetic_table(spec, **conditions) -> CostTable:
    """A table with made-up costs (ms per million MACs or elements, ms per block or head) for a 1 s input."""
    layer = {"const": 0.01, "attention": 0.02, "heads": 0.005, "projection_macs": 0.05, "score_macs": 0.08, "ffn": 0.02,
             "ffn_macs": 0.05}
    return CostTable(
        conditions={"device": "cpu", "device_name": "test", "threads": 1, "dtype": "float32", "batch": 1,
                    "seconds": 1.0} | conditions,
        architecture=architecture(spec, 16000),
        coefficients={"conv": [{"macs": 0.05, "outputs": 0.02, "outputs_squared": 0.03, "const": 0.005} for _ in spec.conv_channels],
                      "projection": {"macs": 0.05, "const": 0.005}, "pos_conv": {"const": 0.02}, "layer": layer,
                      "scale": 1.2, "overhead": 0.01},
        fit={},
        provenance={"model": "synthetic"},
    )


def with_steps(table: CostTable, factors: dict[str, dict[int, float]], block: int = 8) -> CostTable:
    """``table`` as a format 2 table whose width steps are ``factors`` {sweep name: {width: factor}}."""
    sweeps = {name: {"widths": sorted(points), "factor": [points[w] for w in sorted(points)],
                     "measured_ms": [1.0] * len(points)} for name, points in factors.items()}
    return replace(table, widths={"block": block, "block_from": "--block-step", "seconds": 0.0, "steps": sweeps})


def write_table(path, spec, **conditions):
    synthetic_table(spec, **conditions).write(path)
    return path
