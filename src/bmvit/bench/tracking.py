"""How well ``bmvit predict`` follows actors and their actions through time, on the synthetic val videos.

    python -m bmvit.bench.tracking --data /tmp/synth --out /tmp/track_eval [--fps 1 5] [--videos 8]

The synthetic dataset's ``person_id`` column is each figure's true identity, so the tracks can be
scored. The model runs once per video and key-frame rate (with the appearance embeddings); every
association variant and NMS setting then tracks the same stored detections.

**Tracking** (MOT metrics, via ``motmetrics``): a predicted box and a true person match at IoU >= 0.5
(Hungarian per key frame). The ground truth exists only at the annotated key frames, one per second,
so at ``--fps 5`` the tracker runs on all 5 key frames a second but is scored on the key frames with
ground truth (every fifth). Key frames the dataset excludes (an actor less than 25% visible) are not
scored. Reported: ID switches, MOTA, IDF1, and *mostly tracked*: the share of true people matched
on at least 80% of their scored key frames.

**Timelines**: a true interval is a run of consecutive annotated key frames (1 s apart) where one
person has the same action, spanning ``[t_first - 0.5, t_last + 0.5]`` seconds (as a predicted
segment spans its key frames). It is *found* when the track best overlapping that person during the
interval (most key frames matched at IoU >= 0.5) has a segment of the same action with temporal IoU
>= 0.5. Reported: the share of true intervals found (interval recall), and the share of predicted
segments on tracks matched to a person that equal one of that person's true intervals of their
action at temporal IoU >= 0.5 (segment precision).

``motmetrics`` is imported only here (the ``bench`` and ``test`` extras), never by ``bmvit predict``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bmvit.inference.results import Detections
from bmvit.inference.timeline import ActionSegment, TimelineOptions, build_timeline
from bmvit.inference.tracking import TrackerOptions, track_detections

MATCH_IOU = 0.5  # box IoU for a predicted box to count as a true person (as AVA's frame-mAP)
MOSTLY_TRACKED = 0.8  # the share of a person's scored key frames that makes them "mostly tracked"

VARIANTS: dict[str, TrackerOptions] = {
    # The renderer's tracker before this module: last box, no motion, IoU >= 0.3, no memory.
    "iou": TrackerOptions(min_iou=0.3, max_missed=0, motion=False),
    "iou+memory": TrackerOptions(min_iou=0.3, max_missed=2, motion=False),
    "iou+motion": TrackerOptions(min_iou=0.1, max_missed=2, motion=True),
    "iou+appearance": TrackerOptions(min_iou=0.1, max_missed=2, motion=False, appearance_weight=0.3),
    "iou+motion+appearance": TrackerOptions(min_iou=0.1, max_missed=2, motion=True, appearance_weight=0.3),
    "iou+motion+2stage": TrackerOptions(min_iou=0.1, max_missed=2, motion=True, confident_score=0.5),
    "iou+motion+app+2stage": TrackerOptions(min_iou=0.1, max_missed=2, motion=True, appearance_weight=0.3,
                                            confident_score=0.5),
}
"""The association variants compared (names are the report's rows)."""


@dataclass(frozen=True)
class TruthBox:
    """One annotated person at one key frame: ``person_id``, normalised xyxy ``box``, ``action_ids``."""

    person_id: int
    box: tuple[float, float, float, float]
    action_ids: frozenset[int]


GroundTruth = dict[str, dict[float, list[TruthBox]]]
"""video id -> key-frame time in seconds (from the video's start) -> the people annotated there."""


@dataclass(frozen=True)
class TrueInterval:
    """A run of consecutive annotated key frames where ``person_id`` does ``action_id``, in seconds."""

    video_id: str
    person_id: int
    action_id: int
    start_s: float
    end_s: float
    times_s: tuple[float, ...]


# ------------------------------------------------------------------------------------------------
# ground truth


def read_ground_truth(csv_path: str | Path, first_second: int = 900) -> GroundTruth:
    """The people of an AVA-layout annotation CSV, by video and key-frame time (``second - first_second``)."""
    from bmvit.data.ava import read_annotations

    rows = read_annotations(csv_path)
    people: dict[tuple[str, float, int], tuple[tuple[float, ...], set[int]]] = {}
    for vid, sec, box, action, pid in zip(rows.video_ids, rows.timestamps, rows.boxes_xyxy, rows.action_ids,
                                          rows.extra):
        key = (str(vid), float(sec - first_second), int(pid))
        entry = people.setdefault(key, (tuple(float(v) for v in box), set()))
        if action >= 0:
            entry[1].add(int(action))
    truth: GroundTruth = defaultdict(dict)
    for (vid, t, pid), (box, actions) in sorted(people.items()):
        truth[vid].setdefault(t, []).append(TruthBox(pid, box, frozenset(actions)))
    return dict(truth)


def read_excluded_times(csv_path: str | Path, first_second: int = 900) -> set[tuple[str, float]]:
    """``{(video id, time in seconds)}`` of the excluded key frames."""
    from bmvit.data.ava import read_exclusions

    return {(vid, float(sec - first_second)) for vid, sec in read_exclusions(csv_path)}


def true_intervals(truth: GroundTruth, interval_s: float = 1.0) -> list[TrueInterval]:
    """Consecutive annotated key frames (``interval_s`` apart) of one person with one action, joined.

    Each interval spans ``[t_first - interval_s / 2, t_last + interval_s / 2]``.
    """
    runs: dict[tuple[str, int, int], list[list[float]]] = defaultdict(list)
    for vid, frames in truth.items():
        for t in sorted(frames):
            for person in frames[t]:
                for action in person.action_ids:
                    seq = runs[(vid, person.person_id, action)]
                    if seq and abs(t - seq[-1][-1] - interval_s) < 1e-6:
                        seq[-1].append(t)
                    else:
                        seq.append([t])
    half = interval_s / 2
    return [TrueInterval(vid, pid, action, times[0] - half, times[-1] + half, tuple(times))
            for (vid, pid, action), seqs in sorted(runs.items()) for times in seqs]


# ------------------------------------------------------------------------------------------------
# matching and metrics


def temporal_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Intersection over union of two time intervals ``(start, end)`` in seconds."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def match_boxes(truth_boxes: np.ndarray, pred_boxes: np.ndarray, min_iou: float = MATCH_IOU) -> list[tuple[int, int]]:
    """``(truth index, prediction index)`` pairs of the maximum-IoU one-to-one matching, IoU >= ``min_iou``.

    Boxes are normalised xyxy, ``[P, 4]`` and ``[K, 4]``.
    """
    import torch
    from scipy.optimize import linear_sum_assignment

    from bmvit.box_ops import box_iou

    if len(truth_boxes) == 0 or len(pred_boxes) == 0:
        return []
    iou = box_iou(torch.as_tensor(truth_boxes, dtype=torch.float64), torch.as_tensor(pred_boxes, dtype=torch.float64))
    iou = iou.numpy()
    rows, cols = linear_sum_assignment(-iou)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if iou[r, c] >= min_iou]


