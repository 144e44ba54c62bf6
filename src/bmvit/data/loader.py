"""From a dataset to the batches of one process: samplers, item wrappers, the loader.

- ``ShardSampler``: this process's share of the key frames, shuffled per epoch in training and
  resumable mid-epoch.
- ``SeededItems`` / ``EvalItems``: a training item's augmentation seeded by (seed, epoch, index),
  and what stands in for a clip that cannot be read, in training and in evaluation.
- ``create_loader``: one persistent loader per run, pinned batches on CUDA; ``default_num_workers``
  and ``check_shared_memory`` size it for the machine.
"""

from __future__ import annotations

import os
import random
import shutil
from contextlib import contextmanager

import av
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from bmvit import distributed as dist_utils
from bmvit.data.dataset import collate_fn
from bmvit.data.encoded import EncodedClip

CLIP_READ_ERRORS = (OSError, ValueError, IndexError, av.FFmpegError)
"""What reading one clip may raise for a missing, truncated or corrupt frame or video."""


class SeededItems(Dataset):
    """Training items: item ``i`` of epoch ``e`` draws its augmentation from a seed of (seed, e, i).

    The sampler hands over ``(epoch, index)`` pairs (``ShardSampler``), so persistent loader workers,
    which keep their own copy of this object across epochs, still know the epoch. The same clip then
    gets the same augmentation whichever process or worker loads it and whether or not the run was
    resumed, which is what makes a resumed or multi-process run equal an uninterrupted single-process
    one. The caller's RNG state is left untouched.

    An unreadable clip (a missing or corrupt frame) does not stop the run: the next item stands in
    for it, so every batch keeps its size on every rank, and its target lists what was skipped in
    ``bad_clips``; the training loop logs and counts them against ``data.max_bad_clips``.
    """

    def __init__(self, dataset: Dataset, seed: int, max_tries: int = 8) -> None:
        self.dataset, self.seed, self.max_tries = dataset, seed, max_tries

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        skipped: list[str] = []
        for attempt in range(self.max_tries):
            item = (index + attempt) % len(self.dataset)
            try:
                clip, target = self._load(epoch, item)
            except CLIP_READ_ERRORS as err:
                skipped.append(f"item {item}: {err}")
                continue
            return clip, dict(target, bad_clips=skipped) if skipped else target
        raise RuntimeError(f"{self.max_tries} clips in a row could not be read, from item {index} on: {skipped}")

    def _load(self, epoch: int, index: int):
        item_seed = hash((self.seed, epoch, index)) % (2**31)
        with seeded_rngs(item_seed):
            clip, target = self.dataset[index]
        if isinstance(clip, EncodedClip):  # its transform runs where it is decoded, under the same seed
            clip.seed = item_seed
        return clip, target


@contextmanager
def seeded_rngs(seed: int):
    """Python's, NumPy's and torch's (CPU) global random streams seeded with ``seed`` inside, and as they
    were again after: one item's augmentation draws, the same wherever and whenever it is drawn."""
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


class EvalItems(Dataset):
    """Evaluation items: an unreadable clip becomes an all-zero clip of ``clip_shape`` whose target
    names it in ``bad_clips``, so the batch keeps its shape and evaluation gives that key frame no
    detections (it counts as missed, as it would in any evaluator) instead of stopping."""

    def __init__(self, dataset: Dataset, clip_shape: tuple[int, ...]) -> None:
        self.dataset, self.clip_shape = dataset, tuple(clip_shape)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):
        # keyframes, class_ids, ...: evaluation reads the wrapped dataset's records.
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int):
        try:
            return self.dataset[index]
        except CLIP_READ_ERRORS as err:
            keyframe = self.dataset.keyframes[index]
            target = {"video_id": keyframe.video_id, "timestamp": int(keyframe.timestamp), "bad_clips": [str(err)],
                      "boxes": torch.zeros(0, 4), "labels": torch.zeros(0, len(self.dataset.class_ids))}
            return torch.zeros(self.clip_shape, dtype=torch.uint8), target


