"""What bmvit costs on this machine (``bmvit bench``), as ratios to references measured in the same run.

Machines are shared and noisy, so an absolute time means little: every time is the median of
``repeats`` runs after one warm-up, and every measurement runs interleaved with its references
(A, B, reference, A, B, reference, ...) so that all see the same load: competing implementations,
and this machine's fp32 matmul rate, of which every achieved FLOP/s is given as a fraction.
Sections (``--only``):

- ``matmul``: ``torch.mm`` of two ``n x n`` fp32 matrices on the configured threads, the reference
  (at the start of the run; the table also gives its range over the run, which shows the load).
- ``backbone``: forward and forward+backward of ``mvitv2_s`` at 16x224 and ``bmvit_mvitv2_s`` at
  16x256, batch 1; achieved FLOP/s = FLOPs counted by ``bmvit.flops.count_flops`` (x3 for
  forward+backward: the backward pass costs about twice the forward) / time.
- ``torchvision``: torchvision's ``mvit_v2_s`` against our ``mvitv2_s`` loaded with the same weights
  (``remap_torchvision``), outputs compared, times as ours/theirs. Only where torchvision imports
  (a separate environment: bmvit never depends on it). There, ``backbone`` takes ``mvitv2_s`` from this
  comparison instead of timing it twice.
- ``matcher``: Hungarian matching and the whole set criterion on a batch of 8 ``bmvit_mvitv2_s``-shaped
  outputs (256 key-frame tokens, 80 classes, 1-5 actors per clip).
- ``step``: a training step of ``bmvit_mvitv2_s`` at batch 1 (forward, criterion, backward, AdamW) and
  the criterion's share of it; then the same steps fed by a 2-worker data loader.
- ``loader``: clips/s of the training data loader on a synthetic dataset, from video files and from
  frame folders, with 0, 1 and 2 workers. With ``data_roots`` (``--data ROOT``, repeatable): on those
  AVA-layout roots instead, with 0 and 1 workers, each against Pillow's full-size decode of the same
  JPEGs (``bench_loader_root``); ``write_ava_layout`` (``scripts/make_ava_layout.py``) writes such roots.
- ``evaluator``: the frame-mAP evaluator on 100k detection rows (``evaluation.bench.bench_evaluator``).
- ``predict``: ``Predictor`` key frames/s end to end (decode, preprocess, model, postprocess) on a
  synthetic video, and its time per key frame over one forward pass of the detector.
- ``memory``: peak resident memory of a ``bmvit_mvitv2_s`` training step at batch 1, with and without
  activation checkpointing, each in a fresh process (``ru_maxrss``).

``quick=True`` uses tiny models and sizes (seconds in all; for tests).
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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


FULL = BenchSizes(2048, (("mvitv2_s", (16, 224, 224)), ("bmvit_mvitv2_s", (16, 256, 256))), "bmvit_mvitv2_s",
                  (16, 256, 256), 16, (16, 256), 100_000, 5_000, 6)
QUICK = BenchSizes(256, (("mvit_tiny", (8, 64, 64)), ("bmvit_mvit_tiny", (8, 64, 64))), "bmvit_mvit_tiny",
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
        return QUICK if self.quick else FULL


@dataclass
class Row:
    """One line of the table: ``value unit``, and ``ratio`` of it to the reference named in ``ratio_of``."""

    section: str
    name: str
    value: float | None
    unit: str
    ratio: float | None = None
    ratio_of: str = ""
    note: str = ""


@dataclass
class Timing:
    """Wall-clock (and process CPU) seconds of each timed run; the warm-up is not in them."""

    runs_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.runs_s)

    def to_dict(self) -> dict[str, Any]:
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
        return 2 * self.n**3 * self.calls / timing.median_s / 1e9


def time_against_matmul(fns: dict[str, Callable[[], Any]], reference: MatmulReference, repeats: int,
                        warmup: int = 1) -> dict[str, dict[str, Any]]:
    """``time_interleaved`` with the matmul reference as one more competitor; each result (``Timing.to_dict``)
    also holds ``matmul_gflops``, the reference rate measured between its runs."""
    timings = time_interleaved({**fns, "matmul": reference}, repeats, warmup)
    rate = reference.gflops(timings.pop("matmul"))
    return {name: {**timing.to_dict(), "matmul_gflops": rate} for name, timing in timings.items()}


@contextmanager
def num_threads(threads: int):
    """Run the body with ``torch.set_num_threads(threads)``, restoring the previous setting after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------------
# the sections


def bench_matmul(reference: MatmulReference, repeats: int) -> dict[str, Any]:
    """The reference rate alone, at the start of the run: GFLOP/s (``2 n^3`` FLOPs per product)."""
    timing = time_runs(reference, max(repeats, 5))
    return {"n": reference.n, "gflops": reference.gflops(timing), **timing.to_dict()}


def _forward(model: nn.Module, x: Tensor) -> None:
    model.eval()
    with torch.inference_mode():
        model(x)


def _forward_backward(model: nn.Module, x: Tensor) -> None:
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(x)
    (out if isinstance(out, Tensor) else out["pred_boxes"]).float().sum().backward()


def bench_backbone(name: str, input_size: tuple[int, int, int], repeats: int,
                   reference: MatmulReference) -> dict[str, Any]:
    """Forward and forward+backward of backbone preset ``name`` at batch 1, fp32."""
    from bmvit.flops import count_flops
    from bmvit.models import create_backbone

    torch.manual_seed(0)
    model = create_backbone(name, input_size=input_size)
    report = count_flops(model.eval(), (1, 3, *input_size))
    x = torch.randn(1, 3, *input_size)
    forward = time_against_matmul({"ours": lambda: _forward(model, x)}, reference, repeats)["ours"]
    train = time_against_matmul({"ours": lambda: _forward_backward(model, x)}, reference, repeats)["ours"]
    return {"name": name, "input": list(input_size), "gmacs": report.gmacs, "params_m": report.params_m,
            "forward": forward, "forward_backward": train}


def _backbone_from_torchvision(name: str, input_size: tuple[int, int, int],
                               comparison: dict[str, Any] | None) -> dict[str, Any] | None:
    """Our side of the torchvision comparison as a ``bench_backbone`` result, when it timed this model."""
    if comparison is None or name != "mvitv2_s" or tuple(comparison["input"]) != tuple(input_size):
        return None
    return {"name": name, "input": list(input_size), "gmacs": comparison["gmacs"],
            "forward": comparison["forward"]["ours"], "forward_backward": comparison["forward_backward"]["ours"],
            "timed_in": "torchvision"}


