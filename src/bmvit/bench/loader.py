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
    - ``read_encoded`` (frame folders only): the clip's JPEG files read and checked but not decoded
      (``KeyFrameDataset.read_encoded``), what a worker does when the GPU decodes (``data.decode=device``);
    - ``pillow_full_decode``: the reference, decoding the clip's JPEGs of ``ROOT/frames`` at full size with
      Pillow (``np.asarray(Image.open(p).convert("RGB"))``), None without frame folders.

    It also holds ``root``, ``source``, ``clip``, ``num_clips``, ``frame_size`` (stored H, W),
    ``decoded_size_at_min_size`` and ``runs_s`` (seconds of each pass). For one core, run the benchmark
    under ``taskset -c 0`` with ``--threads 1``.
    """
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
                _pillow_full_decode(paths)

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
        if source == "frames":  # a worker's share of data.decode=device: the files, read and checked, undecoded
            fns["read_encoded"] = lambda dataset=dataset, order=order: [dataset.read_encoded(i) for i in order]
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
    src = dataset.source(dataset.keyframes[index].video_id)
    return src.read_frames(dataset.frame_indices(index), min_size=min_size)


def _pillow_full_decode(paths: Iterable[str]) -> None:
    """The reference of the loader benchmarks: each JPEG decoded at full size by Pillow, on this core."""
    from PIL import Image

    for p in paths:
        np.asarray(Image.open(p).convert("RGB"))


def _clip_jpegs(root: Path, dataset, index: int) -> list[str] | None:
    """The frame files of key frame ``index``'s clip in ``root/frames`` (None without frame folders)."""
    from bmvit.data.video import FrameFolderSource

    k = dataset.keyframes[index]
    folder = root / "frames" / k.video_id
    if not folder.is_dir():
        return None
    src = FrameFolderSource(folder, k.video_id, fps=30.0)
    return [src.frame_path(int(i)) for i in dataset.frame_indices(index)]


def bench_device_decoding(root: str | os.PathLike, device, *, workers: Iterable[int] = (2, 8), batch_size: int = 8,
                          batches: int = 24, repeats: int = 3, num_frames: int = 16, size: int = 256, seed: int = 0,
                          decoder=None) -> dict[str, Any]:
    """Training batches/s delivered onto ``device`` from the JPEG frames of an AVA-layout ``root``, decoded in the
    loader workers against decoded on the device (``data.decode``), interleaved, median of ``repeats`` rounds
    (``bmvit bench --device cuda --data ROOT``).

    Each rate is ``device_decode.loader_rate``: clips/s over ``batches`` batches of ``batch_size`` training
    clips (augmented, uint8) after the first, each on the device and synchronised. Measured with each worker
    count in ``workers``: ``workers<n>`` (decoding in the workers) and ``device<n>`` (workers read the files,
    the device decodes them). Also in the same run: ``decoder_only``, the device decoder alone on the files of
    one batch (read beforehand), its clips/s ceiling; and ``pillow_full_decode``, one core decoding the same
    JPEGs at full size with Pillow (the reference of ``bench_loader_root``). ``decoder``: a
    ``device_decode.JpegDecoder`` for ``device`` (default nvJPEG's; tests pass PyAV's on the CPU).
    """
    import torch

    from bmvit.data.dataset import AVADataset, collate_fn
    from bmvit.data.device_decode import DeviceDecodedBatches, encoded_items, loader_rate, nvjpeg_decoder
    from bmvit.data.loader import SeededItems

    device = torch.device(device)
    if decoder is None:
        decoder, why = nvjpeg_decoder(device)
        if decoder is None:
            raise RuntimeError(f"bench: the device cannot decode JPEG frames: {why}")
    root = Path(root)
    dataset = AVADataset(root, "train", source="frames", num_frames=num_frames, input_size=size, train=True,
                         output="uint8")
    items = SeededItems(dataset, seed)
    encoded = encoded_items(items)
    order = list(range(len(dataset)))
    random.Random(seed).shuffle(order)
    keys = [(0, order[i % len(order)]) for i in range((batches + 1) * batch_size)]  # cycles a small root

    def make(source, num_workers: int):
        loader = DataLoader(source, batch_size=batch_size, sampler=keys, num_workers=num_workers,
                            collate_fn=collate_fn, pin_memory=device.type == "cuda")
        if source is encoded:
            return DeviceDecodedBatches(loader, dataset.apply_transform, decoder, device)
        return loader

    files = [f for i in range(batch_size) for f in encoded[keys[i]][0].files()]
    jpegs = [p for i in range(batch_size) for p in _clip_jpegs(root, dataset, keys[i][1])]

    def decoder_only() -> float:
        start = time.perf_counter()
        decoder(files)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return batch_size / (time.perf_counter() - start)

    def pillow() -> float:
        start = time.perf_counter()
        _pillow_full_decode(jpegs)
        return batch_size / (time.perf_counter() - start)

    fns: dict[str, Callable[[], float]] = {"decoder_only": decoder_only, "pillow_full_decode": pillow}
    for n in workers:
        fns[f"workers{n}"] = lambda n=n: loader_rate(make(items, n), batches, device)
        fns[f"device{n}"] = lambda n=n: loader_rate(make(encoded, n), batches, device)
    decoder_only()  # warm-up: the decoder's first call sets up its state
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            runs[name].append(fn())
    stored = dataset.source(dataset.keyframes[0].video_id).size
    result: dict[str, Any] = {"root": str(root), "device": str(device), "clip": [num_frames, size, size],
                              "batch_size": batch_size, "batches": batches, "frame_size": list(stored), "runs": runs}
    result.update({name: statistics.median(rates) for name, rates in runs.items()})
    return result


__all__ = ["bench_device_decoding", "bench_loader", "bench_loader_root", "training_loader"]
