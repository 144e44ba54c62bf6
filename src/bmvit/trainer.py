"""The training run: build everything from a ``Config``, loop over epochs, evaluate, checkpoint.

``fit(config)`` is what ``bmvit train`` calls; ``evaluate_model`` is what ``bmvit eval`` and the
end of training call. The per-step work is in ``bmvit.engine``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from bmvit import __version__
from bmvit import distributed as dist_utils
from bmvit.build import (
    create_criterion,
    create_dataset,
    create_model_from_config,
    create_optimizer,
    create_postprocess,
    create_scheduler,
    data_label_map,
    model_kind,
    resolve_data_paths,
)
from bmvit.checkpoint import init_from_detector, load_tensors, load_training_state, save_model, save_training_state
from bmvit.config import Config, ConfigError, DataConfig, EvalConfig, TrainConfig, config_from_dict, save_config
from bmvit.data.ava import BoxRows
from bmvit.data.dataset import collate_fn
from bmvit.engine import StepContext, amp_dtype_for, predict_rows, train_one_epoch, write_ava_csv
from bmvit.models.weights import check_known_file, resolve_weights_path

log = logging.getLogger("bmvit.train")


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
        np_state, py_state = np.random.get_state(), random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed)
            np.random.seed(item_seed)
            random.seed(item_seed)
            try:
                return self.dataset[index]
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
                      "boxes": torch.zeros(0, 4), "labels": torch.zeros(0, len(self.dataset.class_ids)),
                      "proposals_xyxy": torch.zeros(0, 4)}
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


def make_loader(dataset: Dataset, sampler: ShardSampler, batch_size: int, num_workers: int, seed: int,
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


@dataclass
class ClassInfo:
    """The classes a model predicts (trained) and the classes evaluated (the label map)."""

    class_ids: list[int]
    label_map: dict[int, str]

    @property
    def class_names(self) -> list[str]:
        return [self.label_map.get(c, f"class_{c}") for c in self.class_ids]


def read_class_info(data_cfg: DataConfig) -> ClassInfo:
    """Trained classes = every action id in the training annotations (80 on AVA); evaluated = the label map.

    UCF101-24 / JHMDB-21: both are every class of the ACT ground truth (ids ``1..24`` / ``1..21``).
    """
    from bmvit.data.ava import read_annotations, read_label_map

    if data_cfg.format != "ava":
        label_map = data_label_map(data_cfg)
        return ClassInfo(class_ids=sorted(label_map), label_map=label_map)
    paths = resolve_data_paths(data_cfg)
    label_map = read_label_map(paths["label_map"])
    rows = read_annotations(paths["train_csv"], skip_bad=data_cfg.skip_bad)
    class_ids = sorted(int(c) for c in np.unique(rows.action_ids) if c >= 0)
    if not class_ids:
        raise ValueError(f"{paths['train_csv']} holds no action labels")
    return ClassInfo(class_ids=class_ids, label_map=label_map)


class DatasetError(ValueError):
    """The dataset root fails the cheap checks ``bmvit train`` runs at start-up."""


def check_data(data_cfg: DataConfig) -> None:
    """``bmvit data check``'s cheap part (files present and parsing, boxes in range, every annotated
    video's frames or file there): a run on a broken root stops now, with every problem named, not
    hours later at the first clip that needs the missing file."""
    from bmvit.data.check import quick_check

    problems = quick_check(data_cfg)
    if problems:
        shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise DatasetError(f"the dataset at {data_cfg.root!r} cannot be trained on ({len(problems)} problem(s); "
                           f"`bmvit data check {data_cfg.root}` gives the full report):\n  {shown}")


def select_device(name: str) -> torch.device:
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``; asking for CUDA without one is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but this machine has no CUDA device torch can use "
                          f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); use train.device=cpu")
    return torch.device(name)


def model_metadata(model: nn.Module, config: Config, classes: ClassInfo) -> dict[str, Any]:
    """What a model file must carry to be used alone: architecture, classes, input conventions."""
    return {
        "model_config": model.config.to_dict(),
        "model_class": type(model).__name__,
        "class_ids": classes.class_ids,
        "class_names": classes.class_names,
        "label_map": {str(k): v for k, v in classes.label_map.items()},
        "input_size": list(model.input_size),
        "mean": list(config.data.mean),
        "std": list(config.data.std),
        "resize": config.data.resize,
        "sampling_stride": config.data.sampling_stride,
        "fps": config.data.fps,
        "threshold": config.eval.threshold,
        "run_config": config.to_dict(),
        "code_version": __version__,
    }


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def build_eval_loader(model: nn.Module, classes: ClassInfo, data_cfg: DataConfig, eval_cfg: EvalConfig,
                      device: torch.device | None = None) -> DataLoader:
    """The val split's loader, built once per run: this rank's share of the key frames, in order."""
    model_input = tuple(model.input_size)
    dataset = create_dataset(data_cfg, "val", classes.class_ids, model_input, train=False, kind=model_kind(model))
    dataset = EvalItems(dataset, (3, *model_input))
    sampler = ShardSampler(len(dataset), dist_utils.get_rank(), dist_utils.get_world_size(), shuffle=False)
    return make_loader(dataset, sampler, eval_cfg.batch_size, default_num_workers(data_cfg.num_workers), 0, device)


def evaluate_model(
    model: nn.Module,
    classes: ClassInfo,
    data_cfg: DataConfig,
    eval_cfg: EvalConfig,
    out_dir: Path,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    tag: str = "val",
    loader: DataLoader | None = None,
) -> dict[str, Any]:
    """Detections CSV, per-class AP JSON and plot for the val split; returns the result dict on rank 0
    (``{}`` on the others). ``loader``: a ``build_eval_loader`` to reuse (built here when None)."""
    from bmvit.evaluation.frame_map import evaluate_ava_files
    from bmvit.evaluation.plot import plot_per_class_ap

    if loader is None:
        loader = build_eval_loader(model, classes, data_cfg, eval_cfg, device)
    ctx = StepContext(device=device, amp_dtype=amp_dtype, mean=tuple(data_cfg.mean), std=tuple(data_cfg.std))
    rows = predict_rows(
        model,
        create_postprocess(eval_cfg, model_kind(model)),
        loader,
        classes.class_ids,
        set(classes.label_map),
        ctx,
        max_rows_per_keyframe=eval_cfg.max_rows_per_keyframe,
    )
    bad = int(dist_utils.all_reduce_sum(torch.tensor(ctx.bad_clips_seen)).item())
    result: dict[str, Any] = {}
    if dist_utils.is_main_process():
        if bad:
            log.warning("%d val key frame(s) could not be read and have no detections (see the warnings above)", bad)
        paths = resolve_data_paths(data_cfg)
        det_path = out_dir / f"detections_{tag}.csv"
        write_ava_csv(det_path, sorted(rows, key=lambda r: (r[0], r[1], -r[7])))
        if data_cfg.format == "ava":
            res = evaluate_ava_files(
                paths["val_csv"], det_path, paths["label_map"], paths["exclusions"], protocol=eval_cfg.protocol
            )
            result = res.to_json()
        else:
            result = evaluate_act_detections(loader.dataset, det_path, classes.label_map, str(paths["annotations"]))
        if bad:
            result["unreadable_keyframes"] = bad
        (out_dir / f"per_class_ap_{tag}.json").write_text(json.dumps(result, indent=1))
        plot_per_class_ap(result, out_dir / f"per_class_ap_{tag}.png")
    dist_utils.barrier()
    return result


def copy_eval_files(out_dir: Path, from_tag: str, to_tag: str) -> None:
    """Copy the files ``evaluate_model`` wrote under ``from_tag`` (detections CSV, per-class AP JSON
    and plot) to the same names under ``to_tag``; files that are absent are skipped."""
    for name in ("detections_{}.csv", "per_class_ap_{}.json", "per_class_ap_{}.png"):
        source = out_dir / name.format(from_tag)
        if source.is_file():
            shutil.copyfile(source, out_dir / name.format(to_tag))


def groundtruth_rows(dataset, path: str = "<dataset>") -> BoxRows:
    """The ground-truth boxes of a ``KeyFrameDataset`` as evaluation rows: one row per (box, action) of
    ``dataset.keyframes``, ``timestamps`` = key-frame ``timestamp`` (frame number on UCF101-24 / JHMDB-21),
    ``extra`` = person (tube) id, ``lines`` = 1-based key-frame index."""
    video_ids, times, boxes, actions, persons, lines = [], [], [], [], [], []
    for index, k in enumerate(dataset.keyframes, start=1):
        for p, action_ids in enumerate(k.action_ids):
            for action in action_ids:
                video_ids.append(k.video_id)
                times.append(int(k.timestamp))
                boxes.append(np.asarray(k.boxes_xyxy[p], dtype=np.float64))
                actions.append(int(action))
                persons.append(float(k.person_ids[p]) if k.person_ids[p] >= 0 else np.nan)
                lines.append(index)
    return BoxRows(
        path=path,
        video_ids=np.array(video_ids, dtype=str),
        timestamps=np.array(times, dtype=np.int64),
        boxes_xyxy=np.array(boxes, dtype=np.float64).reshape(-1, 4),
        action_ids=np.array(actions, dtype=np.int64),
        extra=np.array(persons, dtype=np.float64),
        lines=np.array(lines, dtype=np.int64),
    )


def evaluate_act_detections(
    dataset, det_path: Path, label_map: dict[int, str], gt_path: str = "<ground truth>"
) -> dict[str, Any]:
    """UCF101-24 / JHMDB-21: frame-mAP@0.5 (ACT's protocol) of a detections CSV against the dataset's ground
    truth, as the result JSON of docs/design.md#contracts, plus ``video_mAP@0.2`` and ``video_mAP@0.5`` (per-frame detections
    linked into tubes, ``bmvit.evaluation.video_map``). Detection rows carry the 1-based frame number."""
    from bmvit.data.ava import read_detections
    from bmvit.evaluation.ucf_jhmdb import evaluate_frame_ap
    from bmvit.evaluation.video_map import evaluate_video_map, groundtruth_tubes, link_tubes

    groundtruth = groundtruth_rows(dataset, path=gt_path)
    detections = read_detections(det_path, check_boxes=False)
    result = evaluate_frame_ap(groundtruth, detections, label_map).to_json()
    video = evaluate_video_map(groundtruth_tubes(groundtruth), link_tubes(detections), label_map)
    for threshold, res in video.items():
        result[f"video_mAP@{threshold:g}"] = float(res.mAP)
        result[f"video_per_class@{threshold:g}"] = res.to_json()["per_class"]
    return result


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def _open_tensorboard(out_dir: Path, enabled: bool):
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional dependency
        log.info("tensorboard is not installed; metrics go to metrics.jsonl only")
        return None
    return SummaryWriter(str(out_dir / "tb"))


def _check_resume_compatible(meta: dict[str, Any], model: nn.Module, path: Path) -> None:
    saved = meta.get("model_config")
    if saved != model.config.to_dict():
        raise ConfigError(
            f"cannot resume from {path}: it was trained with model config {saved}, "
            f"this run builds {model.config.to_dict()}"
        )


def fit(config: Config, resume: bool = False) -> dict[str, Any]:
    """Train and evaluate as ``config`` says; returns the final metrics. Only rank 0 writes files.

    Under torchrun the process group is formed here and destroyed on the way out, errors included.
    """
    for section in (config.train, config.data, config.eval):
        section.validate()  # bad values fail now, not after an epoch
    device = select_device(config.train.device)
    amp_dtype = amp_dtype_for(config.train.amp, device)
    rank, world, local_rank = dist_utils.init_distributed(device.type)
    try:
        config.train.batch_size = per_process_batch(config.train, world)
        if device.type == "cuda":
            device = torch.device("cuda", torch.cuda.current_device())
            torch.backends.cudnn.benchmark = True  # fixed clip shapes: let cuDNN pick its fastest 3D conv once
        return _fit(config, resume, device, amp_dtype, rank, world)
    finally:
        dist_utils.cleanup()


def _fit(config: Config, resume: bool, device: torch.device, amp_dtype: torch.dtype | None, rank: int,
         world: int) -> dict[str, Any]:
    torch.manual_seed(config.train.seed)  # the same initial weights on every rank
    out_dir = Path(config.train.out_dir)
    main = dist_utils.is_main_process()
    check_data(config.data)  # errors about the data come before any building
    classes = read_class_info(config.data)
    model = create_model_from_config(config.model, len(classes.class_ids)).to(device)
    if model.config.num_classes != len(classes.class_ids):
        raise ConfigError(
            f"model.num_classes={model.config.num_classes} but the training data has "
            f"{len(classes.class_ids)} classes {classes.class_ids}"
        )
    if main and getattr(model, "backbone_weights_report", None) is not None:
        print(model.backbone_weights_report, flush=True)
    if config.model.init_weights:
        init_path = resolve_weights_path(config.model.init_weights)
        check_known_file(init_path)
        report = init_from_detector(model, init_path, classes.class_ids)
        if main:
            print(report, flush=True)
    kind = model_kind(model)
    criterion = create_criterion(config.matcher, config.loss, len(classes.class_ids), kind).to(device)
    train_set = SeededItems(
        create_dataset(config.data, "train", classes.class_ids, model.input_size, True, kind), config.train.seed
    )
    batch = config.train.batch_size
    sampler = ShardSampler(len(train_set), rank, world, True, config.train.seed, batch)
    if len(sampler) < batch:
        raise ValueError(f"the training split has {len(train_set)} key frames: fewer than one global batch "
                         f"({world} process(es) x train.batch_size={batch})")
    steps_per_epoch = len(sampler) // batch // config.train.grad_accum
    num_workers = default_num_workers(config.data.num_workers)
    check_shared_memory(num_workers, max(batch, config.eval.batch_size), (3, *model.input_size))
    optimizer = create_optimizer(model, config.optim)
    scheduler = create_scheduler(optimizer, config.optim, steps_per_epoch, config.train.epochs)
    metadata = model_metadata(model, config, classes)
    start_epoch, skip_batches, best_map, history = 0, 0, -1.0, []
    last_path = out_dir / "last.safetensors"
    if resume:
        if not last_path.is_file():
            raise FileNotFoundError(f"--resume: {last_path} does not exist")
        _check_resume_compatible(load_tensors(last_path)[1], model, last_path)
        progress = load_training_state(last_path, model, optimizer, scheduler, None)["progress"]
        start_epoch, skip_batches = _resume_position(progress)
        best_map, history = progress["best_map"], progress["history"]
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, out_dir / "config.yaml")
    train_model = _wrap_for_training(model, config, device, world)
    ctx = StepContext(
        device=device,
        amp_dtype=amp_dtype,
        grad_accum=config.train.grad_accum,
        clip_grad=config.optim.clip_grad,
        log_every=config.train.log_every,
        max_steps=config.train.max_steps,
        deadline=(time.time() + 60 * config.train.max_minutes) if config.train.max_minutes else 0.0,
        last_checkpoint=str(last_path) if last_path.is_file() else "none yet",
        mean=tuple(config.data.mean),
        std=tuple(config.data.std),
        seed=config.train.seed,
        max_bad_clips=config.data.max_bad_clips,
        checkpoint_every_steps=config.train.checkpoint_every_steps,
    )
    writer = _open_tensorboard(out_dir, config.train.tensorboard) if main else None
    run_start = time.time() - (history[-1]["minutes"] * 60 if history else 0.0)
    loader = make_loader(train_set, sampler, batch, num_workers, config.train.seed, device)
    val_loader = build_eval_loader(model, classes, config.data, config.eval, device)
    for epoch in range(start_epoch, config.train.epochs):
        skip = skip_batches if epoch == start_epoch else 0
        sampler.set_epoch(epoch, skip)

        def checkpoint(batches_done: int, epoch: int = epoch) -> None:
            if main:
                progress = {"epoch": epoch, "batches_done": batches_done, "best_map": best_map, "history": history}
                save_training_state(last_path, model, optimizer, scheduler, None, progress, metadata)
            ctx.last_checkpoint = str(last_path)

        ctx.on_checkpoint = checkpoint
        logs = train_one_epoch(train_model, criterion, loader, optimizer, scheduler, epoch, ctx, skip_batches=skip)
        stopped = bool(logs.pop("stopped"))
        record: dict[str, Any] = {"epoch": epoch, **logs, "peak_memory_mb": peak_memory_mb(device)}
        if skip:
            record["resumed_at_batch"] = skip  # the losses above average the batches after it
        last_epoch = epoch == config.train.epochs - 1 or stopped
        if (epoch + 1) % config.train.eval_every == 0 or last_epoch:
            result = evaluate_model(model, classes, config.data, config.eval, out_dir, device, amp_dtype,
                                    loader=val_loader)
            record["mAP"] = dist_utils.broadcast_object(result.get("mAP"))
        record["minutes"] = (time.time() - run_start) / 60
        history.append(record)
        if main:
            _log_epoch(record, out_dir, writer)
            if record.get("mAP") is not None and record["mAP"] > best_map:
                best_map = record["mAP"]
                save_model(out_dir / "best.safetensors", model, {**metadata, "metrics": record})
                copy_eval_files(out_dir, "val", "val_best")
            progress = {"epoch": epoch, "batches_done": 0, "best_map": best_map, "history": history}
            save_training_state(last_path, model, optimizer, scheduler, None, progress, metadata)
        ctx.last_checkpoint = str(last_path)
        dist_utils.barrier()
        if last_epoch:
            break
    final = history[-1] if history else {}
    if main:
        _write_final_model(out_dir, model, metadata, final, history, writer)
    dist_utils.barrier()
    return final


def per_process_batch(train_cfg: TrainConfig, world: int) -> int:
    """``train.batch_size``, or with ``train.global_batch_size`` that batch shared by ``world`` processes and
    ``grad_accum`` micro-steps: a recipe's global batch (and so its learning rate) whatever the GPU count."""
    total = train_cfg.global_batch_size
    if not total:
        return train_cfg.batch_size
    share = world * train_cfg.grad_accum
    if total % share:
        raise ConfigError(f"train.global_batch_size={total} is not divisible by {world} process(es) x "
                          f"train.grad_accum={train_cfg.grad_accum}: choose a multiple of {share}, or set "
                          f"train.batch_size per process with train.global_batch_size=0")
    return total // share