def mot_metrics(frames: Sequence[tuple[str, Sequence[int], np.ndarray, Sequence[int], np.ndarray]],
                min_iou: float = MATCH_IOU) -> dict[str, float]:
    """CLEAR-MOT and identity metrics of tracked boxes against true identities, via ``motmetrics``.

    Args:
        frames: the scored key frames in time order, each ``(video id, true person ids, [P, 4] true
            boxes, predicted track ids, [K, 4] predicted boxes)``, boxes normalised xyxy; one
            accumulator per video, so that ids need only be unique within a video.
        min_iou: a pair with a lower IoU cannot match.

    Returns:
        ``mota``, ``idf1``, ``id_switches``, ``mostly_tracked`` (share of true people matched on at least
        80% of their scored key frames), ``people``, ``recall``, ``precision``, ``false_positives``,
        ``misses``.
    """
    import motmetrics
    import torch

    from bmvit.box_ops import box_iou

    accumulators: dict[str, Any] = {}
    for vid, truth_ids, truth_boxes, pred_ids, pred_boxes in frames:
        acc = accumulators.setdefault(vid, motmetrics.MOTAccumulator(auto_id=True))
        distances = np.full((len(truth_ids), len(pred_ids)), np.nan)
        if len(truth_ids) and len(pred_ids):
            iou = box_iou(torch.as_tensor(np.asarray(truth_boxes), dtype=torch.float64),
                          torch.as_tensor(np.asarray(pred_boxes), dtype=torch.float64)).numpy()
            distances = np.where(iou >= min_iou, 1.0 - iou, np.nan)
        acc.update(list(truth_ids), list(pred_ids), distances)
    names = ["mota", "idf1", "num_switches", "mostly_tracked", "num_unique_objects", "recall", "precision",
             "num_false_positives", "num_misses"]
    host = motmetrics.metrics.create()
    summary = host.compute_many(list(accumulators.values()), metrics=names, names=list(accumulators),
                                generate_overall=True)
    overall = summary.loc["OVERALL"]
    people = int(overall["num_unique_objects"])
    return {"mota": float(overall["mota"]), "idf1": float(overall["idf1"]),
            "id_switches": int(overall["num_switches"]),
            "mostly_tracked": float(overall["mostly_tracked"]) / people if people else 0.0, "people": people,
            "recall": float(overall["recall"]), "precision": float(overall["precision"]),
            "false_positives": int(overall["num_false_positives"]), "misses": int(overall["num_misses"])}