def bench_torchvision(repeats: int, quick: bool, reference: MatmulReference) -> dict[str, Any] | None:
    """torchvision's ``mvit_v2_s`` and our ``mvitv2_s`` with the same (perturbed random) weights, interleaved.

    Returns None when torchvision does not import. ``max_abs_diff`` compares the final-norm tokens
    (class token dropped); the two implementations agree to float rounding.
    """
    try:
        # Optional and never a dependency: torchvision lives in a separate environment (docs/design.md#evaluation).
        tv_mvit = importlib.import_module("torchvision.models.video.mvit")
    except ImportError:
        return None
    from bmvit.flops import count_flops
    from bmvit.models import create_backbone
    from bmvit.models.backbones.mvit import remap_torchvision

    torch.manual_seed(0)
    theirs, ours, input_size = _torchvision_pair(tv_mvit, create_backbone, quick)
    with torch.no_grad():
        for p in theirs.parameters():  # torchvision's zero biases and unit norms would hide a swapped weight
            p.add_(torch.randn_like(p) * 0.02)
    state = {k: v for k, v in remap_torchvision(theirs.state_dict(), ours).items() if not k.startswith("head.")}
    ours.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, *input_size)
    captured: dict[str, Tensor] = {}
    hook = theirs.norm.register_forward_hook(lambda _m, _i, out: captured.__setitem__("tokens", out))
    _forward(theirs, x)
    hook.remove()
    with torch.inference_mode():
        diff = (ours.eval()(x).flatten(1, 3) - captured["tokens"][:, 1:]).abs().max().item()
    forward = time_against_matmul({"ours": lambda: _forward(ours, x), "torchvision": lambda: _forward(theirs, x)},
                                  reference, repeats)
    train = time_against_matmul({"ours": lambda: _forward_backward(ours, x),
                                 "torchvision": lambda: _forward_backward(theirs, x)}, reference, repeats)
    return {"models": ["torchvision mvit_v2_s", "ours mvitv2_s"] if not quick else ["torchvision tiny MViT", "ours"],
            "input": list(input_size), "torchvision_version": importlib.import_module("torchvision").__version__,
            "gmacs": count_flops(ours.eval(), (1, 3, *input_size)).gmacs,
            "gmacs_torchvision": count_flops(theirs.eval(), (1, 3, *input_size)).gmacs, "max_abs_diff": diff,
            "forward": forward, "forward_backward": train}


def _torchvision_pair(tv_mvit, create_backbone, quick: bool) -> tuple[nn.Module, nn.Module, tuple[int, int, int]]:
    """(torchvision model, our backbone with the same architecture, input size)."""
    if not quick:
        return tv_mvit.mvit_v2_s(), create_backbone("mvitv2_s"), (16, 224, 224)
    # Five blocks in four stages at 8x40x40 (as tests/fixtures/make_torchvision_mvit_fixture.py).
    heads, dims_in, dims_out = [1, 2, 2, 4, 8], [8, 8, 16, 16, 32], [8, 16, 16, 32, 64]
    stride_q = [[1, 1, 1], [1, 2, 2], [1, 1, 1], [1, 2, 2], [1, 2, 2]]
    stride_kv = [[1, 4, 4], [1, 2, 2], [1, 2, 2], [1, 1, 1], [1, 1, 1]]
    blocks = [tv_mvit.MSBlockConfig(num_heads=h, input_channels=ci, output_channels=co, kernel_q=[3, 3, 3],
                                    kernel_kv=[3, 3, 3], stride_q=sq, stride_kv=skv)
              for h, ci, co, sq, skv in zip(heads, dims_in, dims_out, stride_q, stride_kv)]
    theirs = tv_mvit.MViT(spatial_size=(40, 40), temporal_size=8, block_setting=blocks, residual_pool=True,
                          residual_with_cls_embed=False, rel_pos_embed=True, proj_after_attn=True, num_classes=5)
    ours = create_backbone("mvit_tiny", input_size=(8, 40, 40), depths=(1, 2, 1, 1), embed_dim=8, num_heads=1,
                           adaptive_kv_stride=(1, 4, 4))
    return theirs, ours, (8, 40, 40)


def random_targets(batch: int, num_classes: int, generator: torch.Generator) -> list[dict[str, Tensor]]:
    """``batch`` targets with 1-5 actors each: ``boxes [M, 4]`` normalised cxcywh, ``labels [M, C]`` multi-hot."""
    targets = []
    for _ in range(batch):
        num = int(torch.randint(1, 6, (1,), generator=generator))
        centre = 0.2 + 0.6 * torch.rand(num, 2, generator=generator)
        size = 0.1 + 0.3 * torch.rand(num, 2, generator=generator)
        labels = torch.zeros(num, num_classes)
        for row in range(num):
            labels[row, torch.randperm(num_classes, generator=generator)[: 1 + row % 3]] = 1.0
        targets.append({"boxes": torch.cat([centre, size], dim=1), "labels": labels})
    return targets


def _criterion(num_classes: int) -> nn.Module:
    from bmvit.build import create_criterion
    from bmvit.config import LossConfig, MatcherConfig

    return create_criterion(MatcherConfig(), LossConfig(), num_classes)


def bench_matcher(repeats: int, batch: int = 8, num_tokens: int = 256, num_classes: int = 80) -> dict[str, Any]:
    """Matching alone, and the criterion (matching + losses, forward and backward to the outputs), per batch."""
    generator = torch.Generator().manual_seed(0)
    outputs = {"pred_boxes": (0.25 + 0.5 * torch.rand(batch, num_tokens, 4, generator=generator)).requires_grad_(),
               "pred_actor": torch.randn(batch, num_tokens, 2, generator=generator).requires_grad_(),
               "pred_actions": torch.randn(batch, num_tokens, num_classes, generator=generator).requires_grad_()}
    targets = random_targets(batch, num_classes, generator)
    criterion = _criterion(num_classes)
    match = time_runs(lambda: criterion.match(outputs, targets), repeats * 3)
    full = time_runs(lambda: criterion(outputs, targets)["loss"].backward(), repeats * 3)
    return {"batch": batch, "num_tokens": num_tokens, "num_classes": num_classes,
            "num_actors": sum(len(t["boxes"]) for t in targets), "match": match.to_dict(), "criterion": full.to_dict()}


