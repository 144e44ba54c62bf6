"""Person boxes for the two-stage baseline: PySlowFast's precomputed detector files and a synthetic
stand-in for the synthetic dataset.

A two-stage detector classifies boxes that a person detector found. PySlowFast ships those boxes for
AVA (``person_box_67091280_iou90/``): ``ava_detection_val_boxes_and_labels.csv`` for testing and
``ava_detection_train_boxes_and_labels_include_negative_v2.2.csv`` for training. Both are AVA box
CSVs whose last column is the detector's score::

    video_id, timestamp, x1, y1, x2, y2, action_id (empty for none), score

Reading follows PySlowFast (facebookresearch/SlowFast, slowfast/datasets/ava_helper.py,
``load_boxes_and_labels``): rows below the score threshold are dropped (``DETECTION_SCORE_THRESH``,
0.8 in its AVA configs), rows with the same box in the same key frame are one box whose action ids
are collected (an empty id adds none: in the train file such a box is a negative). Changes: boxes
are grouped by their parsed coordinates rather than by the text of the coordinates, and the score
(of the box's first row) is kept.

The dataset that serves them with each clip is ``bmvit.baselines.twostage.dataset``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bmvit.data.ava import group_by_keyframe, read_annotations, read_detections

PYSLOWFAST_SCORE_THRESHOLD = 0.8
"""``AVA.DETECTION_SCORE_THRESH`` of PySlowFast's AVA configs (its code default is 0.9)."""


@dataclass(frozen=True, eq=False)
class FramePersonBoxes:
    """The detector's people in one key frame.

    Attributes:
        boxes_xyxy: ``[N, 4]`` float32, normalised ``x1, y1, x2, y2`` of the original frame.
        scores: ``[N]`` float32 detector scores.
        action_ids: ``N`` sorted tuples of action ids from the file (``()``: none / a negative).
    """

    boxes_xyxy: np.ndarray
    scores: np.ndarray
    action_ids: tuple[tuple[int, ...], ...]

    def __len__(self) -> int:
        return int(self.boxes_xyxy.shape[0])


PersonBoxes = dict[tuple[str, int], FramePersonBoxes]
"""``(video_id, timestamp) -> FramePersonBoxes``."""


def read_person_boxes(
    path: str | os.PathLike, score_threshold: float = PYSLOWFAST_SCORE_THRESHOLD, *, skip_bad: bool = False
) -> PersonBoxes:
    """Read a PySlowFast person-box CSV; keep boxes with ``score >= score_threshold``.

    Errors name the file and line (a missing score, a non-numeric field, a wrong column count).
    """
    if not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
    rows = read_detections(path, check_boxes=False, skip_bad=skip_bad)
    bad = ~(rows.boxes_xyxy[:, 2] > rows.boxes_xyxy[:, 0]) | ~(rows.boxes_xyxy[:, 3] > rows.boxes_xyxy[:, 1])
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{path}:{int(rows.lines[r])}: person box {rows.boxes_xyxy[r].tolist()} has x1 >= x2 or "
                         "y1 >= y2 (expected normalised x1, y1, x2, y2)")
    rows = rows.select(rows.extra >= score_threshold)
    if len(rows) == 0:
        return {}
    first_score: dict[tuple[str, int, tuple[float, ...]], float] = {}
    for vid, ts, box, score in zip(rows.video_ids.tolist(), rows.timestamps.tolist(), rows.boxes_xyxy.tolist(),
                                   rows.extra.tolist()):
        first_score.setdefault((vid, ts, tuple(box)), score)
    out: PersonBoxes = {}
    for frame in group_by_keyframe(rows, key="box"):
        boxes = np.asarray(frame.boxes_xyxy, dtype=np.float64)
        scores = [first_score[(frame.video_id, frame.timestamp, tuple(b))] for b in boxes.tolist()]
        out[(frame.video_id, frame.timestamp)] = FramePersonBoxes(
            boxes_xyxy=boxes.astype(np.float32), scores=np.asarray(scores, dtype=np.float32),
            action_ids=frame.action_ids,
        )
    return out


