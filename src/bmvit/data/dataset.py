"""Datasets of key frames: a clip of T frames around each key frame, and its people as targets.

``KeyFrameDataset`` serves any list of ``KeyFrame`` records (AVA, UCF101-24, JHMDB-21, one's own);
``AVADataset`` builds one from an AVA-layout folder. An item is ``(clip, target)``:

- ``clip``: ``float32 [3, T, H, W]``, normalised with mean/std; or ``uint8 [3, T, H, W]`` when the
  transform ends in ``ToModelLayout`` (the training loaders' uint8 hand-off).
- ``target``: ``boxes`` ``[P, 4]`` float32 normalised ``cxcywh`` of the (transformed) key frame;
  ``labels`` ``[P, C]`` float32 multi-hot over ``class_ids``; ``person_ids`` ``[P]`` int64;
  ``video_id`` str; ``timestamp`` int; ``orig_size`` (H, W) of the stored frames; ``letterbox``
  (a ``transforms.Letterbox``, or a ``transforms.ShortSideCrop`` for ``resize="short_side"``) when the
  input is not the whole frame resized, so that evaluation can map boxes back. With
  ``keep_non_actors``: ``is_actor`` ``[P]`` bool, False for a person who is not an actor.

Actors and non-actors: a person whose labels all lie outside ``class_ids`` (or who has none) is not
an actor of the trained classes. Such people are left out of the targets, so the model learns to
call them "no actor" (docs/design.md#actors: "An annotated person with no trained class is a non-actor person").
A key frame whose people are all non-actors stays in the dataset with an empty target.
``keep_non_actors=True`` (``loss.nonactor_boxes``, the supplementary's "additional bounding boxes")
keeps them instead, with an all-zero ``labels`` row and ``is_actor`` False, so that the criterion
can train their boxes.

Workers: sources are opened lazily in the process that reads them, and open containers are not
pickled, so ``DataLoader(num_workers > 0)`` works (each worker opens its own files).
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from bmvit.data.ava import (
    AVA_VALID_SECONDS,
    KeyFrame,
    class_ids_in,
    group_by_keyframe,
    read_annotations,
    read_exclusions,
    read_frame_lists,
    read_label_map,
)
from bmvit.data.encoded import EncodedBatch, EncodedClip
from bmvit.data.transforms import create_transforms, min_decode_size
from bmvit.data.video import FrameFolderSource, VideoFileSource, clip_indices, clip_indices_around_frame

logger = logging.getLogger("bmvit.data")

AVA_MEAN = (0.45, 0.45, 0.45)
AVA_STD = (0.225, 0.225, 0.225)
"""PySlowFast's AVA normalisation (``_C.DATA.MEAN/STD``), RGB in [0, 1]."""

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".ts", ".flv")


@dataclass(frozen=True)
class VideoRef:
    """Where one video's frames are.

    ``kind="video"``: ``path`` is a video file. ``kind="frames"``: ``path`` is a frame folder whose
    files follow ``pattern`` (``{video_id}``, ``{frame}`` numbered from ``first_frame``), or are listed
    in ``frame_paths``; ``fps`` is the rate they were extracted at. ``num_frames``: the folder's frame
    count when known (from a frame list), so that the source need not list the folder.
    """

    kind: Literal["video", "frames"]
    path: str
    fps: float = 30.0
    pattern: str = "{video_id}_{frame:06d}.jpg"
    first_frame: int = 1
    frame_paths: tuple[str, ...] | None = None
    num_frames: int | None = None


