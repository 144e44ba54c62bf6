"""A dataset root written by ``bmvit data import``: its ``dataset.yaml``, and the key frames it describes.

Layout::

    ROOT/dataset.yaml                  every fact the loader needs (below)
    ROOT/videos/<video_id>.<ext>       the videos (links to the user's files where possible)
    ROOT/annotations/train.csv         AVA's eight columns: video_id, time, x1, y1, x2, y2, action_id, person_id
    ROOT/annotations/val.csv           (time in milliseconds of the video, boxes normalised xyxy; an empty
                                       action_id is a person doing none of the classes)
    ROOT/annotations/label_map.pbtxt   the classes, ``item { name: "..." id: N }``

``dataset.yaml`` lists the classes (id -> name) and, per video, its file, split, frame rate, frame count,
size and the times of its key frames in seconds. Key frames come from there, not from the CSV rows, so
a key frame where nobody is labelled is kept: it teaches the model "no actor" and, in evaluation, makes
a detection there a false positive. Times are seconds from the video's first frame, mapped to each
video's own frames (``frame = round(time_s * fps)``); a key frame's integer ``timestamp`` (the CSV's
second column, what evaluation rows carry) is its time in milliseconds.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bmvit.data.ava import KeyFrame, group_by_keyframe, read_annotations, read_label_map

DATASET_FILE = "dataset.yaml"
SCHEMA_VERSION = 1
SPLITS = ("train", "val")
ANNOTATION_FILES = {"train": "annotations/train.csv", "val": "annotations/val.csv"}
LABEL_MAP_FILE = "annotations/label_map.pbtxt"


def timestamp_ms(time_s: float) -> int:
    """A key frame's integer key: its time in milliseconds (what the annotation CSVs and evaluation rows hold)."""
    return int(round(float(time_s) * 1000.0))


@dataclass(frozen=True)
class VideoInfo:
    """One video of a custom dataset.

    Attributes:
        video_id: its name in the annotation CSVs (the file name without extension).
        file: the video file, relative to the root (or absolute).
        split: "train" or "val".
        fps: its frame rate (frames per second, as the container states it).
        num_frames: its frame count.
        width, height: its frame size in pixels.
        keyframes_s: the times of its key frames, seconds from its first frame, ascending.
    """

    video_id: str
    file: str
    split: str
    fps: float
    num_frames: int
    width: int
    height: int
    keyframes_s: tuple[float, ...]

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps

    def frame_of(self, time_s: float) -> int:
        """The 0-based frame shown at ``time_s`` seconds (the nearest one, within the video)."""
        return int(min(max(int(np.floor(time_s * self.fps + 0.5)), 0), self.num_frames - 1))


@dataclass(frozen=True)
class DatasetInfo:
    """What ``dataset.yaml`` says.

    Attributes:
        root: the dataset root.
        name: the dataset's name.
        classes: ``{class id: name}``, ids 1..C.
        videos: ``{video_id: VideoInfo}``.
        keyframe_fps: key frames per second chosen at import (frame-annotated sources), or None where
            the annotation file gave the key frames itself.
        source: how it was made: the import command, the annotation format and file.
    """

    root: Path
    name: str
    classes: dict[int, str]
    videos: dict[str, VideoInfo]
    keyframe_fps: float | None = None
    source: dict[str, Any] = field(default_factory=dict)

    def split_videos(self, split: str) -> list[VideoInfo]:
        """The videos of ``split``, by id."""
        return [v for _, v in sorted(self.videos.items()) if v.split == split]

    def annotation_path(self, split: str) -> Path:
        return self.root / ANNOTATION_FILES[split]

    @property
    def label_map_path(self) -> Path:
        return self.root / LABEL_MAP_FILE

    def video_path(self, video: VideoInfo) -> Path:
        return Path(video.file) if os.path.isabs(video.file) else self.root / video.file


def is_custom_root(root: str | os.PathLike) -> bool:
    """Whether ``root`` holds a ``dataset.yaml`` (a root written by ``bmvit data import``)."""
    return (Path(root) / DATASET_FILE).is_file()


