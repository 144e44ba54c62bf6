"""The ``memory`` section of ``bmvit bench``: peak resident memory of a training step, with and without
activation checkpointing, each measured in a fresh process so that nothing run before counts."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bmvit.bench.models import criterion_for_bench, detector_for_bench, random_targets


def measure_train_memory(name: str, input_size: list[int], checkpointing: bool, threads: int) -> dict[str, Any]:
    """One training step at batch 1 in this process, and the resident memory it takes.

    Returns:
        ``name``, ``input``, ``checkpointing``, ``step_s``, ``peak_rss_mb`` (the process's peak,
        ``ru_maxrss``), ``step_peak_mb`` (the peak during the step alone: on Linux the high-water mark is
        reset before the step; elsewhere the process peak), to set against ``rss_before_step_mb`` (model,
        optimizer and clip built). Meant for a fresh process (``train_memory_in_subprocess``).
    """
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = detector_for_bench(name, tuple(input_size), checkpointing).train()
    criterion = criterion_for_bench(80)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    clips = torch.randn(1, 3, *input_size)
    targets = random_targets(1, 80, torch.Generator().manual_seed(0))
    before = _proc_status_mb("VmRSS")
    reset = _reset_peak_rss()
    start = time.perf_counter()
    criterion(model(clips), targets)["loss"].backward()
    optimizer.step()
    elapsed = time.perf_counter() - start
    peak = _max_rss_mb()
    return {"name": name, "input": list(input_size), "checkpointing": checkpointing,
            "rss_before_step_mb": before if before is not None else peak,
            "step_peak_mb": _proc_status_mb("VmHWM") if reset else peak, "peak_rss_mb": peak, "step_s": elapsed}


def train_memory_in_subprocess(name: str, input_size: tuple[int, int, int], checkpointing: bool,
                               threads: int) -> dict[str, Any]:
    """``measure_train_memory`` in a fresh Python process; returns its result."""
    code = ("import json, sys; from bmvit.bench.memory import measure_train_memory as m; "
            "print(json.dumps(m(*json.loads(sys.argv[1]))))")
    args = json.dumps([name, list(input_size), checkpointing, threads])
    done = subprocess.run([sys.executable, "-c", code, args], check=False, capture_output=True, text=True,
                          timeout=1200)
    if done.returncode != 0:
        raise RuntimeError(f"memory measurement of {name} (checkpointing={checkpointing}) failed:\n"
                           f"{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _max_rss_mb() -> float:
    scale = 1024 if sys.platform.startswith("linux") else 1024 * 1024  # KiB on Linux, bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def _proc_status_mb(key: str) -> float | None:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process from ``/proc/self/status``; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's resident high-water mark (Linux ``clear_refs`` 5); False where impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _proc_status_mb("VmHWM") is not None


__all__ = ["measure_train_memory", "train_memory_in_subprocess"]
