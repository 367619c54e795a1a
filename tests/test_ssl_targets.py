"""HuBERT's second iteration in the quality benchmark's SSL teacher script: targets from an earlier
teacher's hidden state, one label per model frame, as the first iteration's MFCC labels."""

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "quality"))
import train_ssl_teacher as ssl  # noqa: E402


@pytest.fixture(scope="module")
def earlier_teacher(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = ssl.teacher_config(hidden=32, layers=2, heads=2, ffn=64, conv=16, pos_conv=16)
    folder = tmp_path_factory.mktemp("iteration-1")
    ssl.transformers.HubertModel(config).save_pretrained(folder)
    return folder


def waves(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(int(rng.integers(8000, 12000))).astype(np.float32) for _ in range(count)]


def test_second_iteration_labels_every_model_frame(earlier_teacher):
    train, test = waves(6, 0), waves(2, 1)
    args = argparse.Namespace(targets_from=str(earlier_teacher), targets_layer=1, clusters=4, seed=0)
    labels, test_labels, summary = ssl.targets(train, test, args)
    mfcc_frames = [len(f) for f in ssl.mfcc_features(train + test)]
    assert [len(l) for l in labels + test_labels] == mfcc_frames  # label i is model frame i, as in iteration 1
    assert all(int(l.min()) >= 0 and int(l.max()) < 4 for l in labels + test_labels)
    assert summary["features"] == f"hidden state 1 of {earlier_teacher.name} (HuBERT iteration 2)"
    # other features than iteration 1's: the labels differ from MFCC clusters of the same audio
    first = ssl.targets(train, test, argparse.Namespace(targets_from=None, clusters=4, seed=0))[0]
    assert any(not torch.equal(a, b) for a, b in zip(labels, first))


def test_second_iteration_refuses_a_layer_the_teacher_lacks(earlier_teacher):
    args = argparse.Namespace(targets_from=str(earlier_teacher), targets_layer=3, clusters=4, seed=0)
    with pytest.raises(SystemExit, match=r"--targets-layer 3 is not a hidden state .* \(0\.\.2\)"):
        ssl.targets(waves(2, 0), waves(1, 1), args)
