"""Training and evaluation loops.

The shape follows torchvision's ``references/detection/engine.py``: ``train_one_epoch`` runs one
pass over the training loader and returns averaged logs; ``evaluate`` runs the model over an
evaluation loader (``predict_rows``: AVA detection rows, gathered on rank 0) and scores them.
Building things and the epoch loop live in ``bmvit.build`` and ``bmvit.trainer``.

The step never waits for the device. Loaders hand over ``uint8`` clips, which are copied
asynchronously and normalised on the device (``transforms.normalize_clips``); losses, gradient norms
and the non-finite check accumulate in device tensors. The host reads them at *sync points* only:
every ``log_every`` optimiser steps, at a step checkpoint and at the end of the epoch. There the
ranks also agree, through one small all-reduce, on what all of them must do at the same step: stop at
the deadline, stop on a non-finite loss, stop on too many bad clips, or write a checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from bmvit import distributed as dist_utils
from bmvit.build import ClassInfo, clip_normalisation, family_of, resolve_data_paths
from bmvit.config import ConfigError, DataConfig, EvalConfig
from bmvit.data.ava import write_ava_csv
from bmvit.data.transforms import normalize_clips
from bmvit.postprocess import outputs_to_host

log = logging.getLogger("bmvit.train")

class NonFiniteLossError(RuntimeError):
    """Raised when a training loss is NaN or infinite; the message names the step and the batch."""


class BadDataError(RuntimeError):
    """Raised when more clips than ``data.max_bad_clips`` allows could not be read."""


@dataclass
class StepContext:
    """What the loop needs besides the model: devices, precision, accumulation, limits, input normalisation."""

    device: torch.device
    amp_dtype: torch.dtype | None = None
    grad_accum: int = 1
    clip_grad: float = 0.0
    log_every: int = 10
    max_steps: int = 0  # optimiser steps in this epoch; 0 = the whole loader
    deadline: float = 0.0  # time.time() after which training stops (decided together at a sync point); 0 = none
    last_checkpoint: str = "none yet"
    mean: tuple[float, ...] = (0.45, 0.45, 0.45)
    std: tuple[float, ...] = (0.225, 0.225, 0.225)
    seed: int = 0  # with (rank, epoch, batch): the step's random stream (drop path)
    max_bad_clips: float = 0.0  # fraction of the clips seen that may be unreadable before the run stops
    checkpoint_every_steps: int = 0  # call ``on_checkpoint`` every this many optimiser steps; 0 = never
    on_checkpoint: Callable[[int], None] | None = field(default=None, repr=False)  # gets the batches done
    bad_clips_seen: int = 0  # over the run, this rank (for the summary)


AMP_SETTINGS = ("auto", "bf16", "off")


def amp_dtype_for(setting: str, device: torch.device, key: str = "train.amp") -> torch.dtype | None:
    """The autocast dtype of ``setting`` on ``device``, or None for float32 (``key`` names the setting in errors).

    ``"auto"``: bf16 on a CUDA device that supports it (Ampere and later), float32 elsewhere (a CPU's
    bf16 autocast is slower than float32 on most CPUs). ``"bf16"``: bf16 wherever asked, CPU included;
    a CUDA device without bf16 is an error rather than a silent fallback. ``"off"``: float32.
    """
    if setting not in AMP_SETTINGS:
        raise ConfigError(f"{key} must be one of {', '.join(AMP_SETTINGS)}; got {setting!r}")
    if setting == "off" or (setting == "auto" and device.type != "cuda"):
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        if setting == "auto":
            return None
        raise ConfigError(f"{key}=bf16 but {torch.cuda.get_device_name(device)} does not support bfloat16; "
                          f"use {key}=off (fp32)")
    return torch.bfloat16


def autocast(ctx: StepContext):
    if ctx.amp_dtype is None:
        return nullcontext()
    return torch.autocast(device_type=ctx.device.type, dtype=ctx.amp_dtype)


def prepare_batch(clips: torch.Tensor, targets: list[dict[str, Any]], ctx: StepContext):
    """Clips on the device as the model's float input; target tensors on the device.

    ``clips`` are uint8 ``[B, 3, T, H, W]`` from the loader (pinned, so the copy is asynchronous) and
    are normalised there, with each clip's deferred colour jitter; float clips pass as they are.
    """
    clips = clips.to(ctx.device, non_blocking=True)
    colours = [t.get("colour") for t in targets]
    clips = normalize_clips(clips, ctx.mean, ctx.std, colours if any(c is not None for c in colours) else None)
    moved = [
        {k: (v.to(ctx.device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets
    ]
    return clips, moved


def run_model(model: nn.Module, clips: torch.Tensor, targets: list[dict[str, Any]]) -> dict[str, Any]:
    """The forward pass, with the inputs the model's family takes (BMViT: the clips alone)."""
    return model(*family_of(model).inputs(clips, targets))