class KeyFrameDataset(Dataset):
    """Clips around key frames and their people.

    Args:
        keyframes: the records; each needs ``labels`` (multi-hot over ``class_ids``).
        videos: video id -> ``VideoRef`` for every video the key frames name.
        class_ids: the trained classes, in label-column order.
        num_frames, stride: T frames, ``stride`` frames apart, centred on the key frame (PySlowFast's
            sampling, clamped at the video's ends; see ``video.clip_indices``).
        transform: ``(clip uint8 [T, H, W, 3], target) -> (clip, target)``, e.g. ``keyframe_transform``.
        time_offset, fps: a record without ``frame_index`` is centred on the frame at
            ``timestamp - time_offset`` seconds of its video; a record with one, on that frame.
            ``stride`` counts frames of an ``fps`` timeline (None: the video's own rate), so clips of
            videos at different rates span the same time. AVA: 900 and 30.
        cache_videos: decode each video file whole, once per process (small datasets).
        decode_size: the smallest (H, W) the transform needs (``transforms.min_decode_size``): sources
            may then decode frames smaller than stored (JPEG DCT scaling, video frames converted
            small), never below it. None: frames at their stored size.
        max_open_videos: open video containers kept per process (least recently used are closed).
        class_names: optional names of ``class_ids`` (metadata for checkpoints and reports).
        keep_non_actors: keep the people who are not actors in the targets (all-zero ``labels`` row)
            and add ``is_actor`` ``[P]`` bool; off (default): only actors are targets.
        encoded_frames: items are ``(EncodedClip, raw target)``: the clip's JPEG files read but not
            decoded, for decoding on the training device (``data.decode=device``, frame folders only);
            ``apply_transform`` then finishes each item there.
    """

    def __init__(
        self,
        keyframes: Sequence[KeyFrame],
        videos: Mapping[str, VideoRef],
        class_ids: Sequence[int],
        *,
        num_frames: int = 16,
        stride: int = 4,
        transform: Callable,
        time_offset: float = 0.0,
        fps: float | None = None,
        cache_videos: bool = False,
        max_open_videos: int = 8,
        class_names: Sequence[str] | None = None,
        decode_size: tuple[int, int] | None = None,
        keep_non_actors: bool = False,
        encoded_frames: bool = False,
    ) -> None:
        if num_frames < 1 or stride < 1:
            raise ValueError(f"num_frames and stride must be >= 1, got {num_frames} and {stride}")
        self.keyframes = list(keyframes)
        self.videos = dict(videos)
        self.class_ids = [int(c) for c in class_ids]
        self.class_names = list(class_names) if class_names is not None else [str(c) for c in self.class_ids]
        self.num_frames, self.stride = num_frames, stride
        self.transform = transform
        self.time_offset, self.fps = float(time_offset), fps
        self.cache_videos, self.max_open_videos = cache_videos, max_open_videos
        self.decode_size = tuple(decode_size) if decode_size is not None else None
        self.keep_non_actors = bool(keep_non_actors)
        self.encoded_frames = bool(encoded_frames)
        self._sources: OrderedDict[str, FrameFolderSource | VideoFileSource] = OrderedDict()
        missing = sorted({k.video_id for k in self.keyframes} - self.videos.keys())
        if missing:
            raise ValueError(f"no video given for {len(missing)} video id(s) of the key frames: {missing[:5]}")
        for k in self.keyframes:
            if k.labels is None or k.labels.shape != (len(k), len(self.class_ids)):
                got = None if k.labels is None else tuple(k.labels.shape)
                raise ValueError(
                    f"key frame {k.video_id},{k.timestamp}: labels must be [P, C] = [{len(k)}, {len(self.class_ids)}] "
                    f"multi-hot over class_ids, got {got}"
                )

    def __len__(self) -> int:
        return len(self.keyframes)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_sources"] = OrderedDict()  # open files stay in the process that opened them
        return state

    def keyframe_keys(self) -> list[tuple[str, int]]:
        """(video_id, timestamp) of every key frame, in dataset order (what evaluation scores)."""
        return [(k.video_id, k.timestamp) for k in self.keyframes]

    def source(self, video_id: str) -> FrameFolderSource | VideoFileSource:
        """The (lazily opened, per-process) frame source of a video."""
        src = self._sources.get(video_id)
        if src is not None:
            self._sources.move_to_end(video_id)
            return src
        ref = self.videos[video_id]
        if ref.kind == "video":
            src = VideoFileSource(ref.path, video_id, cache=self.cache_videos)
        elif ref.kind == "frames":
            src = FrameFolderSource(
                ref.path,
                video_id,
                fps=ref.fps,
                pattern=ref.pattern,
                first_frame=ref.first_frame,
                frame_paths=ref.frame_paths,
                num_frames=ref.num_frames,
            )
        else:
            raise ValueError(f"video {video_id}: VideoRef.kind must be 'video' or 'frames', got {ref.kind!r}")
        self._sources[video_id] = src
        # Only uncached video files hold open containers (frame folders hold nothing, cached videos
        # hold frames they would have to decode again): close the least recently used beyond the limit.
        open_files = [v for v, s in self._sources.items() if isinstance(s, VideoFileSource) and not s.cache]
        for vid in open_files[: max(0, len(open_files) - self.max_open_videos)]:
            self._sources.pop(vid).close()
        return src

    def frame_indices(self, index: int) -> np.ndarray:
        """The frames of key frame ``index``'s clip, as indices of its video: ``int64 [T]``."""
        k = self.keyframes[index]
        src = self.source(k.video_id)
        if k.frame_index is not None and (self.fps is None or self.fps == src.fps):
            return clip_indices(k.frame_index, self.num_frames, self.stride, src.num_frames)
        if k.frame_index is not None:  # the stride counts frames of the fps timeline, not the video's
            return clip_indices_around_frame(k.frame_index, self.num_frames, self.stride, self.fps, src.fps,
                                             src.num_frames)
        return src.clip_indices_at_time(k.timestamp - self.time_offset, self.num_frames, self.stride, self.fps)

    def read_clip(self, index: int) -> np.ndarray:
        """The raw clip of key frame ``index``: ``uint8 [T, H, W, 3]``."""
        with self._naming_keyframe(index):
            return self.source(self.keyframes[index].video_id).read_frames(self.frame_indices(index),
                                                                           min_size=self.decode_size)

    def read_encoded(self, index: int) -> EncodedClip:
        """The clip of key frame ``index`` as its JPEG files, undecoded (``encoded_frames``; frame folders only)."""
        k = self.keyframes[index]
        with self._naming_keyframe(index):
            src = self.source(k.video_id)
            if not isinstance(src, FrameFolderSource):
                raise ValueError(f"video {k.video_id}: decoding on the device reads JPEG frame folders "
                                 f"(data.source=frames), not video files")
            files, stored = src.read_encoded(self.frame_indices(index))
        return EncodedClip.from_files(files, stored)

    @contextmanager
    def _naming_keyframe(self, index: int):
        """Re-raise a read error with the key frame in front of its message."""
        try:
            yield
        except (ValueError, IndexError, FileNotFoundError) as e:
            k = self.keyframes[index]
            message = f"key frame {k.video_id},{k.timestamp}: {e}"
            try:
                wrapped = type(e)(message)
            except TypeError:  # an exception type with another signature
                wrapped = ValueError(message)
            raise wrapped from e

    def __getitem__(self, index: int) -> tuple[Tensor | EncodedClip, dict]:
        """``(clip, target)`` after the transform; with ``encoded_frames``, ``(EncodedClip, target)`` before it
        (``apply_transform`` finishes it where the frames are decoded)."""
        k = self.keyframes[index]
        if self.encoded_frames:
            encoded = self.read_encoded(index)
            return encoded, self._target(k, encoded.stored_size)
        clip = self.read_clip(index)
        # The stored frame's size: the clip may have been decoded smaller (``decode_size``).
        stored = tuple(int(v) for v in self.source(k.video_id).size) if self.decode_size else \
            (int(clip.shape[1]), int(clip.shape[2]))
        return self.apply_transform(clip, self._target(k, stored))

    def _target(self, k: KeyFrame, stored_size: tuple[int, int]) -> dict:
        """The target of key frame ``k`` before the transform (numpy arrays, boxes ``boxes_xyxy``)."""
        people = self._target_people(k)
        return {
            "boxes_xyxy": np.asarray(k.boxes_xyxy, dtype=np.float32)[people].reshape(-1, 4),
            "labels": np.asarray(k.labels, dtype=np.float32)[people].reshape(-1, len(self.class_ids)),
            "person_ids": np.asarray(k.person_ids, dtype=np.int64)[people],
            "video_id": k.video_id,
            "timestamp": int(k.timestamp),
            "orig_size": (int(stored_size[0]), int(stored_size[1])),
        }

    def apply_transform(self, clip, target: dict) -> tuple[Tensor, dict]:
        """The dataset's transform of a raw ``uint8 [T, H, W, 3]`` clip (numpy, or a tensor on any device)
        and its raw target, and what is derived after it."""
        clip, target = self.transform(clip, target)
        if self.keep_non_actors:
            # Derived after the transform, which may drop people (crops) and knows only its own
            # per-person keys: a row with no positive class is a non-actor, before and after.
            target["is_actor"] = torch.as_tensor(target["labels"]).sum(-1) > 0
        return clip, target

    def _target_people(self, k: KeyFrame) -> np.ndarray:
        """``[P]`` bool: the people of key frame ``k`` that become targets (the actors, or everyone)."""
        if self.keep_non_actors:
            return np.ones(len(k), dtype=bool)
        return k.labels.sum(axis=1) > 0


