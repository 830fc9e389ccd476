"""DESIGN.md's import rules, checked by parsing every module's imports (no importing needed)."""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "dcplocal"
KERNELS = ROOT / "kernels"

USER_API = {"compute", "job", "aio", "results", "ranges", "distributions", "events", "jobinputs",
            "requirements"}
WORKER_SIDE = {"worker", "sandbox", "taskexec", "inputs", "protocol", "codec", "errors", "arena",
               "remote", "heartbeat", "fds"}


def imports_of(path: pathlib.Path) -> set:
    """Top-level names a module imports: 'zmq', 'numpy', or 'dcplocal.<module>' for our own."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from .x import y / from . import x
                base = "dcplocal" if path.parent == PACKAGE else "dcplocal.kernels"
                if node.module:
                    names.add(f"{base}.{node.module}")
                else:
                    names |= {f"{base}.{alias.name}" for alias in node.names}
            elif node.module:
                names.add(node.module)
                if node.module == "dcplocal":
                    names |= {f"dcplocal.{alias.name}" for alias in node.names}
    return names


def module_imports(name: str) -> set:
    return imports_of(PACKAGE / f"{name}.py")


def own(names: set) -> set:
    return {n.split(".")[1] for n in names if n.startswith("dcplocal.") and n.count(".") >= 1}


@pytest.mark.parametrize("module", sorted(USER_API))
def test_user_api_never_imports_zmq(module):
    if (PACKAGE / f"{module}.py").exists():
        assert not any(n == "zmq" or n.startswith("zmq.") for n in module_imports(module))


@pytest.mark.parametrize("module", sorted(WORKER_SIDE))
def test_worker_side_never_imports_the_user_api(module):
    assert not (own(module_imports(module)) & USER_API), module


def test_protocol_imports_no_transport_and_no_pickle():
    forbidden = {"zmq", "pickle", "cloudpickle", "socket", "asyncio"}
    assert not {n.split(".")[0] for n in module_imports("protocol")} & forbidden


def test_scheduling_is_pure():
    names = {n.split(".")[0] for n in module_imports("scheduling")}
    assert not names & {"zmq", "asyncio", "time", "subprocess", "socket", "threading", "pickle"}
    assert own(module_imports("scheduling")) <= {"errors"}


def test_supervisor_knows_no_messages():
    assert not own(module_imports("supervisor")) & {"protocol", "codec", "scheduling", "broker"}


def test_broker_never_runs_user_code_modules():
    assert not own(module_imports("broker")) & (USER_API | {"sandbox", "worker", "inputs"})
    assert not {"pickle", "cloudpickle"} & {n.split(".")[0] for n in module_imports("broker")}


@pytest.mark.parametrize("module", ["arena", "remote", "fds"])
def test_memory_transports_know_no_sockets_messages_or_scheduling(module):
    names = module_imports(module)
    assert not {n.split(".")[0] for n in names} & {"zmq", "pickle", "cloudpickle", "asyncio"}
    assert not own(names) - {"fds"}  # fds is a leaf: this test checks it imports nothing of ours


def test_kernels_import_nothing_from_dcplocal():
    for path in KERNELS.glob("*.py"):
        names = imports_of(path)
        assert not any(n == "dcplocal" or (n.startswith("dcplocal.") and not n.startswith("dcplocal.kernels"))
                       for n in names), path


def test_every_module_opens_with_a_docstring():
    for path in list(PACKAGE.glob("*.py")) + list(KERNELS.glob("*.py")):
        tree = ast.parse(path.read_text())
        assert ast.get_docstring(tree), f"{path.name} has no module docstring"


@pytest.mark.parametrize("module", ["job", "compute", "notices", "aio", "results"])
def test_the_user_api_talks_to_a_runtime_not_to_the_broker_scheduler_or_wire(module):
    assert not own(module_imports(module)) & {"broker", "scheduling", "protocol", "supervisor"}


def test_one_run_a_batch_sequence_serves_worker_serial_runtime_and_estimate():
    for module in ("worker", "inprocess", "job"):
        assert "taskexec" in own(module_imports(module)), module
    for module in ("worker", "inprocess", "job"):
        assert "run_batch" not in (PACKAGE / f"{module}.py").read_text(), module