def step_seed(seed: int, rank: int, epoch: int, batch: int) -> int:
    """The seed of one step's random stream: distinct per rank, the same when a run is resumed."""
    return hash((seed, rank, epoch, batch)) % (2**63)


@dataclass
class _SyncState:
    """What a rank accumulates between sync points, on the device or cheaply on the host."""

    first_bad_batch: torch.Tensor  # -1 until a non-finite loss is seen
    recent_keyframes: dict[int, list[str]] = field(default_factory=dict)  # batch -> key frames, since the last sync
    bad_clips: int = 0
    clips: int = 0


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    epoch: int,
    ctx: StepContext,
    skip_batches: int = 0,
) -> dict[str, float]:
    """One pass over ``loader``. Returns the epoch's mean of every logged loss, clips/s, ``steps``
    and ``stopped`` (1.0 when the deadline ended the epoch early, on every rank alike).

    ``skip_batches``: batches of this epoch already trained before a resume. The loader's sampler
    must already leave them out (``ShardSampler.set_epoch(epoch, skip)``); they only keep the batch
    numbering (the random streams, the checkpoint's position) that of an uninterrupted run.
    """
    model.train()
    criterion.train()
    rank = dist_utils.get_rank()
    sums: dict[str, torch.Tensor] = {}
    state = _SyncState(first_bad_batch=torch.full((), -1, dtype=torch.int64, device=ctx.device))
    count = 0
    clips_seen = 0
    stopped = False
    start = time.perf_counter()
    total = len(loader) if hasattr(loader, "__len__") else None
    bar = tqdm(loader, total=total, desc=f"epoch {epoch}", disable=not dist_utils.is_main_process(), leave=False)
    optimizer.zero_grad(set_to_none=True)
    for batch_index, (clips, targets) in enumerate(bar, start=skip_batches):
        torch.manual_seed(step_seed(ctx.seed, rank, epoch, batch_index))
        _note_bad_clips(targets, state)
        state.clips += len(targets)
        state.recent_keyframes[batch_index] = [f"{t['video_id']}@{t['timestamp']}" for t in targets]
        clips, targets = prepare_batch(clips, targets, ctx)
        step_done = (batch_index + 1) % ctx.grad_accum == 0
        sync_grads = step_done or not isinstance(model, nn.parallel.DistributedDataParallel)
        with nullcontext() if sync_grads else model.no_sync():
            with autocast(ctx):
                outputs = run_model(model, clips, targets)
            losses = criterion({k: v.float() if torch.is_tensor(v) else v for k, v in outputs.items()}, targets)
            loss = losses["loss"]
            (loss / ctx.grad_accum).backward()
        finite = torch.isfinite(loss.detach())
        state.first_bad_batch = torch.where(
            (~finite) & (state.first_bad_batch < 0), torch.full_like(state.first_bad_batch, batch_index),
            state.first_bad_batch,
        )
        if step_done:
            if ctx.clip_grad > 0:
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), ctx.clip_grad)
                _accumulate(sums, "grad_norm", norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if scheduler is not None:
                scheduler.step()
        count += 1
        clips_seen += clips.shape[0]
        for key, value in losses.items():
            if torch.is_tensor(value) and value.numel() == 1:
                _accumulate(sums, key, value)
        if not step_done:
            continue
        opt_step = (batch_index + 1) // ctx.grad_accum
        last = (total is not None and count >= total) or (ctx.max_steps and count // ctx.grad_accum >= ctx.max_steps)
        checkpoint_due = ctx.checkpoint_every_steps > 0 and opt_step % ctx.checkpoint_every_steps == 0
        if not (last or checkpoint_due or opt_step % ctx.log_every == 0):
            continue
        stop = _sync_point(state, ctx, epoch)
        if dist_utils.is_main_process():
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", lr=f"{optimizer.param_groups[-1]['lr']:.2e}")
        if checkpoint_due and ctx.on_checkpoint is not None:
            ctx.on_checkpoint(batch_index + 1)
        if stop:
            stopped = True
            break
        if last:
            break
    bar.close()
    if state.recent_keyframes:  # batches after the last sync point: a last partial accumulation, or a short loader
        stopped = _sync_point(state, ctx, epoch) or stopped
    elapsed = time.perf_counter() - start
    logs = dist_utils.reduce_dict({k: v / max(1, count) for k, v in sums.items()})
    logs["clips_per_s"] = clips_seen * dist_utils.get_world_size() / max(elapsed, 1e-9)
    logs["steps"] = count
    logs["lr"] = optimizer.param_groups[-1]["lr"]
    logs["stopped"] = float(stopped)
    return logs


def _accumulate(sums: dict[str, torch.Tensor], key: str, value: torch.Tensor) -> None:
    value = value.detach().float()
    sums[key] = sums[key] + value if key in sums else value.clone()


def _note_bad_clips(targets: list[dict[str, Any]], state: _SyncState) -> None:
    for target in targets:
        for message in target.get("bad_clips", ()):
            state.bad_clips += 1
            log.warning("skipped an unreadable clip: %s", message)


def _sync_point(state: _SyncState, ctx: StepContext, epoch: int) -> bool:
    """Agree across ranks on the state since the last sync point; raise or return whether to stop."""
    past_deadline = bool(ctx.deadline) and time.time() > ctx.deadline
    flags = torch.stack([
        (state.first_bad_batch >= 0).to(torch.float64),
        torch.tensor(float(past_deadline), dtype=torch.float64, device=ctx.device),
        torch.tensor(float(state.bad_clips), dtype=torch.float64, device=ctx.device),
        torch.tensor(float(state.clips), dtype=torch.float64, device=ctx.device),
    ])
    nonfinite, deadline, bad, seen = dist_utils.all_reduce_sum(flags).tolist()
    ctx.bad_clips_seen += state.bad_clips
    if nonfinite:
        first = int(state.first_bad_batch)
        where = (f"at epoch {epoch}, batch {first}; batch key frames: {state.recent_keyframes.get(first)}"
                 if first >= 0 else f"on another rank in epoch {epoch}")
        raise NonFiniteLossError(f"non-finite loss {where}; last good checkpoint: {ctx.last_checkpoint}")
    if bad and bad > ctx.max_bad_clips * max(seen, 1):
        raise BadDataError(
            f"{int(bad)} of the last {int(seen)} training clips could not be read (data.max_bad_clips="
            f"{ctx.max_bad_clips}); the log names each one. Run `bmvit data check` on the dataset root; last "
            f"good checkpoint: {ctx.last_checkpoint}"
        )
    state.recent_keyframes.clear()
    state.bad_clips = state.clips = 0
    return bool(deadline)


@torch.inference_mode()
def predict_rows(
    model: nn.Module,
    postprocess: nn.Module,
    loader: Iterable,
    class_ids: list[int],
    keep_class_ids: set[int] | None,
    ctx: StepContext,
    max_rows_per_keyframe: int = 0,
    with_actor_score: bool = False,
) -> list[tuple] | None:
    """Run the detector over ``loader``; AVA rows ``(video_id, second, x1, y1, x2, y2, action_id, score)``,
    each followed by the box's actor score when ``with_actor_score`` (1.0 for a family without one).

    Boxes are normalised to the original frame: a target's ``letterbox`` record (``data.resize:
    letterbox`` or ``short_side``) is undone, whatever the dataset. Rows are those of the evaluated classes
    (``keep_class_ids``), every one of them or, with ``max_rows_per_keyframe`` > 0, that many per key
    frame, highest scores first. The model's outputs come to the host once per batch and are
    post-processed there. A key frame whose clip could not be read (``bad_clips`` in its target) gets
    no rows. Rows from every process are gathered on rank 0; other ranks get None.
    """
    if max_rows_per_keyframe < 0:
        raise ValueError(f"max_rows_per_keyframe must be >= 0 (0 = no cap), got {max_rows_per_keyframe}")
    model.eval()
    class_ids_arr = np.asarray(class_ids, dtype=np.int64)
    keep = np.ones(len(class_ids), dtype=bool) if keep_class_ids is None else np.isin(class_ids_arr, list(keep_class_ids))
    rows: list[tuple] = []
    bar = tqdm(loader, desc="eval", disable=not dist_utils.is_main_process(), leave=False)
    for clips, targets in bar:
        clips, device_targets = prepare_batch(clips, targets, ctx)
        with autocast(ctx):
            outputs = run_model(model, clips, device_targets)
        results = postprocess(outputs_to_host(outputs))
        for result, target in zip(results, targets):
            if target.get("bad_clips"):
                ctx.bad_clips_seen += len(target["bad_clips"])
                continue
            rows.extend(_rows_for_keyframe(result, target, class_ids_arr, keep, max_rows_per_keyframe,
                                           with_actor_score))
    bar.close()
    gathered = dist_utils.gather_to_main(rows)
    return None if gathered is None else [row for part in gathered for row in part]


def _rows_for_keyframe(result, target, class_ids_arr, keep, max_rows: int, with_actor_score: bool) -> list[tuple]:
    boxes = result["boxes_xyxy"].float().cpu()
    if target.get("letterbox") is not None:
        boxes = target["letterbox"].boxes_to_original(boxes)
    boxes = boxes.clamp(0, 1).numpy()
    scores = result["action_scores"].float().cpu().numpy()[:, keep]
    ids = class_ids_arr[keep]
    if scores.size == 0:
        return []
    flat = scores.ravel()
    order = np.argsort(-flat, kind="stable")
    if max_rows:
        order = order[:max_rows]
    box_idx, cls_idx = np.unravel_index(order, scores.shape)
    vid, sec = str(target["video_id"]), int(target["timestamp"])
    rows = [
        (vid, sec, *map(float, boxes[b]), int(ids[c]), float(flat[o]))
        for b, c, o in zip(box_idx.tolist(), cls_idx.tolist(), order.tolist())
    ]
    if not with_actor_score:
        return rows
    actor = result.get("actor_scores")
    actor = actor.float().cpu().numpy() if actor is not None else np.ones(len(boxes), dtype=np.float32)
    return [(*row, float(actor[b])) for row, b in zip(rows, box_idx.tolist())]


def evaluate(
    model: nn.Module,
    loader: Iterable,
    classes: ClassInfo,
    data_cfg: DataConfig,
    eval_cfg: EvalConfig,
    out_dir: Path,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    tag: str = "val",
    thresholds: Sequence[float] = (),
) -> dict[str, Any]:
    """Score the val split: writes ``detections_{tag}.csv``, ``per_class_ap_{tag}.json`` and its plot
    to ``out_dir`` and returns the result dict on rank 0 (``{}`` on the others).

    ``loader``: ``bmvit.build.create_eval_loader``'s, this rank's share of the key frames. The
    detections are written once, every row above ``eval.threshold`` (or ``eval.max_rows_per_keyframe``
    per key frame), and scored by every protocol of the format from that one file: on AVA the official
    ActivityNet evaluator (which keeps the top 50 rows of a key frame itself) and PySlowFast's (no cap);
    on UCF101-24 / JHMDB-21 ACT's frame-mAP and video-mAP. The result is the ``eval.protocol`` one's
    (``mAP``, ``protocol``, ``per_class``) with ``mAP_by_protocol`` beside it.

    ``thresholds``: actor thresholds θ to score besides ``eval.threshold``, from the same pass of the
    model (it keeps the detections of the lowest θ); the result gets a ``thresholds`` table.
    """
    mean, std = clip_normalisation(data_cfg)
    ctx = StepContext(device=device, amp_dtype=amp_dtype, mean=mean, std=std)
    for value in thresholds:
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"every threshold must be in [0, 1), got {value}")
    lowest = min([eval_cfg.threshold, *thresholds])
    rows = predict_rows(
        model,
        family_of(model).postprocess(dataclasses.replace(eval_cfg, threshold=lowest)),
        loader,
        classes.class_ids,
        set(classes.label_map),
        ctx,
        max_rows_per_keyframe=eval_cfg.max_rows_per_keyframe,
        with_actor_score=True,
    )
    bad = int(dist_utils.all_reduce_sum(torch.tensor(ctx.bad_clips_seen)).item())
    result: dict[str, Any] = {}
    if dist_utils.is_main_process():
        if bad:
            log.warning("%d val key frame(s) could not be read and have no detections (see the warnings above)", bad)
        rows.sort(key=lambda r: (r[0], r[1], -r[7]))
        score = _Scorer(data_cfg, eval_cfg, classes, getattr(loader, "dataset", None))
        det_path = out_dir / f"detections_{tag}.csv"
        write_ava_csv(det_path, _above(rows, eval_cfg.threshold))
        result, by_protocol = score(det_path)
        result["mAP_by_protocol"] = by_protocol
        if thresholds:
            result["thresholds"] = _threshold_table(rows, sorted(set(thresholds)), score, out_dir / f".{tag}_theta.csv")
        if bad:
            result["unreadable_keyframes"] = bad
        (out_dir / f"per_class_ap_{tag}.json").write_text(json.dumps(result, indent=1))
        from bmvit.evaluation.plot import plot_per_class_ap

        plot_per_class_ap(result, out_dir / f"per_class_ap_{tag}.png")
    dist_utils.barrier()
    return result


class _Scorer:
    """A detections CSV -> (the ``eval.protocol`` result JSON, ``{protocol: mAP}``); the ground truth is
    read once."""

    def __init__(self, data_cfg: DataConfig, eval_cfg: EvalConfig, classes: ClassInfo, dataset: Any) -> None:
        from bmvit.data.ava import read_annotations, read_exclusions, read_label_map

        self.data_cfg, self.eval_cfg, self.classes, self.dataset = data_cfg, eval_cfg, classes, dataset
        self.paths = resolve_data_paths(data_cfg)
        if data_cfg.format not in DataConfig.ACT_FORMATS:  # AVA, and an imported root, scored as AVA is
            self.label_map = read_label_map(self.paths["label_map"])
            self.exclusions = read_exclusions(self.paths["exclusions"]) if self.paths["exclusions"] else set()
            self.groundtruth = read_annotations(self.paths["val_csv"], check_boxes=False)

    def __call__(self, det_path: Path) -> tuple[dict[str, Any], dict[str, float]]:
        from bmvit.data.ava import read_detections

        if self.data_cfg.format in DataConfig.ACT_FORMATS:
            from bmvit.evaluation.ucf_jhmdb import evaluate_act_detections

            result = evaluate_act_detections(self.dataset, det_path, self.classes.label_map,
                                             str(self.paths["annotations"]))
            return result, {"act": float(result["mAP"])}
        from bmvit.evaluation.frame_map import evaluate_ava

        detections = read_detections(det_path, check_boxes=False)
        results = {protocol: evaluate_ava(self.groundtruth, detections, self.label_map, self.exclusions,
                                          protocol=protocol)
                   for protocol in EvalConfig.PROTOCOLS}
        return results[self.eval_cfg.protocol].to_json(), {p: float(r.mAP) for p, r in results.items()}


def _above(rows: list[tuple], threshold: float) -> list[tuple]:
    """The 8-column rows whose actor score (9th column) exceeds ``threshold``, compared in float32 as
    ``PostProcess`` compares them, so the rows of ``eval.threshold`` are exactly the ones it keeps."""
    theta = np.float32(threshold)
    return [r[:8] for r in rows if np.float32(r[8]) > theta]


def _threshold_table(rows: list[tuple], thresholds: list[float], score: _Scorer, scratch: Path) -> list[dict[str, Any]]:
    """One row per θ: the detections whose actor score exceeds θ, scored by every protocol."""
    table = []
    try:
        for theta in thresholds:
            kept = _above(rows, theta)
            write_ava_csv(scratch, kept)
            _, by_protocol = score(scratch)
            table.append({"threshold": theta, "rows": len(kept), **{f"mAP_{p}": v for p, v in by_protocol.items()}})
    finally:
        scratch.unlink(missing_ok=True)
    return table