def scored_frames(truth: GroundTruth, tracked: Mapping[str, Sequence[Detections]],
                  excluded: set[tuple[str, float]] = frozenset()) -> list[tuple]:
    """``mot_metrics``' frames: every annotated, not excluded key frame that was predicted.

    A predicted key frame is the one at the annotated time (within 1 ms); at ``--fps 5`` the key
    frames in between are tracked but not scored.
    """
    frames = []
    for vid, by_time in sorted(truth.items()):
        keyframes = _by_time(tracked.get(vid, ()))
        for t, people in sorted(by_time.items()):
            det = keyframes.get(round(t, 3))
            if det is None or (vid, t) in excluded:
                continue
            frames.append((vid, [p.person_id for p in people], np.array([p.box for p in people]),
                           det.track_ids.tolist(), det.boxes_xyxy_norm.numpy()))
    return frames


def interval_scores(truth: GroundTruth, tracked: Mapping[str, Sequence[Detections]],
                    segments: Mapping[str, Sequence[ActionSegment]], min_tiou: float = 0.5) -> dict[str, float]:
    """Interval recall and segment precision of the timelines (see the module docstring).

    Args:
        truth: the annotations; their true intervals are ``true_intervals(truth)``.
        tracked: each video's tracked key frames.
        segments: each video's predicted segments (``build_timeline``).
        min_tiou: temporal IoU for a segment to equal a true interval.

    Returns:
        ``interval_recall``, ``intervals`` (how many true ones), ``segment_precision``, ``segments``
        (predicted segments on tracks matched to a person).
    """
    matches = _person_track_matches(truth, tracked)  # (vid, time, person) -> track id
    intervals = true_intervals(truth)
    found = 0
    for iv in intervals:
        votes = Counter(matches[(iv.video_id, t, iv.person_id)] for t in iv.times_s
                        if (iv.video_id, t, iv.person_id) in matches)
        if not votes:
            continue
        track = votes.most_common(1)[0][0]
        found += any(s.track_id == track and s.action_id == iv.action_id
                     and temporal_iou((s.start_s, s.end_s), (iv.start_s, iv.end_s)) >= min_tiou
                     for s in segments.get(iv.video_id, ()))
    # A track's person: the one it was matched to most often.
    owner: dict[tuple[str, int], int] = {}
    for (vid, track), person in _majority(matches).items():
        owner[(vid, track)] = person
    by_person: dict[tuple[str, int, int], list[TrueInterval]] = defaultdict(list)
    for iv in intervals:
        by_person[(iv.video_id, iv.person_id, iv.action_id)].append(iv)
    judged = correct = 0
    for vid, segs in segments.items():
        for s in segs:
            person = owner.get((vid, s.track_id))
            if person is None:
                continue
            judged += 1
            correct += any(temporal_iou((s.start_s, s.end_s), (iv.start_s, iv.end_s)) >= min_tiou
                           for iv in by_person.get((vid, person, s.action_id), ()))
    return {"interval_recall": found / len(intervals) if intervals else 0.0, "intervals": len(intervals),
            "segment_precision": correct / judged if judged else 0.0, "segments": judged}


def _person_track_matches(truth: GroundTruth, tracked: Mapping[str, Sequence[Detections]]
                          ) -> dict[tuple[str, float, int], int]:
    """``(video, time, person id) -> track id`` of the box matched to that person (IoU >= 0.5)."""
    out = {}
    for vid, by_time in truth.items():
        keyframes = _by_time(tracked.get(vid, ()))
        for t, people in by_time.items():
            det = keyframes.get(round(t, 3))
            if det is None:
                continue
            ids = det.track_ids.tolist()
            for p, k in match_boxes(np.array([p.box for p in people]), det.boxes_xyxy_norm.numpy()):
                out[(vid, t, people[p].person_id)] = ids[k]
    return out


def _majority(matches: Mapping[tuple[str, float, int], int]) -> dict[tuple[str, int], int]:
    """``(video, track id) -> the person id it was matched to most often``."""
    votes: dict[tuple[str, int], Counter] = defaultdict(Counter)
    for (vid, _, person), track in matches.items():
        votes[(vid, track)][person] += 1
    return {key: counter.most_common(1)[0][0] for key, counter in votes.items()}