def create_detector(name: str, input_size: tuple[int, int, int], checkpointing: bool = False) -> nn.Module:
    """Detector preset ``name`` (80 classes) at ``input_size``, optionally with activation checkpointing."""
    from bmvit.models import create_model

    overrides: dict[str, Any] = {"input_size": tuple(input_size)}
    if checkpointing:
        overrides["use_checkpoint"] = True
    return create_model(name, num_classes=80, backbone_overrides=overrides)


def bench_step(name: str, input_size: tuple[int, int, int], repeats: int, reference: MatmulReference,
               dataset_root: str | os.PathLike | None = None) -> dict[str, Any]:
    """Training steps at batch 1: forward, criterion, backward, AdamW step; the criterion is timed inside.

    With ``dataset_root`` (a synthetic dataset), steps on clips from a 2-worker ``DataLoader`` run
    interleaved with the steps on a fixed clip: equal times mean that loading is hidden behind compute.
    """
    from bmvit.build import create_optimizer
    from bmvit.config import OptimConfig
    from bmvit.flops import count_flops

    torch.manual_seed(0)
    model = create_detector(name, input_size)
    gmacs = count_flops(model, (1, 3, *input_size)).gmacs
    model.train()
    criterion = _criterion(80)
    optimizer = create_optimizer(model, OptimConfig())
    criterion_s: list[float] = []

    def step(clips: Tensor, targets: list[dict[str, Tensor]]) -> None:
        outputs = model(clips)
        start = time.perf_counter()
        losses = criterion(outputs, targets)
        criterion_s.append(time.perf_counter() - start)
        losses["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    clips = torch.randn(1, 3, *input_size)
    targets = random_targets(1, 80, torch.Generator().manual_seed(0))
    fns = {"step": lambda: step(clips, targets)}
    if dataset_root is not None:
        batches = iter(_loader(dataset_root, "video", 2, input_size[0], input_size[1], repeats + 1))

        def loaded_step() -> None:
            clips, targets = next(batches)
            # The synthetic dataset has fewer classes than the model: its labels fill the first columns.
            step(clips, [{"boxes": t["boxes"], "labels": F.pad(t["labels"], (0, 80 - t["labels"].shape[1]))}
                         for t in targets])

        fns["step_with_loader"] = loaded_step
    timings = time_against_matmul(fns, reference, repeats)
    return {"name": name, "input": list(input_size), "gmacs": gmacs, **timings,
            "criterion_median_s": statistics.median(criterion_s[len(fns):])}


def write_ava_layout(root: str | os.PathLike, *, num_videos: int = 2, num_frames: int = 400,
                     size: tuple[int, int] = (1280, 720), quality: int = 90, seed: int = 0,
                     frames: bool = True, videos: bool = False) -> dict[str, Any]:
    """Write an AVA-layout root for loader benchmarks: ``frames/<vid>/<vid>_%06d.jpg`` (30 fps, JPEG at
    ``quality``), optionally ``videos/<vid>.mp4`` (H.264 of the same frames), the train annotation CSV
    with one key frame per second (AVA seconds 902 .. 900 + seconds - 2, two people each), the label
    map and a PySlowFast frame list.

    ``size`` is (width, height). Frames are a smooth background with moving rectangles and ellipses
    plus pixel noise (sigma ~3), which JPEG-compresses like camera footage (~0.5-1 bit/pixel at
    quality 90); flat colours would decode unrealistically fast. Returns what was written.
    """
    import csv

    import numpy as np
    from PIL import Image, ImageDraw

    width, height = size
    seconds = num_frames // 30
    if seconds < 4:
        raise ValueError(f"write_ava_layout: need at least 120 frames (4 s) for a key frame, got {num_frames}")
    out = Path(root)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    (out / "frame_lists").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    noise_bank = [rng.normal(0, 3, (height, width, 3)).astype(np.int16) for _ in range(5)]
    rows, ids = [], [f"bench{v:03d}" for v in range(num_videos)]
    for v, vid in enumerate(ids):
        phase = rng.uniform(0, 6.28, 3)
        background = np.stack([96 + 60 * np.sin(xx / (97 + 13 * c) + yy / (131 - 11 * c) + phase[c])
                               for c in range(3)], -1)
        shapes = [(rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.04, 0.2) * height,
                   rng.uniform(-4, 4), rng.uniform(-3, 3), tuple(int(c) for c in rng.integers(0, 256, 3)),
                   bool(rng.integers(2))) for _ in range(8)]
        folder = out / "frames" / vid
        if frames:
            folder.mkdir(parents=True, exist_ok=True)
        encoder = _H264Writer(out / "videos" / f"{vid}.mp4", width, height) if videos else None
        for k in range(num_frames):
            img = Image.fromarray(background.astype(np.uint8))
            draw = ImageDraw.Draw(img)
            for x, y, r, dx, dy, colour, ellipse in shapes:
                cx, cy = (x + dx * k) % width, (y + dy * k) % height
                (draw.ellipse if ellipse else draw.rectangle)((cx - r, cy - r * 1.6, cx + r, cy + r * 1.6), fill=colour)
            pixels = np.clip(np.asarray(img, dtype=np.int16) + noise_bank[k % len(noise_bank)], 0, 255)
            frame = pixels.astype(np.uint8)
            if frames:
                Image.fromarray(frame).save(folder / f"{vid}_{k + 1:06d}.jpg", quality=quality)
            if encoder is not None:
                encoder.write(frame)
        if encoder is not None:
            encoder.close()
        for second in range(902, 900 + seconds - 1):
            for person in range(2):
                x1 = 0.1 + 0.4 * person
                rows.append((vid, f"{second:04d}", f"{x1:.3f}", "0.200", f"{x1 + 0.3:.3f}", "0.900", 1 + person,
                             person))
    with open(out / "annotations" / "ava_train_v2.2.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    (out / "annotations" / "ava_action_list_v2.2_for_activitynet_2019.pbtxt").write_text(
        'item {\n  name: "a"\n  id: 1\n}\nitem {\n  name: "b"\n  id: 2\n}\n')
    if frames:
        with open(out / "frame_lists" / "train.csv", "w") as f:
            f.write("original_vido_id video_id frame_id path labels\n")
            for v, vid in enumerate(ids):
                f.writelines(f'{vid} {v} {k} {vid}/{vid}_{k + 1:06d}.jpg ""\n' for k in range(num_frames))
    return {"root": str(out), "videos": ids, "num_frames": num_frames, "size": [width, height],
            "keyframes": len(rows) // 2}


class _H264Writer:
    """H.264 (yuv420p, CRF 23, a key frame every 2 s like many web videos) for ``write_ava_layout``."""

    def __init__(self, path: Path, width: int, height: int) -> None:
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream("libx264", rate=30, options={
            "crf": "23", "preset": "veryfast", "x264-params": "keyint=60:min-keyint=60:scenecut=0:threads=1"})
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.count = 0

    def write(self, rgb) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = self.count
        self.count += 1
        self.container.mux(self.stream.encode(frame))

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))
        self.container.close()


