"""``bmvit data import``: an annotation export and a folder of videos -> a bmvit dataset root.

The steps, each of which can stop the import with a one-line ``AnnotationError`` before anything is
written:

1. read the annotations (``cvat``, ``table`` or ``ava_timeline``);
2. match every annotated video to a file of the video folder (by file name, then by name without
   extension) and probe it with PyAV (frame rate, frame count, size; its first frame decoded);
3. choose the key frames: the file's own times (CSV, AVA), or for CVAT tracks every ``1 / keyframe_fps``
   seconds from the first to the last frame where anyone is labelled; map times to each video's own
   frames, and boxes to fractions of its frame (a box beyond the frame by more than a pixel is an error;
   the rest is clipped);
4. name the classes: the chosen action list, or the one the files declare, or the names found; a label
   outside the list is an error;
5. split by video (``--val-videos``, the files' own train/val split, or ``--val-fraction`` of the videos
   drawn with a seed);
6. write the root into a temporary folder beside ``out`` and rename it into place at the end, so an
   import that fails leaves nothing that looks like a finished root.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bmvit.data.custom.records import AnnotationError, LabelledBox, TimedLabels
from bmvit.data.custom.root import (
    ANNOTATION_FILES,
    DATASET_FILE,
    LABEL_MAP_FILE,
    SPLITS,
    DatasetInfo,
    VideoInfo,
    timestamp_ms,
    write_dataset_info,
)

FORMATS = ("cvat", "csv", "ava")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv")
EDGE_TOLERANCE_PX = 1.0  # annotation tools round box corners; a box this far past the edge is clipped


@dataclass(frozen=True)
class ImportSettings:
    """What ``bmvit data import`` was asked (the CLI's options).

    Attributes:
        format: ``cvat`` (CVAT for video 1.1 XML), ``csv`` (docs/custom_data.md) or ``ava`` (AVA CSVs of
            any timeline).
        annotations: the annotation file, or a folder of them.
        videos: the folder of the videos.
        out: the dataset root to write (must not exist, unless ``overwrite``).
        keyframe_fps: CVAT: key frames per second taken from the tracks.
        val_fraction: the fraction of the videos drawn for val; None: the files' own split (AVA train/val
            CSVs) when they give one, else 0.2.
        val_videos: the val videos by name (file name or name without extension); overrides the rest.
        seed: the seed of the val draw.
        actions: the action list to train (names); None: what the files declare, else the names found.
        normalised: CSV: the boxes are fractions of the frame, not pixels.
        label_map: AVA: the ``.pbtxt`` naming the action ids (default: the one beside the CSVs).
        time_offset: AVA: the timestamp of each video's first frame (AVA itself: 900).
        actions_from, person_label, action_attribute: CVAT: where actions are (``cvat.read_cvat``).
        copy_videos: copy the videos instead of linking them.
        overwrite: replace an existing root.
        name: the dataset's name (default: the root folder's name).
        min_examples: warn about a class with fewer training examples than this.
        command: the command line, recorded in dataset.yaml.
    """

    format: str
    annotations: str
    videos: str
    out: str
    keyframe_fps: float = 1.0
    val_fraction: float | None = None
    val_videos: tuple[str, ...] | None = None
    seed: int = 0
    actions: tuple[str, ...] | None = None
    normalised: bool = False
    label_map: str | None = None
    time_offset: float = 0.0
    actions_from: str = "auto"
    person_label: str = "person"
    action_attribute: str | None = None
    copy_videos: bool = False
    overwrite: bool = False
    name: str | None = None
    min_examples: int = 5
    command: str = ""

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise AnnotationError(f"--format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if not self.keyframe_fps > 0:
            raise AnnotationError(f"--keyframe-fps must be > 0, got {self.keyframe_fps}")
        if self.val_fraction is not None and not 0.0 <= self.val_fraction < 1.0:
            raise AnnotationError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")


@dataclass(frozen=True)
class VideoFile:
    """An annotated video's file and what PyAV says of it."""

    video_id: str
    path: Path
    fps: float
    num_frames: int
    width: int
    height: int


