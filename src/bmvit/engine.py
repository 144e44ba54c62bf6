"""Training and evaluation loops.

The shape follows torchvision's ``references/detection/engine.py``: ``train_one_epoch`` runs one
pass over the training loader and returns averaged logs; ``predict_rows`` runs the model over an
evaluation loader and returns AVA detection rows, gathered from every process. Building things
and the epoch loop live in ``bmvit.trainer``.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from bmvit import distributed as dist_utils


class NonFiniteLossError(RuntimeError):
    """Raised when a training loss is NaN or infinite; the message names the step and the batch."""


@dataclass
class StepContext:
    """What the loop needs besides the model: devices, precision, accumulation, limits."""

    device: torch.device
    amp_dtype: torch.dtype | None = None
    grad_accum: int = 1
    clip_grad: float = 0.0
    log_every: int = 10
    max_steps: int = 0  # optimiser steps in this epoch; 0 = the whole loader
    deadline: float = 0.0  # time.time() after which the epoch stops early; 0 = none
    last_checkpoint: str = "none yet"


def autocast(ctx: StepContext):
    if ctx.amp_dtype is None:
        return nullcontext()
    return torch.autocast(device_type=ctx.device.type, dtype=ctx.amp_dtype)


def _to_device(clips: torch.Tensor, targets: list[dict[str, Any]], device: torch.device):
    clips = clips.to(device, non_blocking=True)
    moved = [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
    return clips, moved


def run_model(model: nn.Module, clips: torch.Tensor, targets: list[dict[str, Any]]) -> dict[str, Any]:
    """The forward pass: BMViT sees the clips; a two-stage model (``kind == "twostage"``) also each
    clip's person boxes (``proposals_xyxy``, from ``bmvit.data.person_boxes.PersonBoxDataset``)."""
    if getattr(getattr(model, "module", model), "kind", None) == "twostage":
        return model(clips, [t["proposals_xyxy"].to(clips.device, non_blocking=True) for t in targets])
    return model(clips)


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
    """One pass over ``loader``. Returns the epoch's mean of every logged loss, plus clips/s.

    ``skip_batches`` resumes an interrupted epoch: the first batches are drawn (so the data order and
    the augmentation are the same as in an uninterrupted run) but not trained on.
    """
    model.train()
    criterion.train()
    sums: dict[str, float] = defaultdict(float)
    count = 0
    clips_seen = 0
    start = time.perf_counter()
    total = len(loader) if hasattr(loader, "__len__") else None
    bar = tqdm(loader, total=total, desc=f"epoch {epoch}", disable=not dist_utils.is_main_process(), leave=False)
    optimizer.zero_grad(set_to_none=True)
    for i, (clips, targets) in enumerate(bar):
        if i < skip_batches:
            continue
        clips, targets = _to_device(clips, targets, ctx.device)
        with autocast(ctx):
            outputs = run_model(model, clips, targets)
        losses = criterion({k: v.float() if torch.is_tensor(v) else v for k, v in outputs.items()}, targets)
        loss = losses["loss"]
        if not math.isfinite(loss.item()):
            ids = [f"{t['video_id']}@{t['timestamp']}" for t in targets]
            raise NonFiniteLossError(
                f"non-finite loss {loss.item()} at epoch {epoch}, batch {i}; batch key frames: {ids}; "
                f"last good checkpoint: {ctx.last_checkpoint}"
            )
        (loss / ctx.grad_accum).backward()
        if (i + 1) % ctx.grad_accum == 0:
            if ctx.clip_grad > 0:
                sums["grad_norm"] += float(torch.nn.utils.clip_grad_norm_(model.parameters(), ctx.clip_grad))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if scheduler is not None:
                scheduler.step()
        count += 1
        clips_seen += clips.shape[0]
        for key, value in losses.items():
            if torch.is_tensor(value) and value.numel() == 1:
                sums[key] += float(value.detach())
        if dist_utils.is_main_process() and (i % ctx.log_every == 0):
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{optimizer.param_groups[-1]['lr']:.2e}")
        if ctx.max_steps and count // ctx.grad_accum >= ctx.max_steps:
            break
        if ctx.deadline and time.time() > ctx.deadline:
            break
    bar.close()
    elapsed = time.perf_counter() - start
    logs = {k: v / max(1, count) for k, v in sums.items()}
    logs = dist_utils.reduce_dict(logs)
    logs["clips_per_s"] = clips_seen * dist_utils.get_world_size() / max(elapsed, 1e-9)
    logs["steps"] = count
    logs["lr"] = optimizer.param_groups[-1]["lr"]
    return logs


