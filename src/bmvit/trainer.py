"""The training run: build everything from a ``Config``, loop over epochs, evaluate, checkpoint.

``fit(config)`` is what ``bmvit train`` calls. The per-step work and evaluation are in
``bmvit.engine``; the builders in ``bmvit.build``; samplers and loaders in ``bmvit.data.loader``.
"""

from __future__ import annotations

import json
import logging
import resource
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bmvit import __version__
from bmvit import distributed as dist_utils
from bmvit.build import (
    ClassInfo,
    clip_normalisation,
    create_eval_loader,
    create_model_from_config,
    create_optimizer,
    create_scheduler,
    create_split_dataset,
    decoding_loader,
    family_of,
    freeze_backbone,
    read_class_info,
    resolve_normalisation,
)
from bmvit.checkpoint import (
    init_from_detector,
    load_tensors,
    load_training_state,
    read_metadata,
    save_model,
    save_training_state,
)
from bmvit.config import Config, ConfigError, DataConfig, TrainConfig, save_config
from bmvit.data.loader import SeededItems, ShardSampler, check_shared_memory, create_loader, default_num_workers
from bmvit.engine import StepContext, amp_dtype_for, evaluate, train_one_epoch
from bmvit.models.weights import check_known_file, resolve_weights_path, weights_normalisation

log = logging.getLogger("bmvit.train")


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
    mean, std = clip_normalisation(config.data)
    return {
        "model_config": model.config.to_dict(),
        "model_class": type(model).__name__,
        "class_ids": classes.class_ids,
        "class_names": classes.class_names,
        "label_map": {str(k): v for k, v in classes.label_map.items()},
        "input_size": list(model.input_size),
        "mean": list(mean),
        "std": list(std),
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


def copy_eval_files(out_dir: Path, from_tag: str, to_tag: str) -> None:
    """Copy the files ``engine.evaluate`` wrote under ``from_tag`` (detections CSV, per-class AP JSON
    and plot) to the same names under ``to_tag``; files that are absent are skipped."""
    for name in ("detections_{}.csv", "per_class_ap_{}.json", "per_class_ap_{}.png"):
        source = out_dir / name.format(from_tag)
        if source.is_file():
            shutil.copyfile(source, out_dir / name.format(to_tag))


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
    config.validate()  # bad values fail now, not after an epoch
    device = select_device(config.train.device)
    amp_dtype = amp_dtype_for(config.train.amp, device)
    rank, world, _ = dist_utils.init_distributed(device.type)
    try:
        config.train.batch_size = per_process_batch(config.train, world)
        if device.type == "cuda":
            device = torch.device("cuda", torch.cuda.current_device())
            torch.backends.cudnn.benchmark = True  # fixed clip shapes: let cuDNN pick its fastest 3D conv once
        return _fit(config, resume, device, amp_dtype, rank, world)
    finally:
        dist_utils.cleanup()


@dataclass
class _Run:
    """What a training run builds before its first step, and its progress."""

    model: nn.Module
    train_model: nn.Module  # the model as the steps see it (compiled backbone, DDP)
    criterion: nn.Module
    classes: ClassInfo
    sampler: ShardSampler
    loader: Iterable  # a DataLoader, or one wrapped by DeviceDecodedBatches (data.decode)
    val_loader: Iterable
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    metadata: dict[str, Any]
    ctx: StepContext
    last_path: Path
    decoding: str = "workers"  # where the training loader decodes frames (data.decode's choice)
    start_epoch: int = 0
    skip_batches: int = 0
    best_map: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)

    def checkpoint(self, epoch: int, batches_done: int) -> None:
        """Write ``last.safetensors`` (rank 0): the state after ``batches_done`` batches of ``epoch``
        (0 = the whole epoch)."""
        if dist_utils.is_main_process():
            progress = {"epoch": epoch, "batches_done": batches_done, "best_map": self.best_map,
                        "history": self.history, "decoding": self.decoding}
            save_training_state(self.last_path, self.model, self.optimizer, self.scheduler, None, progress,
                                self.metadata)
        self.ctx.last_checkpoint = str(self.last_path)