def _resume_position(progress: dict[str, Any]) -> tuple[int, int]:
    """(epoch to start, batches of it already trained) from a checkpoint's progress record."""
    done = int(progress.get("batches_done", 0))
    if done:
        return int(progress["epoch"]), done
    return int(progress["epoch"]) + 1, 0


def _wrap_for_training(model: nn.Module, config: Config, device: torch.device, world: int) -> nn.Module:
    """torch.compile the backbone if asked; DDP across processes.

    DDP without buffer broadcasts (the model has no running statistics to keep in step) and with
    gradients that are views of the all-reduce buckets (no copy between them).
    """
    if config.train.compile:
        model.backbone.compile()
    if world == 1:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        model, device_ids=device_ids, broadcast_buffers=False, gradient_as_bucket_view=True
    )


def _write_final_model(out_dir: Path, model: nn.Module, metadata: dict[str, Any], final: dict[str, Any],
                       history: list[dict[str, Any]], writer) -> None:
    best = out_dir / "best.safetensors"
    final_meta = {**metadata, "metrics": final}
    if best.is_file():
        tensors, best_meta = load_tensors(best)
        model.load_state_dict(tensors)
        final_meta = best_meta
        if best_meta.get("metrics", {}).get("epoch") != final.get("epoch"):
            # The *_val files must describe model.safetensors, as metrics.json does; the last
            # evaluation's are kept beside them.
            copy_eval_files(out_dir, "val", "val_last")
            copy_eval_files(out_dir, "val_best", "val")
    save_model(out_dir / "model.safetensors", model, final_meta)
    summary = {"mAP": final_meta.get("metrics", {}).get("mAP"), "best_epoch": final_meta.get("metrics", {}).get("epoch"),
               "history": history}
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=1))
    if writer is not None:
        writer.close()


def _log_epoch(record: dict[str, Any], out_dir: Path, writer) -> None:
    shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in record.items()}
    print(f"epoch {record['epoch']}: " + ", ".join(f"{k}={v}" for k, v in shown.items() if k != "epoch"), flush=True)
    _append_jsonl(out_dir / "metrics.jsonl", record)
    if writer is not None:
        for key, value in record.items():
            if isinstance(value, (int, float)) and key != "epoch":
                writer.add_scalar(key, value, record["epoch"])


def load_config_from_checkpoint(path: str | Path) -> Config:
    """The run config stored in a checkpoint (for ``bmvit eval`` defaults)."""
    _, meta = load_tensors(path)
    return config_from_dict(meta["run_config"]) if "run_config" in meta else Config()
