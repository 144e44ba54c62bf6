"""``bmvit data check ROOT`` on a root written by ``bmvit data import`` (one with a ``dataset.yaml``).

The same report as for AVA roots (``bmvit.data.check.CheckReport``), with what can go wrong in an
imported root: ``dataset.yaml`` or the annotation files edited by hand into disagreement, a linked video
moved or replaced since the import (another frame rate, length or size), a key frame past a video's end,
a clip that does not decode, and classes too rare to learn or to measure.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from bmvit.data.check import CheckReport
from bmvit.data.custom.root import DATASET_FILE, SPLITS, DatasetInfo, custom_keyframes, read_dataset_info

MIN_EXAMPLES = 5


@dataclass(frozen=True)
class CustomCheckOptions:
    """How to check an imported root.

    Attributes:
        num_frames, stride: the clip (T frames, ``stride`` frames of a ``sample_fps`` timeline apart).
        sample_fps: the timeline strides count (``data.fps``).
        decode: decode the clip of every key frame (slow); otherwise ``decode_sample`` per video.
        decode_sample: clips decoded per video without ``decode`` (the first and the last key frame, ...).
        min_examples: a class with fewer training examples is warned about.
    """

    num_frames: int = 16
    stride: int = 4
    sample_fps: float = 30.0
    decode: bool = False
    decode_sample: int = 2
    min_examples: int = MIN_EXAMPLES


def check_custom_root(root: str | os.PathLike, options: CustomCheckOptions = CustomCheckOptions()) -> CheckReport:
    """Check an imported root; the report's ``exit_code`` is 1 when training on it would fail or mislead."""
    start = time.perf_counter()
    report = CheckReport(root=os.fspath(root))
    try:
        info = read_dataset_info(root)
    except (OSError, ValueError) as err:
        report.add("ERROR", "files", "bad_dataset_yaml", str(err), file=os.path.join(os.fspath(root), DATASET_FILE))
        report.seconds = time.perf_counter() - start
        return report
    report.facts["format"] = f"custom ({DATASET_FILE}, written by {info.source.get('format', '?')} import)"
    report.facts["classes"] = len(info.classes)
    _check_files(info, report)
    keyframes = _check_annotations(info, report)
    _check_label_map(info, keyframes, report, options.min_examples)
    readable = _check_videos(info, report)
    _check_clips(info, keyframes, readable, report, options)
    report.seconds = time.perf_counter() - start
    return report


def _check_files(info: DatasetInfo, report: CheckReport) -> None:
    for path in (info.annotation_path("train"), info.annotation_path("val"), info.label_map_path):
        if path.is_file():
            report.add("OK", "files", "file_present", f"{path.relative_to(info.root)}")
        else:
            report.add("ERROR", "files", "missing_file", f"{path} is missing", file=str(path))


def _check_annotations(info: DatasetInfo, report: CheckReport) -> dict[str, list]:
    out: dict[str, list] = {}
    for split in SPLITS:
        videos = info.split_videos(split)
        try:
            keyframes = custom_keyframes(info, split, sorted(info.classes))
        except (OSError, ValueError) as err:
            report.add("ERROR", "annotations", "bad_rows", str(err).splitlines()[0], file=str(info.annotation_path(split)))
            continue
        out[split] = keyframes
        people = sum(len(k) for k in keyframes)
        actors = sum(int((k.labels.sum(axis=1) > 0).sum()) for k in keyframes)
        empty = sum(len(k) == 0 for k in keyframes)
        report.facts[f"{split}"] = (f"{len(videos)} video(s), {len(keyframes)} key frame(s) ({empty} with nobody "
                                    f"labelled), {actors} actor(s), {people - actors} non-actor(s)")
        report.add("OK", "annotations", "rows_read",
                   f"{split}: {len(keyframes)} key frames of {len(videos)} video(s) read")
        if split == "val" and videos and actors == 0:
            report.add("ERROR", "annotations", "no_val_actors", "val: no labelled actor: mAP cannot be measured")
    return out


