"""Input sets: the spec's range text edge by edge, bad input codes, and exact arithmetic."""
from __future__ import annotations

import pickle
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

from dcplocal import compute, stats
from dcplocal.errors import EINVAL, ERANGE
from dcplocal.ranges import MultiRangeObject, RangeObject, SparseRangeObject, to_input_spec


def values(obj):
    spec = to_input_spec(obj)
    return list(spec.slice_data(0, len(spec)))


@pytest.mark.parametrize("given,expected", [
    ({"start": 10, "end": 13, "step": 2}, [10, 12]),         # spec example 2: the step overflows
    ({"start": 0, "end": 1000, "step": 3}, list(range(0, 1000, 3))),   # ends at 999
    ({"start": 1, "end": 3}, [1, 2, 3]),                      # end inclusive, step defaults to 1
    ({"start": 3, "end": 1}, [3, 2, 1]),                      # ... or -1 toward end
    ({"start": 5, "end": 5}, [5]),
    ({"start": 5, "end": -5, "step": -5}, [5, 0, -5]),
    ({"start": 0, "end": 0.3, "step": 0.1}, [0.0, 0.1, 0.2, 0.3]),       # JS loses the end here
    ({"start": 0.5, "end": 2}, [0.5, 1.5]),
    ({"start": 1, "end": 2, "step": 0.25}, [1.0, 1.25, 1.5, 1.75, 2.0]),
    ({"start": 2**70, "end": 2**70 + 2}, [2**70, 2**70 + 1, 2**70 + 2]),  # beyond int64, exact
])
def test_range_values(given, expected):
    assert values(given) == expected
    assert [type(v) for v in values(given)] == [type(v) for v in expected]


def test_decimal_steps_are_exact_where_javascript_drifts():
    got = values({"start": 0, "end": 1, "step": 0.1})
    assert len(got) == 11 and got[3] == 0.3 and got[-1] == 1.0
    assert got == [float(Fraction(k, 10)) for k in range(11)]
    assert values(RangeObject(Decimal("0.1"), Decimal("0.5"), Decimal("0.2"))) == [0.1, 0.3, 0.5]


def test_group_hands_each_slice_an_array_and_the_last_may_be_short():
    spec = to_input_spec({"start": 10, "end": 14, "group": 2})
    chunks = spec.slice_data(0, len(spec))
    assert len(spec) == 3 and all(isinstance(c, np.ndarray) for c in chunks)
    assert [c.tolist() for c in chunks] == [[10, 11], [12, 13], [14]]
    assert [c.tolist() for c in to_input_spec({"start": 1, "end": 3, "group": 1}).slice_data(0, 3)] == [[1], [2], [3]]


@pytest.mark.parametrize("bad,code,field", [
    ({"start": 0, "end": float("inf")}, EINVAL, "end"),
    ({"start": float("nan"), "end": 1}, EINVAL, "start"),
    ({"start": 0, "end": 1, "step": 0}, EINVAL, "step"),
    ({"start": "0", "end": 1}, EINVAL, "start"),
    ({"start": 0, "end": None}, EINVAL, "end"),
    ({"start": 0, "end": 3, "step": True}, EINVAL, "step"),
    ({"start": 0, "end": 3, "group": 0}, EINVAL, "group"),
    ({"start": 0, "end": 3, "group": 1.5}, EINVAL, "group"),
    ({"start": 0, "end": 3, "size": 2}, EINVAL, "size"),
    ({"start": 0, "end": 10, "step": -1}, ERANGE, "step"),
    ({"start": 10, "end": 0, "step": 2}, ERANGE, "step"),
    ({"sparse": [{"sparse": [{"start": 0, "end": 1}]}]}, EINVAL, "sparse"),
    ({"ranges": []}, EINVAL, "range"),
    ({"ranges": [{"start": 0, "end": 3, "group": 2}]}, EINVAL, "group"),
])
def test_bad_ranges_raise_a_typed_error_naming_the_field(bad, code, field):
    with pytest.raises(code, match=field):
        to_input_spec(bad)
    with pytest.raises(code):
        compute.for_(bad, lambda x: x)


