"""UCF101-24 and JHMDB-21: the standard tube annotations turned into key-frame records.

Annotation version read: the ground-truth pickles of the ACT detector (Kalogeiton et al., ICCV 2017,
``vkalogeiton/caffe`` branch ``act-detector``), used unchanged by MOC, TubeR and most frame-mAP work:
``UCF101v2-GT.pkl`` (UCF101-24 with Singh et al.'s corrected annotations, ``gurkirt/corrected-UCF101-Annots``)
and ``JHMDB-GT.pkl``. Both are a dict with

- ``labels``: class names; class ``i`` (0-based) becomes action id ``i + 1`` here (1-based like AVA's,
  so the same label-map and evaluation code serve all datasets; ``label_map()`` gives the names);
- ``gttubes``: ``{video: {label_index: [tube, ...]}}``, a tube an array ``[n, 5]`` of
  ``frame (1-based), x1, y1, x2, y2`` in pixels;
- ``nframes``: ``{video: number of frames}``; ``resolution``: ``{video: (height, width)}``;
- ``train_videos`` / ``test_videos``: one list of videos per split (UCF101-24: 1 split, JHMDB-21: 3).

Frames are the ACT layout ``<frames_root>/<video>/%05d.jpg`` (UCF101-24, 25 fps) or ``%05d.png``
(JHMDB-21, 30 fps), numbered from 1; video files can be used instead.

Safety: the pickles are Python 2 pickles of numpy arrays. They are read with a restricted unpickler
that resolves only numpy's array-reconstruction functions, ``numpy.ndarray``/``dtype``, a few
builtin containers and ``_codecs.encode`` (how Python 3 pickles bytes); any other global (a pickle
that would run code) is refused. A JSON file with the same keys (tubes as nested lists) is read as well.

Every annotated frame is a key frame (these datasets are annotated densely); a box belongs to a tube,
whose index in its video is the person id.
"""

from __future__ import annotations

import codecs
import io
import json
import logging
import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from bmvit.data.ava import KeyFrame
from bmvit.data.dataset import KeyFrameDataset, VideoRef
from bmvit.data.transforms import create_transforms

logger = logging.getLogger("bmvit.data")


@dataclass(frozen=True)
class DatasetInfo:
    """Per-dataset constants of the ACT layout."""

    name: str
    fps: float
    frame_pattern: str
    num_classes: int
    num_splits: int


UCF101_24 = DatasetInfo("ucf101_24", fps=25.0, frame_pattern="{frame:05d}.jpg", num_classes=24, num_splits=1)
JHMDB_21 = DatasetInfo("jhmdb_21", fps=30.0, frame_pattern="{frame:05d}.png", num_classes=21, num_splits=3)
DATASETS = {d.name: d for d in (UCF101_24, JHMDB_21)}


@dataclass(frozen=True)
class TubeAnnotations:
    """ACT-style ground truth (see the module docstring); tubes are float64 ``[n, 5]`` arrays."""

    path: str
    labels: list[str]
    gttubes: dict[str, dict[int, list[np.ndarray]]]
    nframes: dict[str, int]
    resolution: dict[str, tuple[int, int]]
    train_videos: list[list[str]]
    test_videos: list[list[str]]

    def label_map(self) -> dict[int, str]:
        """``{action id: name}`` with ids ``1..len(labels)``."""
        return {i + 1: name for i, name in enumerate(self.labels)}

    def videos(self, split: Literal["train", "test"], split_index: int = 1) -> list[str]:
        """The videos of a split (``split_index`` 1-based, as in the papers)."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        lists = self.train_videos if split == "train" else self.test_videos
        if not 1 <= split_index <= len(lists):
            raise ValueError(f"{self.path}: split_index must be 1..{len(lists)}, got {split_index}")
        return list(lists[split_index - 1])


# ---------------------------------------------------------------------------------------------------------
# reading


def _numpy_globals() -> dict[tuple[str, str], object]:
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    allowed: dict[tuple[str, str], object] = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    # Python 3 writes bytes (numpy's raw buffers) in protocol 2 as _codecs.encode(text, "latin1"): a pure
    # data transform, also allowed by torch.load(weights_only=True).
    allowed[("_codecs", "encode")] = codecs.encode
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    for name, obj in (("set", set), ("frozenset", frozenset), ("list", list), ("dict", dict), ("tuple", tuple)):
        allowed[("builtins", name)] = obj
        allowed[("__builtin__", name)] = obj
    return allowed


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Resolves numpy arrays and builtin containers only; every other global is refused."""

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: annotation pickles may only hold numpy arrays and "
                "builtin containers"
            ) from None


