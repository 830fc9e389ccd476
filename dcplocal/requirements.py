"""Validation of a job's ``requirements`` object against what this machine can offer.

The spec's requirements are nested objects of booleans (``{"engine": {"es7": True}}``, ``{"gpu":
True}``). Local execution has no GPU sandbox and no browser capabilities, so a requirement it
cannot meet is an `EUNMET` raised before any worker starts — never a job that waits forever for
a worker that will not come. Malformed objects are `EINVAL`/`ETYPE` naming the offending path.

Must not know: jobs, workers, sockets.
"""
from __future__ import annotations

from typing import Any, Dict

from .errors import EINVAL, ETYPE, EUNMET

#: The spec's capability groups; anything else is a typo worth reporting.
KNOWN_GROUPS = ("environment", "details", "engine", "gpu", "discrete", "machine", "useStrict")
#: Capabilities a local worker process does not have (True would never be satisfied).
UNMET_WHEN_TRUE = {"gpu", "environment.offscreenCanvas", "environment.webgpu", "engine.spidermonkey"}


def _walk(path: str, value: Any) -> None:
    if isinstance(value, bool):
        if value and path in UNMET_WHEN_TRUE:
            raise EUNMET(f"requirement {path}=True cannot be met by local worker processes")
        return
    if isinstance(value, dict):
        for key, inner in value.items():
            if not isinstance(key, str):
                raise ETYPE(f"requirements key {key!r} under {path or 'requirements'} must be a str")
            _walk(f"{path}.{key}" if path else key, inner)
        return
    if isinstance(value, (int, float, str)) and path.startswith("machine"):
        return
    raise EINVAL(f"requirement {path} must be a bool or an object, not {type(value).__name__}")


def validate_requirements(requirements: Dict[str, Any]) -> None:
    """Raise ETYPE/EINVAL for a malformed requirements object, EUNMET for an unmeetable one."""
    if not isinstance(requirements, dict):
        raise ETYPE(f"job.requirements must be a dict, not {type(requirements).__name__}")
    for group in requirements:
        if group not in KNOWN_GROUPS:
            raise EINVAL(f"unknown requirements group {group!r}; known: {', '.join(KNOWN_GROUPS)}")
    _walk("", requirements)