def _by_time(detections: Sequence[Detections]) -> dict[float, Detections]:
    return {round(det.timestamp, 3): det for det in detections}


# ------------------------------------------------------------------------------------------------
# the run


def select_boxes(detections: Sequence[Detections], nms_iou: float = 0.0, min_score: float = 0.0) -> list[Detections]:
    """The key frames' boxes with actor score above ``min_score`` after class-agnostic greedy NMS at box
    IoU ``nms_iou`` (0: none), as ``Predictor(threshold=..., nms_iou=...)`` would have kept them (the
    boxes are sorted by actor score)."""
    import torch

    from bmvit.postprocess import greedy_nms

    if nms_iou <= 0 and min_score <= 0:
        return list(detections)
    out = []
    for det in detections:
        keep = greedy_nms(det.boxes_xyxy_norm, nms_iou) if nms_iou > 0 else torch.arange(len(det))
        keep = keep[det.actor_scores[keep] > min_score]
        out.append(replace(det, boxes_xyxy=det.boxes_xyxy[keep], boxes_xyxy_norm=det.boxes_xyxy_norm[keep],
                           actor_scores=det.actor_scores[keep], action_scores=det.action_scores[keep],
                           token_indices=det.token_indices[keep],
                           track_ids=None if det.track_ids is None else det.track_ids[keep],
                           embeddings=None if det.embeddings is None else det.embeddings[keep]))
    return out


def predict_videos(predictor, videos: Sequence[Path], fps: float,
                   log: Callable[[str], None] = lambda _m: None) -> tuple[dict[str, list[Detections]], dict[str, float]]:
    """``(video id -> key frames, video id -> duration in seconds)`` of ``predictor`` on ``videos``."""
    detections, durations = {}, {}
    for path in videos:
        start = time.perf_counter()
        plan = predictor.plan(path, fps)
        detections[plan.video_id] = predictor.predict(plan, fps=fps)
        durations[plan.video_id] = plan.num_frames / plan.video_fps
        log(f"{plan.video_id} at {fps:g} key frames/s: {len(plan.keyframes)} key frames in "
            f"{time.perf_counter() - start:.1f} s")
    return detections, durations


def evaluate(truth: GroundTruth, excluded: set[tuple[str, float]], detections: Mapping[str, Sequence[Detections]],
             durations: Mapping[str, float], fps: float, tracker: TrackerOptions, nms_iou: float = 0.0,
             min_score: float = 0.0, timeline: TimelineOptions | None = None
             ) -> tuple[dict[str, float], dict[str, list[ActionSegment]]]:
    """Track ``detections`` with ``tracker`` (after ``select_boxes(..., nms_iou, min_score)``), build their
    timelines and score both. Returns ``(metrics, video id -> segments)``."""
    tracked = {vid: track_detections(select_boxes(dets, nms_iou, min_score), tracker)
               for vid, dets in detections.items()}
    segments = {vid: build_timeline(dets, timeline, keyframe_fps=fps, duration_s=durations[vid])
                for vid, dets in tracked.items()}
    metrics = mot_metrics(scored_frames(truth, tracked, excluded))
    metrics.update(interval_scores(truth, tracked, segments))
    metrics["tracks"] = sum(len({i for d in dets for i in d.track_ids.tolist()}) for dets in tracked.values())
    return metrics, segments