def read_act_annotations(path: str | os.PathLike) -> TubeAnnotations:
    """Read ``UCF101v2-GT.pkl`` / ``JHMDB-GT.pkl`` (restricted unpickling) or a JSON file with the same keys."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"tube annotations not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    if path.lower().endswith(".json"):
        try:
            raw = json.loads(data)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
    else:
        try:
            raw = _ArrayOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
        except pickle.UnpicklingError as e:
            raise ValueError(f"{path}: {e}") from None
        except (EOFError, ValueError, TypeError, AttributeError) as e:
            raise ValueError(f"{path}: not a readable annotation pickle ({type(e).__name__}: {e})") from None
    return _validate(path, raw)


def _validate(path: str, raw) -> TubeAnnotations:
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a dict of annotations, got {type(raw).__name__}")  # noqa: TRY004 (file content)
    raw = {_text(k): v for k, v in raw.items()}
    needed = ("labels", "gttubes", "nframes", "resolution", "train_videos", "test_videos")
    missing = [k for k in needed if k not in raw]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing}; expected the ACT layout with keys {list(needed)}")
    labels = [_text(x) for x in raw["labels"]]
    nframes = {_text(v): int(n) for v, n in raw["nframes"].items()}
    resolution = {}
    for v, hw in raw["resolution"].items():
        h, w = (int(x) for x in hw)
        resolution[_text(v)] = (h, w)
    gttubes: dict[str, dict[int, list[np.ndarray]]] = {}
    for video, by_label in raw["gttubes"].items():
        video = _text(video)
        gttubes[video] = {}
        for label, tubes in by_label.items():
            label = int(label)
            if not 0 <= label < len(labels):
                raise ValueError(f"{path}: video {video}: label index {label} outside 0..{len(labels) - 1}")
            arrays = []
            for t, tube in enumerate(tubes):
                a = np.asarray(tube, dtype=np.float64)
                if a.ndim != 2 or a.shape[1] != 5:
                    raise ValueError(
                        f"{path}: video {video}, label {label}, tube {t}: expected [n, 5] rows "
                        f"(frame, x1, y1, x2, y2), got shape {a.shape}"
                    )
                arrays.append(a)
            gttubes[video][label] = arrays
    splits = {k: [[_text(v) for v in lst] for lst in _split_lists(raw[k])] for k in ("train_videos", "test_videos")}
    for video in gttubes:
        if video not in nframes or video not in resolution:
            raise ValueError(f"{path}: video {video} has tubes but no 'nframes' or 'resolution' entry")
    return TubeAnnotations(path, labels, gttubes, nframes, resolution, splits["train_videos"], splits["test_videos"])


def _text(x) -> str:
    return x.decode("latin1") if isinstance(x, bytes) else str(x)


def _split_lists(x) -> list[list]:
    """``[[videos of split 1], ...]``; a flat list of names is one split."""
    x = list(x)
    if x and isinstance(x[0], (str, bytes)):
        return [x]
    return [list(s) for s in x]


# ---------------------------------------------------------------------------------------------------------
# key frames


def tubes_to_keyframes(
    ann: TubeAnnotations,
    videos: Sequence[str],
    *,
    class_ids: Sequence[int] | None = None,
    include_unannotated: bool = False,
    skip_bad: bool = False,
) -> list[KeyFrame]:
    """One ``KeyFrame`` per annotated frame of ``videos``, sorted by (video, frame).

    Boxes are normalised by the video's resolution and clipped to [0, 1] (a few UCF boxes reach past
    the border; the count is logged). ``timestamp`` is the 1-based frame number, ``frame_index`` the
    0-based index. ``class_ids`` default to all ``1..len(labels)``. ``include_unannotated`` adds the
    frames without a box (empty records), which frame-mAP protocols score too. A frame number outside
    ``1..nframes`` or a box that is empty after clipping raises ``ValueError`` naming video, tube and
    frame, unless ``skip_bad`` (then logged and counted).
    """
    class_ids = list(range(1, len(ann.labels) + 1)) if class_ids is None else [int(c) for c in class_ids]
    column = {c: j for j, c in enumerate(class_ids)}
    out: list[KeyFrame] = []
    clipped = skipped = 0
    for video in videos:
        if video not in ann.nframes:
            raise ValueError(f"{ann.path}: video {video} is not in the annotations")
        h, w = ann.resolution[video]
        nframes = ann.nframes[video]
        per_frame: dict[int, list[tuple[np.ndarray, int, int]]] = {}
        tube_id = 0
        for label in sorted(ann.gttubes.get(video, {})):
            for tube in ann.gttubes[video][label]:
                for row in tube:
                    frame = int(row[0])
                    box = row[1:5] / np.array([w, h, w, h])
                    inside = np.clip(box, 0.0, 1.0)
                    problem = None
                    if row[0] != frame or not 1 <= frame <= nframes:
                        problem = f"frame {row[0]:g} outside 1..{nframes}"
                    elif not (inside[0] < inside[2] and inside[1] < inside[3]):
                        problem = f"box {row[1:5].tolist()} (pixels) is empty inside the {w}x{h} frame"
                    if problem:
                        message = f"{ann.path}: video {video}, tube {tube_id} (label {label}): {problem}"
                        if not skip_bad:
                            raise ValueError(message)
                        logger.warning("skipping %s", message)
                        skipped += 1
                        continue
                    clipped += int((inside != box).any())
                    per_frame.setdefault(frame, []).append((inside, label + 1, tube_id))
                tube_id += 1
        frames = range(1, nframes + 1) if include_unannotated else sorted(per_frame)
        for frame in frames:
            people = per_frame.get(frame, [])
            out.append(_keyframe(video, frame, people, column))
    if clipped:
        logger.info("%s: %d box(es) reaching past the frame were clipped to it", ann.path, clipped)
    if skipped:
        logger.warning("%s: skipped %d bad box row(s) (skip_bad=True)", ann.path, skipped)
    return out


def _keyframe(video: str, frame: int, people: list[tuple[np.ndarray, int, int]], column: dict[int, int]) -> KeyFrame:
    boxes = np.array([p[0] for p in people], dtype=np.float64).reshape(-1, 4)
    labels = np.zeros((len(people), len(column)), dtype=np.float32)
    for i, (_, action, _) in enumerate(people):
        if action in column:
            labels[i, column[action]] = 1.0
    return KeyFrame(
        video_id=video,
        timestamp=frame,
        boxes_xyxy=boxes,
        action_ids=tuple((p[1],) for p in people),
        person_ids=np.array([p[2] for p in people], dtype=np.int64),
        labels=labels,
        frame_index=frame - 1,
    )


def ucf_jhmdb_dataset(
    annotations: str | os.PathLike | TubeAnnotations,
    dataset: Literal["ucf101_24", "jhmdb_21"] | DatasetInfo,
    split: Literal["train", "test"] = "train",
    *,
    split_index: int = 1,
    frames_root: str | os.PathLike | None = None,
    video_root: str | os.PathLike | None = None,
    video_ext: str = ".avi",
    num_frames: int = 16,
    stride: int = 1,
    input_size: int = 224,
    train: bool | None = None,
    mean: Sequence[float] = (0.45, 0.45, 0.45),
    std: Sequence[float] = (0.225, 0.225, 0.225),
    resize: Literal["square", "letterbox", "short_side"] = "square",
    class_ids: Sequence[int] | None = None,
    include_unannotated: bool = False,
    skip_bad: bool = False,
    transform: Callable | None = None,
    keep_non_actors: bool = False,
) -> KeyFrameDataset:
    """A ``KeyFrameDataset`` over UCF101-24 or JHMDB-21 (clips centred on each annotated frame).

    Frames come from ``frames_root/<video>/`` (the dataset's ACT naming) or, if ``frames_root`` is
    None, from ``video_root/<video><video_ext>``. ``train`` defaults to ``split == "train"``.
    ``keep_non_actors``: as ``KeyFrameDataset``'s (every ACT tube is an actor, so it changes nothing but
    the ``is_actor`` key).
    """
    info = DATASETS[dataset] if isinstance(dataset, str) else dataset
    ann = annotations if isinstance(annotations, TubeAnnotations) else read_act_annotations(annotations)
    videos = ann.videos(split, split_index)
    keyframes = tubes_to_keyframes(
        ann, videos, class_ids=class_ids, include_unannotated=include_unannotated, skip_bad=skip_bad
    )
    ids = list(range(1, len(ann.labels) + 1)) if class_ids is None else [int(c) for c in class_ids]
    refs: dict[str, VideoRef] = {}
    for video in videos:
        if frames_root is not None:
            refs[video] = VideoRef(
                "frames",
                os.path.join(os.fspath(frames_root), video),
                fps=info.fps,
                pattern=info.frame_pattern,
                first_frame=1,
            )
        elif video_root is not None:
            refs[video] = VideoRef("video", os.path.join(os.fspath(video_root), video + video_ext))
        else:
            raise ValueError("ucf_jhmdb_dataset: give frames_root or video_root")
    if transform is None:
        train = split == "train" if train is None else train
        transform = create_transforms(train, input_size, mean=mean, std=std, resize=resize)
    names = ann.label_map()
    dataset = KeyFrameDataset(
        keyframes,
        refs,
        ids,
        num_frames=num_frames,
        stride=stride,
        transform=transform,
        class_names=[names.get(c, str(c)) for c in ids],
        keep_non_actors=keep_non_actors,
    )
    # Evaluation scores in ACT's pixel space against the unclipped tubes (training's boxes are clipped).
    dataset.act_annotations = ann
    return dataset


__all__ = [
    "DATASETS",
    "JHMDB_21",
    "UCF101_24",
    "DatasetInfo",
    "TubeAnnotations",
    "read_act_annotations",
    "tubes_to_keyframes",
    "ucf_jhmdb_dataset",
]
