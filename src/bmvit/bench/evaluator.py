"""The ``evaluator`` section of ``bmvit bench``: speed of the AVA frame-mAP evaluator on synthetic files of a
realistic shape.

``bench_evaluator`` writes a ground-truth CSV, a detection CSV and a 60-class label map (AVA v2.2's ids) to a
folder (``write_benchmark_files``), then times reading + evaluation end to end. The official ActivityNet
evaluator took 25.6 s as a whole process on these files on our 2-core machine (BENCHMARKS.md); the target is
20x faster as a user runs it.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bmvit.data.ava import AVA_V22_CLASS_IDS, read_annotations, read_detections, read_label_map
from bmvit.evaluation.frame_map import AvaProtocol, evaluate_ava


def write_benchmark_files(
    folder: str | os.PathLike, num_rows: int = 100_000, num_keyframes: int = 5_000, seed: int = 0
) -> dict[str, Path]:
    """Write ``groundtruth.csv``, ``detections.csv`` and ``labelmap.pbtxt`` of an AVA-like evaluation.

    Ground truth: 1-4 people per key frame, 1-3 actions each over the 80 AVA ids (so some rows fall outside
    the 60-class label map). Detections: ``num_rows`` rows spread unevenly over the key frames (some exceed
    the official cap of 50), most near a person's box, scores with 4 decimals as PySlowFast writes them
    (so tied scores occur across key frames).

    Returns:
        ``{"groundtruth": path, "detections": path, "labelmap": path}``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per_video = 900
    videos = [f"bench{v:07d}" for v in range((num_keyframes + per_video - 1) // per_video)]
    frame_video = np.arange(num_keyframes) // per_video
    frame_second = 902 + np.arange(num_keyframes) % per_video

    people = rng.integers(1, 5, num_keyframes)
    person_frame = np.repeat(np.arange(num_keyframes), people)
    centre = rng.uniform(0.2, 0.8, (person_frame.size, 2))
    size = rng.uniform(0.1, 0.4, (person_frame.size, 2))
    person_box = np.clip(np.concatenate([centre - size / 2, centre + size / 2], axis=1), 0.0, 1.0)
    person_action = rng.integers(1, 81, (person_frame.size, 3))
    num_actions = rng.integers(1, 4, person_frame.size)

    gt_lines = []
    for p in range(person_frame.size):
        f = person_frame[p]
        x1, y1, x2, y2 = person_box[p]
        pid = p - np.searchsorted(person_frame, f)
        for a in np.unique(person_action[p, : num_actions[p]]).tolist():
            gt_lines.append(
                f"{videos[frame_video[f]]},{frame_second[f]:04d},{x1:.3f},{y1:.3f},{x2:.3f},{y2:.3f},{a},{pid}"
            )

    weights = rng.dirichlet(np.full(num_keyframes, 2.0))
    det_frame = np.repeat(np.arange(num_keyframes), rng.multinomial(num_rows, weights))
    rng.shuffle(det_frame)  # rows of a key frame are not contiguous in the file
    first_person = np.searchsorted(person_frame, det_frame)
    person = first_person + (rng.random(num_rows) * people[det_frame]).astype(np.int64)
    near = rng.random(num_rows) < 0.75
    boxes = np.where(near[:, None], person_box[person] + rng.normal(0, 0.03, (num_rows, 4)), rng.random((num_rows, 4)))
    boxes = np.clip(np.concatenate([boxes[:, :2].clip(max=boxes[:, 2:]), boxes[:, 2:]], axis=1), 0.0, 1.0)
    true_action = rng.random(num_rows) < 0.5
    action = np.where(true_action & near, person_action[person, 0], rng.integers(1, 81, num_rows))
    score = np.round(np.where(true_action & near, rng.beta(4, 2, num_rows), rng.beta(1, 4, num_rows)), 4)
    det_lines = [
        f"{videos[frame_video[f]]},{frame_second[f]:04d},{b[0]:.3f},{b[1]:.3f},{b[2]:.3f},{b[3]:.3f},{a},{s:.4f}"
        for f, b, a, s in zip(det_frame.tolist(), boxes.tolist(), action.tolist(), score.tolist())
    ]
    paths = {"groundtruth": folder / "groundtruth.csv", "detections": folder / "detections.csv",
             "labelmap": folder / "labelmap.pbtxt"}
    paths["groundtruth"].write_text("\n".join(gt_lines) + "\n")
    paths["detections"].write_text("\n".join(det_lines) + "\n")
    paths["labelmap"].write_text("".join(f'item {{\n  name: "action {i}"\n  id: {i}\n}}\n' for i in AVA_V22_CLASS_IDS))
    return paths


def bench_evaluator(
    num_rows: int = 100_000,
    num_keyframes: int = 5_000,
    seed: int = 0,
    protocol: AvaProtocol = "activitynet",
    repeats: int = 3,
    folder: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Time reading + ``evaluate_ava`` on synthetic files (written to ``folder`` or a temporary one).

    Returns:
        A dict: ``num_rows``, ``num_keyframes``, ``protocol``, ``repeats``, ``read_s`` / ``evaluate_s`` /
        ``total_s`` (the fastest run; machines are shared, the minimum is the least noisy), ``total_median_s``,
        ``mAP`` and ``num_detections_used``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    with tempfile.TemporaryDirectory(prefix="bmvit-bench-") as tmp:
        paths = write_benchmark_files(folder if folder is not None else tmp, num_rows, num_keyframes, seed)
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            label_map = read_label_map(paths["labelmap"])
            gt = read_annotations(paths["groundtruth"], check_boxes=False)
            det = read_detections(paths["detections"], check_boxes=False)
            t1 = time.perf_counter()
            result = evaluate_ava(gt, det, label_map, protocol=protocol)
            t2 = time.perf_counter()
            runs.append((t2 - t0, t1 - t0, t2 - t1))
    best = min(runs)
    return {
        "num_rows": num_rows,
        "num_keyframes": num_keyframes,
        "protocol": protocol,
        "repeats": repeats,
        "read_s": best[1],
        "evaluate_s": best[2],
        "total_s": best[0],
        "total_median_s": statistics.median(r[0] for r in runs),
        "mAP": result.mAP,
        "num_detections_used": result.num_detections_used,
    }


__all__ = ["bench_evaluator", "write_benchmark_files"]
