"""Person boxes for the two-stage baseline: PySlowFast's precomputed detector files, a synthetic
stand-in, and the dataset that serves them with each clip.

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

``PersonBoxDataset`` turns a ``KeyFrameDataset`` into the two-stage one: training uses the annotated
actors' boxes, jittered, plus the training file's detector boxes if one is given (labelled from
the file; unlabelled ones are negatives); evaluation uses the detector boxes only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from bmvit.box_ops import box_cxcywh_to_xyxy
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
    found: dict[str, int] = field(default_factory=dict)
    false: dict[str, int] = field(default_factory=dict)
    false_above: dict[str, int] = field(default_factory=dict)  # false boxes scoring >= the PySlowFast threshold

    def describe(self) -> str:
        lines = []
        for split, path in self.paths.items():
            frames = max(1, self.keyframes[split])
            lines.append(f"{split}: {path} ({self.keyframes[split]} key frames): {self.found[split]} of "
                         f"{self.actors[split]} actors found ({self.found[split] / max(1, self.actors[split]):.1%}), "
                         f"{self.false[split] / frames:.2f} false boxes per key frame "
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
        counts = dict.fromkeys(("actors", "found", "false", "false_above"), 0)
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
    for box, acts in zip(np.asarray(gt_boxes, dtype=np.float64), gt_actions):
        if rng.random() < noise.miss_rate:
            continue
        boxes.append(_jitter_box(box, rng, noise.jitter))
        scores.append(rng.uniform(*noise.true_scores))
        actions.append(tuple(acts) if keep_labels else ())
    num_found = len(boxes)
    num_false = int(rng.poisson(noise.false_per_frame))
    for _ in range(num_false):
        boxes.append(_false_box(rng, np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)))
        scores.append(rng.uniform(*noise.false_scores))
        actions.append(())
    frame = FramePersonBoxes(boxes_xyxy=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                             scores=np.asarray(scores, dtype=np.float32), action_ids=tuple(actions))
    above = sum(s >= PYSLOWFAST_SCORE_THRESHOLD for s in scores[num_found:])
    return frame, {"actors": len(gt_actions), "found": num_found, "false": num_false, "false_above": int(above)}


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


# ---------------------------------------------------------------------------------------------------
# The two-stage dataset


class PersonBoxDataset(Dataset):
    """A ``KeyFrameDataset`` whose items also carry the person boxes a two-stage model classifies.

    Args:
        base: the key frames, clips and transform (e.g. an ``AVADataset``).
        person_boxes: detector boxes per key frame (``read_person_boxes``); required for evaluation,
            optional for training (then the annotated actors' boxes only).
        train: ``True``: the annotated actors (labelled) and the detector boxes (labelled from the
            file: with the trained classes among their action ids they are positives, else negatives),
            each box jittered by ``jitter``. ``False``: the detector boxes only, with their scores.
        jitter: in training, each coordinate moves by ``U(-jitter, jitter)`` times the box's width
            (x) or height (y), in the model input's frame (after flips and zooms).

    An item is ``(clip, target)`` as ``base`` gives it, with the person boxes passed through the same
    transform, plus ``proposals_xyxy [K, 4]`` float32 normalised ``x1, y1, x2, y2`` of the model
    input, ``proposal_labels [K, C]`` multi-hot (zeros at evaluation) and, at evaluation,
    ``proposal_scores [K]`` (the detector's). ``boxes``/``labels`` hold the same K rows (unjittered,
    cxcywh). A detector box of a key frame missing from ``base`` is never used; a key frame without
    detector boxes has ``K = 0`` at evaluation.
    """

    def __init__(self, base: Dataset, person_boxes: Mapping[tuple[str, int], FramePersonBoxes] | None, *,
                 train: bool, jitter: float = 0.05) -> None:
        if not train and person_boxes is None:
            raise ValueError("PersonBoxDataset: evaluation needs the detector's person boxes (person_boxes=None)")
        if not 0.0 <= jitter < 0.5:
            raise ValueError(f"PersonBoxDataset: jitter must be in [0, 0.5), got {jitter}")
        self.base, self.person_boxes, self.train, self.jitter = base, person_boxes or {}, train, jitter
        self.class_ids = list(base.class_ids)
        self._column = {c: i for i, c in enumerate(self.class_ids)}

    def __len__(self) -> int:
        return len(self.base)

    def __getattr__(self, name: str):
        # keyframes, keyframe_keys, class_names, label_map, ...: those of the wrapped dataset.
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    def rows(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The person rows of key frame ``index`` before any transform: boxes ``[K, 4]`` (original
        frame), labels ``[K, C]`` and scores ``[K]`` (1.0 for annotated actors)."""
        k = self.base.keyframes[index]
        num_classes = len(self.class_ids)
        boxes, labels, scores = [], [], []
        if self.train:
            actors = np.asarray(k.labels).sum(axis=1) > 0
            boxes.append(np.asarray(k.boxes_xyxy, dtype=np.float32)[actors].reshape(-1, 4))
            labels.append(np.asarray(k.labels, dtype=np.float32)[actors].reshape(-1, num_classes))
            scores.append(np.ones(int(actors.sum()), dtype=np.float32))
        detected = self.person_boxes.get((k.video_id, int(k.timestamp)))
        if detected is not None and len(detected):
            multi_hot = np.zeros((len(detected), num_classes), dtype=np.float32)
            if self.train:
                for row, actions in enumerate(detected.action_ids):
                    cols = [self._column[a] for a in actions if a in self._column]
                    multi_hot[row, cols] = 1.0
            boxes.append(detected.boxes_xyxy.astype(np.float32))
            labels.append(multi_hot)
            scores.append(detected.scores.astype(np.float32))
        if not boxes:
            return np.zeros((0, 4), np.float32), np.zeros((0, num_classes), np.float32), np.zeros(0, np.float32)
        return np.concatenate(boxes), np.concatenate(labels), np.concatenate(scores)

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        k = self.base.keyframes[index]
        clip = self.base.read_clip(index)
        boxes, labels, scores = self.rows(index)
        target = {
            "boxes_xyxy": boxes,
            "labels": labels,
            "person_ids": np.arange(len(boxes), dtype=np.int64),  # row numbers: which rows a transform kept
            "video_id": k.video_id,
            "timestamp": int(k.timestamp),
            "orig_size": (int(clip.shape[1]), int(clip.shape[2])),
        }
        clip, target = self.base.transform(clip, target)
        proposals = box_cxcywh_to_xyxy(target["boxes"]).clamp(0.0, 1.0)
        if self.train and self.jitter > 0 and len(proposals):
            proposals = jitter_boxes_xyxy(proposals, self.jitter)
        target["proposals_xyxy"] = proposals.float()
        target["proposal_labels"] = target["labels"]
        if not self.train:
            target["proposal_scores"] = torch.as_tensor(scores)[target["person_ids"]]
        return clip, target


def jitter_boxes_xyxy(boxes_xyxy: Tensor, jitter: float, generator: torch.Generator | None = None) -> Tensor:
    """Move each coordinate of normalised ``[K, 4]`` boxes by ``U(-jitter, jitter)`` of the box's width
    (x) or height (y), clamp to [0, 1]; a box that would lose its area keeps its old coordinates."""
    wh = (boxes_xyxy[:, 2:] - boxes_xyxy[:, :2]).repeat(1, 2)
    delta = (torch.rand(boxes_xyxy.shape, generator=generator, dtype=boxes_xyxy.dtype) * 2 - 1) * jitter * wh
    moved = (boxes_xyxy + delta).clamp(0.0, 1.0)
    ok = (moved[:, 2] > moved[:, 0]) & (moved[:, 3] > moved[:, 1])
    return torch.where(ok[:, None], moved, boxes_xyxy)


def person_boxes_path(root: str | os.PathLike, relative: str) -> Path:
    """``relative`` under ``root`` (an absolute path stays), with an error naming both if it is missing."""
    path = Path(relative) if os.path.isabs(relative) else Path(root) / relative
    if not path.is_file():
        raise FileNotFoundError(f"person-box file {path} does not exist (data.root={root}); for the synthetic "
                                "dataset, make it with `bmvit synth --out ROOT --person-boxes --person-boxes-only`")
    return path


__all__ = [
    "PYSLOWFAST_SCORE_THRESHOLD",
    "FramePersonBoxes",
    "PersonBoxDataset",
    "PersonBoxNoise",
    "PersonBoxes",
    "SyntheticPersonBoxSummary",
    "jitter_boxes_xyxy",
    "person_boxes_path",
    "read_person_boxes",
    "write_person_boxes",
    "write_synthetic_person_boxes",
]