def _fit(config: Config, resume: bool, device: torch.device, amp_dtype: torch.dtype | None, rank: int,
         world: int) -> dict[str, Any]:
    out_dir, main = Path(config.train.out_dir), dist_utils.is_main_process()
    run = _build_run(config, device, amp_dtype, rank, world, resume)
    if resume:
        _restore(run)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, out_dir / "config.yaml")
    writer = _open_tensorboard(out_dir, config.train.tensorboard) if main else None
    run_start = time.time() - (run.history[-1]["minutes"] * 60 if run.history else 0.0)
    for epoch in range(run.start_epoch, config.train.epochs):
        skip = run.skip_batches if epoch == run.start_epoch else 0
        run.sampler.set_epoch(epoch, skip)
        run.ctx.on_checkpoint = lambda batches_done, epoch=epoch: run.checkpoint(epoch, batches_done)
        logs = train_one_epoch(run.train_model, run.criterion, run.loader, run.optimizer, run.scheduler, epoch,
                               run.ctx, skip_batches=skip)
        stopped = bool(logs.pop("stopped"))
        record: dict[str, Any] = {"epoch": epoch, **logs, "peak_memory_mb": peak_memory_mb(device)}
        if skip:
            record["resumed_at_batch"] = skip  # the losses above average the batches after it
        last_epoch = epoch == config.train.epochs - 1 or stopped
        if (epoch + 1) % config.train.eval_every == 0 or last_epoch:
            result = evaluate(run.model, run.val_loader, run.classes, config.data, config.eval, out_dir, device,
                              amp_dtype)
            by_protocol = dist_utils.broadcast_object(result.get("mAP_by_protocol", {}))
            record["mAP"] = dist_utils.broadcast_object(result.get("mAP"))
            record.update({f"mAP_{protocol}": value for protocol, value in by_protocol.items()})
        record["minutes"] = (time.time() - run_start) / 60
        run.history.append(record)
        if main:
            _log_epoch(record, out_dir, writer)
            _keep_if_best(run, record, out_dir)
        run.checkpoint(epoch, 0)
        dist_utils.barrier()
        if last_epoch:
            break
    final = run.history[-1] if run.history else {}
    if main:
        _write_final_model(out_dir, run.model, run.metadata, run.history, config.train.keep, writer)
    dist_utils.barrier()
    return final


