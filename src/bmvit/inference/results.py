"""``Detections``: what the predictor returns for one key frame, with named fields.

The idea of a results object with ``plot()`` and exporters is Ultralytics' ``Results``/``Boxes``
(ultralytics/engine/results.py); changes: named dataclass fields instead of positional columns
packed into one tensor, no cached-method properties, multi-label action scores per box, and AVA
CSV rows as the native export.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
from torch import Tensor

AvaRow = tuple[str, int, float, float, float, float, int, float]
"""``(video_id, second, x1, y1, x2, y2, action_id, score)``, boxes normalised to the frame (AVA CSV)."""


@dataclass
class Detections:
    """The actors found at one key frame of one video.

    Attributes:
        video_id: the video's name (file name without extension, or the frame folder's name).
        timestamp: time of the key frame in seconds from the video's first frame.
        frame_index: index of the key frame in the video (0 = first frame).
        image_size: ``(H, W)`` of the video's frames in pixels.
        boxes_xyxy: ``[K, 4]`` float32 ``x1, y1, x2, y2`` in pixels of the original frame.
        boxes_xyxy_norm: ``[K, 4]`` float32 the same boxes normalised to [0, 1] of the frame.
        actor_scores: ``[K]`` float32 p(actor) of each box's token, decreasing.
        action_scores: ``[K, C]`` float32 ``p(actor) * sigmoid(action logit)`` per class.
        class_ids: ``C`` action ids (AVA label-map ids) in the column order of ``action_scores``.
        class_names: ``C`` action names, same order.
        token_indices: ``[K]`` int64 index of each box's token among the model's N candidates.
        track_ids: ``[K]`` int64 id of each box's actor track across the video's key frames
            (``bmvit.inference.tracking``), or None when the key frame was not tracked.
        embeddings: ``[K, D]`` float32 appearance embedding of each box (its token at the input of the
            model's heads; ``Predictor(embeddings=True)``), or None.
    """

    video_id: str
    timestamp: float
    frame_index: int
    image_size: tuple[int, int]
    boxes_xyxy: Tensor
    boxes_xyxy_norm: Tensor
    actor_scores: Tensor
    action_scores: Tensor
    class_ids: list[int]
    class_names: list[str]
    token_indices: Tensor
    track_ids: Tensor | None = None
    embeddings: Tensor | None = None

    def __post_init__(self) -> None:
        k = int(self.actor_scores.shape[0])
        shapes = {
            "boxes_xyxy": (tuple(self.boxes_xyxy.shape), (k, 4)),
            "boxes_xyxy_norm": (tuple(self.boxes_xyxy_norm.shape), (k, 4)),
            "action_scores": (tuple(self.action_scores.shape), (k, len(self.class_ids))),
            "token_indices": (tuple(self.token_indices.shape), (k,)),
        }
        if self.track_ids is not None:
            shapes["track_ids"] = (tuple(self.track_ids.shape), (k,))
        for name, (got, want) in shapes.items():
            if got != want:
                raise ValueError(f"Detections.{name} must be shaped {list(want)} (K={k}, C={len(self.class_ids)}), "
                                 f"got {list(got)}")
        if self.embeddings is not None and (self.embeddings.ndim != 2 or self.embeddings.shape[0] != k):
            raise ValueError(f"Detections.embeddings must be shaped [K, D] (K={k}), got {list(self.embeddings.shape)}")
        if len(self.class_names) != len(self.class_ids):
            raise ValueError(f"Detections: {len(self.class_ids)} class ids but {len(self.class_names)} class names")

    def __len__(self) -> int:
        return int(self.actor_scores.shape[0])

    def cpu(self) -> Detections:
        """A copy whose tensors live on the CPU."""
        return replace(self, **{f.name: getattr(self, f.name).cpu() for f in fields(self)
                                if isinstance(getattr(self, f.name), Tensor)})

    def top_actions(self, k: int = 3) -> list[list[tuple[str, float]]]:
        """For each box, its ``k`` highest-scoring actions as ``(name, score)``, best first."""
        if k < 1:
            raise ValueError(f"top_actions: k must be >= 1, got {k}")
        scores = self.action_scores.detach().float().cpu()
        k = min(k, scores.shape[1])
        if len(self) == 0 or k == 0:
            return [[] for _ in range(len(self))]
        values, index = scores.topk(k, dim=1)
        return [[(self.class_names[c], float(v)) for v, c in zip(vs.tolist(), cs.tolist())]
                for vs, cs in zip(values, index)]

    def ava_second(self, time_offset: float = 0.0) -> int:
        """The AVA CSV timestamp of this key frame: ``timestamp + time_offset`` rounded to a whole second
        (AVA's cut videos start at second 900: pass ``time_offset=900``)."""
        return int(math.floor(self.timestamp + time_offset + 0.5))

    def to_ava_rows(self, max_rows: int | None = None, time_offset: float = 0.0) -> list[AvaRow]:
        """AVA detection rows, one per (box, class), highest score first.

        Args:
            max_rows: keep only the ``max_rows`` best rows (the official evaluator reads at most 50
                per key frame in practice; ``None`` keeps all ``K * C``).
            time_offset: seconds added to ``timestamp`` before rounding it to the AVA second.

        Returns:
            ``(video_id, second, x1, y1, x2, y2, action_id, score)`` with boxes normalised to [0, 1].
        """
        scores = self.action_scores.detach().float().cpu().numpy()
        if scores.size == 0:
            return []
        boxes = self.boxes_xyxy_norm.detach().float().cpu().numpy()
        flat = scores.ravel()
        order = np.argsort(-flat, kind="stable")[:max_rows]
        box_idx, cls_idx = np.unravel_index(order, scores.shape)
        second = self.ava_second(time_offset)
        return [(self.video_id, second, *(float(v) for v in boxes[b]), int(self.class_ids[c]), float(flat[o]))
                for b, c, o in zip(box_idx.tolist(), cls_idx.tolist(), order.tolist())]

    def to_dict(self, include_classes: bool = True, top_k: int = 5) -> dict[str, Any]:
        """Plain-data view: every box with its pixel and normalised xyxy, p(actor), all C action scores
        (column order of ``class_ids``), its ``top_k`` actions by name and, when tracked, its
        ``track_id`` (embeddings are left out: they are large and only the tracker needs them)."""
        top = self.top_actions(top_k) if len(self) else []
        boxes = []
        for i in range(len(self)):
            boxes.append({
                "token_index": int(self.token_indices[i]),
                "box_xyxy": [round(float(v), 2) for v in self.boxes_xyxy[i]],
                "box_xyxy_norm": [round(float(v), 6) for v in self.boxes_xyxy_norm[i]],
                "actor_score": round(float(self.actor_scores[i]), 6),
                "action_scores": [round(float(v), 6) for v in self.action_scores[i]],
                "top_actions": [{"name": n, "score": round(s, 6)} for n, s in top[i]],
            })
            if self.track_ids is not None:
                boxes[-1]["track_id"] = int(self.track_ids[i])
        out: dict[str, Any] = {
            "video_id": self.video_id,
            "timestamp": round(float(self.timestamp), 6),
            "frame_index": int(self.frame_index),
            "image_size": [int(v) for v in self.image_size],
            "boxes": boxes,
        }
        if include_classes:
            out["class_ids"] = [int(c) for c in self.class_ids]
            out["class_names"] = list(self.class_names)
        return out

    def to_json(self, indent: int | None = None) -> str:
        """``to_dict()`` as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)

    def plot(self, frame: np.ndarray, top_k: int = 2, track_ids: list[int] | None = None) -> np.ndarray:
        """The key frame with the boxes drawn, each labelled with its ``top_k`` actions and scores.

        Args:
            frame: ``uint8 [H, W, 3]`` RGB frame of size ``image_size`` (not modified).
            track_ids: an id per box that picks its colour (stable across frames when it comes from
                a tracker); default: ``self.track_ids`` when set, else the box's rank.

        Returns:
            An annotated copy, ``uint8 [H, W, 3]`` RGB.
        """
        from bmvit.inference.render import draw_detections

        frame = np.asarray(frame)
        if frame.shape[:2] != tuple(self.image_size):
            raise ValueError(f"Detections.plot: the frame is {frame.shape[0]}x{frame.shape[1]} but these detections "
                             f"are for {self.image_size[0]}x{self.image_size[1]} frames")
        if track_ids is None and self.track_ids is not None:
            track_ids = self.track_ids.tolist()
        return draw_detections(frame, self, top_k=top_k, track_ids=track_ids)