def write_person_boxes(path: str | os.PathLike, frames: Mapping[tuple[str, int], FramePersonBoxes]) -> int:
    """Write ``frames`` in PySlowFast's format (one row per action id, one empty-id row for a box
    without any), sorted by key frame; returns the number of rows."""
    lines = []
    for vid, ts in sorted(frames):
        frame = frames[(vid, ts)]
        for box, score, actions in zip(frame.boxes_xyxy.tolist(), frame.scores.tolist(), frame.action_ids):
            coords = ",".join(f"{v:.3f}" for v in box)
            lines += [f"{vid},{ts:04d},{coords},{a},{score:.6f}" for a in (actions or ("",))]
    Path(path).write_text("\n".join(lines) + ("\n" if lines else ""))
    return len(lines)


# ---------------------------------------------------------------------------------------------------
# A synthetic detector for the synthetic dataset


@dataclass
class PersonBoxNoise:
    """How the synthetic detector errs.

    Attributes:
        miss_rate: chance that an annotated actor gets no box.
        false_per_frame: mean number of false boxes per key frame (Poisson), before the threshold.
        jitter: std of each coordinate's error as a fraction of the box's width (x) or height (y).
        true_scores: uniform range of a found actor's score.
        false_scores: uniform range of a false box's score.
    """

    miss_rate: float = 0.1
    false_per_frame: float = 0.6
    jitter: float = 0.05
    true_scores: tuple[float, float] = (0.8, 1.0)
    false_scores: tuple[float, float] = (0.6, 1.0)

    def __post_init__(self) -> None:
        if not 0.0 <= self.miss_rate <= 1.0 or self.false_per_frame < 0 or self.jitter < 0:
            raise ValueError(f"bad PersonBoxNoise: {self}")
        for lo, hi in (self.true_scores, self.false_scores):
            if not 0.0 <= lo <= hi <= 1.0:
                raise ValueError(f"PersonBoxNoise score ranges must satisfy 0 <= low <= high <= 1, got {self}")


@dataclass
class SyntheticPersonBoxSummary:
    """What ``write_synthetic_person_boxes`` wrote, per split."""

    paths: dict[str, Path] = field(default_factory=dict)
    keyframes: dict[str, int] = field(default_factory=dict)
    actors: dict[str, int] = field(default_factory=dict)
    found: dict[str, int] = field(default_factory=dict)  # actors found
    non_actors: dict[str, int] = field(default_factory=dict)  # annotated people with no action (synth --non-actors)
    non_actors_found: dict[str, int] = field(default_factory=dict)
    false: dict[str, int] = field(default_factory=dict)
    false_above: dict[str, int] = field(default_factory=dict)  # false boxes scoring >= the PySlowFast threshold

    def describe(self) -> str:
        lines = []
        for split, path in self.paths.items():
            frames = max(1, self.keyframes[split])
            others = self.non_actors.get(split, 0)
            non_actors = f"{self.non_actors_found[split]} of {others} non-actors, " if others else ""
            lines.append(f"{split}: {path} ({self.keyframes[split]} key frames): {self.found[split]} of "
                         f"{self.actors[split]} actors found ({self.found[split] / max(1, self.actors[split]):.1%}), "
                         f"{non_actors}{self.false[split] / frames:.2f} false boxes per key frame "
                         f"({self.false_above[split] / frames:.2f} scoring >= {PYSLOWFAST_SCORE_THRESHOLD})")
        return "\n".join(lines)


