"""The joblib backend: ``with joblib.parallel_backend("dcplocal"): Parallel(...)(...)``.

In this process results are compared with joblib's sequential backend (same results by joblib's
contract); the comparison with joblib's default backend, loky, runs in a subprocess, because
loky's reusable workers and resource tracker outlive a test.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

joblib = pytest.importorskip("joblib")
from joblib import Parallel, delayed, parallel_backend  # noqa: E402

import dcplocal  # noqa: E402
from dcplocal.joblib_backend import DcpLocalBackend  # noqa: E402 - registers "dcplocal"


class Custom(Exception):
    pass


def square(x):
    return x * x


def fail_at(x, bad=7):
    if x == bad:
        raise Custom(x)
    return x


def pid_of(_):
    return os.getpid()


def nested(i):
    inner = Parallel(n_jobs=2)(delayed(pid_of)(j) for j in range(3))
    return i, os.getpid(), inner


def test_results_equal_the_sequential_backends():
    tasks = [delayed(square)(i) for i in range(500)] + [delayed(divmod)(7, 2), delayed(sorted)("cba")]
    with parallel_backend("sequential"):
        expected = Parallel()(tasks)
    with parallel_backend("dcplocal"):
        assert Parallel(n_jobs=2)(tasks) == expected
    assert Parallel(n_jobs=2, backend="dcplocal")(tasks) == expected


def test_exceptions_propagate_with_their_type_and_the_backend_stays_usable():
    with parallel_backend("dcplocal", n_jobs=2):
        with pytest.raises(Custom) as caught:
            Parallel()(delayed(fail_at)(i) for i in range(100))
        assert caught.value.args == (7,)
        assert Parallel()(delayed(square)(i) for i in range(10)) == [i * i for i in range(10)]


def test_n_jobs_is_respected():
    with parallel_backend("dcplocal"):
        assert set(Parallel(n_jobs=1)(delayed(pid_of)(i) for i in range(5))) == {os.getpid()}
        pids = set(Parallel(n_jobs=2)(delayed(pid_of)(i) for i in range(200)))
    assert os.getpid() not in pids and len(pids) <= 2
    assert pids <= set(dcplocal.default_runtime().worker_pids())
    backend = DcpLocalBackend()
    assert backend.effective_n_jobs(-1) == joblib.cpu_count()
    assert backend.configure(n_jobs=2) == 2 and backend._executor._max_workers == 2
    backend.terminate()


def test_nested_parallel_runs_sequentially_in_the_worker():
    with parallel_backend("dcplocal", n_jobs=2):
        out = Parallel()(delayed(nested)(i) for i in range(4))
    assert [i for i, _, _ in out] == [0, 1, 2, 3]
    for _, worker, inner in out:
        assert worker != os.getpid() and inner == [worker] * 3


def test_generators_and_a_runtime_of_your_own(runtime):
    with parallel_backend("dcplocal", n_jobs=2, runtime=runtime):
        ordered = Parallel(return_as="generator")(delayed(square)(i) for i in range(20))
        assert list(ordered) == [i * i for i in range(20)]
        unordered = Parallel(return_as="generator_unordered")(delayed(pid_of)(i) for i in range(20))
        assert set(unordered) <= set(runtime.worker_pids())


def test_sharedmem_falls_back_to_threads():
    with parallel_backend("dcplocal", n_jobs=2):
        assert set(Parallel(require="sharedmem")(delayed(pid_of)(i) for i in range(4))) == {os.getpid()}


def test_importing_dcplocal_does_not_import_joblib():
    code = "import sys, dcplocal; dcplocal.Executor; print('joblib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_same_results_and_errors_as_the_default_backend_loky(tmp_path):
    script = tmp_path / "compare.py"
    script.write_text(textwrap.dedent("""
        import joblib
        from joblib import Parallel, delayed
        import dcplocal.joblib_backend

        class Custom(Exception):
            pass

        def work(x):
            if x == 13:
                raise Custom(x)
            return {"x": x, "square": x * x, "text": str(x) * 2}

        def outcome(backend, n):
            with joblib.parallel_backend(backend, n_jobs=2):
                try:
                    return Parallel()(delayed(work)(i) for i in range(n))
                except Custom as exc:
                    return ("raised", type(exc).__name__, exc.args)

        for n in (0, 1, 13, 300):
            assert outcome("loky", n) == outcome("dcplocal", n), n
        print("same")
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "same"