def _build_run(config: Config, device: torch.device, amp_dtype: torch.dtype | None, rank: int, world: int,
               resume: bool = False) -> _Run:
    """The model (initial weights the same on every rank), criterion, loaders, optimiser and schedule."""
    torch.manual_seed(config.train.seed)
    main = dist_utils.is_main_process()
    check_data(config.data)  # errors about the data come before any building
    classes = read_class_info(config.data)
    model, init_meta = _create_model(config, classes, main)
    model = model.to(device)
    norm = resolve_normalisation(config.data, weights_normalisation(model, init_meta),
                                 weights_given=bool(config.model.backbone_weights or config.model.init_weights))
    config.data.mean, config.data.std = list(norm.mean), list(norm.std)  # what metadata and config.yaml record
    if main:
        print(f"normalisation: mean {config.data.mean}, std {config.data.std} ({norm.source})", flush=True)
    family = family_of(model)
    criterion = family.criterion(config, len(classes.class_ids)).to(device)
    train_set = SeededItems(create_split_dataset(config, model, "train", classes.class_ids, train=True),
                            config.train.seed)
    batch = config.train.batch_size
    sampler = ShardSampler(len(train_set), rank, world, True, config.train.seed, batch)
    if len(sampler) < batch:
        raise ValueError(f"the training split has {len(train_set)} key frames: fewer than one global batch "
                         f"({world} process(es) x train.batch_size={batch})")
    steps_per_epoch = len(sampler) // batch // config.train.grad_accum
    num_workers = default_num_workers(config.data.num_workers)
    check_shared_memory(num_workers, max(batch, config.eval.batch_size), (3, *model.input_size))
    frozen = freeze_backbone(model, config.optim.frozen_blocks)
    if main and frozen:
        print(f"optim.frozen_blocks={config.optim.frozen_blocks}: {frozen:,} backbone parameters frozen", flush=True)
    optimizer = create_optimizer(model, config.optim)
    last_path = Path(config.train.out_dir) / "last.safetensors"
    # A resumed run decodes where the run it continues did: data.decode=auto measures anew otherwise, and
    # a different choice (another decoder's pixels) would break "resumed = uninterrupted".
    kept = _previous_decoding(last_path) if resume and config.data.decode == "auto" else None
    loader, decoding = decoding_loader(
        config.data, device, train_set, lambda items: create_loader(items, sampler, batch, num_workers,
                                                                    config.train.seed, device),
        on_bad="drop", probe_batches=min(max(8, 3 * num_workers), len(sampler) // batch - 1),
        setting={"device": "device", "workers": "cpu"}.get(kept),
        because="data.decode=auto, as in the run this one resumes" if kept else None)
    if main and decoding.message:
        print(decoding.message, flush=True)
    return _Run(
        model=model,
        train_model=_wrap_for_training(model, config, device, world),
        criterion=criterion,
        classes=classes,
        sampler=sampler,
        loader=loader,
        val_loader=create_eval_loader(config, model, classes, device,
                                      decode="device" if decoding.where == "device" else "cpu"),
        optimizer=optimizer,
        scheduler=create_scheduler(optimizer, config.optim, steps_per_epoch, config.train.epochs),
        metadata=model_metadata(model, config, classes),
        ctx=_step_context(config, device, amp_dtype, last_path),
        last_path=last_path,
        decoding=decoding.where,
    )


def _previous_decoding(last_path: Path) -> str | None:
    """Where the run that wrote ``last_path`` decoded its frames ("workers" or "device"), None if unknown."""
    if not last_path.is_file():
        return None  # _restore says so
    return read_metadata(last_path).get("progress", {}).get("decoding")


def _create_model(config: Config, classes: ClassInfo, main: bool) -> tuple[nn.Module, dict[str, Any] | None]:
    """The detector of ``config.model`` for the trained classes, from ``model.init_weights`` if set, and
    that file's metadata (None without one)."""
    model = create_model_from_config(config.model, len(classes.class_ids))
    if model.config.num_classes != len(classes.class_ids):
        raise ConfigError(
            f"model.num_classes={model.config.num_classes} but the training data has "
            f"{len(classes.class_ids)} classes {classes.class_ids}"
        )
    if main and getattr(model, "backbone_weights_report", None) is not None:
        print(model.backbone_weights_report, flush=True)
    init_meta = None
    if config.model.init_weights:
        init_path = resolve_weights_path(config.model.init_weights)
        check_known_file(init_path)
        report = init_from_detector(model, init_path, classes.class_ids)
        init_meta = read_metadata(init_path)
        if main:
            print(report, flush=True)
    return model, init_meta


def _step_context(config: Config, device: torch.device, amp_dtype: torch.dtype | None, last_path: Path) -> StepContext:
    return StepContext(
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


def _restore(run: _Run) -> None:
    """``--resume``: weights, optimiser, schedule and progress from ``last.safetensors``."""
    if not run.last_path.is_file():
        raise FileNotFoundError(f"--resume: {run.last_path} does not exist")
    _check_resume_compatible(load_tensors(run.last_path)[1], run.model, run.last_path)
    progress = load_training_state(run.last_path, run.model, run.optimizer, run.scheduler, None)["progress"]
    run.start_epoch, run.skip_batches = _resume_position(progress)
    run.best_map, run.history = progress["best_map"], progress["history"]


def _keep_if_best(run: _Run, record: dict[str, Any], out_dir: Path) -> None:
    """A new best mAP: ``best.safetensors`` and the ``*_val_best`` evaluation files."""
    if record.get("mAP") is not None and record["mAP"] > run.best_map:
        run.best_map = record["mAP"]
        save_model(out_dir / "best.safetensors", run.model, {**run.metadata, "metrics": record})
        copy_eval_files(out_dir, "val", "val_best")


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


def _write_final_model(out_dir: Path, model: nn.Module, metadata: dict[str, Any], history: list[dict[str, Any]],
                       keep: str, writer) -> None:
    """``model.safetensors`` and ``metrics.json``. The headline is the last evaluation's mAP, as PySlowFast
    reports; the best one, selected on the val set itself, is reported beside it under its own name.
    ``keep="best"`` makes ``model.safetensors`` (and the ``*_val`` files that describe it) the best epoch's."""
    evaluated = [r for r in history if r.get("mAP") is not None]
    last = evaluated[-1] if evaluated else (history[-1] if history else {})
    best = max(evaluated, key=lambda r: r["mAP"], default=None)  # the first epoch of the highest mAP
    final_meta = {**metadata, "metrics": last}
    best_path = out_dir / "best.safetensors"
    if keep == "best" and best_path.is_file():
        tensors, final_meta = load_tensors(best_path)
        model.load_state_dict(tensors)
        if best is not None and best["epoch"] != last.get("epoch"):
            # The *_val files must describe model.safetensors, as metrics.json says; the last
            # evaluation's are kept beside them.
            copy_eval_files(out_dir, "val", "val_last")
            copy_eval_files(out_dir, "val_best", "val")
    save_model(out_dir / "model.safetensors", model, final_meta)
    summary = {
        "mAP": last.get("mAP"),
        "epoch": last.get("epoch"),
        **{k: v for k, v in last.items() if k.startswith("mAP_")},
        "best_mAP": best["mAP"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "model": {"keep": keep, "epoch": final_meta.get("metrics", {}).get("epoch")},
        "history": history,
    }
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