def _loader(root: str | os.PathLike, source: str, workers: int, num_frames: int, size: int, num_clips: int):
    """A training ``DataLoader`` (batch 1, augmentation on) over ``num_clips`` items, cycling the dataset."""
    from torch.utils.data import DataLoader

    from bmvit.data.dataset import AVADataset, collate_fn

    dataset = AVADataset(root, "train", source=source, num_frames=num_frames, input_size=size)
    order = [i % len(dataset) for i in range(num_clips)]
    return DataLoader(dataset, batch_size=1, num_workers=workers, collate_fn=collate_fn, sampler=order)


def bench_loader(root: str | os.PathLike, num_clips: int, num_frames: int, size: int,
                 workers: Iterable[int] = (0, 1, 2)) -> dict[str, Any]:
    """Clips/s of the loader per source and worker count, from the first clip received (worker start-up
    excluded) to the last."""
    result: dict[str, Any] = {"num_clips": num_clips, "clip": [num_frames, size, size]}
    for source in ("video", "frames"):
        for num_workers in workers:
            batches = iter(_loader(root, source, num_workers, num_frames, size, num_clips + 1))
            next(batches)
            start = time.perf_counter()
            count = sum(1 for _ in batches)
            result[f"{source}_workers{num_workers}"] = count / (time.perf_counter() - start)
    return result


def _read_clip(dataset, index: int, min_size: tuple[int, int] | None):
    """What ``KeyFrameDataset.read_clip`` reads for key frame ``index``, with ``min_size`` passed to the source."""
    k = dataset.keyframes[index]
    src = dataset.source(k.video_id)
    if k.frame_index is not None:
        return src.read_clip(k.frame_index, dataset.num_frames, dataset.stride, min_size=min_size)
    return src.read_clip_at_time(k.timestamp - dataset.time_offset, dataset.num_frames, dataset.stride, dataset.fps,
                                 min_size=min_size)


def _clip_jpegs(root: Path, dataset, index: int) -> list[str] | None:
    """The frame files of key frame ``index``'s clip in ``root/frames`` (None without frame folders)."""
    from bmvit.data.video import FrameFolderSource, clip_indices

    k = dataset.keyframes[index]
    folder = root / "frames" / k.video_id
    if not folder.is_dir():
        return None
    src = FrameFolderSource(folder, k.video_id, fps=30.0)
    indices = (src.clip_indices_at_time(k.timestamp - dataset.time_offset, dataset.num_frames, dataset.stride,
                                        dataset.fps) if k.frame_index is None else
               clip_indices(k.frame_index, dataset.num_frames, dataset.stride, src.num_frames))
    return [src.frame_path(int(i)) for i in indices]


def bench_loader_root(root: str | os.PathLike, num_frames: int = 16, size: int = 256, repeats: int = 3,
                      max_clips: int = 32, workers: Iterable[int] = (0, 1), seed: int = 0) -> list[dict[str, Any]]:
    """Training-loader clips/s on an AVA-layout ``root`` (``bmvit bench --only loader --data ROOT``): one result
    per source found, frame folders (``ROOT/frames``) and/or video files (``ROOT/videos``).

    Each result holds clips/s of, measured interleaved (one pass of each per round, ``repeats`` rounds,
    median), over the same ``max_clips`` training key frames in a seeded random order (as a shuffled epoch):

    - ``workers0``, ``workers1``, ...: a ``DataLoader`` (batch 1, training transforms, uint8 output) with
      that many workers (0: in the calling process; a worker's start-up is not timed);
    - ``read_full`` / ``read_min_size``: the source's ``read_clip`` alone (no transforms) at the stored size
      and with ``min_size=(size, size)``;
    - ``pillow_full_decode``: the reference, decoding the clip's JPEGs of ``ROOT/frames`` at full size with
      Pillow (``np.asarray(Image.open(p).convert("RGB"))``), None without frame folders.

    For one core, run the benchmark under ``taskset -c 0`` with ``--threads 1``.
    """
    import inspect
    import random

    import numpy as np
    from PIL import Image
    from torch.utils.data import DataLoader

    from bmvit.data.dataset import AVADataset, collate_fn

    root = Path(root)
    sources = [s for s, d in (("frames", "frames"), ("video", "videos")) if (root / d).is_dir()]
    if not sources:
        raise FileNotFoundError(f"bench: {root} has neither frames/ nor videos/ (an AVA-layout root is needed)")
    workers = tuple(workers)
    out = []
    for source in sources:
        extra = {"output": "uint8"} if "output" in inspect.signature(AVADataset).parameters else {}
        dataset = AVADataset(root, "train", source=source, num_frames=num_frames, input_size=size, **extra)
        order = list(range(len(dataset)))
        random.Random(seed).shuffle(order)
        order = order[:max_clips]
        jpegs = [_clip_jpegs(root, dataset, i) for i in order]
        min_size = (size, size)

        def pillow(jpegs=jpegs) -> None:
            for paths in jpegs:
                for p in paths:
                    np.asarray(Image.open(p).convert("RGB"))

        def read(min_size, dataset=dataset, order=order) -> None:
            for i in order:
                _read_clip(dataset, i, min_size)

        def loader(num_workers: int, dataset=dataset, order=order) -> float:
            batches = iter(DataLoader(dataset, batch_size=1, num_workers=num_workers, collate_fn=collate_fn,
                                      sampler=[order[-1], *order]))
            next(batches)  # the worker's start-up and first clip are not timed
            start = time.perf_counter()
            for _ in batches:
                pass
            return time.perf_counter() - start

        fns: dict[str, Callable[[], Any]] = {}
        if all(j is not None for j in jpegs):
            fns["pillow_full_decode"] = pillow
        fns["read_full"] = lambda read=read: read(None)
        fns["read_min_size"] = lambda read=read, m=min_size: read(m)
        for w in workers:
            fns[f"workers{w}"] = lambda w=w, loader=loader: loader(w)
        _read_clip(dataset, order[0], None)  # warm-up: open the sources, import the decoders
        _read_clip(dataset, order[0], min_size)
        runs: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(repeats):
            for name, fn in fns.items():
                start = time.perf_counter()
                measured = fn()
                runs[name].append(measured if isinstance(measured, float) else time.perf_counter() - start)
        k = dataset.keyframes[order[0]]
        stored = dataset.source(k.video_id).size
        decoded = _read_clip(dataset, order[0], min_size).shape[1:3]
        result = {"root": str(root), "source": source, "clip": [num_frames, size, size], "num_clips": len(order),
                  "frame_size": list(stored), "decoded_size_at_min_size": list(decoded),
                  "pillow_full_decode": None, "runs_s": runs}
        for name, times in runs.items():
            result[name] = len(order) / statistics.median(times)
        out.append(result)
    return out


