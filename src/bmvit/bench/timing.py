"""How ``bmvit bench`` times things on a shared, noisy machine, and what it records about that machine.

An absolute time means little here, so every time is the median of ``repeats`` runs after a warm-up, and
competitors run interleaved (A, B, reference, A, B, reference, ...) so that all see the same load. The
reference is this machine's fp32 matmul rate (``MatmulReference``): achieved FLOP/s are fractions of it.
"""

from __future__ import annotations

import importlib
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch


@dataclass
class Timing:
    """Wall-clock (and process CPU) seconds of each timed run; the warm-up is not in them."""

    runs_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        """The median wall-clock seconds of the timed runs."""
        return statistics.median(self.runs_s)

    def to_dict(self) -> dict[str, Any]:
        """Returns ``median_s``, ``min_s``, ``runs_s`` and ``cpu_median_s`` (the report's form of a timing)."""
        return {"median_s": self.median_s, "min_s": min(self.runs_s), "runs_s": self.runs_s,
                "cpu_median_s": statistics.median(self.cpu_s)}


def time_interleaved(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, Timing]:
    """Run each function ``warmup`` times, then ``repeats`` rounds of all of them in turn (A, B, A, B, ...),
    so that competitors see the same machine load. Returns a ``Timing`` per name."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    timings = {name: Timing() for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            cpu, start = time.process_time(), time.perf_counter()
            fn()
            timings[name].runs_s.append(time.perf_counter() - start)
            timings[name].cpu_s.append(time.process_time() - cpu)
    return timings


def time_runs(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> Timing:
    """``fn`` timed alone: returns the ``Timing`` of its ``repeats`` runs after ``warmup`` untimed ones."""
    return time_interleaved({"fn": fn}, repeats, warmup)["fn"]


class MatmulReference:
    """fp32 ``torch.mm`` of two ``n x n`` matrices (a few per call at small ``n``): the rate that
    achieved FLOP/s are fractions of, timed between the runs it is compared with."""

    def __init__(self, n: int) -> None:
        self.a, self.b = torch.randn(n, n), torch.randn(n, n)
        self.n = n
        self.calls = max(1, (512 // n) ** 3)  # at small n one product is too short to time

    def __call__(self) -> None:
        for _ in range(self.calls):
            torch.mm(self.a, self.b)

    def gflops(self, timing: Timing) -> float:
        """GFLOP/s of one call at ``timing``'s median, counting ``2 n^3`` FLOPs per product."""
        return 2 * self.n**3 * self.calls / timing.median_s / 1e9


def time_against_matmul(fns: dict[str, Callable[[], Any]], reference: MatmulReference, repeats: int,
                        warmup: int = 1) -> dict[str, dict[str, Any]]:
    """``time_interleaved`` with the matmul reference as one more competitor; each result (``Timing.to_dict``)
    also holds ``matmul_gflops``, the reference rate measured between its runs."""
    timings = time_interleaved({**fns, "matmul": reference}, repeats, warmup)
    rate = reference.gflops(timings.pop("matmul"))
    return {name: {**timing.to_dict(), "matmul_gflops": rate} for name, timing in timings.items()}


def bench_matmul(reference: MatmulReference, repeats: int) -> dict[str, Any]:
    """The reference rate alone, at the start of the run: returns ``n``, ``gflops`` and the timing's fields."""
    timing = time_runs(reference, max(repeats, 5))
    return {"n": reference.n, "gflops": reference.gflops(timing), **timing.to_dict()}


@contextmanager
def num_threads(threads: int) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(threads)``, restoring the previous setting after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def machine_info() -> dict[str, Any]:
    """Returns the CPU model, core count, load average, library versions, GPU name and the date (UTC)."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        torchvision = importlib.import_module("torchvision").__version__
    except ImportError:
        torchvision = None
    return {"date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu_model": cpu,
            "nproc": os.cpu_count(), "loadavg": list(os.getloadavg()), "python": platform.python_version(),
            "torch": torch.__version__, "torchvision": torchvision,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


__all__ = ["MatmulReference", "Timing", "bench_matmul", "machine_info", "num_threads", "time_against_matmul",
           "time_interleaved", "time_runs"]
