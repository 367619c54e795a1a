"""benchmarks/table_agreement.py: two tables' width steps compared on relative times."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "table_agreement.py"


def _module():
    spec = importlib.util.spec_from_file_location("table_agreement", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table(steps: dict[str, list[float]]) -> dict:
    return {"format": 3, "widths": {"block": 8, "steps": {
        name: {"widths": [8 * (i + 1) for i in range(len(ms))], "measured_ms": ms, "factor": [1.0] * len(ms)}
        for name, ms in steps.items()}}}


def test_two_tables_are_compared_on_each_widths_time_relative_to_the_widest():
    agreement = _module()
    first = _table({"conv.1.outputs": [1.0, 2.0, 4.0], "ffn.units": [3.0, 6.0], "attention.heads.2": [1.0, 2.0]})
    # twice as slow throughout: no disagreement; one width 10 % slower relative to its widest: 10 %
    second = _table({"conv.1.outputs": [2.0, 4.4, 8.0], "ffn.units": [6.0, 12.0], "attention.heads.2": [1.0, 2.0, 3.0]})
    found = agreement.disagreements(first, second)
    assert set(found) == {"conv", "ffn"}  # the attention sweep was measured at other widths
    assert found["conv"] == pytest.approx([0.0, 1 - 1 / 1.1]) and found["ffn"] == [0.0]
    report = agreement.markdown(found)
    assert "| conv | 2 | 4.5% |" in report and "| all | 3 |" in report


def test_a_table_without_steps_is_refused_in_one_line(tmp_path):
    with_steps, without = tmp_path / "a.json", tmp_path / "b.json"
    with_steps.write_text(json.dumps(_table({"ffn.units": [1.0, 2.0]})))
    without.write_text(json.dumps({"format": 1}))
    done = subprocess.run([sys.executable, str(SCRIPT), str(with_steps), str(without)], capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "no width steps" in done.stderr and "--cost-model" in done.stderr


def test_tables_sharing_no_sweep_are_refused_in_one_line(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps(_table({"ffn.units": [1.0, 2.0]})))
    second.write_text(json.dumps(_table({"ffn.units": [1.0, 2.0, 3.0]})))  # measured at other widths
    done = subprocess.run([sys.executable, str(SCRIPT), str(first), str(second)], capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and done.stdout == ""
    assert "share no sweep at the same widths" in done.stderr