def dataset_yaml(info: DatasetInfo) -> dict[str, Any]:
    """``info`` as the YAML document ``write_dataset_info`` writes."""
    return {
        "bmvit_dataset": SCHEMA_VERSION,
        "name": info.name,
        "keyframe_fps": info.keyframe_fps,
        "timestamp_unit": "ms",
        "annotations": dict(ANNOTATION_FILES),
        "label_map": LABEL_MAP_FILE,
        "classes": {int(k): v for k, v in sorted(info.classes.items())},
        "source": dict(info.source),
        "videos": {
            vid: {
                "file": v.file,
                "split": v.split,
                "fps": round(float(v.fps), 6),
                "num_frames": int(v.num_frames),
                "duration_s": round(v.duration_s, 3),
                "width": int(v.width),
                "height": int(v.height),
                "keyframes_s": [round(float(t), 3) for t in v.keyframes_s],
            }
            for vid, v in sorted(info.videos.items())
        },
    }


def write_dataset_info(info: DatasetInfo, path: str | os.PathLike) -> None:
    """Write ``dataset.yaml`` (key frames in flow style: one line per video)."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def _flow_list(dumper, data):
        flow = all(isinstance(x, (int, float)) for x in data)
        return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)

    _Dumper.add_representer(list, _flow_list)
    text = yaml.dump(dataset_yaml(info), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1000)
    Path(path).write_text(text, encoding="utf-8")


def read_dataset_info(root: str | os.PathLike) -> DatasetInfo:
    """Read ``ROOT/dataset.yaml``; a ``ValueError`` naming the file and the key for anything malformed."""
    import yaml

    root = Path(root)
    path = root / DATASET_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: write the root with `bmvit data import` (docs/custom_data.md)")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(doc, dict) or doc.get("bmvit_dataset") != SCHEMA_VERSION:
        raise ValueError(f"{path}: not a bmvit dataset description (expected 'bmvit_dataset: {SCHEMA_VERSION}')")
    if doc.get("timestamp_unit", "ms") != "ms":
        raise ValueError(f"{path}: timestamp_unit must be ms, got {doc.get('timestamp_unit')!r}")
    classes = _read_classes(path, doc.get("classes"))
    videos = {}
    for vid, entry in (doc.get("videos") or {}).items():
        videos[str(vid)] = _read_video(path, str(vid), entry)
    if not videos:
        raise ValueError(f"{path}: no videos listed")
    fps = doc.get("keyframe_fps")
    return DatasetInfo(root=root, name=str(doc.get("name") or root.name), classes=classes, videos=videos,
                       keyframe_fps=None if fps is None else float(fps), source=dict(doc.get("source") or {}))


def _read_classes(path: Path, entry: Any) -> dict[int, str]:
    if not isinstance(entry, dict) or not entry:
        raise ValueError(f"{path}: 'classes' must map class ids to names, got {entry!r}")
    classes = {}
    for key, name in entry.items():
        if not isinstance(key, int) or key < 1 or not isinstance(name, str) or not name:
            raise ValueError(f"{path}: classes: {key!r}: {name!r} is not an id >= 1 with a name")
        classes[key] = name
    return classes


def _read_video(path: Path, vid: str, entry: Any) -> VideoInfo:
    where = f"{path}: videos: {vid}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a mapping, got {entry!r}")
    missing = [k for k in ("file", "split", "fps", "num_frames", "width", "height", "keyframes_s") if k not in entry]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(missing)}")
    if entry["split"] not in SPLITS:
        raise ValueError(f"{where}: split must be train or val, got {entry['split']!r}")
    try:
        info = VideoInfo(vid, str(entry["file"]), str(entry["split"]), float(entry["fps"]), int(entry["num_frames"]),
                         int(entry["width"]), int(entry["height"]), tuple(float(t) for t in entry["keyframes_s"]))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from None
    if info.fps <= 0 or info.num_frames < 1 or info.width < 1 or info.height < 1:
        raise ValueError(f"{where}: fps, num_frames, width and height must be positive")
    if list(info.keyframes_s) != sorted(set(info.keyframes_s)):
        raise ValueError(f"{where}: keyframes_s must be ascending without repeats")
    return info


def custom_class_ids(info: DatasetInfo) -> list[int]:
    """Every class of the dataset, in id order (the model's label columns)."""
    return sorted(info.classes)


def custom_keyframes(info: DatasetInfo, split: str, class_ids: Sequence[int]) -> list[KeyFrame]:
    """The key frames of ``split``: one per time in ``dataset.yaml`` (empty where nobody is labelled),
    with the people of the split's CSV; ``frame_index`` is the video's own frame at that time and
    ``timestamp`` the time in milliseconds.

    Raises ``ValueError`` naming the file and line for a row whose video is not in the split or whose
    time is not one of the video's key frames, and for an action id outside ``class_ids``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be train or val, got {split!r}")
    videos = {v.video_id: v for v in info.split_videos(split)}
    path = info.annotation_path(split)
    rows = read_annotations(path)
    known = {vid: {timestamp_ms(t) for t in v.keyframes_s} for vid, v in videos.items()}
    for r in range(len(rows)):
        vid, ts = str(rows.video_ids[r]), int(rows.timestamps[r])
        if vid not in videos:
            raise ValueError(f"{path}:{int(rows.lines[r])}: video {vid!r} is not a {split} video of {info.root / DATASET_FILE}")
        if ts not in known[vid]:
            raise ValueError(f"{path}:{int(rows.lines[r])}: time {ts} ms is not a key frame of {vid} in {DATASET_FILE}")
    labelled = {(k.video_id, k.timestamp): k for k in group_by_keyframe(rows, class_ids, key="person")}
    empty_boxes = np.zeros((0, 4), dtype=np.float64)
    out = []
    for vid, video in sorted(videos.items()):
        for t in video.keyframes_s:
            ts = timestamp_ms(t)
            k = labelled.get((vid, ts))
            if k is None:
                k = KeyFrame(vid, ts, empty_boxes, (), np.zeros(0, dtype=np.int64),
                             np.zeros((0, len(class_ids)), dtype=np.float32))
            out.append(dataclasses.replace(k, frame_index=video.frame_of(t)))
    return out


def custom_dataset(
    info: DatasetInfo,
    split: str,
    class_ids: Sequence[int],
    *,
    num_frames: int,
    stride: int,
    sample_fps: float,
    transform: Callable,
    cache_videos: bool = False,
    decode_size: tuple[int, int] | None = None,
    keep_non_actors: bool = False,
):
    """The ``KeyFrameDataset`` of ``split``: clips of ``num_frames`` frames, ``stride`` frames of a
    ``sample_fps`` timeline apart, centred on each key frame's own video frame, so that a clip spans the
    same time in a 25-fps and a 30-fps video. ``keep_non_actors``: the labelled people without an action
    stay in the targets (``loss.nonactor_boxes``; see ``KeyFrameDataset``)."""
    from bmvit.data.dataset import KeyFrameDataset, VideoRef

    refs = {v.video_id: VideoRef("video", str(info.video_path(v)), fps=v.fps, num_frames=v.num_frames)
            for v in info.split_videos(split)}
    return KeyFrameDataset(
        custom_keyframes(info, split, class_ids),
        refs,
        class_ids,
        num_frames=num_frames,
        stride=stride,
        transform=transform,
        fps=sample_fps,
        cache_videos=cache_videos,
        class_names=[info.classes[c] for c in class_ids],
        decode_size=decode_size,
        keep_non_actors=keep_non_actors,
    )


def check_label_map(info: DatasetInfo) -> None:
    """The label-map file agrees with ``dataset.yaml``'s classes (both are written by the import)."""
    label_map = read_label_map(info.label_map_path)
    if label_map != info.classes:
        raise ValueError(f"{info.label_map_path}: its classes differ from those of {info.root / DATASET_FILE}")


__all__ = [
    "ANNOTATION_FILES",
    "DATASET_FILE",
    "LABEL_MAP_FILE",
    "DatasetInfo",
    "VideoInfo",
    "check_label_map",
    "custom_class_ids",
    "custom_dataset",
    "custom_keyframes",
    "dataset_yaml",
    "is_custom_root",
    "read_dataset_info",
    "timestamp_ms",
    "write_dataset_info",
]
