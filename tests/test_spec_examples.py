"""Every example program of the spec, run as a user would, prints the spec's output."""
from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"

EXPECTED = {
    "01_for_form2b.py": [
        "results:     [10, 20, 30]",
        "entries:     [(1, 10), (2, 20), (3, 30)]",
        "fromEntries: {1: 10, 2: 20, 3: 30}",
        "keys:        [1, 2, 3]",
        "values:      [10, 20, 30]",
        "key(2):      3",
    ],
    "02_for_form1_step_overflow.py": ["[10, 12]"],
    "03_for_form1_group.py": ["[1, 1]"],
    "04_for_form3.py": ["[[3, 4, 5], [6, 8, 10]]"],
    "05_for_form3_triples.py": ["[[[1, 3, 3], [1, 4, 4], [1, 5, 5]], [[2, 3, 6], [2, 4, 8], [2, 5, 10]]]"],
    "06_for_form4.py": ["[123, 456]"],
    "07_enofunds_handler.py": ["ENOFUNDS listeners: 1", "results: [1, 2, 3]"],
}


def run(name):
    out = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_spec_example_output(name):
    assert run(name).splitlines() == EXPECTED[name]


def test_quickstart_estimates_pi():
    last = [line for line in run("quickstart.py").splitlines() if line.startswith("pi ~ ")][0]
    assert abs(float(last.split()[2]) - 3.14159) < 0.01
