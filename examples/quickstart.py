"""Estimate pi by Monte Carlo on local worker processes: the README's main example.

Each slice draws 200,000 random points in the unit square from its own seed and counts those
inside the quarter circle. On a terminal a progress bar shows while it runs (slices done, rate,
ETA); in a log file nothing but the answer is printed.
"""
from dcplocal import compute


def count_inside(seed, points):
    import random
    rng = random.Random(seed)
    inside = 0
    for i in range(points):
        x, y = rng.random(), rng.random()
        inside += x * x + y * y <= 1.0
        if i % 50_000 == 0:
            progress(i / points)
    return inside


def main():
    slices, points = 40, 200_000
    job = compute.for_(1, slices, count_inside, [points])
    job.public["name"] = "monte-carlo pi"
    results = job.localExec(2)
    estimate = 4 * sum(results) / (slices * points)
    print(f"pi ~ {estimate:.5f} from {slices * points:,} points in {slices} slices")
    print(f"mean CPU per slice: {job.meanSliceProfile['cpuHours'] * 3600 * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