def collate_fn(batch: Sequence[tuple[Tensor | EncodedClip, dict]]) -> tuple[Tensor | EncodedBatch, list[dict]]:
    """Stack clips to ``[B, 3, T, H, W]``; keep targets as a list (people per clip vary).

    Items of a dataset with ``encoded_frames`` stay undecoded: an ``EncodedBatch`` of them (and of any
    finished clip among them, e.g. ``EvalItems``' stand-in for an unreadable one) with their targets.
    """
    clips, targets = zip(*batch)
    if any(isinstance(c, EncodedClip) for c in clips):
        return EncodedBatch(list(clips)), list(targets)
    return torch.stack(clips), list(targets)


def keyframe_transform(
    class_ids: Sequence[int],
    input_size: int,
    train: bool,
    *,
    mean: Sequence[float] = AVA_MEAN,
    std: Sequence[float] = AVA_STD,
    resize: Literal["square", "letterbox", "short_side"] = "square",
    hflip: float = 0.5,
    scale_jitter: Sequence[float] = (1.0, 1.0),
    color_jitter: float = 0.0,
    flip_swap_class_ids: Sequence[tuple[int, int]] = (),
    output: Literal["float", "uint8"] = "float",
) -> Callable:
    """The built-in ``(clip, target)`` transform of a key-frame dataset whose label columns are
    ``class_ids``: ``transforms.create_transforms`` with the flip's class-id pairs turned into label
    columns (a pair with a class that is not trained is dropped). Augmentation only when ``train``."""
    column = {c: i for i, c in enumerate(class_ids)}
    swaps = [(column[a], column[b]) for a, b in flip_swap_class_ids if a in column and b in column]
    return create_transforms(
        train,
        input_size,
        mean=tuple(mean),
        std=tuple(std),
        resize=resize,
        hflip=hflip if train else 0.0,
        scale_jitter=tuple(scale_jitter) if train else (1.0, 1.0),
        color_jitter=color_jitter if train else 0.0,
        flip_swap_columns=swaps,
        output=output,
    )


