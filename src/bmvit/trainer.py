"""The training run: build everything from a ``Config``, loop over epochs, evaluate, checkpoint.

``fit(config)`` is what ``bmvit train`` calls; ``evaluate_model`` is what ``bmvit eval`` and the
end of training call. The per-step work is in ``bmvit.engine``.
"""

from __future__ import annotations

import json
import logging
import random
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from bmvit.config import Config, ConfigError, DataConfig, EvalConfig, config_from_dict, save_config
from bmvit.data.ava import BoxRows
from bmvit.data.dataset import collate_fn
from bmvit.engine import StepContext, predict_rows, train_one_epoch, write_ava_csv
from bmvit.models.weights import check_known_file, resolve_weights_path

log = logging.getLogger("bmvit.train")


class SeededItems(Dataset):
    """Wraps a dataset so that item ``i`` of epoch ``e`` draws its augmentation from a seed of (seed, e, i).

    The same clip then gets the same augmentation whichever process or worker loads it and
    whether or not the run was resumed, which is what makes a resumed or multi-process run equal
    an uninterrupted single-process one. The caller's RNG state is left untouched.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item_seed = hash((self.seed, self.epoch, index)) % (2**31)
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


class ShardSampler(Sampler[int]):
    """This process's share of a (shuffled per epoch) index order, optionally skipping a prefix.

    Shuffled training: a permutation of (seed, epoch), padded by wrap-around so every process gets
    the same number of whole batches, then interleaved across processes (rank r takes positions
    r, r + world, ...), so a step of N processes with batch b sees the same clips as one process
    with batch N*b. Evaluation (``shuffle=False``): the plain order split without padding.
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
        return iter(self._indices())

    def __len__(self) -> int:
        return len(self._indices())


def make_loader(dataset: Dataset, sampler: ShardSampler, batch_size: int, num_workers: int, seed: int) -> DataLoader:
    # A generator of our own keeps the loader from drawing worker seeds from the global RNG.
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        drop_last=sampler.shuffle,
        pin_memory=torch.cuda.is_available(),
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


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but no CUDA device is available")
    return torch.device(name)


def amp_dtype_for(setting: str, device: torch.device) -> torch.dtype | None:
    if setting == "off" or (setting == "auto" and device.type != "cuda"):
        return None
    if setting in ("auto", "bf16"):
        return torch.bfloat16
    raise ConfigError(f"train.amp must be auto, bf16 or off, got {setting!r}")


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