def _loader_root_rows(results: list[dict[str, Any]]) -> list[Row]:
    rows = []
    for r in results:
        h, w = r["frame_size"]
        where = f"{r['source']} {w}x{h} ({Path(r['root']).name})"
        ref = r.get("pillow_full_decode")

        def ratio(rate: float) -> tuple[float | None, str]:
            return (ref / rate, "Pillow's full decode time") if ref else (None, "")

        for key in sorted(k for k in r if k.startswith("workers")):
            n = key[len("workers"):]
            clips = f"{r['num_clips']} key frames, clips {r['clip'][0]}x{r['clip'][1]}"
            rows.append(Row("loader", f"{where}: training clips, {n} worker{'s' if n != '1' else ''}", r[key],
                            "clips/s", *ratio(r[key]), clips))
        dh, dw = r["decoded_size_at_min_size"]
        rows.append(Row("loader", f"{where}: read_clip at stored size", r["read_full"], "clips/s",
                        *ratio(r["read_full"]), "source alone, no transforms"))
        rows.append(Row("loader", f"{where}: read_clip, min_size {r['clip'][1]}", r["read_min_size"], "clips/s",
                        *ratio(r["read_min_size"]), f"decoded at {dw}x{dh}"))
        if ref:
            rows.append(Row("loader", f"{where}: Pillow full decode of the same JPEGs", ref, "clips/s",
                            note="reference: np.asarray(Image.open(p).convert('RGB'))"))
    return rows


def bench_predict(name: str, input_size: tuple[int, int, int], video: str | os.PathLike,
                  reference: MatmulReference) -> dict[str, Any]:
    """``Predictor.predict`` on ``video`` at one key frame per second, batch 1, interleaved with one
    forward pass of the same detector and the matmul reference (after a warm-up forward)."""
    from bmvit.inference.predictor import Predictor

    torch.manual_seed(0)
    predictor = Predictor(create_detector(name, input_size), device="cpu", batch_size=1, on_warning=lambda _m: None)
    clip = torch.randn(1, 3, *input_size)
    predictor.forward_clips(clip)
    keyframes: list[int] = []
    timings = time_against_matmul({"predict": lambda: keyframes.append(len(predictor.predict(video, fps=1.0))),
                                   "forward": lambda: predictor.forward_clips(clip)}, reference, 1, warmup=0)
    seconds = timings["predict"]["median_s"]
    return {"name": name, "input": list(input_size), "keyframes": keyframes[0], "seconds": seconds,
            "keyframes_per_s": keyframes[0] / seconds, "forward_s": timings["forward"]["median_s"]}


def measure_train_memory(name: str, input_size: list[int], checkpointing: bool, threads: int) -> dict[str, Any]:
    """One training step at batch 1 in this process, and the resident memory it takes.

    ``peak_rss_mb`` is the process's peak (``ru_maxrss``); ``step_peak_mb`` the peak during the step
    alone (Linux: the high-water mark is reset before the step; elsewhere the process peak), to set
    against ``rss_before_step_mb`` (model, optimizer and clip built). Meant for a fresh process
    (``train_memory_in_subprocess``).
    """
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_detector(name, tuple(input_size), checkpointing).train()
    criterion = _criterion(80)
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


def train_memory_in_subprocess(name: str, input_size: tuple[int, int, int], checkpointing: bool,
                               threads: int) -> dict[str, Any]:
    """``measure_train_memory`` in a fresh Python process, so that nothing measured before counts."""
    code = ("import json, sys; from bmvit.bench import measure_train_memory as m; "
            "print(json.dumps(m(*json.loads(sys.argv[1]))))")
    args = json.dumps([name, list(input_size), checkpointing, threads])
    done = subprocess.run([sys.executable, "-c", code, args], check=False, capture_output=True, text=True,
                          timeout=1200)
    if done.returncode != 0:
        raise RuntimeError(f"memory measurement of {name} (checkpointing={checkpointing}) failed:\n"
                           f"{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# the run and its table


def machine_info() -> dict[str, Any]:
    """CPU model, core count, load, library versions and the date (UTC)."""
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
            n: _backbone_from_torchvision(n, thw, results.get("torchvision")) or bench_backbone(n, thw, cfg.repeats,
                                                                                                  reference)
            for n, thw in sizes.backbones})
        section("matcher", lambda: bench_matcher(cfg.repeats))
        section("step", lambda: bench_step(sizes.detector, sizes.detector_input, cfg.repeats, reference,
                                           dataset() if "loader" in cfg.sections else None))
        section("loader", lambda: {"roots": [r for root in data_roots for r in bench_loader_root(
            root, *sizes.loader_input, repeats=cfg.repeats)]} if data_roots else bench_loader(
            dataset(), sizes.loader_clips, *sizes.loader_input))
        section("evaluator", lambda: _bench_evaluator(sizes, cfg.repeats))
        section("predict", lambda: bench_predict(sizes.detector, sizes.detector_input,
                                                 Path(dataset()) / "videos" / "syn_train_000.mp4", reference))
        section("memory", lambda: {
            f"checkpointing_{'on' if flag else 'off'}": train_memory_in_subprocess(
                sizes.detector, sizes.detector_input, flag, cfg.threads) for flag in (False, True)})
    report["machine"]["loadavg_end"] = list(os.getloadavg())
    report["rows"] = [asdict(row) for row in table_rows(results)]
    return report


def _bench_evaluator(sizes: BenchSizes, repeats: int) -> dict[str, Any]:
    from bmvit.evaluation.bench import bench_evaluator

    return bench_evaluator(num_rows=sizes.evaluator_rows, num_keyframes=sizes.evaluator_keyframes, repeats=repeats)