@dataclass
class Person:
    """One labelled person at a key frame, ready for the root: box normalised xyxy in [0, 1]."""

    time_s: float
    box: tuple[float, float, float, float]
    person_id: int
    actions: tuple[str, ...]


@dataclass
class ImportSummary:
    """What an import wrote, as printed at its end."""

    root: Path
    videos: dict[str, int]
    keyframes: dict[str, int]
    empty_keyframes: dict[str, int]
    actors: dict[str, int]
    non_actors: dict[str, int]
    class_counts: dict[str, dict[str, int]]
    warnings: list[str] = field(default_factory=list)

    def to_text(self) -> str:
        lines = [f"dataset root: {self.root}"]
        for split in SPLITS:
            lines.append(f"  {split:<5}: {self.videos[split]} video(s), {self.keyframes[split]} key frame(s) "
                         f"({self.empty_keyframes[split]} with nobody labelled), {self.actors[split]} actor(s), "
                         f"{self.non_actors[split]} person(s) who are not actors")
        width = max(len(n) for n in self.class_counts)
        lines.append(f"  classes ({len(self.class_counts)}), examples train / val:")
        for name, counts in self.class_counts.items():
            lines.append(f"    {name:<{width}}  {counts['train']:>6} / {counts['val']:<6}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def import_dataset(settings: ImportSettings, log: Callable[[str], None] | None = None) -> ImportSummary:
    """Run the import (module docstring); returns the summary. Raises ``AnnotationError`` on bad input,
    with nothing written."""
    log = log or (lambda line: print(line, file=sys.stderr))
    out = Path(settings.out)
    if out.exists() and not settings.overwrite:
        raise AnnotationError(f"{out} already exists (pass --overwrite to replace it)")
    files = _video_folder(settings.videos)
    file_splits: dict[str, str] = {}
    if settings.format == "cvat":
        people, keyframes, declared, videos, warnings = _from_cvat(settings, files, log)
    else:
        labels = _read_timed(settings)
        videos = _match_videos(labels.keyframes, labels.where, files, settings.videos)
        _probe_all(videos, log)
        people, keyframes, warnings = _from_timed(labels, videos)
        declared, file_splits = labels.actions, labels.splits
    classes = _classes(settings, declared, people)
    split = _split(settings, videos, file_splits)
    warnings += _unlabelled_files(files, videos)
    info = _dataset_info(settings, out, classes, videos, keyframes, split)
    summary = _summary(out, info, people, warnings, settings.min_examples)
    _write_root(settings, out, info, videos, people)
    return summary


# ---------------------------------------------------------------------------------------------------------
# reading and matching


def _read_timed(settings: ImportSettings) -> TimedLabels:
    if settings.format == "csv":
        from bmvit.data.custom.table import read_csv_labels

        labels = read_csv_labels(settings.annotations, normalised=settings.normalised)
    else:
        from bmvit.data.custom.ava_timeline import read_ava_labels

        labels = read_ava_labels(settings.annotations, settings.label_map, time_offset=settings.time_offset)
    if not labels.keyframes:
        raise AnnotationError(f"{settings.annotations}: no annotation rows")
    return labels


def _video_folder(folder: str) -> dict[str, Path]:
    """File name -> path of every video in ``folder``."""
    if not os.path.isdir(folder):
        raise AnnotationError(f"{folder}: the video folder does not exist")
    return {n: Path(folder) / n for n in sorted(os.listdir(folder)) if os.path.splitext(n)[1].lower() in VIDEO_EXTENSIONS}


def _find_file(name: str, files: dict[str, Path]) -> Path | None:
    if name in files:
        return files[name]
    base = os.path.basename(name)
    if base in files:
        return files[base]
    stem = os.path.splitext(base)[0]
    found = [p for n, p in files.items() if os.path.splitext(n)[0] in (stem, base)]
    return found[0] if len(found) == 1 else None


def _match_videos(names: dict[str, Any], where: dict[str, str], files: dict[str, Path], folder: str
                  ) -> dict[str, VideoFile]:
    """Annotated video name -> its file (probed later); an error naming where the video is named."""
    matched: dict[str, VideoFile] = {}
    ids: dict[str, str] = {}
    for name in names:
        path = _find_file(name, files)
        if path is None:
            raise AnnotationError(f"{where.get(name, name)}: video {name!r} is not in {folder}")
        vid = path.stem
        if "," in vid or not vid:
            raise AnnotationError(f"{path}: a video name may not contain a comma (it is a CSV column); rename it")
        if ids.setdefault(vid, name) != name and _find_file(ids[vid], files) != path:
            raise AnnotationError(f"{where.get(name, name)}: videos {ids[vid]!r} and {name!r} have the same name "
                                  f"{vid!r} in {folder}; rename one")
        matched[name] = VideoFile(vid, path, 0.0, 0, 0, 0)
    return matched


def _probe(video: VideoFile) -> VideoFile:
    """The file's frame rate, frame count and size; its first frame is decoded to be sure it can be."""
    from bmvit.data.video import VideoFileSource

    source = VideoFileSource(video.path, video.video_id)
    try:
        height, width = source.size
        fps, count = source.fps, source.num_frames
        source.read_frames([0])
    except (ValueError, FileNotFoundError, IndexError, RuntimeError) as err:
        raise AnnotationError(f"{video.path}: PyAV cannot read this video ({str(err).splitlines()[0]})") from None
    finally:
        source.close()
    return VideoFile(video.video_id, video.path, float(fps), int(count), int(width), int(height))


def _probe_all(videos: dict[str, VideoFile], log: Callable[[str], None]) -> None:
    """Probe each file once (two names of one file share the result)."""
    probed: dict[Path, VideoFile] = {}
    for name, video in videos.items():
        if video.path in probed:
            videos[name] = probed[video.path]
            continue
        v = videos[name] = probed[video.path] = _probe(video)
        log(f"  {v.path.name}: {v.width}x{v.height}, {v.fps:.3f} fps, {v.num_frames} frames ({v.num_frames / v.fps:.1f} s)")


def _unlabelled_files(files: dict[str, Path], videos: dict[str, VideoFile]) -> list[str]:
    used = {v.path for v in videos.values()}
    left = [n for n, p in files.items() if p not in used]
    if not left:
        return []
    shown = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
    return [f"{len(left)} video(s) of the folder have no labels and are left out: {shown}"]


# ---------------------------------------------------------------------------------------------------------
# key frames and people


def _normalised_box(box: LabelledBox, video: VideoFile) -> tuple[float, float, float, float]:
    """``box.box`` as fractions of the frame, clipped; an error when it lies beyond the frame."""
    w, h = (1.0, 1.0) if box.normalised else (float(video.width), float(video.height))
    tol_x, tol_y = (EDGE_TOLERANCE_PX / video.width, EDGE_TOLERANCE_PX / video.height) if box.normalised else (
        EDGE_TOLERANCE_PX, EDGE_TOLERANCE_PX)
    x1, y1, x2, y2 = box.box
    if not (x2 > x1 and y2 > y1):
        raise AnnotationError(f"{box.where}: box {box.box} is empty")
    if x1 < -tol_x or y1 < -tol_y or x2 > w + tol_x or y2 > h + tol_y:
        frame = f"{video.width}x{video.height} frame" if not box.normalised else "frame ([0, 1])"
        raise AnnotationError(f"{box.where}: box {tuple(round(v, 4) for v in box.box)} lies outside the {frame} of "
                              f"{video.path.name}")
    clipped = (min(max(x1 / w, 0.0), 1.0), min(max(y1 / h, 0.0), 1.0),
               min(max(x2 / w, 0.0), 1.0), min(max(y2 / h, 0.0), 1.0))
    if not (clipped[2] > clipped[0] and clipped[3] > clipped[1]):
        raise AnnotationError(f"{box.where}: box {box.box} has no area inside the frame of {video.path.name}")
    return clipped


def _check_time(time_s: float, video: VideoFile, where: str) -> None:
    duration = video.num_frames / video.fps
    if time_s > duration - 0.5 / video.fps:
        raise AnnotationError(f"{where}: time {time_s:g} s is past the end of {video.path.name} ({duration:.3f} s, "
                              f"{video.num_frames} frames at {video.fps:g} fps)")


class _PersonIds:
    """Integer person ids for the root's CSV: a file's integer ids kept, others numbered after them."""

    def __init__(self) -> None:
        self.ids: dict[tuple[str, str], int] = {}
        self.next: Counter[str] = Counter()

    def __call__(self, vid: str, person: str) -> int:
        if not person:
            return -1
        key = (vid, person)
        if key not in self.ids:
            if person.isdigit():
                self.ids[key] = int(person)
            else:
                self.next[vid] += 1
                self.ids[key] = 1_000_000 + self.next[vid]
        return self.ids[key]


def _from_timed(labels: TimedLabels, videos: dict[str, VideoFile]
                ) -> tuple[dict[str, list[Person]], dict[str, list[float]], list[str]]:
    person_id = _PersonIds()
    people: dict[str, list[Person]] = {v.video_id: [] for v in videos.values()}
    keyframes: dict[str, list[float]] = {}
    for name, times in labels.keyframes.items():
        video = videos[name]
        for t in sorted(times):
            _check_time(t, video, labels.keyframe_where.get((name, t), labels.where[name]))
        keyframes[video.video_id] = sorted(set(keyframes.get(video.video_id, [])) | set(times))
    for box in labels.boxes:
        video = videos[box.video]
        people[video.video_id].append(Person(box.time_s, _normalised_box(box, video),
                                             person_id(video.video_id, box.person), box.actions))
    warnings = [f"video {vid} has key frames but nobody labelled in them" for vid, p in people.items() if not p]
    return people, keyframes, warnings


def _from_cvat(settings: ImportSettings, files: dict[str, Path], log: Callable[[str], None]):
    from bmvit.data.custom.cvat import read_cvat

    tasks = read_cvat(settings.annotations, actions_from=settings.actions_from, person_label=settings.person_label,
                      action_attribute=settings.action_attribute)
    if not tasks:
        raise AnnotationError(f"{settings.annotations}: no CVAT task found")
    videos: dict[str, VideoFile] = {}
    for task in tasks:
        names = [n for n in (task.source, task.name) if n]
        path = next((p for p in (_find_file(n, files) for n in names) if p is not None), None)
        if path is None:
            raise AnnotationError(f"{Path(task.path).name}: video {names[0]!r} (task {task.name!r}) is not in "
                                  f"{settings.videos}")
        if any(v.path == path for v in videos.values()):
            raise AnnotationError(f"{Path(task.path).name}: video {path.name} is annotated by two tasks; "
                                  "merge them in CVAT or keep one")
        videos[task.video] = VideoFile(path.stem, path, 0.0, 0, 0, 0)
    _probe_all(videos, log)
    person_id = _PersonIds()
    people: dict[str, list[Person]] = {}
    keyframes: dict[str, list[float]] = {}
    declared: list[str] = []
    warnings = []
    for task in tasks:
        video = videos[task.video]
        declared += [a for a in task.action_names if a not in declared]
        for label, count in sorted(getattr(task, "ignored_tracks", {}).items()):
            warnings.append(f"{Path(task.path).name}: {count} track(s) of label {label!r} are not people and were "
                            "left out")
        times, frames = _cvat_keyframes(task, video, settings.keyframe_fps)
        if not times:
            warnings.append(f"video {video.video_id}: no labelled person in {Path(task.path).name}; left out")
            continue
        time_of = dict(zip(frames, times))
        keyframes[video.video_id] = times
        people[video.video_id] = [
            Person(time_of[b.frame], _normalised_box(b, video), person_id(video.video_id, b.person), b.actions)
            for b in task.boxes_at(frames)
        ]
    videos = {name: v for name, v in videos.items() if v.video_id in keyframes}
    if not videos:
        raise AnnotationError(f"{settings.annotations}: no labelled person in any task")
    return people, keyframes, declared, videos, warnings


def _cvat_keyframes(task, video: VideoFile, keyframe_fps: float) -> tuple[list[float], list[int]]:
    """Key-frame times every ``1 / keyframe_fps`` s from the first to the last frame where anyone is
    labelled, and their frames."""
    if keyframe_fps > video.fps:
        raise AnnotationError(f"--keyframe-fps {keyframe_fps:g} is above the frame rate of {video.path.name} "
                              f"({video.fps:g} fps)")
    span = task.frame_span()
    if span is None:
        return [], []
    first, last = span
    if last >= video.num_frames:
        raise AnnotationError(f"{Path(task.path).name}: frame {last} is labelled, but {video.path.name} has "
                              f"{video.num_frames} frames")
    k0 = math.ceil(first / video.fps * keyframe_fps - 1e-9)
    k1 = math.floor(last / video.fps * keyframe_fps + 1e-9)
    times, frames = [], []
    for k in range(k0, k1 + 1):
        t = round(k / keyframe_fps, 3)
        f = min(max(int(math.floor(t * video.fps + 0.5)), first), last)
        if frames and f == frames[-1]:
            continue
        times.append(t)
        frames.append(f)
    return times, frames


# ---------------------------------------------------------------------------------------------------------
# classes and split


def _classes(settings: ImportSettings, declared: Sequence[str], people: dict[str, list[Person]]) -> dict[int, str]:
    """``{id: name}``: the chosen list, else the declared one, else the names found (sorted); ids 1..C
    in that order (an AVA label map keeps its own ids)."""
    found = sorted({a for ps in people.values() for p in ps for a in p.actions})
    names = list(settings.actions) if settings.actions else list(declared) or found
    if not names:
        raise AnnotationError(f"{settings.annotations}: no action label anywhere: nothing to train "
                              "(label at least one action, or give the action list with --actions)")
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise AnnotationError(_unknown_label_message(settings, unknown, names, people))
    if settings.format == "ava" and not settings.actions:
        from bmvit.data.ava import read_label_map
        from bmvit.data.custom.ava_timeline import _label_map_path

        label_map = read_label_map(_label_map_path(settings.annotations, settings.label_map))
        return {i: n for i, n in sorted(label_map.items()) if n in names}
    return {i + 1: n for i, n in enumerate(names)}


def _unknown_label_message(settings: ImportSettings, unknown: list[str], names: list[str],
                           people: dict[str, list[Person]]) -> str:
    for vid, ps in sorted(people.items()):
        for p in ps:
            bad = [a for a in p.actions if a in unknown]
            if bad:
                return (f"{settings.annotations}: label {bad[0]!r} (video {vid}, {p.time_s:g} s) is not in the action "
                        f"list ({', '.join(names[:8])}{'...' if len(names) > 8 else ''})")
    return f"{settings.annotations}: labels {unknown} are not in the action list"


def _split(settings: ImportSettings, videos: dict[str, VideoFile], file_splits: dict[str, str]) -> dict[str, str]:
    """video_id -> "train" | "val"."""
    ids = sorted(v.video_id for v in videos.values())
    if settings.val_videos:
        by_name = {name: v.video_id for name, v in videos.items()} | {v.video_id: v.video_id for v in videos.values()}
        by_name |= {v.path.name: v.video_id for v in videos.values()}
        missing = [n for n in settings.val_videos if n not in by_name]
        if missing:
            raise AnnotationError(f"--val-videos: {', '.join(missing)} not among the labelled videos ({', '.join(ids[:8])})")
        val = {by_name[n] for n in settings.val_videos}
        if val == set(ids):
            raise AnnotationError("--val-videos names every video: no training video left")
        return {v: "val" if v in val else "train" for v in ids}
    if settings.val_fraction is None and file_splits:
        named = {videos[name].video_id: split for name, split in file_splits.items() if name in videos}
        if len(named) == len(ids) and set(named.values()) == {"train", "val"}:
            return named
    fraction = 0.2 if settings.val_fraction is None else settings.val_fraction
    if fraction == 0:
        return {v: "train" for v in ids}
    if len(ids) < 2:
        raise AnnotationError(f"only one labelled video ({ids[0]}): a split by video needs two or more "
                              "(or --val-fraction 0 to train without val)")
    count = min(len(ids) - 1, max(1, round(fraction * len(ids))))
    val = set(random.Random(settings.seed).sample(ids, count))
    return {v: "val" if v in val else "train" for v in ids}


# ---------------------------------------------------------------------------------------------------------
# the root


def _dataset_info(settings: ImportSettings, out: Path, classes: dict[int, str], videos: dict[str, VideoFile],
                  keyframes: dict[str, list[float]], split: dict[str, str]) -> DatasetInfo:
    infos = {}
    for v in {v.video_id: v for v in videos.values()}.values():
        file = f"videos/{v.video_id}{v.path.suffix.lower()}"
        infos[v.video_id] = VideoInfo(v.video_id, file, split[v.video_id], v.fps, v.num_frames, v.width, v.height,
                                      tuple(sorted(keyframes[v.video_id])))
    source = {"format": settings.format, "annotations": os.path.abspath(settings.annotations),
              "videos": os.path.abspath(settings.videos), "command": settings.command}
    return DatasetInfo(root=out, name=settings.name or out.name, classes=classes, videos=infos,
                       keyframe_fps=settings.keyframe_fps if settings.format == "cvat" else None, source=source)


def _summary(out: Path, info: DatasetInfo, people: dict[str, list[Person]], warnings: list[str],
             min_examples: int) -> ImportSummary:
    counts = {name: {"train": 0, "val": 0} for name in info.classes.values()}
    s = ImportSummary(out, *({split: 0 for split in SPLITS} for _ in range(5)), class_counts=counts,
                      warnings=list(warnings))
    for vid, video in info.videos.items():
        s.videos[video.split] += 1
        s.keyframes[video.split] += len(video.keyframes_s)
        labelled = {p.time_s for p in people.get(vid, [])}
        s.empty_keyframes[video.split] += sum(t not in labelled for t in video.keyframes_s)
        for p in people.get(vid, []):
            kept = [a for a in p.actions if a in counts]
            s.actors[video.split] += bool(kept)
            s.non_actors[video.split] += not kept
            for a in kept:
                counts[a][video.split] += 1
    for name, c in counts.items():
        if c["train"] < min_examples:
            s.warnings.append(f"class {name!r} has {c['train']} training example(s), fewer than {min_examples}")
        if s.videos["val"] and c["val"] == 0:
            s.warnings.append(f"class {name!r} has no val example: its AP will not be measured")
    return s


def _write_root(settings: ImportSettings, out: Path, info: DatasetInfo, videos: dict[str, VideoFile],
                people: dict[str, list[Person]]) -> None:
    """Everything into a temporary folder beside ``out``, renamed into place last."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.importing-", dir=out.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp's folder is private; the root is an ordinary folder
        (tmp / "videos").mkdir()
        (tmp / "annotations").mkdir()
        for v in {v.video_id: v for v in videos.values()}.values():
            _place_video(v.path, tmp / info.videos[v.video_id].file, settings.copy_videos)
        ids = {name: i for i, name in info.classes.items()}
        for split in SPLITS:
            lines = []
            for vid, video in sorted(info.videos.items()):
                if video.split == split:
                    lines += _csv_lines(vid, people.get(vid, []), ids)
            (tmp / ANNOTATION_FILES[split]).write_text("".join(lines), encoding="utf-8")
        (tmp / LABEL_MAP_FILE).write_text(
            "".join(f'item {{\n  name: "{n}"\n  id: {i}\n}}\n' for i, n in sorted(info.classes.items())),
            encoding="utf-8")
        write_dataset_info(info, tmp / DATASET_FILE)  # last: a root without it is not a root
        if out.exists():
            old = out.with_name(f".{out.name}.replaced-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _place_video(src: Path, dst: Path, copy: bool) -> None:
    if not copy:
        try:
            os.symlink(os.path.abspath(src), dst)
            return
        except OSError:  # no symlinks here (some file systems, Windows without the right): a hard link or a copy
            pass
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copyfile(src, dst)


def _csv_lines(vid: str, people: list[Person], ids: dict[str, int]) -> list[str]:
    lines = []
    for p in sorted(people, key=lambda p: p.time_s):
        box = ",".join(f"{v:.6f}" for v in p.box)
        head = f"{vid},{timestamp_ms(p.time_s)},{box}"
        kept = [ids[a] for a in p.actions if a in ids]
        lines += [f"{head},{a},{p.person_id}\n" for a in sorted(kept)] or [f"{head},,{p.person_id}\n"]
    return lines


__all__ = ["FORMATS", "ImportSettings", "ImportSummary", "import_dataset"]