def evaluate_model(
    model: nn.Module,
    classes: ClassInfo,
    data_cfg: DataConfig,
    eval_cfg: EvalConfig,
    out_dir: Path,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    tag: str = "val",
) -> dict[str, Any]:
    """Detections CSV, per-class AP JSON and plot for the val split; returns the result dict (rank 0)."""
    from bmvit.evaluation.frame_map import evaluate_ava_files
    from bmvit.evaluation.plot import plot_per_class_ap

    model_input = tuple(model.input_size)
    dataset = create_dataset(data_cfg, "val", classes.class_ids, model_input, train=False, kind=model_kind(model))
    sampler = ShardSampler(len(dataset), dist_utils.get_rank(), dist_utils.get_world_size(), shuffle=False)
    loader = make_loader(dataset, sampler, eval_cfg.batch_size, data_cfg.num_workers, seed=0)
    ctx = StepContext(device=device, amp_dtype=amp_dtype)
    rows = predict_rows(
        model,
        create_postprocess(eval_cfg, model_kind(model)),
        loader,
        classes.class_ids,
        set(classes.label_map),
        ctx,
        max_rows_per_keyframe=eval_cfg.max_rows_per_keyframe,
    )
    result: dict[str, Any] = {}
    if dist_utils.is_main_process():
        paths = resolve_data_paths(data_cfg)
        det_path = out_dir / f"detections_{tag}.csv"
        write_ava_csv(det_path, sorted(rows, key=lambda r: (r[0], r[1], -r[7])))
        if data_cfg.format == "ava":
            res = evaluate_ava_files(
                paths["val_csv"], det_path, paths["label_map"], paths["exclusions"], protocol=eval_cfg.protocol
            )
            result = res.to_json()
        else:
            result = evaluate_act_detections(dataset, det_path, classes.label_map, str(paths["annotations"]))
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
    truth, as the DESIGN.md result JSON, plus ``video_mAP@0.2`` and ``video_mAP@0.5`` (per-frame detections
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
    """Train and evaluate as ``config`` says; returns the final metrics. Only rank 0 writes files."""
    device = select_device(config.train.device)
    rank, world, _ = dist_utils.init_distributed(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    torch.manual_seed(config.train.seed)
    out_dir = Path(config.train.out_dir)
    main = dist_utils.is_main_process()
    config.eval.validate()  # a bad post-processing value fails now, not after training
    classes = read_class_info(config.data)  # errors about the data come before any building
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
    sampler = ShardSampler(len(train_set), rank, world, True, config.train.seed, config.train.batch_size)
    if len(sampler) < config.train.batch_size:
        raise ValueError(f"the training split has {len(train_set)} key frames: fewer than one global batch")
    steps_per_epoch = len(sampler) // config.train.batch_size // config.train.grad_accum
    optimizer = create_optimizer(model, config.optim)
    scheduler = create_scheduler(optimizer, config.optim, steps_per_epoch, config.train.epochs)
    metadata = model_metadata(model, config, classes)
    start_epoch, best_map, history = 0, -1.0, []
    last_path = out_dir / "last.safetensors"
    if resume:
        if not last_path.is_file():
            raise FileNotFoundError(f"--resume: {last_path} does not exist")
        _check_resume_compatible(load_tensors(last_path)[1], model, last_path)
        meta = load_training_state(last_path, model, optimizer, scheduler, None)
        start_epoch = meta["progress"]["epoch"] + 1
        best_map = meta["progress"]["best_map"]
        history = meta["progress"]["history"]
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, out_dir / "config.yaml")
    train_model = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    ctx = StepContext(
        device=device,
        amp_dtype=amp_dtype_for(config.train.amp, device),
        grad_accum=config.train.grad_accum,
        clip_grad=config.optim.clip_grad,
        log_every=config.train.log_every,
        max_steps=config.train.max_steps,
        deadline=(time.time() + 60 * config.train.max_minutes) if config.train.max_minutes else 0.0,
        last_checkpoint=str(last_path) if last_path.is_file() else "none yet",
    )
    writer = _open_tensorboard(out_dir, config.train.tensorboard) if main else None
    run_start = time.time() - (history[-1]["minutes"] * 60 if history else 0.0)
    for epoch in range(start_epoch, config.train.epochs):
        train_set.epoch = epoch
        sampler.set_epoch(epoch)
        loader = make_loader(train_set, sampler, config.train.batch_size, config.data.num_workers, config.train.seed + epoch)
        logs = train_one_epoch(train_model, criterion, loader, optimizer, scheduler, epoch, ctx)
        record: dict[str, Any] = {"epoch": epoch, **logs, "peak_memory_mb": peak_memory_mb(device)}
        last_epoch = epoch == config.train.epochs - 1 or (ctx.deadline and time.time() > ctx.deadline)
        if (epoch + 1) % config.train.eval_every == 0 or last_epoch:
            result = evaluate_model(model, classes, config.data, config.eval, out_dir, device, ctx.amp_dtype)
            record["mAP"] = dist_utils.all_gather_object(result.get("mAP"))[0]
        record["minutes"] = (time.time() - run_start) / 60
        history.append(record)
        if main:
            _log_epoch(record, out_dir, writer)
            if record.get("mAP") is not None and record["mAP"] > best_map:
                best_map = record["mAP"]
                save_model(out_dir / "best.safetensors", model, {**metadata, "metrics": record})
                copy_eval_files(out_dir, "val", "val_best")
            progress = {"epoch": epoch, "best_map": best_map, "history": history}
            save_training_state(last_path, model, optimizer, scheduler, None, progress, metadata)
            ctx.last_checkpoint = str(last_path)
        dist_utils.barrier()
        if last_epoch:
            break
    final = history[-1] if history else {}
    if main:
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
    dist_utils.barrier()
    return final


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