@torch.inference_mode()
def predict_rows(
    model: nn.Module,
    postprocess: nn.Module,
    loader: Iterable,
    class_ids: list[int],
    keep_class_ids: set[int] | None,
    ctx: StepContext,
    max_rows_per_keyframe: int = 50,
) -> list[tuple[str, int, float, float, float, float, int, float]]:
    """Run the detector over ``loader``; AVA rows ``(video_id, second, x1, y1, x2, y2, action_id, score)``.

    Boxes are normalised to the original frame: a target's ``letterbox`` record (``data.resize:
    letterbox``) is undone, whatever the dataset. Per key frame, only the ``max_rows_per_keyframe``
    highest-scoring rows of the evaluated classes (``keep_class_ids``) are kept, which is what the
    official evaluator would use anyway. Rows from every process are gathered; every rank gets all.
    """
    model.eval()
    class_ids_arr = np.asarray(class_ids, dtype=np.int64)
    keep = np.ones(len(class_ids), dtype=bool) if keep_class_ids is None else np.isin(class_ids_arr, list(keep_class_ids))
    rows: list[tuple] = []
    bar = tqdm(loader, desc="eval", disable=not dist_utils.is_main_process(), leave=False)
    for clips, targets in bar:
        clips = clips.to(ctx.device, non_blocking=True)
        with autocast(ctx):
            outputs = run_model(model, clips, targets)
        results = postprocess({k: v.float() if torch.is_tensor(v) else v for k, v in outputs.items()})
        for result, target in zip(results, targets):
            rows.extend(_rows_for_keyframe(result, target, class_ids_arr, keep, max_rows_per_keyframe))
    bar.close()
    return [row for part in dist_utils.all_gather_object(rows) for row in part]


def _rows_for_keyframe(result, target, class_ids_arr, keep, max_rows) -> list[tuple]:
    boxes = result["boxes_xyxy"].float().cpu()
    if target.get("letterbox") is not None:
        boxes = target["letterbox"].boxes_to_original(boxes)
    boxes = boxes.clamp(0, 1).numpy()
    scores = result["action_scores"].float().cpu().numpy()[:, keep]
    ids = class_ids_arr[keep]
    if scores.size == 0:
        return []
    flat = scores.ravel()
    order = np.argsort(-flat, kind="stable")[:max_rows]
    box_idx, cls_idx = np.unravel_index(order, scores.shape)
    vid, sec = str(target["video_id"]), int(target["timestamp"])
    return [
        (vid, sec, *map(float, boxes[b]), int(ids[c]), float(flat[o]))
        for b, c, o in zip(box_idx.tolist(), cls_idx.tolist(), order.tolist())
    ]


def write_ava_csv(path, rows: list[tuple]) -> None:
    """Write AVA detection rows: ``video_id,timestamp(4 digits),x1,y1,x2,y2,action_id,score``."""
    from bmvit.checkpoint import atomic_write_bytes

    lines = [f"{v},{s:04d},{x1:.4f},{y1:.4f},{x2:.4f},{y2:.4f},{a},{sc:.6f}" for v, s, x1, y1, x2, y2, a, sc in rows]
    atomic_write_bytes(path, ("\n".join(lines) + ("\n" if lines else "")).encode())