class AVADataset(KeyFrameDataset):
    """AVA v2.2 (or a dataset in its layout): key frames from the annotation CSV, clips from videos or frames.

    Layout under ``root`` (each path can be given explicitly instead)::

        videos/<video_id>.mp4            (any extension PyAV reads; video time 0 = second ``time_offset``)
        frames/<video_id>/<video_id>_000001.jpg ...   (30 fps; 000001 is frame index 0)
        annotations/ava_{split}_v2.2.csv, ava_val_excluded_timestamps_v2.2.csv,
                    ava_action_list_v2.2_for_activitynet_2019.pbtxt
        frame_lists/{split}.csv          (PySlowFast frame lists; optional for source="frames")

    Key frames are those present in the annotation CSV within ``valid_seconds`` (PySlowFast), every
    one of them: no ``second % 4`` subsampling of val (PySlowFast's default without FULL_TEST_ON_VAL).
    Excluded timestamps: ``exclusions="auto"`` (default) removes those of the root's
    ``ava_val_excluded_timestamps_v2.2.csv`` from the val split (a warning if the file is missing);
    a path removes that file's key frames from any split; None removes nothing.
    ``output="uint8"`` makes the built-in transforms hand over ``uint8 [3, T, H, W]`` clips (what the
    trainer's loaders use; ``transforms.normalize_clips`` finishes them on the model's device);
    ``"float"`` (default) gives normalised float32 clips, ready for the model as they are.
    ``class_ids`` default to every action id present in the annotation file, sorted. Actions outside
    ``class_ids`` are left out of the labels (logged); people left without a trained action are
    non-actors (see the module docstring); ``keep_non_actors`` keeps them in the targets.
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: Literal["train", "val"] = "train",
        *,
        annotation_csv: str | os.PathLike | None = None,
        video_dir: str | os.PathLike | None = None,
        frame_dir: str | os.PathLike | None = None,
        frame_list_file: str | os.PathLike | None = None,
        exclusions: str | os.PathLike | None = "auto",
        label_map_file: str | os.PathLike | None = None,
        num_frames: int = 16,
        stride: int = 4,
        input_size: int = 256,
        class_ids: Sequence[int] | None = None,
        source: Literal["video", "frames"] = "video",
        train: bool | None = None,
        mean: Sequence[float] = AVA_MEAN,
        std: Sequence[float] = AVA_STD,
        resize: Literal["square", "letterbox", "short_side"] = "square",
        time_offset: float = 900,
        fps: float = 30,
        valid_seconds: tuple[int, int] | None = AVA_VALID_SECONDS,
        skip_bad: bool = False,
        cache_videos: bool = False,
        hflip: float = 0.5,
        scale_jitter: Sequence[float] = (1.0, 1.0),
        color_jitter: float = 0.0,
        flip_swap_class_ids: Sequence[tuple[int, int]] = (),
        transform: Callable | None = None,
        output: Literal["float", "uint8"] = "float",
        keep_non_actors: bool = False,
    ) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"AVADataset: split must be 'train' or 'val', got {split!r}")
        if source not in ("video", "frames"):
            raise ValueError(f"AVADataset: source must be 'video' or 'frames', got {source!r}")
        paths = _ava_paths(root, split, annotation_csv, video_dir, frame_dir, frame_list_file, label_map_file)
        self.split, self.source_kind = split, source
        self.annotation_file = paths["annotations"]
        rows = read_annotations(paths["annotations"], skip_bad=skip_bad)
        self.skipped_rows = rows.skipped
        class_ids = list(class_ids) if class_ids is not None else class_ids_in(rows)
        if not class_ids:
            raise ValueError(f"{paths['annotations']}: no action ids found to train on")
        keyframes = group_by_keyframe(rows, class_ids, unknown="ignore", valid_seconds=valid_seconds)
        keyframes = _remove_excluded(keyframes, root, split, exclusions)
        label_map = (
            read_label_map(paths["label_map"]) if paths["label_map"] and os.path.exists(paths["label_map"]) else {}
        )
        self.label_map = label_map
        names = [label_map.get(c, str(c)) for c in class_ids]
        videos = sorted({k.video_id for k in keyframes})
        if source == "video":
            refs = _find_videos(paths["videos"], videos)
        else:
            refs = _find_frames(paths["frames"], paths["frame_list"], videos, fps)
        train = split == "train" if train is None else train
        decode_size = None  # a transform of the caller's may need the frames whole
        if transform is None:
            decode_size = min_decode_size(input_size, scale_jitter)
            transform = keyframe_transform(class_ids, input_size, train, mean=mean, std=std, resize=resize,
                                           hflip=hflip, scale_jitter=scale_jitter, color_jitter=color_jitter,
                                           flip_swap_class_ids=flip_swap_class_ids, output=output)
        super().__init__(
            keyframes,
            refs,
            class_ids,
            num_frames=num_frames,
            stride=stride,
            transform=transform,
            time_offset=time_offset,
            fps=fps,
            cache_videos=cache_videos,
            class_names=names,
            decode_size=decode_size,
            keep_non_actors=keep_non_actors,
        )
        logger.info(
            "AVADataset %s: %d key frames, %d videos, %d classes, source=%s",
            split,
            len(self),
            len(videos),
            len(class_ids),
            source,
        )


def _ava_paths(
    root, split, annotation_csv, video_dir, frame_dir, frame_list_file, label_map_file
) -> dict[str, str | None]:
    def pick(explicit, *parts) -> str | None:
        if explicit is not None:
            return os.fspath(explicit)
        return os.path.join(os.fspath(root), *parts) if root is not None else None

    paths = {
        "annotations": pick(annotation_csv, "annotations", f"ava_{split}_v2.2.csv"),
        "videos": pick(video_dir, "videos"),
        "frames": pick(frame_dir, "frames"),
        "frame_list": pick(frame_list_file, "frame_lists", f"{split}.csv"),
        "label_map": pick(label_map_file, "annotations", "ava_action_list_v2.2_for_activitynet_2019.pbtxt"),
    }
    if paths["annotations"] is None:
        raise ValueError("AVADataset: give root or annotation_csv")
    return paths


def _remove_excluded(keyframes: list[KeyFrame], root, split: str, exclusions) -> list[KeyFrame]:
    if exclusions is None or (exclusions == "auto" and split != "val"):
        return keyframes
    if exclusions == "auto":
        path = os.path.join(os.fspath(root), "annotations", "ava_val_excluded_timestamps_v2.2.csv") if root else None
        if path is None or not os.path.exists(path):
            logger.warning("no excluded-timestamps file at %s: no val key frames excluded", path)
            return keyframes
    else:
        path = os.fspath(exclusions)
        if not os.path.exists(path):
            raise FileNotFoundError(f"excluded-timestamps CSV not found: {path}")
    excluded = read_exclusions(path)
    kept = [k for k in keyframes if (k.video_id, k.timestamp) not in excluded]
    if len(kept) != len(keyframes):
        logger.info("%s: %d excluded key frame(s) removed", path, len(keyframes) - len(kept))
    return kept


def _find_videos(video_dir: str | None, video_ids: Sequence[str]) -> dict[str, VideoRef]:
    if video_dir is None or not os.path.isdir(video_dir):
        raise FileNotFoundError(f"video folder not found: {video_dir}")
    by_id: dict[str, list[str]] = {}
    for name in os.listdir(video_dir):
        stem, ext = os.path.splitext(name)
        if ext.lower() in VIDEO_EXTENSIONS:
            by_id.setdefault(stem, []).append(os.path.join(video_dir, name))
    refs, missing = {}, []
    for vid in video_ids:
        found = by_id.get(vid)
        if not found:
            missing.append(vid)
        elif len(found) > 1:
            raise ValueError(f"video {vid}: several files in {video_dir}: {sorted(found)} (keep one)")
        else:
            refs[vid] = VideoRef("video", found[0])
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} annotated video(s) have no file in {video_dir} "
            f"(extensions {', '.join(VIDEO_EXTENSIONS)}): {missing[:5]}"
        )
    return refs


def _find_frames(
    frame_dir: str | None, frame_list: str | None, video_ids: Sequence[str], fps: float
) -> dict[str, VideoRef]:
    if frame_dir is None or not os.path.isdir(frame_dir):
        raise FileNotFoundError(f"frame folder not found: {frame_dir}")
    lists = read_frame_lists(frame_list, prefix=frame_dir) if frame_list and os.path.exists(frame_list) else {}
    refs, missing = {}, []
    for vid in video_ids:
        folder = os.path.join(frame_dir, vid)
        if vid in lists and lists[vid].standard:  # <frame_dir>/<vid>/<vid>_%06d.jpg from 000001: a count
            refs[vid] = VideoRef("frames", folder, fps=fps, num_frames=len(lists[vid]))
        elif vid in lists:
            refs[vid] = VideoRef("frames", folder, fps=fps, frame_paths=tuple(lists[vid]))
        elif os.path.isdir(folder):
            refs[vid] = VideoRef("frames", folder, fps=fps)
        else:
            missing.append(vid)
    if missing:
        where = f"{frame_dir} or {frame_list}" if lists else frame_dir
        raise FileNotFoundError(f"{len(missing)} annotated video(s) have no frames in {where}: {missing[:5]}")
    return refs


__all__ = ["AVA_MEAN", "AVA_STD", "AVADataset", "KeyFrameDataset", "VideoRef", "collate_fn"]