def run(data_root: str | Path, out_dir: str | Path, weights: str | Path | None = None,
        fps_values: Sequence[float] = (1.0, 5.0), max_videos: int | None = None,
        variants: Mapping[str, TrackerOptions] | None = None,
        box_settings: Sequence[tuple[float, float]] = ((0.0, 0.0), (0.5, 0.0), (0.5, 0.5)),
        timeline: TimelineOptions | None = None, figure_video: int = 0, threads: int | None = None,
        log: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Predict the val videos of an AVA-layout synthetic root at each key-frame rate, track them with
    every variant and box setting (``(nms_iou, min_score)`` pairs for ``select_boxes``; the predictor
    keeps p(actor) > 0.3), and score them; writes ``report.json`` and the timeline PNG of one video
    (the default ``TrackerOptions``, the first box setting, the first rate) under ``out_dir``.

    Returns the report: ``rows`` (one per fps, box setting and variant, with ``mot_metrics`` and
    ``interval_scores``' numbers), and what was run.
    """
    import torch

    from bmvit.checkpoint import load
    from bmvit.inference.predictor import SHIPPED_WEIGHTS, Predictor
    from bmvit.inference.timeline import plot_timeline

    if threads:
        torch.set_num_threads(threads)
    root, out_dir = Path(data_root), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    annotations = root / "annotations"
    truth = read_ground_truth(annotations / "ava_val_v2.2.csv")
    excluded = read_excluded_times(annotations / "ava_val_excluded_timestamps_v2.2.csv")
    videos = sorted(root / "videos" / f"{vid}.mp4" for vid in truth)[:max_videos]
    truth = {p.stem: truth[p.stem] for p in videos}
    variants = dict(variants or VARIANTS)
    predictor = Predictor(load(weights or SHIPPED_WEIGHTS, device="cpu"), device="cpu", embeddings=True)
    rows = []
    for fps in fps_values:
        detections, durations = predict_videos(predictor, videos, fps, log)
        for nms, min_score in box_settings:
            for name, options in variants.items():
                metrics, segments = evaluate(truth, excluded, detections, durations, fps, options, nms, min_score,
                                             timeline)
                rows.append({"fps": fps, "nms_iou": nms, "min_score": min_score, "variant": name, **metrics})
                log(format_row(rows[-1]))
                if fps == fps_values[0] and (nms, min_score) == tuple(box_settings[0]) and options == TrackerOptions():
                    vid = videos[min(figure_video, len(videos) - 1)].stem
                    plot_timeline(segments[vid], out_dir / f"{vid}_timeline.png", duration_s=durations[vid],
                                  class_names=predictor.class_names, title=f"{vid} ({name}, {fps:g} key frames/s)")
    report = {"data": str(root), "videos": [p.stem for p in videos], "weights": str(weights or SHIPPED_WEIGHTS),
              "variants": {k: vars(v) for k, v in variants.items()}, "timeline": vars(timeline or TimelineOptions()),
              "rows": rows}
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    return report


ROW_HEADER = (f"{'fps':>4} {'nms':>4} {'p>':>4} {'variant':<22} {'IDsw':>5} {'MT':>6} {'MOTA':>6} {'IDF1':>6} {'recall':>6} "
              f"{'prec':>6} {'tracks':>6} {'int.recall':>10} {'seg.prec':>8}")


def format_row(row: Mapping[str, Any]) -> str:
    """One line of the report table (``ROW_HEADER``'s columns)."""
    return (f"{row['fps']:>4g} {row['nms_iou']:>4g} {max(row['min_score'], 0.3):>4g} {row['variant']:<22} {row['id_switches']:>5d} "
            f"{row['mostly_tracked']:>6.3f} {row['mota']:>6.3f} {row['idf1']:>6.3f} {row['recall']:>6.3f} "
            f"{row['precision']:>6.3f} {row['tracks']:>6d} "
            f"{row['interval_recall']:>10.3f} {row['segment_precision']:>8.3f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bmvit.bench.tracking", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="synthetic AVA-layout root (bmvit synth --out ...)")
    parser.add_argument("--out", required=True, help="folder for report.json and a timeline figure")
    parser.add_argument("--weights", default=None, help="model file (default: the shipped tiny synthetic model)")
    parser.add_argument("--fps", type=float, nargs="+", default=[1.0, 5.0], help="key-frame rates (default 1 5)")
    parser.add_argument("--videos", type=int, default=None, help="only the first N val videos")
    parser.add_argument("--figure-video", type=int, default=0, help="which val video's timeline to draw (index)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    report = run(args.data, args.out, args.weights, args.fps, args.videos,
                 figure_video=args.figure_video, threads=args.threads or None,
                 log=lambda m: print(f"[track-eval] {m}", file=sys.stderr, flush=True))
    print(f"{len(report['videos'])} val videos of {args.data}; IDsw: ID switches, MT: mostly tracked, "
          f"int.recall: true intervals found at tIoU >= 0.5, seg.prec: segments equal to a true interval")
    print(ROW_HEADER)
    for row in report["rows"]:
        print(format_row(row))
    print(f"took {time.perf_counter() - start:.0f} s; report: {Path(args.out) / 'report.json'}")
    return 0


__all__ = ["GroundTruth", "TrueInterval", "TruthBox", "VARIANTS", "evaluate", "interval_scores",
           "match_boxes", "mot_metrics", "predict_videos", "read_excluded_times", "read_ground_truth", "run",
           "scored_frames", "select_boxes", "temporal_iou", "true_intervals"]

if __name__ == "__main__":
    sys.exit(main())
