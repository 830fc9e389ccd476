"""10M-slice jobs complete with bounded client memory (measured in a fresh client process)."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

MEMJOB = pathlib.Path(__file__).resolve().parent.parent / "bench" / "memjob.py"


def run_memjob(kind):
    out = subprocess.run([sys.executable, str(MEMJOB), kind, "10000000"], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_10m_slice_range_job_adds_at_most_150_mb_to_the_client():
    report = run_memjob("range")
    # 80 MB of int64 results + a 10 MB done-mask; the inputs are never materialised
    assert report["added_mb"] <= 150, report


@pytest.mark.slow
def test_a_10m_element_generator_job_never_holds_its_input_as_objects():
    report = run_memjob("generator")
    # typed keys and results (~160 MB, ~2x while growing); 10M Python ints alone would be ~360 MB
    assert report["added_mb"] <= 400, report
