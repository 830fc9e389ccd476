"""Run as a script (its classes and functions live in __main__, as a user's do): everything a
script defines must travel to the workers and back as itself, on localExec(0), (1) and (2).
Prints one line per check and exits non-zero on the first failure."""
import dataclasses
import enum
import functools
import sys
import typing

from dcplocal import compute


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Color(enum.Enum):
    RED = 1
    BLUE = 2


class Pair(typing.NamedTuple):
    a: int
    b: str


class Slotted:
    __slots__ = ("a",)

    def __init__(self, a):
        self.a = a

    def __eq__(self, other):
        return type(other) is Slotted and other.a == self.a


class ModelDiverged(Exception):
    pass


class HttpError(Exception):
    def __init__(self, status, url):
        super().__init__(f"{status} at {url}")
        self.status, self.url = status, url


def square(x):
    return x * x


@functools.lru_cache(maxsize=None)
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def diverge(i):
    raise ModelDiverged(f"step {i}")


def http(i):
    raise HttpError(404, f"http://example.invalid/{i}")


def check(name, ok):
    print(f"{name}: {'ok' if ok else 'FAILED'}", flush=True)
    if not ok:
        sys.exit(1)


def main():
    for cores in (0, 1, 2):
        def run(*args):
            return list(compute.for_(*args).localExec(cores))
        tag = f"[{cores}]"
        points = run(1, 3, lambda i: Point(i, -i))
        check(f"dataclass result {tag}", points == [Point(i, -i) for i in (1, 2, 3)]
              and all(type(p) is Point for p in points))
        check(f"enum result {tag}", run(1, 2, lambda i: Color(i)) == [Color.RED, Color.BLUE])
        pairs = run(1, 2, lambda i: Pair(i, str(i)))
        check(f"namedtuple result {tag}", pairs == [Pair(1, "1"), Pair(2, "2")]
              and all(type(p) is Pair for p in pairs))
        check(f"__slots__ class both ways {tag}",
              run([Slotted(1), Slotted(2)], lambda s: Slotted(s.a * 10)) == [Slotted(10), Slotted(20)])
        check(f"dataclass input {tag}", run([Point(1, 2), Point(3, 4)], lambda p: p.x + p.y) == [3, 7])
        check(f"enum input {tag}", run([Color.BLUE], lambda c: c is Color.BLUE) == [True])
        check(f"function input {tag}", run([square, abs], lambda f: f(-3)) == [9, 3])
        check(f"lru_cache work function {tag}", run(0, 9, fib) == [fib(i) for i in range(10)])
        try:
            run(1, 2, diverge)
            check(f"script exception {tag}", False)
        except ModelDiverged as exc:
            check(f"script exception {tag}", type(exc) is ModelDiverged and "step 1" in str(exc))
        try:
            run(1, 2, http)
            check(f"exception with __init__ arguments {tag}", False)
        except HttpError as exc:
            check(f"exception with __init__ arguments {tag}",
                  (exc.status, exc.url) == (404, "http://example.invalid/1"))
    print("ALL OK")


if __name__ == "__main__":
    main()