def test_range_objects_index_and_slice_without_materialising():
    huge = RangeObject(0, 10**18, 7)
    assert len(huge) == 10**18 // 7 + 1
    assert huge[-1] == (10**18 // 7) * 7 and huge[123456789] == 123456789 * 7
    part = huge[10:20:3]
    assert isinstance(part, RangeObject) and list(part) == [70, 91, 112, 133]
    with pytest.raises(ERANGE):
        huge[len(huge)]
    assert RangeObject({"start": 1, "end": 3}) == RangeObject(1, 3)
    assert "start=1" in repr(RangeObject(1, 3))


def test_multi_range_is_a_cartesian_product_rightmost_fastest():
    multi = MultiRangeObject([{"start": 1, "end": 2}, {"start": 3, "end": 5}])
    assert values(multi) == [(1, 3), (1, 4), (1, 5), (2, 3), (2, 4), (2, 5)]
    assert multi.spec.shape == (2, 3) and multi.spec.spread
    assert to_input_spec({"ranges": [{"start": 0, "end": 1}] * 3}).shape == (2, 2, 2)
    assert to_input_spec([RangeObject(0, 1), {"start": 0, "end": 0.2, "step": 0.1}]).slice_data(4, 2) == [(1, 0.1), (1, 0.2)]


def test_multi_range_results_nest_and_keys_are_tuples():
    results = compute.for_([{"start": 1, "end": 2}, {"start": 3, "end": 5}], lambda i, j: i * j).localExec(2)
    assert results == [[3, 4, 5], [6, 8, 10]]
    assert results.keys() == [(1, 3), (1, 4), (1, 5), (2, 3), (2, 4), (2, 5)]
    assert np.asarray(results).shape == (2, 3)
    deep = compute.for_({"ranges": [{"start": 0, "end": 1}] * 3}, lambda a, b, c: a * 4 + b * 2 + c).localExec(2)
    assert deep == [[[0, 1], [2, 3]], [[4, 5], [6, 7]]]


def test_sparse_ranges_concatenate_and_map_indices():
    sparse = SparseRangeObject({"sparse": [{"start": 1, "end": 3}, {"start": 10, "end": 20, "step": 5}]})
    assert values(sparse) == [1, 2, 3, 10, 15, 20]
    assert sparse.spec.slice_data(2, 3) == [3, 10, 15]
    assert sparse[4] == 15 and len(sparse) == 6
    assert len(SparseRangeObject([])) == 0


def test_specs_are_small_and_picklable():
    for spec in (to_input_spec({"start": 0, "end": 10**12}), MultiRangeObject([RangeObject(0, 9)] * 2).spec,
                 SparseRangeObject([RangeObject(0, 5)]).spec, stats.set.poisson(10**9, 4, seed=1).spec):
        blob = pickle.dumps(spec)
        assert len(blob) < 600
        again = pickle.loads(blob)
        assert list(again.slice_data(0, 5)) == list(spec.slice_data(0, 5))


def test_distributions_are_seeded_and_independent_of_batching():
    dist = stats.set.normalRNG(10_000, 100, 0.2, seed=42)
    whole = dist.spec.slice_data(0, 10_000)
    pieces = [v for first in range(0, 10_000, 937) for v in dist.spec.slice_data(first, min(937, 10_000 - first))]
    assert whole == pieces
    assert abs(np.mean(whole) - 100) < 0.02 and abs(np.std(whole) - 0.2) < 0.01
    assert stats.set.normalRNG(5, 0, 1, seed=42).materialize() == stats.set.normalRNG(5, 0, 1, seed=42).materialize()
    assert stats.set.normalRNG(5, 0, 1).materialize() != stats.set.normalRNG(5, 0, 1).materialize()


@pytest.mark.parametrize("make,check", [
    (lambda: stats.set.random(20_000, 2, 5, seed=1), lambda v: min(v) >= 2 and max(v) < 5 and abs(np.mean(v) - 3.5) < 0.05),
    (lambda: stats.set.randomInt(20_000, -3, 4, seed=1), lambda v: set(v) == set(range(-3, 4)) and all(type(x) is int for x in v)),
    (lambda: stats.set.poisson(20_000, 3.5, seed=1), lambda v: min(v) >= 0 and abs(np.mean(v) - 3.5) < 0.08 and abs(np.var(v) - 3.5) < 0.2),
    (lambda: stats.set.poisson(20_000, 1e6, seed=1), lambda v: abs(np.mean(v) - 1e6) < 30),
    (lambda: stats.set.binomial(20_000, 10, 0.3, seed=1), lambda v: min(v) >= 0 and max(v) <= 10 and abs(np.mean(v) - 3) < 0.06),
    (lambda: stats.set.binomial(100, 5, 1.0, seed=1), lambda v: set(v) == {5}),
    (lambda: stats.set.normal(20_000, seed=3), lambda v: abs(np.mean(v)) < 0.03 and abs(np.std(v) - 1) < 0.03),
])
def test_distribution_shapes(make, check):
    dist = make()
    assert check(dist.materialize())


@pytest.mark.parametrize("bad", [
    lambda: stats.set.normalRNG(-1, 0, 1), lambda: stats.set.normalRNG(3, 0, -1),
    lambda: stats.set.random(3, 5, 2), lambda: stats.set.randomInt(3, 0.5, 2),
    lambda: stats.set.poisson(3, -1), lambda: stats.set.binomial(3, 4, 1.5),
    lambda: stats.set.normalRNG(3, float("nan"), 1), lambda: stats.set.random(3, 0, 1, seed="x"),
])
def test_bad_distribution_parameters(bad):
    with pytest.raises(EINVAL):
        bad()


def test_a_distribution_job_gives_the_same_values_on_any_worker_layout():
    dist = stats.set.random(3000, 0, 1, seed=9)
    expected = dist.materialize()
    assert list(compute.for_(dist, lambda x: x).localExec(2)) == expected
    assert list(compute.for_(dist, lambda x: x).localExec(0)) == expected
    assert compute.for_(dist, lambda x: x).localExec(1).keys() == expected


def test_compute_for_numeric_forms():
    assert compute.for_(1, 3, lambda x: x).localExec(0) == [1, 2, 3]
    assert compute.for_(0, 10, 5, lambda x: x).localExec(0) == [0, 5, 10]
    assert compute.for_(0, 0.3, 0.1, lambda x, k: x * k, [10]).localExec(0) == [0.0, 1.0, 2.0, 3.0]
    assert getattr(compute, "for")(1, 2, lambda x: -x).localExec(0) == [-1, -2]


@pytest.mark.parametrize("cores", [0, 2])
def test_form_2b_steps_by_one_so_end_before_start_is_empty(cores):
    n = 0
    data = ["only"]
    assert list(compute.for_(0, n - 1, lambda i: data[i]).localExec(cores)) == []
    assert list(compute.for_(2, 5, lambda i: i).localExec(cores)) == [2, 3, 4, 5]
    assert list(compute.for_(0.5, 0.25, lambda i: i).localExec(cores)) == []
    # a range object or dict without a step keeps counting down, and form 2a keeps its step
    assert list(compute.for_({"start": 3, "end": 1}, lambda i: i).localExec(cores)) == [3, 2, 1]
    assert list(compute.for_(RangeObject(3, 1), lambda i: i).localExec(cores)) == [3, 2, 1]
    assert list(compute.for_(3, 1, -1, lambda i: i).localExec(cores)) == [3, 2, 1]
    with pytest.raises(ERANGE):
        compute.for_(3, 1, 1, lambda i: i)


def test_help_of_compute_for_documents_every_form():
    doc = compute.for_.__doc__
    for form in ("range_object", "start, end, step", "start, end, work", "multi-range",
                 "sparse", "iterable", "distribution", "end < start is empty"):
        assert form in doc, form
