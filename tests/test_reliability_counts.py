"""Whole-number options of every command are bounded before anything loads: a huge --repeat,
--warmup, --steps, --epochs or --projections would run for ever, a huge or negative --seed
overflows torch's or numpy's generators long after loading. Refused with exit 2, naming the
largest value."""

from __future__ import annotations

import pytest

from helpers.commands import cli, refused
from speechprune.checks import MAX_BLOCK_STEP, MAX_EPOCHS, MAX_PROJECTIONS, MAX_ROUNDS, MAX_SEED, MAX_STEPS

HUGE = 10**30


def command_lines(model, audio, tmp_path) -> dict[str, list]:
    return {
        "prune": ["prune", model, "--sparsity", "0.5", "--data", audio, "--out", tmp_path / "run", "--device", "cpu"],
        "analyze": ["analyze", model, "--data", audio, "--device", "cpu"],
        "eval": ["eval", model, "--data", audio, "--device", "cpu"],
        "bench": ["bench", model, "--device", "cpu", "--seconds", "1"],
        "cost-model": ["bench", model, "--cost-model", tmp_path / "cost.json", "--device", "cpu", "--seconds", "1"],
    }


COUNTS = [
    ("prune", "--steps", MAX_STEPS), ("prune", "--final-steps", MAX_STEPS), ("prune", "--seed", MAX_SEED),
    ("analyze", "--projections", MAX_PROJECTIONS), ("analyze", "--seed", MAX_SEED),
    ("eval", "--epochs", MAX_EPOCHS), ("eval", "--seed", MAX_SEED),
    ("bench", "--repeat", MAX_ROUNDS), ("bench", "--warmup", MAX_ROUNDS), ("bench", "--seed", MAX_SEED),
    ("cost-model", "--block-step", MAX_BLOCK_STEP), ("cost-model", "--seed", MAX_SEED),
]


@pytest.mark.parametrize("command,option,most", COUNTS)
def test_huge_counts_are_refused_before_loading_naming_the_largest(capsys, model_dir, audio_dir, tmp_path, command,
                                                                    option, most, no_loading):
    args = command_lines(model_dir("wav2vec2"), audio_dir, tmp_path)[command]
    for value in (HUGE, most + 1):
        refused(cli(capsys, *args, option, value), 2, option, f"at most {most:,}", str(value))
    assert not any(tmp_path.iterdir())  # no run folder, no table


@pytest.mark.parametrize("command", ["prune", "analyze", "eval", "bench"])
def test_a_negative_seed_is_refused_before_loading(capsys, model_dir, audio_dir, tmp_path, command, no_loading):
    args = command_lines(model_dir("wav2vec2"), audio_dir, tmp_path)[command]
    refused(cli(capsys, *args, "--seed", "-1"), 2, "--seed must be at least 0")
