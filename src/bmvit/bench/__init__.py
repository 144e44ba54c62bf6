"""The ``bmvit bench`` harness: what bmvit costs on this machine, as ratios to references measured in the
same run. Nothing in training or inference imports it; ``bmvit.cli.bench`` is its command.

Modules, each one concept:

- ``cpu``: the CPU run (``bmvit bench``): its sections, their sizes, ``BenchConfig`` and ``run_benchmarks``;
- ``device``: the accelerator run (``bmvit bench --device cuda``) and its measurements;
- ``timing``: interleaved timing and the matmul reference every rate is a fraction of;
- ``models``, ``loader``, ``evaluator``, ``memory``: the measurements of the CPU sections;
- ``ava_layout``: a synthetic AVA-layout root for the loader benchmarks (``scripts/make_ava_layout.py``);
- ``report``: the results as table rows, and the printed table.
"""

from bmvit.bench.cpu import SECTIONS, BenchConfig, run_benchmarks
from bmvit.bench.device import run_device_benchmarks
from bmvit.bench.report import format_machine, format_table

__all__ = ["SECTIONS", "BenchConfig", "format_machine", "format_table", "run_benchmarks", "run_device_benchmarks"]