def table_rows(results: dict[str, Any]) -> list[Row]:
    """The report's table: one ``Row`` per measurement, with its ratio to a reference measured with it."""
    r = results["matmul"]
    during = _matmul_rates(results)
    rows = [Row("matmul", f"fp32 mm {r['n']}^2 at the start", r["gflops"], "GFLOP/s",
                note=f"between the timed runs: {min(during):.0f}-{max(during):.0f} GFLOP/s" if during else "")]
    for name, r in results.get("backbone", {}).items():
        rows += _model_rows(name, r)
    rows += _torchvision_rows(results.get("torchvision", False))
    if "matcher" in results:
        r = results["matcher"]
        what = f"batch {r['batch']}, {r['num_tokens']} tokens, {r['num_actors']} actors"
        rows.append(Row("matcher", f"Hungarian matching, {what}", 1e3 * r["match"]["median_s"], "ms"))
        rows.append(Row("matcher", "criterion fwd+bwd (matching + losses)", 1e3 * r["criterion"]["median_s"], "ms"))
    rows += _step_rows(results)
    step_s = results.get("step", {}).get("step", {}).get("median_s")
    rows += _loader_root_rows(results.get("loader", {}).get("roots", []))
    for key, rate in results.get("loader", {}).items():
        if key.startswith(("video_", "frames_")):
            source, workers = key.split("_workers")
            clip = results["loader"]["clip"]
            rows.append(Row("loader", f"{source} {clip[0]}x{clip[1]}, {workers} workers", rate, "clips/s",
                            rate * step_s if step_s else None, "step's clips/s" if step_s else ""))
    if "evaluator" in results:
        r = results["evaluator"]
        rows.append(Row("evaluator", f"frame-mAP, {r['num_rows']} rows (read + evaluate)", r["total_median_s"], "s",
                        note=f"fastest {r['total_s']:.2f} s; the official evaluator takes ~16 s here (docs/design.md#evaluation)"))
    if "predict" in results:
        r = results["predict"]
        rows.append(Row("predict", f"{r['name']} {_size(r['input'])} end to end, batch 1", r["keyframes_per_s"],
                        "key frames/s", r["seconds"] / r["keyframes"] / r["forward_s"], "detector forward",
                        f"{r['keyframes']} key frames"))
    return rows + _memory_rows(results)


def _matmul_rates(results: Any) -> list[float]:
    """Every ``matmul_gflops`` in the results: the reference rate as the load changed during the run."""
    if isinstance(results, dict):
        own = [results["matmul_gflops"]] if "matmul_gflops" in results else []
        return own + [rate for value in results.values() for rate in _matmul_rates(value)]
    return []


def _size(thw: list[int]) -> str:
    return "x".join(str(v) for v in thw[:2])


def _rate_row(section: str, name: str, timing: dict[str, Any], flops: float, **extra: Any) -> Row:
    """``timing``'s median seconds, and its FLOP/s as a fraction of the matmul rate measured with it."""
    achieved = flops / timing["median_s"] / 1e9
    note = f"{achieved:.0f} GFLOP/s of {timing['matmul_gflops']:.0f}" + extra.pop("note", "")
    return Row(section, name, timing["median_s"], "s", achieved / timing["matmul_gflops"], "matmul rate", note)


def _model_rows(name: str, r: dict[str, Any]) -> list[Row]:
    label = f"{name} {_size(r['input'])}"
    note = "; timed in the torchvision comparison" if r.get("timed_in") else ""
    return [_rate_row("backbone", f"{label} forward", r["forward"], 2e9 * r["gmacs"],
                      note=f" ({r['gmacs']:.1f} GMACs){note}"),
            _rate_row("backbone", f"{label} fwd+bwd", r["forward_backward"], 6e9 * r["gmacs"], note=note)]


def _torchvision_rows(r: dict[str, Any] | None | bool) -> list[Row]:
    if r is False:  # section not run
        return []
    if r is None:
        return [Row("torchvision", "mvit_v2_s comparison", None, "", note="skipped: torchvision does not import here")]
    rows = [Row("torchvision", "max |ours - torchvision| of the output tokens", r["max_abs_diff"], "",
                note=f"same weights, torchvision {r['torchvision_version']}")]
    label_theirs, label_ours = r["models"]
    for key, what, mult in (("forward", "forward", 2e9), ("forward_backward", "fwd+bwd", 6e9)):
        flops = mult * r["gmacs"]
        theirs, ours = r[key]["torchvision"], r[key]["ours"]
        rows.append(_rate_row("torchvision", f"{label_theirs} {_size(r['input'])} {what}", theirs, flops))
        pairwise = statistics.median(a / b for a, b in zip(ours["runs_s"], theirs["runs_s"]))
        cpu = ours["cpu_median_s"] / theirs["cpu_median_s"]
        rows.append(Row("torchvision", f"{label_ours} {_size(r['input'])} {what}", ours["median_s"], "s",
                        ours["median_s"] / theirs["median_s"], "torchvision's time",
                        f"pairwise median {pairwise:.2f}, CPU time {cpu:.2f} x torchvision's; target <= 0.8"))
    return rows


def _step_rows(results: dict[str, Any]) -> list[Row]:
    if "step" not in results:
        return []
    r = results["step"]
    step_s = r["step"]["median_s"]
    rows = [_rate_row("step", f"{r['name']} {_size(r['input'])} train step, batch 1", r["step"], 6e9 * r["gmacs"]),
            Row("step", "criterion inside the step", 1e3 * r["criterion_median_s"], "ms",
                r["criterion_median_s"] / step_s, "step time", "target < 0.05")]
    if "matcher" in results:
        batch = results["matcher"]["batch"]
        criterion_s = results["matcher"]["criterion"]["median_s"]
        rows.append(Row("step", f"criterion at batch {batch} / {batch} steps at batch 1", 1e3 * criterion_s, "ms",
                        criterion_s / (batch * step_s), "step time", "target < 0.05"))
    if "step_with_loader" in r:
        loaded = r["step_with_loader"]["median_s"]
        rows.append(Row("step", "train step fed by a 2-worker loader", loaded, "s", loaded / step_s,
                        "step on a fixed clip", "interleaved; 1.0 = loading hidden behind compute"))
    return rows


def _memory_rows(results: dict[str, Any]) -> list[Row]:
    if "memory" not in results:
        return []
    r = results["memory"]
    off, on = r["checkpointing_off"], r["checkpointing_on"]
    increase_off = off["step_peak_mb"] - off["rss_before_step_mb"]
    rows = []
    for what, m in (("without", off), ("with", on)):
        increase = m["step_peak_mb"] - m["rss_before_step_mb"]
        rows.append(Row("memory", f"{m['name']} {_size(m['input'])} step {what} checkpointing, peak RSS",
                        m["step_peak_mb"], "MB", increase / increase_off if increase_off > 0 else None,
                        "step's increase without checkpointing",
                        f"{m['rss_before_step_mb']:.0f} MB before the step, +{increase:.0f} MB"))
    return rows