class ShardSampler(Sampler):
    """This process's share of a (shuffled per epoch) index order, optionally skipping a prefix.

    Shuffled training: a permutation of (seed, epoch), cut to whole global batches (as drop_last),
    then interleaved across processes (rank r takes positions r, r + world, ...), so a step of N
    processes with batch b sees the same clips as one process with batch N*b; it yields
    ``(epoch, index)`` pairs for ``SeededItems``. Evaluation (``shuffle=False``): the plain order
    split without padding, as indices.
    """

    def __init__(self, size: int, rank: int, world: int, shuffle: bool, seed: int = 0, batch_size: int = 1) -> None:
        self.size, self.rank, self.world, self.shuffle = size, rank, world, shuffle
        self.seed, self.batch_size, self.epoch, self.skip = seed, batch_size, 0, 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip = epoch, skip_batches

    def _indices(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.rank, self.size, self.world))
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=g).tolist()
        per_step = self.batch_size * self.world
        steps = len(order) // per_step  # whole global batches only, as drop_last
        order = order[: steps * per_step]
        mine = order[self.rank :: self.world]
        return mine[self.skip * self.batch_size :]

    def __iter__(self):
        if not self.shuffle:
            return iter(self._indices())
        return iter([(self.epoch, i) for i in self._indices()])

    def __len__(self) -> int:
        return len(self._indices())


PREFETCH_FACTOR = 2
"""Batches each loader worker keeps ready: enough to hide a slow clip, bounded so /dev/shm holds them."""


def default_num_workers(setting: int) -> int:
    """``data.num_workers``, with -1 resolved to the CPU cores this process may use, shared by the
    processes of this node (torchrun's LOCAL_WORLD_SIZE), at least one."""
    if setting >= 0:
        return setting
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // dist_utils.local_world_size())


def check_shared_memory(num_workers: int, batch_size: int, clip_shape: tuple[int, ...], shm: str = "/dev/shm") -> None:
    """Fail now, with the numbers, when /dev/shm cannot hold the batches the loader workers prefetch.

    Worker processes pass batches through shared memory; when it runs out, a worker dies of a bus
    error somewhere in an epoch. Counted for every process of this node, uint8 clips, with 2x slack
    for the batches in flight to the device.
    """
    if num_workers == 0 or not os.path.isdir(shm):
        return
    per_batch = batch_size * int(np.prod(clip_shape))
    need = 2 * num_workers * PREFETCH_FACTOR * per_batch * dist_utils.local_world_size()
    free = shutil.disk_usage(shm).free
    if free < need:
        raise RuntimeError(
            f"{shm} has {free / 2**20:.0f} MiB free, but {dist_utils.local_world_size()} process(es) x "
            f"{num_workers} loader workers x {PREFETCH_FACTOR} prefetched batches need about {need / 2**20:.0f} MiB: "
            f"give the container more shared memory (docker run --shm-size=...) or lower data.num_workers"
        )


def create_loader(dataset: Dataset, sampler: ShardSampler, batch_size: int, num_workers: int, seed: int,
                device: torch.device | None = None) -> DataLoader:
    """One loader for the whole run: workers persist across epochs (the sampler carries the epoch),
    batches are pinned for asynchronous copies when the model runs on CUDA."""
    # A generator of our own keeps the loader from drawing worker seeds from the global RNG.
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        drop_last=sampler.shuffle,
        pin_memory=device is not None and device.type == "cuda",
        persistent_workers=num_workers > 0,
        prefetch_factor=PREFETCH_FACTOR if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
    )


__all__ = [
    "CLIP_READ_ERRORS",
    "EvalItems",
    "PREFETCH_FACTOR",
    "SeededItems",
    "ShardSampler",
    "check_shared_memory",
    "create_loader",
    "default_num_workers",
    "seeded_rngs",
]