def write_synthetic_person_boxes(
    root: str | os.PathLike, seed: int, *, splits: Sequence[str] = ("train", "val"),
    noise: PersonBoxNoise | None = None, out_dir: str | os.PathLike | None = None,
) -> SyntheticPersonBoxSummary:
    """Write ``annotations/person_boxes_{split}.csv`` for a dataset in AVA's layout, from its ground truth.

    The stand-in for a person detector: each annotated actor is missed with ``noise.miss_rate``,
    else boxed with jittered coordinates and a high score; each key frame also gets
    Poisson(``noise.false_per_frame``) false boxes (person-shaped, overlapping no actor by IoU > 0.3)
    with lower scores. Train-split boxes carry their actor's action ids and false boxes none, like
    PySlowFast's ``..._include_negative`` file; val boxes carry no action id, like its val file.
    Bystanders are not in the annotation CSVs, so the synthetic detector does not see them.

    Args:
        root: the dataset root (reads ``annotations/ava_{split}_v2.2.csv``).
        seed: same seed, same files.
        out_dir: where to write (default ``root/annotations``).
    """
    noise = noise or PersonBoxNoise()
    root = Path(root)
    out = Path(out_dir) if out_dir is not None else root / "annotations"
    out.mkdir(parents=True, exist_ok=True)
    summary = SyntheticPersonBoxSummary()
    for split_index, split in enumerate(splits):
        rows = read_annotations(root / "annotations" / f"ava_{split}_v2.2.csv")
        rng = np.random.default_rng([seed, split_index])
        frames: PersonBoxes = {}
        counts = dict.fromkeys(("actors", "found", "non_actors", "non_actors_found", "false", "false_above"), 0)
        for kf in group_by_keyframe(rows):
            frame, frame_counts = _detect(kf.boxes_xyxy, kf.action_ids, rng, noise, keep_labels=split == "train")
            frames[(kf.video_id, kf.timestamp)] = frame
            for key, value in frame_counts.items():
                counts[key] += value
        path = out / f"person_boxes_{split}.csv"
        write_person_boxes(path, frames)
        summary.paths[split] = path
        summary.keyframes[split] = len(frames)
        for key, value in counts.items():
            getattr(summary, key)[split] = value
    return summary


def _detect(gt_boxes: np.ndarray, gt_actions: tuple[tuple[int, ...], ...], rng: np.random.Generator,
            noise: PersonBoxNoise, keep_labels: bool) -> tuple[FramePersonBoxes, dict[str, int]]:
    boxes, scores, actions = [], [], []
    non_actors_found = 0
    for box, acts in zip(np.asarray(gt_boxes, dtype=np.float64), gt_actions):
        if rng.random() < noise.miss_rate:
            continue
        boxes.append(_jitter_box(box, rng, noise.jitter))
        scores.append(rng.uniform(*noise.true_scores))
        actions.append(tuple(acts) if keep_labels else ())
        non_actors_found += not acts  # a person with no action (a bystander): a detector boxes them too
    num_found = len(boxes)
    num_false = int(rng.poisson(noise.false_per_frame))
    for _ in range(num_false):
        boxes.append(_false_box(rng, np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)))
        scores.append(rng.uniform(*noise.false_scores))
        actions.append(())
    frame = FramePersonBoxes(boxes_xyxy=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                             scores=np.asarray(scores, dtype=np.float32), action_ids=tuple(actions))
    above = sum(s >= PYSLOWFAST_SCORE_THRESHOLD for s in scores[num_found:])
    non_actors = sum(not acts for acts in gt_actions)
    return frame, {"actors": len(gt_actions) - non_actors, "found": num_found - non_actors_found,
                   "non_actors": non_actors, "non_actors_found": non_actors_found, "false": num_false,
                   "false_above": int(above)}


def _jitter_box(box: np.ndarray, rng: np.random.Generator, jitter: float) -> np.ndarray:
    w, h = box[2] - box[0], box[3] - box[1]
    moved = np.clip(box + rng.normal(0.0, jitter, 4) * np.array([w, h, w, h]), 0.0, 1.0)
    # Rounded to the file's 3 decimals here, so that a kept box is never degenerate on disk.
    moved = np.round(moved, 3)
    return moved if moved[2] > moved[0] and moved[3] > moved[1] else np.round(box, 3)


def _false_box(rng: np.random.Generator, gt_boxes: np.ndarray) -> np.ndarray:
    """A person-shaped box overlapping no actor by IoU > 0.3 (at most 20 tries, then the last draw)."""
    for _ in range(20):
        h = rng.uniform(0.25, 0.6)
        w = h * rng.uniform(0.25, 0.45)
        x1, y1 = rng.uniform(0.0, 1.0 - w), rng.uniform(0.0, 1.0 - h)
        box = np.round(np.array([x1, y1, x1 + w, y1 + h]), 3)
        if not len(gt_boxes) or _iou(box, gt_boxes).max() <= 0.3:
            break
    return box


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    lt = np.maximum(box[:2], others[:, :2])
    rb = np.minimum(box[2:], others[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0.0, None), axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(others) - inter)


__all__ = [
    "PYSLOWFAST_SCORE_THRESHOLD",
    "FramePersonBoxes",
    "PersonBoxNoise",
    "PersonBoxes",
    "SyntheticPersonBoxSummary",
    "read_person_boxes",
    "write_person_boxes",
    "write_synthetic_person_boxes",
]
