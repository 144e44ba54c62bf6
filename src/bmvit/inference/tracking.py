"""Actor tracks across key frames: ``ActorTracker`` gives every detected box a track id that persists.

BMViT detects the actors of each key frame independently; this module links them over time, the
SORT recipe (Bewley et al., 2016) cut down to what key frames seconds apart need:

- each live track predicts where its box is at the new key frame (its last box, moved by its
  recent velocity when ``motion`` is on: at 1 key frame per second a walking person moves a third of
  their height, so an unmoved box often no longer overlaps);
- the confident boxes (``p(actor) >= confident_score``) are assigned first, then the others to the
  tracks left (ByteTrack's order, Zhang et al., 2022): the detector puts several boxes on one person,
  and the most confident should carry the person's id rather than whichever duplicate fits best;
- each stage assigns boxes to tracks by the Hungarian algorithm (SciPy's
  ``linear_sum_assignment``) on the cost ``(1 - w) * (1 - IoU) + w * (1 - cos) / 2``, where ``cos`` is the
  cosine similarity of the detection's appearance embedding (the model's head-input token, see
  ``Predictor(embeddings=True)``) and the track's running mean of them, ``w = appearance_weight``
  (0: boxes only). Pairs with IoU below ``min_iou`` are never assigned;
- a track that finds no box survives ``max_missed`` key frames, so a person missed once (occluded,
  below the actor threshold) gets their id back; a box left over starts a new track. Ids are never
  reused.

Boxes are normalised ``x1, y1, x2, y2`` (``Detections.boxes_xyxy_norm``); time is counted in key frames.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bmvit.box_ops import box_iou
from bmvit.inference.results import Detections

_FORBIDDEN = 1e6  # cost of a pair the gate rules out; larger than any real cost (at most 1)


@dataclass(frozen=True)
class TrackerOptions:
    """How ``ActorTracker`` associates boxes between key frames.

    Attributes:
        min_iou: a box and a track's predicted box must overlap at least this much (IoU) to be linked.
        max_missed: key frames a track stays alive without a box (0: it ends at the first miss).
        appearance_weight: ``w`` in the cost ``(1 - w) (1 - IoU) + w (1 - cos) / 2``; 0 uses boxes only
            (and needs no embeddings), in [0, 1).
        motion: predict each track's box at the next key frame from its velocity (per key frame,
            a running mean of its last displacements) instead of leaving it where it was last seen.
        embedding_momentum: share of a track's old mean embedding kept at each update, in [0, 1).
        confident_score: boxes with at least this actor score are associated before the others
            (0: all in one stage).
    """

    min_iou: float = 0.1
    max_missed: int = 2
    appearance_weight: float = 0.0
    motion: bool = True
    embedding_momentum: float = 0.5
    confident_score: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_iou < 1.0:
            raise ValueError(f"TrackerOptions.min_iou must be in [0, 1), got {self.min_iou}")
        if isinstance(self.max_missed, bool) or int(self.max_missed) != self.max_missed or self.max_missed < 0:
            raise ValueError(f"TrackerOptions.max_missed must be an int >= 0 key frames, got {self.max_missed!r}")
        if not 0.0 <= self.appearance_weight < 1.0:
            raise ValueError(f"TrackerOptions.appearance_weight must be in [0, 1), got {self.appearance_weight}")
        if not 0.0 <= self.embedding_momentum < 1.0:
            raise ValueError(f"TrackerOptions.embedding_momentum must be in [0, 1), got {self.embedding_momentum}")


@dataclass
class _Track:
    track_id: int
    box: Tensor  # [4] normalised xyxy where it was last seen
    velocity: Tensor  # [4] displacement per key frame
    embedding: Tensor | None  # [D] unit-norm running mean, or None
    missed: int = 0

    def predicted_box(self, motion: bool) -> Tensor:
        """Where the box should be at the next key frame (``missed`` key frames have passed unseen)."""
        if not motion:
            return self.box
        return self.box + self.velocity * (self.missed + 1)


class ActorTracker:
    """Assign persistent track ids to the boxes of successive key frames (see the module docstring).

    Feed the key frames in time order to ``update``; ids start at 1 and are never reused.
    """

    def __init__(self, options: TrackerOptions | None = None) -> None:
        self.options = options or TrackerOptions()
        self._tracks: list[_Track] = []
        self._next_id = 1

    @property
    def live_ids(self) -> list[int]:
        """Ids of the tracks still alive (seen within the last ``max_missed`` key frames)."""
        return [t.track_id for t in self._tracks]

    def update(self, boxes_xyxy: Tensor, embeddings: Tensor | None = None, scores: Tensor | None = None) -> list[int]:
        """Track ids for the boxes of the next key frame.

        Args:
            boxes_xyxy: ``[K, 4]`` normalised ``x1, y1, x2, y2`` boxes of this key frame.
            embeddings: ``[K, D]`` appearance embeddings of the boxes; needed when ``appearance_weight``
                is above 0 (without them the cost is the box term alone).
            scores: ``[K]`` actor scores; with ``confident_score`` above 0 the boxes scoring at least that
                are associated first (without scores: all in one stage).

        Returns:
            ``K`` ints, one per box in the given order.
        """
        boxes = boxes_xyxy.detach().float().cpu().reshape(-1, 4)
        feats = None if embeddings is None else _unit(embeddings.detach().float().cpu())
        if feats is not None and (feats.ndim != 2 or len(feats) != len(boxes)):
            raise ValueError(f"embeddings must be shaped [K, D] for K={len(boxes)} boxes, got {list(feats.shape)}")
        pairs = self._assign_in_stages(boxes, feats, scores)
        ids: list[int] = [0] * len(boxes)
        matched_tracks = set()
        for det, track_index in pairs:
            track = self._tracks[track_index]
            self._refresh(track, boxes[det], None if feats is None else feats[det])
            ids[det] = track.track_id
            matched_tracks.add(track_index)
        survivors = []
        for index, track in enumerate(self._tracks):
            if index not in matched_tracks:
                track.missed += 1
            if track.missed <= self.options.max_missed:
                survivors.append(track)
        self._tracks = survivors
        for det in range(len(boxes)):
            if ids[det] == 0:
                ids[det] = self._start(boxes[det], None if feats is None else feats[det])
        return ids

    def track(self, det: Detections) -> Detections:
        """A copy of the next key frame's ``det`` with its ``track_ids`` (``update`` on its boxes, embeddings
        and actor scores)."""
        ids = self.update(det.boxes_xyxy_norm, det.embeddings, det.actor_scores)
        return replace(det, track_ids=torch.tensor(ids, dtype=torch.int64))

    def _assign_in_stages(self, boxes: Tensor, feats: Tensor | None, scores: Tensor | None) -> list[tuple[int, int]]:
        """``(detection, track index)`` pairs: the confident boxes first, then the others to the tracks left."""
        everything = np.arange(len(boxes))
        if scores is None or self.options.confident_score <= 0:
            return self._assign(boxes, feats, everything, np.arange(len(self._tracks)))
        confident = scores.detach().float().cpu().reshape(-1).numpy() >= self.options.confident_score
        first = self._assign(boxes, feats, everything[confident], np.arange(len(self._tracks)))
        taken = {t for _, t in first}
        left = np.array([t for t in range(len(self._tracks)) if t not in taken], dtype=np.int64)
        return first + self._assign(boxes, feats, everything[~confident], left)

    def _assign(self, boxes: Tensor, feats: Tensor | None, dets: np.ndarray, tracks: np.ndarray
                ) -> list[tuple[int, int]]:
        """Minimum-cost ``(detection, track index)`` pairs among ``dets`` and ``tracks`` that pass the IoU gate."""
        from scipy.optimize import linear_sum_assignment

        if len(dets) == 0 or len(tracks) == 0:
            return []
        chosen = [self._tracks[t] for t in tracks]
        track_feats = self._track_embeddings(feats, chosen)
        cost = association_cost(boxes[dets], torch.stack([t.predicted_box(self.options.motion) for t in chosen]),
                                None if feats is None else feats[dets], track_feats, self.options.min_iou,
                                self.options.appearance_weight)
        rows, cols = linear_sum_assignment(cost)
        return [(int(dets[r]), int(tracks[c])) for r, c in zip(rows, cols) if cost[r, c] < _FORBIDDEN]

    @staticmethod
    def _track_embeddings(feats: Tensor | None, tracks: list[_Track]) -> Tensor | None:
        if feats is None or any(t.embedding is None for t in tracks):
            return None
        return torch.stack([t.embedding for t in tracks])

    def _refresh(self, track: _Track, box: Tensor, feat: Tensor | None) -> None:
        steps = track.missed + 1  # key frames since it was last seen
        displacement = (box - track.box) / steps
        # A running mean of the displacement: one noisy box should not send the prediction off.
        track.velocity = 0.5 * track.velocity + 0.5 * displacement if track.velocity.any() else displacement
        track.box, track.missed = box.clone(), 0
        if feat is not None:
            m = self.options.embedding_momentum
            track.embedding = feat.clone() if track.embedding is None else _unit(m * track.embedding + (1 - m) * feat)

    def _start(self, box: Tensor, feat: Tensor | None) -> int:
        track = _Track(self._next_id, box.clone(), torch.zeros(4), None if feat is None else feat.clone())
        self._tracks.append(track)
        self._next_id += 1
        return track.track_id


def association_cost(boxes: Tensor, track_boxes: Tensor, feats: Tensor | None, track_feats: Tensor | None,
                     min_iou: float, appearance_weight: float) -> np.ndarray:
    """The ``[K, M]`` cost of linking each of ``K`` boxes to each of ``M`` tracks.

    Args:
        boxes, track_boxes: ``[K, 4]`` and ``[M, 4]`` normalised xyxy (the tracks' predicted boxes).
        feats, track_feats: ``[K, D]`` and ``[M, D]`` unit-norm embeddings, or None (boxes only).
        min_iou: pairs that overlap less are given a prohibitive cost (``1e6``).
        appearance_weight: ``w`` in ``(1 - w) (1 - IoU) + w (1 - cos) / 2``.
    """
    iou = box_iou(boxes, track_boxes).numpy().astype(np.float64)
    cost = 1.0 - iou
    if appearance_weight > 0 and feats is not None and track_feats is not None:
        cosine = (feats @ track_feats.T).numpy().astype(np.float64)
        cost = (1.0 - appearance_weight) * cost + appearance_weight * (1.0 - cosine) / 2.0
    cost[iou < min_iou] = _FORBIDDEN
    return cost


def track_detections(detections: Sequence[Detections], options: TrackerOptions | None = None) -> list[Detections]:
    """Copies of ``detections`` (one video's key frames, in time order) with ``track_ids`` set.

    Embeddings are used when ``options.appearance_weight > 0`` and the detections carry them.
    """
    tracker = ActorTracker(options)
    return [tracker.track(det) for det in detections]


TRACKS_TOP_ACTIONS = 3


def tracks_columns(top_k: int = TRACKS_TOP_ACTIONS) -> tuple[str, ...]:
    """The header of a tracks CSV with ``top_k`` actions per box."""
    actions = tuple(name for k in range(1, top_k + 1) for name in (f"action_{k}", f"score_{k}"))
    return ("video_id", "time_s", "frame_index", "track_id", "x1", "y1", "x2", "y2", "actor_score", *actions)


def write_tracks_csv(path: str | os.PathLike, detections: Sequence[Detections],
                     top_k: int = TRACKS_TOP_ACTIONS) -> Path:
    """Write one row per tracked box: ``tracks_columns(top_k)``, header included.

    ``time_s`` is the key frame's time in seconds from the video's first frame (3 decimals), the box is
    normalised ``x1, y1, x2, y2`` (4 decimals), then the box's ``top_k`` actions by name with their
    scores, best first (the JSON output has every score).
    """
    import csv
    import io

    from bmvit.checkpoint import atomic_write_bytes

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(tracks_columns(top_k))
    for det in detections:
        writer.writerows(tracks_rows(det, top_k))
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue().encode())
    return path


def tracks_rows(det: Detections, top_k: int = TRACKS_TOP_ACTIONS) -> list[list[str]]:
    """The tracks-CSV rows of one tracked key frame (``tracks_columns(top_k)``; see ``write_tracks_csv``)."""
    if det.track_ids is None:
        raise ValueError(f"tracks_rows: the key frame at {det.timestamp:.3f} s has no track ids")
    tops = det.top_actions(top_k) if len(det) else []
    rows = []
    for i, track_id in enumerate(det.track_ids.tolist()):
        box = [f"{float(v):.4f}" for v in det.boxes_xyxy_norm[i]]
        actions = [field for name, score in tops[i] for field in (name, f"{score:.4f}")]
        actions += [""] * (2 * top_k - len(actions))  # fewer classes than top_k
        rows.append([det.video_id, f"{det.timestamp:.3f}", str(det.frame_index), str(track_id), *box,
                     f"{float(det.actor_scores[i]):.4f}", *actions])
    return rows


def _unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


__all__ = ["ActorTracker", "TRACKS_TOP_ACTIONS", "TrackerOptions", "association_cost", "track_detections",
           "tracks_columns", "tracks_rows", "write_tracks_csv"]
