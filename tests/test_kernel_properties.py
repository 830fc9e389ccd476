"""Every kernel agrees with its slow reference (hypothesis), numba and numpy paths alike."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcplocal.kernels import collate, config, reference, rng
from dcplocal.kernels import ranges as range_kernels
from dcplocal.ranges import RangeObject, SparseRangeObject, to_input_spec

small = st.integers(-10**6, 10**6)
decimals = st.decimals(min_value=-1000, max_value=1000, places=3, allow_nan=False, allow_infinity=False)


@given(a=small, b=small.filter(bool), d=st.integers(1, 10**6), first=st.integers(0, 10**4), count=st.integers(0, 300))
def test_decimal_values_are_the_correctly_rounded_exact_quotients(a, b, d, first, count):
    if not range_kernels.fits_exactly(a, b, d, first + count):
        return
    got = range_kernels.decimal_values(a, b, d, first, count).tolist()
    assert got == reference.decimal_values(a, b, d, first, count)


@given(start=decimals, end=decimals, step=decimals.filter(lambda x: x != 0), first=st.integers(0, 50), count=st.integers(1, 50))
@settings(max_examples=200)
def test_range_spec_matches_exact_fraction_arithmetic(start, end, step, first, count):
    if (end - start) * step < 0:
        return
    spec = RangeObject(float(start), float(end), float(step)).spec
    first = min(first, len(spec) - 1)
    count = min(count, len(spec) - first)
    exact = [float(Fraction(start) + k * Fraction(step)) for k in range(first, first + count)]
    assert list(spec.slice_data(first, count)) == exact


@given(start=st.integers(-2**80, 2**80), step=st.integers(-2**70, 2**70).filter(bool), n=st.integers(1, 40), group=st.integers(1, 7))
def test_integer_ranges_are_exact_at_any_size_grouped_or_not(start, step, n, group):
    end = start + (n - 1) * step
    assert list(RangeObject(start, end, step).spec.slice_data(0, n)) == [start + k * step for k in range(n)]
    grouped = RangeObject(start, end, step, group).spec
    flat = [int(v) for chunk in grouped.slice_data(0, len(grouped)) for v in chunk]
    assert flat == [start + k * step for k in range(n)]


@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), data=st.data())
def test_unravel_is_row_major(shape, data):
    total = int(np.prod(shape))
    indices = data.draw(st.lists(st.integers(0, total - 1), min_size=1, max_size=20))
    columns = range_kernels.unravel(np.array(indices), tuple(shape))
    assert [tuple(int(c[i]) for c in columns) for i in range(len(indices))] == \
        [reference.unravel(i, tuple(shape)) for i in indices]


@given(lengths=st.lists(st.integers(1, 20), min_size=1, max_size=6), data=st.data())
def test_sparse_mapping_equals_concatenation(lengths, data):
    ranges = [RangeObject(100 * i, 100 * i + n - 1) for i, n in enumerate(lengths)]
    spec = SparseRangeObject(ranges).spec
    whole = [v for r in ranges for v in r]
    first = data.draw(st.integers(0, len(whole) - 1))
    count = data.draw(st.integers(0, len(whole) - first))
    assert list(spec.slice_data(first, count)) == whole[first:first + count]


@given(seed=st.integers(0, 2**63 - 1), first=st.integers(0, 2**40), count=st.integers(0, 50), stream=st.integers(0, 1))
def test_uniform_matches_reference_bit_for_bit(seed, first, count, stream):
    got = rng.uniform(seed, first, count, stream, use_numba=False).tolist()
    assert got == [reference.splitmix_uniform(seed, k, stream) for k in range(first, first + count)]
    assert all(0.0 <= u < 1.0 for u in got)


@pytest.mark.skipif(not config.numba_available(), reason="numba is not installed")
def test_numba_and_numpy_uniforms_are_identical():
    for seed, first, count in ((0, 0, 1000), (2**62 + 17, 2**33, 70_000), (12345, 5, 0)):
        np.testing.assert_array_equal(rng.uniform(seed, first, count, 1, use_numba=True),
                                      rng.uniform(seed, first, count, 1, use_numba=False))


@given(size=st.integers(1, 200), data=st.data())
def test_scatter_and_done_runs_match_reference(size, data):
    dst, done = np.zeros(size, dtype=np.int64), np.zeros(size, dtype=bool)
    ref_dst, ref_done = [0] * size, [False] * size
    for _ in range(data.draw(st.integers(1, 6))):
        first = data.draw(st.integers(0, size - 1))
        values = data.draw(st.lists(st.integers(-1000, 1000), min_size=0, max_size=size - first))
        assert collate.scatter(dst, done, first, np.array(values, dtype=np.int64)) == \
            reference.scatter(ref_dst, ref_done, first, values)
    assert dst.tolist() == ref_dst and done.tolist() == ref_done
    assert [tuple(r) for r in collate.done_runs(done).tolist()] == reference.done_runs(ref_done)


def test_worker_start_does_not_import_numba():
    import subprocess
    import sys
    code = "import sys, dcplocal.worker, dcplocal.inputs; print('numba' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_to_input_spec_leaves_data_alone():
    assert to_input_spec([1, 2, 3]) is None
    assert to_input_spec(iter(range(3))) is None
    assert to_input_spec({"a": 1}) is None