def format_table(rows: list[Row | dict[str, Any]]) -> str:
    """Aligned text table: section, measurement, value and unit, ratio and its reference, note."""
    rows = [Row(**r) if isinstance(r, dict) else r for r in rows]
    lines = []
    for r in rows:
        value = "-" if r.value is None else f"{r.value:.4g}"
        ratio = "" if r.ratio is None else f"{r.ratio:.3g} x {r.ratio_of}"
        lines.append((r.section, r.name, f"{value} {r.unit}".strip(), ratio, r.note))
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    header = ("section", "measurement", "value", "ratio", "note")
    widths = [max(w, len(h)) for w, h in zip(widths, header)]
    out = []
    for line in [header, *lines]:
        out.append("  ".join(cell.ljust(w) for cell, w in zip(line[:4], widths)) + "  " + line[4])
    out.insert(1, "-" * len(out[0]))
    return "\n".join(o.rstrip() for o in out)


# ---------------------------------------------------------------------------------------------------------
# the paper's model on an accelerator: ``bmvit bench --device cuda``


@dataclass(frozen=True)
class DeviceSizes:
    """What ``run_device_benchmarks`` runs: the detector, (variant, batch) training runs, inference batches."""

    detector: str
    input_size: tuple[int, int, int]
    train_runs: tuple[tuple[str, int], ...]  # variant: plain | checkpointing | compile
    infer_batches: tuple[int, ...]
    matmul_n: int


DEVICE_FULL = DeviceSizes("bmvit_mvitv2_s", (16, 256, 256),
                          tuple((v, b) for v in ("plain", "checkpointing", "compile") for b in (8, 16, 32)), (1, 16),
                          8192)
DEVICE_QUICK = DeviceSizes("bmvit_mvitv2_s", (16, 256, 256),
                           (("plain", 8), ("plain", 16), ("checkpointing", 16), ("compile", 16)), (1, 16), 8192)


class DeviceMatmulReference:
    """``torch.mm`` of two ``n x n`` matrices on ``device``, in the dtype the model trains in there (bf16 on
    CUDA, fp32 on a CPU): the rate every model-FLOP-utilisation (MFU) figure is a fraction of. Measured,
    not a data sheet's peak: the same chip under its clocks, power and driver of the day."""

    def __init__(self, n: int, device: torch.device) -> None:
        self.n, self.device = n, device
        self.dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        g = torch.Generator(device=device).manual_seed(0)
        self.a = torch.randn(n, n, device=device, dtype=self.dtype, generator=g)
        self.b = torch.randn(n, n, device=device, dtype=self.dtype, generator=g)

    def __call__(self) -> None:
        torch.mm(self.a, self.b)

    def tflops(self, seconds: float) -> float:
        return 2 * self.n**3 / seconds / 1e12


def time_on_device(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 2,
                   inner: int = 1) -> Timing:
    """Seconds per call of ``fn``: ``repeats`` timings of ``inner`` calls each after ``warmup`` untimed calls
    (cuDNN's autotuning, compilation, the allocator's first blocks). On CUDA the time is between two
    events recorded on the stream and read after synchronising, so queued work is not missed; on a CPU
    it is the wall clock."""
    for _ in range(warmup):
        fn()
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    timing = Timing()
    for _ in range(repeats):
        cpu0 = time.process_time()
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1000
        else:
            wall0 = time.perf_counter()
            for _ in range(inner):
                fn()
            seconds = time.perf_counter() - wall0
        timing.runs_s.append(seconds / inner)
        timing.cpu_s.append((time.process_time() - cpu0) / inner)
    return timing


def bench_device_matmul(reference: DeviceMatmulReference, repeats: int) -> dict[str, Any]:
    timing = time_on_device(reference, reference.device, repeats, warmup=3, inner=10)
    return {"n": reference.n, "dtype": str(reference.dtype).removeprefix("torch."), **timing.to_dict(),
            "tflops": reference.tflops(timing.median_s)}


