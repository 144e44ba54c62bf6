"""The ``loader`` section of ``bmvit bench``: clips/s of the training data loader.

``bench_loader`` runs on the synthetic dataset (video files and frame folders, 0-2 workers);
``bench_loader_root`` on real AVA-layout roots (``--data ROOT``; ``ava_layout.write_ava_layout`` writes
such roots), each against Pillow's full-size decode of the same JPEGs.
"""

from __future__ import annotations

import inspect
import os
import random
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader


def training_loader(root: str | os.PathLike, source: str, workers: int, num_frames: int, size: int,
                    num_clips: int) -> DataLoader:
    """Returns a training ``DataLoader`` (batch 1, augmentation on) over ``num_clips`` items of the AVA-format
    dataset at ``root``, cycling the dataset; ``source`` is ``"video"`` or ``"frames"``."""
    from bmvit.data.dataset import AVADataset, collate_fn

    dataset = AVADataset(root, "train", source=source, num_frames=num_frames, input_size=size)
    order = [i % len(dataset) for i in range(num_clips)]
    return DataLoader(dataset, batch_size=1, num_workers=workers, collate_fn=collate_fn, sampler=order)


def bench_loader(root: str | os.PathLike, num_clips: int, num_frames: int, size: int,
                 workers: Iterable[int] = (0, 1, 2)) -> dict[str, Any]:
    """Clips/s of the loader per source and worker count, from the first clip received (worker start-up
    excluded) to the last.

    Returns:
        ``num_clips``, ``clip`` ([frames, size, size]) and ``<source>_workers<n>`` (clips/s) for each
        source (``video``, ``frames``) and worker count.
    """
    result: dict[str, Any] = {"num_clips": num_clips, "clip": [num_frames, size, size]}
    for source in ("video", "frames"):
        for num_workers in workers:
            batches = iter(training_loader(root, source, num_workers, num_frames, size, num_clips + 1))
            next(batches)
            start = time.perf_counter()
            count = sum(1 for _ in batches)
            result[f"{source}_workers{num_workers}"] = count / (time.perf_counter() - start)
    return result


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

    It also holds ``root``, ``source``, ``clip``, ``num_clips``, ``frame_size`` (stored H, W),
    ``decoded_size_at_min_size`` and ``runs_s`` (seconds of each pass). For one core, run the benchmark
    under ``taskset -c 0`` with ``--threads 1``.
    """
    from PIL import Image

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


__all__ = ["bench_loader", "bench_loader_root", "training_loader"]
