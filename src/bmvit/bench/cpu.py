"""What bmvit costs on this machine's CPU (``bmvit bench``), as ratios to references measured in the same run.

Machines are shared and noisy, so every time is the median of ``repeats`` runs after one warm-up, and every
measurement runs interleaved with its references (``timing``). Sections (``--only``), in the order they run:

- ``matmul``: ``torch.mm`` of two ``n x n`` fp32 matrices on the configured threads, the reference
  (at the start of the run; the table also gives its range over the run, which shows the load).
- ``torchvision``: torchvision's ``mvit_v2_s`` against our ``mvitv2_s`` loaded with the same weights
  (``remap_torchvision``), outputs compared, times as ours/theirs. Only where torchvision imports
  (a separate environment: bmvit never depends on it). There, ``backbone`` takes ``mvitv2_s`` from this
  comparison instead of timing it twice.
- ``backbone``: forward and forward+backward of ``mvitv2_s`` at 16x224 and ``mvitv2_s_det`` at
  16x256, batch 1; achieved FLOP/s = FLOPs counted by ``bmvit.flops.count_flops`` (x3 for
  forward+backward: the backward pass costs about twice the forward) / time.
- ``matcher``: Hungarian matching and the whole set criterion on a batch of 8 ``bmvit_mvitv2_s``-shaped
  outputs (256 key-frame tokens, 80 classes, 1-5 actors per clip).
- ``step``: a training step of ``bmvit_mvitv2_s`` at batch 1 (forward, criterion, backward, AdamW) and
  the criterion's share of it; then the same steps fed by a 2-worker data loader.
- ``loader``: clips/s of the training data loader on a synthetic dataset, from video files and from
  frame folders, with 0, 1 and 2 workers. With ``data_roots`` (``--data ROOT``, repeatable): on those
  AVA-layout roots instead, with 0 and 1 workers, each against Pillow's full-size decode of the same
  JPEGs (``loader.bench_loader_root``); ``ava_layout.write_ava_layout`` (``scripts/make_ava_layout.py``)
  writes such roots.
- ``evaluator``: the frame-mAP evaluator on 100k detection rows (``evaluator.bench_evaluator``).
- ``predict``: ``Predictor`` key frames/s end to end (decode, preprocess, model, postprocess) on a
  synthetic video, and its time per key frame over one forward pass of the detector.
- ``memory``: peak resident memory of a ``bmvit_mvitv2_s`` training step at batch 1, with and without
  activation checkpointing, each in a fresh process (``ru_maxrss``).

``quick=True`` uses tiny models and sizes (seconds in all; for tests).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bmvit.bench.evaluator import bench_evaluator
from bmvit.bench.loader import bench_loader, bench_loader_root
from bmvit.bench.memory import train_memory_in_subprocess
from bmvit.bench.models import (
    backbone_from_torchvision,
    bench_backbone,
    bench_matcher,
    bench_predict,
    bench_step,
    bench_torchvision,
)
from bmvit.bench.report import table_rows
from bmvit.bench.timing import MatmulReference, bench_matmul, machine_info, num_threads

SECTIONS: tuple[str, ...] = ("matmul", "backbone", "torchvision", "matcher", "step", "loader", "evaluator", "predict",
                             "memory")


@dataclass(frozen=True)
class BenchSizes:
    """What each section runs: the full benchmark or the tiny ``quick`` one."""

    matmul_n: int
    backbones: tuple[tuple[str, tuple[int, int, int]], ...]  # (backbone preset, input T, H, W)
    detector: str  # detector preset of the step, predict and memory sections
    detector_input: tuple[int, int, int]
    loader_clips: int
    loader_input: tuple[int, int]  # (frames, square size) the loader produces
    evaluator_rows: int
    evaluator_keyframes: int
    video_seconds: int  # length of the synthetic videos (predict: one key frame per second)


FULL = BenchSizes(2048, (("mvitv2_s", (16, 224, 224)), ("mvitv2_s_det", (16, 256, 256))), "bmvit_mvitv2_s",
                  (16, 256, 256), 16, (16, 256), 100_000, 5_000, 6)
QUICK = BenchSizes(256, (("mvit_tiny", (8, 64, 64)), ("mvit_tiny_det", (8, 64, 64))), "bmvit_mvit_tiny",
                   (8, 64, 64), 3, (8, 64), 2_000, 100, 4)


@dataclass
class BenchConfig:
    """How ``run_benchmarks`` runs: threads, timed runs per measurement, sizes, sections."""

    threads: int = 2
    repeats: int = 3
    quick: bool = False
    sections: tuple[str, ...] = SECTIONS

    def __post_init__(self) -> None:
        self.sections = tuple(self.sections)
        unknown = sorted(set(self.sections) - set(SECTIONS))
        if unknown:
            raise ValueError(f"unknown benchmark section(s) {unknown}; choose from {', '.join(SECTIONS)}")
        if self.threads < 1 or self.repeats < 1:
            raise ValueError(f"threads and repeats must be >= 1, got {self.threads} and {self.repeats}")

    @property
    def sizes(self) -> BenchSizes:
        """``QUICK`` or ``FULL``."""
        return QUICK if self.quick else FULL


def run_benchmarks(cfg: BenchConfig, log: Callable[[str], None] = lambda _msg: None,
                   data_roots: Iterable[str | os.PathLike] = ()) -> dict[str, Any]:
    """Run the sections of ``cfg`` on ``cfg.threads`` threads; returns the report (``rows`` for the table,
    ``results`` with every number, ``machine``, ``config``, ``elapsed_s`` per section).

    ``data_roots``: AVA-layout roots for the ``loader`` section (``bench_loader_root``) instead of its
    synthetic dataset."""
    data_roots = [os.fspath(r) for r in data_roots]
    sizes = cfg.sizes
    report: dict[str, Any] = {"machine": machine_info(), "config": asdict(cfg), "results": {}, "elapsed_s": {}}
    results = report["results"]
    with num_threads(cfg.threads), tempfile.TemporaryDirectory(prefix="bmvit-bench-") as tmp:
        data_root = None

        def dataset() -> str:
            # Written on first use: only the step, loader and predict sections need it.
            nonlocal data_root
            if data_root is None:
                from bmvit.data.synthetic import write_synthetic_dataset

                log("writing a synthetic dataset")
                write_synthetic_dataset(tmp, seed=0, num_videos=2, num_val_videos=1, seconds=sizes.video_seconds,
                                        frames=True)
                data_root = tmp
            return data_root

        def section(name: str, fn: Callable[[], Any]) -> None:
            if name not in cfg.sections and name != "matmul":  # matmul is every rate's reference
                return
            log(f"running {name}")
            start = time.perf_counter()
            results[name] = fn()
            report["elapsed_s"][name] = time.perf_counter() - start
            log(f"{name} took {report['elapsed_s'][name]:.1f} s")

        reference = MatmulReference(sizes.matmul_n)
        section("matmul", lambda: bench_matmul(reference, cfg.repeats))
        section("torchvision", lambda: bench_torchvision(cfg.repeats, cfg.quick, reference))
        section("backbone", lambda: {
            n: backbone_from_torchvision(n, thw, results.get("torchvision")) or bench_backbone(n, thw, cfg.repeats,
                                                                                                 reference)
            for n, thw in sizes.backbones})
        section("matcher", lambda: bench_matcher(cfg.repeats))
        section("step", lambda: bench_step(sizes.detector, sizes.detector_input, cfg.repeats, reference,
                                           dataset() if "loader" in cfg.sections else None))
        section("loader", lambda: {"roots": [r for root in data_roots for r in bench_loader_root(
            root, *sizes.loader_input, repeats=cfg.repeats)]} if data_roots else bench_loader(
            dataset(), sizes.loader_clips, *sizes.loader_input))
        section("evaluator", lambda: bench_evaluator(num_rows=sizes.evaluator_rows,
                                                     num_keyframes=sizes.evaluator_keyframes, repeats=cfg.repeats))
        section("predict", lambda: bench_predict(sizes.detector, sizes.detector_input,
                                                 Path(dataset()) / "videos" / "syn_train_000.mp4", reference))
        section("memory", lambda: {
            f"checkpointing_{'on' if flag else 'off'}": train_memory_in_subprocess(
                sizes.detector, sizes.detector_input, flag, cfg.threads) for flag in (False, True)})
    report["machine"]["loadavg_end"] = list(os.getloadavg())
    report["rows"] = [asdict(row) for row in table_rows(results)]
    return report


__all__ = ["FULL", "QUICK", "SECTIONS", "BenchConfig", "BenchSizes", "run_benchmarks"]