def _check_label_map(info: DatasetInfo, keyframes: dict[str, list], report: CheckReport, min_examples: int) -> None:
    from bmvit.data.ava import read_label_map

    try:
        label_map = read_label_map(info.label_map_path)
    except (OSError, ValueError) as err:
        report.add("ERROR", "label map", "bad_label_map", str(err).splitlines()[0], file=str(info.label_map_path))
        return
    if label_map != info.classes:
        report.add("ERROR", "label map", "label_map_differs",
                   f"{info.label_map_path.name} names {label_map}, {DATASET_FILE} {info.classes}: re-run the import")
        return
    report.add("OK", "label map", "label_map", f"{len(label_map)} classes: " + ", ".join(label_map.values()))
    ids = sorted(info.classes)
    counts = {split: Counter() for split in SPLITS}
    for split, kfs in keyframes.items():
        for k in kfs:
            for column, n in enumerate(k.labels.sum(axis=0).astype(int).tolist()):
                counts[split][ids[column]] += n
    for cid, name in sorted(info.classes.items()):
        train, val = counts["train"][cid], counts["val"][cid]
        if "train" in keyframes and train < min_examples:
            report.add("WARNING", "label map", "rare_class",
                       f"class {cid} {name!r}: {train} training example(s), fewer than {min_examples}")
        if "val" in keyframes and info.split_videos("val") and val == 0:
            report.add("WARNING", "label map", "class_without_val",
                       f"class {cid} {name!r}: no val example, its AP is not measured")


def _check_videos(info: DatasetInfo, report: CheckReport) -> set[str]:
    from bmvit.data.video import VideoFileSource

    readable = set()
    for vid, video in sorted(info.videos.items()):
        path = info.video_path(video)
        if not path.exists():
            report.add("ERROR", "videos", "missing_video", f"{vid}: {path} is missing (a link whose file moved?)",
                       video=vid, file=str(path))
            continue
        source = VideoFileSource(path, vid)
        try:
            fps, count, (height, width) = source.fps, source.num_frames, source.size
        except (ValueError, FileNotFoundError) as err:
            report.add("ERROR", "videos", "unreadable_video", f"{vid}: {str(err).splitlines()[0]}", video=vid)
            continue
        finally:
            source.close()
        said = (round(video.fps, 3), video.num_frames, video.width, video.height)
        found = (round(fps, 3), count, width, height)
        if said != found:
            report.add("ERROR", "videos", "video_changed",
                       f"{vid}: {DATASET_FILE} says {said[0]} fps, {said[1]} frames, {said[2]}x{said[3]}; the file has "
                       f"{found[0]} fps, {found[1]} frames, {found[2]}x{found[3]}: re-run the import", video=vid)
            continue
        late = [t for t in video.keyframes_s if t > video.duration_s]
        if late:
            report.add("ERROR", "videos", "keyframe_past_end",
                       f"{vid}: key frame at {late[0]:g} s is past its end ({video.duration_s:.3f} s)", video=vid)
            continue
        readable.add(vid)
    report.add("OK", "videos", "videos_read", f"{len(readable)} of {len(info.videos)} video(s) match {DATASET_FILE}")
    return readable


def _check_clips(info: DatasetInfo, keyframes: dict[str, list], readable: set[str], report: CheckReport,
                 options: CustomCheckOptions) -> None:
    from bmvit.data.custom.root import custom_dataset

    decoded = 0
    for split, kfs in keyframes.items():
        dataset = custom_dataset(info, split, sorted(info.classes), num_frames=options.num_frames,
                                 stride=options.stride, sample_fps=options.sample_fps, transform=_identity)
        by_video: dict[str, list[int]] = {}
        for i, k in enumerate(kfs):
            by_video.setdefault(k.video_id, []).append(i)
        for vid, indices in sorted(by_video.items()):
            if vid not in readable:
                continue
            chosen = indices if options.decode else _spread(indices, options.decode_sample)
            for i in chosen:
                try:
                    clip = dataset.read_clip(i)
                except (ValueError, IndexError, FileNotFoundError, RuntimeError) as err:
                    report.add("ERROR", "clips", "clip_unreadable", str(err).splitlines()[0], video=vid)
                    break
                if clip.shape[0] != options.num_frames or not np.isfinite(clip).all():
                    report.add("ERROR", "clips", "clip_wrong", f"{vid}: clip of key frame {kfs[i].timestamp} ms has "
                               f"shape {clip.shape}", video=vid)
                    break
                decoded += 1
    report.add("OK", "clips", "clips_decoded", f"{decoded} clip(s) of {options.num_frames} frames decoded")


def _spread(indices: list[int], count: int) -> list[int]:
    if count <= 0 or not indices:
        return []
    picks = np.linspace(0, len(indices) - 1, num=min(count, len(indices))).round().astype(int)
    return [indices[p] for p in sorted(set(picks.tolist()))]


def _identity(clip, target):
    return clip, target


__all__ = ["CustomCheckOptions", "check_custom_root"]