def _uint8_clips(batch: int, input_size: tuple[int, int, int], device: torch.device) -> Tensor:
    clips = torch.randint(0, 256, (batch, 3, *input_size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return clips.pin_memory() if device.type == "cuda" else clips


def _bf16_on(device: torch.device):
    """bf16 autocast on CUDA, as ``train.amp: auto`` and ``bmvit predict --amp auto`` use; fp32 elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def _forward_gflops(name: str, input_size: tuple[int, int, int]) -> float:
    from bmvit.flops import count_flops

    return 2 * count_flops(create_detector(name, input_size), (1, 3, *input_size)).gmacs


def bench_device_train(name: str, input_size: tuple[int, int, int], runs: Iterable[tuple[str, int]], repeats: int,
                       matmul_tflops: float, device: torch.device) -> dict[str, Any]:
    """Training steps as ``bmvit train`` runs them on ``device``: a pinned uint8 batch copied without
    blocking and normalised there, the forward under bf16 autocast (CUDA), the criterion with its
    Hungarian matching, the backward and AdamW (fused on CUDA), for each (variant, batch) of ``runs``.

    Variants: ``plain``; ``checkpointing`` (activation checkpointing per block); ``compile``
    (``torch.compile`` of the backbone). Clips/s = batch / step time; MFU = 3 x the forward's FLOPs
    (the backward costs about twice the forward) x batch / step time / the matmul reference's rate;
    peak memory from the allocator (CUDA). A run that runs out of memory is recorded as such.
    """
    from bmvit.build import create_optimizer
    from bmvit.config import OptimConfig
    from bmvit.data.transforms import normalize_clips

    gflops = _forward_gflops(name, input_size)
    criterion = _criterion(80).to(device)
    out: dict[str, Any] = {"name": name, "input": list(input_size), "forward_gflops_per_clip": gflops, "runs": []}
    for variant in dict.fromkeys(v for v, _ in runs):
        torch.manual_seed(0)
        model = create_detector(name, input_size, checkpointing=variant == "checkpointing").to(device).train()
        if variant == "compile":
            model.backbone.compile()
        optimizer = create_optimizer(model, OptimConfig())
        for batch in [b for v, b in runs if v == variant]:
            clips = _uint8_clips(batch, input_size, device)
            targets = [{k: v.to(device) for k, v in t.items()}
                       for t in random_targets(batch, 80, torch.Generator().manual_seed(batch))]

            def step() -> None:
                x = normalize_clips(clips.to(device, non_blocking=True), (0.45,) * 3, (0.225,) * 3)
                with _bf16_on(device):
                    outputs = model(x)
                criterion(outputs, targets)["loss"].backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            row: dict[str, Any] = {"variant": variant, "batch": batch}
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            try:
                timing = time_on_device(step, device, repeats, warmup=3 if variant == "compile" else 2)
            except torch.OutOfMemoryError:
                optimizer.zero_grad(set_to_none=True)
                out["runs"].append({**row, "error": "out of memory"})
                continue
            seconds = timing.median_s
            row.update(timing.to_dict(), clips_per_s=batch / seconds,
                       mfu=3 * gflops * batch / seconds / 1e3 / matmul_tflops)
            if device.type == "cuda":
                row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            out["runs"].append(row)
        del model, optimizer
    return out


@torch.inference_mode()
def bench_device_infer(name: str, input_size: tuple[int, int, int], batches: Iterable[int], repeats: int,
                       matmul_tflops: float, device: torch.device) -> dict[str, Any]:
    """Key frames/s of the detector as ``bmvit predict`` runs it on ``device``: pinned uint8 clips
    normalised there, the forward under bf16 autocast (CUDA), the outputs copied to the host once per
    batch and post-processed there; at each batch size."""
    from bmvit.data.transforms import normalize_clips
    from bmvit.postprocess import PostProcess, outputs_to_host

    gflops = _forward_gflops(name, input_size)
    model = create_detector(name, input_size).to(device).eval()
    postprocess = PostProcess(0.3)
    out: dict[str, Any] = {"name": name, "input": list(input_size), "runs": []}
    for batch in batches:
        clips = _uint8_clips(batch, input_size, device)

        def forward() -> None:
            x = normalize_clips(clips.to(device, non_blocking=True), (0.45,) * 3, (0.225,) * 3)
            with _bf16_on(device):
                outputs = model(x)
            postprocess(outputs_to_host(outputs))

        timing = time_on_device(forward, device, repeats)
        seconds = timing.median_s
        out["runs"].append({"batch": batch, **timing.to_dict(), "keyframes_per_s": batch / seconds,
                            "mfu": gflops * batch / seconds / 1e3 / matmul_tflops})
    return out


def run_device_benchmarks(device: torch.device, repeats: int, quick: bool,
                          log: Callable[[str], None] = lambda _msg: None) -> dict[str, Any]:
    """The accelerator report: the matmul reference, training runs and inference runs of the paper's
    detector (``DEVICE_QUICK`` or ``DEVICE_FULL``); ``rows`` for the table as in ``run_benchmarks``."""
    sizes = DEVICE_QUICK if quick else DEVICE_FULL
    report: dict[str, Any] = {"machine": machine_info(), "config": {"device": str(device), "repeats": repeats,
                                                                    "quick": quick, "threads": torch.get_num_threads()},
                              "results": {}, "elapsed_s": {}}
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as bmvit train sets it
    results = report["results"]
    for name, fn in (
        ("device_matmul", lambda: bench_device_matmul(DeviceMatmulReference(sizes.matmul_n, device), repeats)),
        ("device_train", lambda: bench_device_train(sizes.detector, sizes.input_size, sizes.train_runs, repeats,
                                                    results["device_matmul"]["tflops"], device)),
        ("device_infer", lambda: bench_device_infer(sizes.detector, sizes.input_size, sizes.infer_batches, repeats,
                                                    results["device_matmul"]["tflops"], device)),
    ):
        log(f"running {name}")
        start = time.perf_counter()
        results[name] = fn()
        report["elapsed_s"][name] = time.perf_counter() - start
    report["rows"] = [asdict(row) for row in device_table_rows(results)]
    return report


def device_table_rows(results: dict[str, Any]) -> list[Row]:
    """Rows of the accelerator report: rates with their MFU as the ratio to the matmul reference."""
    m = results["device_matmul"]
    rows = [Row("matmul", f"{m['dtype']} mm {m['n']}^2", m["tflops"], "TFLOP/s", note="the MFU reference")]
    train = results["device_train"]
    for r in train["runs"]:
        what = f"{train['name']} {_size(train['input'])} train step, batch {r['batch']}, {r['variant']}"
        if "error" in r:
            rows.append(Row("train", what, None, "clips/s", note=r["error"]))
            continue
        memory = f"peak {r['peak_memory_gib']:.1f} GiB" if "peak_memory_gib" in r else ""
        rows.append(Row("train", what, r["clips_per_s"], "clips/s", r["mfu"], "MFU of the matmul rate", memory))
    infer = results["device_infer"]
    for r in infer["runs"]:
        what = f"{infer['name']} {_size(infer['input'])} inference, batch {r['batch']}"
        rows.append(Row("infer", what, r["keyframes_per_s"], "key frames/s", r["mfu"], "MFU of the matmul rate"))
    return rows


def format_machine(report: dict[str, Any]) -> str:
    """One paragraph: date, CPU, cores, threads, load at start and end, versions."""
    m, c = report["machine"], report["config"]
    load = ", ".join(f"{v:.2f}" for v in m["loadavg"])
    load_end = ", ".join(f"{v:.2f}" for v in m.get("loadavg_end", []))
    return (f"{m['date_utc']}; {m['cpu_model']}, {m['nproc']} cores, {c['threads']} threads; load average "
            f"{load} at start, {load_end} at end; torch {m['torch']}, torchvision {m['torchvision'] or 'absent'}; "
            f"GPU: {m['gpu'] or 'none'}; median of {c['repeats']} runs after a warm-up"
            f"{' (quick sizes)' if c['quick'] else ''}")


__all__ = ["FULL", "QUICK", "SECTIONS", "BenchConfig", "BenchSizes", "MatmulReference", "Row", "Timing",
           "bench_backbone",
           "bench_loader", "bench_loader_root", "bench_matcher", "bench_matmul", "bench_predict", "bench_step",
           "bench_torchvision",
           "format_machine", "format_table", "machine_info", "measure_train_memory", "random_targets",
           "run_benchmarks", "table_rows", "time_against_matmul", "time_interleaved", "time_runs",
           "train_memory_in_subprocess", "write_ava_layout", "DEVICE_FULL", "DEVICE_QUICK", "DeviceMatmulReference",
           "bench_device_infer", "bench_device_matmul", "bench_device_train", "device_table_rows",
           "run_device_benchmarks", "time_on_device"]
