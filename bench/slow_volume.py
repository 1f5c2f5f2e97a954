"""Calibration of the simulated network volume (tests/support/slow_volume.py).

    .venv/bin/python bench/slow_volume.py [--delays-ms 0,1,5] [--seconds 1.5] [--dir /tmp]

Per-operation wall time of common file operations on a local folder (the backing disk) and on
the FUSE mount of that folder at each delay: ``stat`` of a file, ``open`` + ``close``, a 4 KB
file written and fsynced (open, write, fsync, close), a 1 MB file read whole (open, read,
close), and ``listdir`` of a folder of 1000 files. Each operation is repeated for about
``--seconds`` (at least 5 times); the figure is the mean. Prints a markdown table with each
figure's ratio to the local one, and the round trips each operation costs, from the slope
between the two largest delays.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.slow_volume import slow_volume  # noqa: E402

SMALL = os.urandom(4096)
LARGE = os.urandom(1 << 20)


def prepare(folder: Path) -> None:
    """The files the operations use, written on the local disk before mounting."""
    (folder / "file").write_bytes(b"x")
    (folder / "large").write_bytes(LARGE)
    many = folder / "many"
    many.mkdir()
    for i in range(1000):
        (many / f"file_{i:04}.py").write_bytes(b"")


def operations(folder: Path) -> dict[str, Callable[[], None]]:
    counter = iter(range(10**9))

    def stat() -> None:
        os.stat(folder / "file")

    def open_close() -> None:
        os.close(os.open(folder / "file", os.O_RDONLY))

    def write_fsync() -> None:
        fd = os.open(
            folder / f"small_{next(counter)}", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644
        )
        try:
            os.write(fd, SMALL)
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_large() -> None:
        with open(folder / "large", "rb", buffering=0) as file:
            assert len(file.read()) == len(LARGE)

    def listdir() -> None:
        assert len(os.listdir(folder / "many")) == 1000

    return {
        "stat": stat,
        "open + close": open_close,
        "4 KB write + fsync": write_fsync,
        "1 MB sequential read": read_large,
        "readdir, 1000 files": listdir,
    }


def measure(operation: Callable[[], None], seconds: float) -> float:
    """Mean seconds per call over about ``seconds`` of calls (at least 5), after one warm-up."""
    operation()
    calls = 0
    started = time.perf_counter()
    while calls < 5 or time.perf_counter() - started < seconds:
        operation()
        calls += 1
    return (time.perf_counter() - started) / calls


def run(folder: Path, seconds: float) -> dict[str, float]:
    return {name: measure(op, seconds) for name, op in operations(folder).items()}


def cell(value: float, local: float) -> str:
    figure = f"{value * 1e3:.2f} ms" if value >= 1e-3 else f"{value * 1e6:.0f} µs"
    return f"{figure} ({value / local:.0f}x)" if local else figure


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delays-ms", default="0,1,5")
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    delays = [float(d) for d in args.delays_ms.split(",")]

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="slow-volume-bench-") as base:
        backing, mountpoint = Path(base) / "backing", Path(base) / "mount"
        backing.mkdir()
        mountpoint.mkdir()
        prepare(backing)
        local = run(backing, args.seconds)
        mounted: dict[float, dict[str, float]] = {}
        for delay in delays:
            with slow_volume(backing, mountpoint, delay=delay / 1000) as mount:
                mounted[delay] = run(mount, args.seconds)

    header = ["operation", "local disk", *(f"mount, {d:g} ms" for d in delays)]
    slope = len(delays) >= 2 and delays[-1] > delays[-2]
    if slope:
        header.append(f"round trips ({delays[-2]:g}→{delays[-1]:g} ms)")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, base_time in local.items():
        row = [name, cell(base_time, 0.0)]
        row += [cell(mounted[d][name], base_time) for d in delays]
        if slope:
            trips = (mounted[delays[-1]][name] - mounted[delays[-2]][name]) / (
                (delays[-1] - delays[-2]) / 1000
            )
            row.append(f"{trips:.1f}")
        print("| " + " | ".join(row) + " |")
    print()
    print(
        f"Command: .venv/bin/python bench/slow_volume.py --delays-ms {args.delays_ms} --seconds {args.seconds:g}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
