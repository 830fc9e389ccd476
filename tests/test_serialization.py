"""What a work function returns, and what an input set holds, arrives as itself: the same value
of the same type on localExec(0), (1) and (2), whatever numpy dtype, whatever the script defines.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcplocal import codec, compute, pickling

MODES = (0, 1, 2)
SCRIPTS = pathlib.Path(__file__).parent / "scripts"


def identity(x):
    return x


def same(a, b) -> bool:
    """Equal and of the same type, all the way down (1 == 1.0 == True would hide a bug)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and bool(np.all((a == b) | (a != a)))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if dataclasses.is_dataclass(a):     # field by field: its own == calls NaN unequal to itself
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, np.generic):
        return a.dtype == b.dtype and (bool(a == b) or (a != a and b != b))
    if isinstance(a, float) and a != a:
        return b != b
    return bool(a == b)


# ---- values of every kind ----------------------------------------------------------------

def _local_class():
    """A class pickle cannot send (defined in a function): it has to travel by value."""
    @dataclasses.dataclass(frozen=True)
    class Local:
        value: object
    return Local


LOCAL = _local_class()

scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=2 ** 63)
           | st.floats() | st.text(max_size=20) | st.binary(max_size=20)
           | st.complex_numbers(allow_nan=False) | st.decimals(allow_nan=False)
           | st.fractions() | st.dates() | st.datetimes()
           | st.sampled_from([np.int8(-3), np.uint8(200), np.float16(1.5), np.bool_(True),
                              np.datetime64("2026-12-02"), np.str_("x")]))
values = st.recursive(
    scalars,
    lambda inner: (st.lists(inner, max_size=4) | st.tuples(inner, inner)
                   | st.dictionaries(st.text(max_size=5), inner, max_size=3)
                   | st.builds(LOCAL, inner)),
    max_leaves=12)


@pytest.mark.parametrize("cores", MODES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(values, min_size=1, max_size=6))
def test_any_value_round_trips_as_input_and_as_result(cores, items):
    results = compute.for_(items, identity).localExec(cores)
    assert len(results) == len(items)
    for got, sent in zip(results, items):
        assert same(got, sent), (got, sent)


@pytest.mark.parametrize("cores", MODES)
@settings(max_examples=25, deadline=None)
@given(batch=st.one_of(st.lists(st.booleans(), min_size=1, max_size=50),
                       st.lists(st.integers(-2 ** 63, 2 ** 63 - 1), min_size=1, max_size=50),
                       st.lists(st.floats(), min_size=1, max_size=50)))
def test_uniform_numeric_batches_take_the_typed_path_and_keep_python_types(cores, batch):
    results = compute.for_(batch, identity).localExec(cores)
    assert all(same(got, sent) for got, sent in zip(results, batch))


# ---- every numpy dtype ---------------------------------------------------------------------

DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "float16", "float32", "float64", "longdouble", "complex64", "complex128", "clongdouble",
          "datetime64[ns]", "datetime64[D]", "timedelta64[s]", "S5", "U3",
          [("a", "<i4"), ("b", "<f8")]]


def sample_array(dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.names:
        return np.array([(1, 1.5), (-2, 2.5), (3, -0.5)], dtype=dtype)
    if dtype.kind in "SU":
        return np.array(["ab", "", "xyz"], dtype=dtype)
    if dtype.kind in "Mm":
        return np.array([0, 1, 123456], dtype=np.int64).astype(dtype)
    return np.array([0, 1, 5], dtype=dtype)


def pick(i, array):
    return array[i]


@pytest.mark.parametrize("cores", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_dtype_as_an_input_set(cores, dtype):
    array = sample_array(dtype)
    results = compute.for_(array, identity).localExec(cores)
    for got, sent in zip(results, array):
        assert same(got, sent)


@pytest.mark.parametrize("cores", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_dtype_as_results(cores, dtype):
    array = sample_array(dtype)
    results = compute.for_(0, len(array) - 1, pick, [array]).localExec(cores)
    assert all(same(got, sent) for got, sent in zip(results, array))
    as_array, as_list = np.asarray(results), np.asarray(list(results))
    assert as_array.dtype == as_list.dtype and as_array.shape == as_list.shape
    if array.dtype.kind in "biufc":     # numbers are kept as a typed array of their own dtype
        assert as_array.dtype == array.dtype
    per_slice = compute.for_(0, 1, lambda i, a: a.copy(), [array]).localExec(cores)
    assert same(per_slice[1], array)


def test_a_dtype_string_with_the_header_separator_decodes():
    for dtype in ("bool", "int8", "uint8", "S3"):
        values = list(np.zeros(3, dtype=dtype)) if dtype != "S3" else [np.bytes_(b"ab")] * 3
        frames, failures = codec.pack_results(values)
        unpacked, _native, errors = codec.unpack_results(frames)
        assert not failures and not errors and list(unpacked) == values


# ---- what a script defines ------------------------------------------------------------------

@pytest.mark.slow
def test_a_scripts_own_classes_functions_and_exceptions_travel_as_themselves(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPTS / "script_types.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.rstrip().endswith("ALL OK")


def test_plain_pickle_is_kept_where_it_works_and_main_goes_by_value():
    assert pickling.dumps([1, "a", (2.5, None)]) == __import__("pickle").dumps(
        [1, "a", (2.5, None)], protocol=5)
    main_function = type(identity)(identity.__code__, {}, "f")
    main_function.__module__ = "__main__"
    stream = pickling.dumps(main_function)   # by value: a worker's __main__ has no such name
    assert pickling.loads(stream)(7) == 7


def test_a_work_function_under_lru_cache_runs_on_workers():
    import functools

    @functools.lru_cache(maxsize=None)
    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)
    assert compute.for_(0, 20, fib).localExec(2) == [fib(i) for i in range(21)]


# ---- the world of a warm worker -----------------------------------------------------------

def test_warm_workers_see_a_module_made_importable_after_they_started(tmp_path, monkeypatch):
    compute.for_(0, 3, identity).localExec(2)          # the workers are warm now
    (tmp_path / "made_later.py").write_text("def triple(x):\n    return 3 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def use(x):
        import made_later
        return made_later.triple(x)
    assert compute.for_(0, 5, use).localExec(2) == [0, 3, 6, 9, 12, 15]


def test_warm_workers_work_in_the_clients_directory_of_the_submission(tmp_path, monkeypatch):
    compute.for_(0, 1, identity).localExec(2)
    (tmp_path / "data.txt").write_text("42")
    monkeypatch.chdir(tmp_path)
    assert compute.for_(0, 3, lambda i: open("data.txt").read()).localExec(2) == ["42"] * 4
    assert compute.for_(0, 1, lambda i: os.getcwd()).localExec(2) == [str(tmp_path)] * 2



def test_a_module_loaded_from_a_file_path_travels_by_value(tmp_path):
    """Plugin loaders (and pytest's importlib mode) load modules that no worker can import by
    name; their functions and classes go by value, as the script's own do."""
    import importlib.util
    source = tmp_path / "plugin_by_path.py"
    source.write_text("class Thing:\n"
                      "    def __init__(self, v):\n        self.v = v\n"
                      "def work(x):\n    return Thing(x * 3)\n")
    spec = importlib.util.spec_from_file_location("dcplocal_test_plugin_by_path", source)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        for cores in MODES:
            results = compute.for_(range(3), module.work).localExec(cores)
            assert [t.v for t in results] == [0, 3, 6]
            assert all(type(t) is module.Thing for t in results)
    finally:
        del sys.modules[spec.name]
