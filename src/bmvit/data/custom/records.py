"""What every annotation reader of ``bmvit data import`` produces: labelled person boxes of a video.

A reader turns its file into ``LabelledBox`` records, one per person at one frame (CVAT) or one time
(CSV, AVA); the importer maps them onto each video's own frames and key frames. Readers raise
``AnnotationError`` for input they cannot take, with a one-line message that names the file and the
row or track.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


class AnnotationError(ValueError):
    """An annotation file (or the videos it names) cannot be imported; the message names the file and
    the row or track, on one line."""


@dataclass(frozen=True)
class LabelledBox:
    """One person at one instant of a video, as an annotation file gives it.

    Attributes:
        video: the video as the file names it: a file name (``clip.mp4``) or a stem (``clip``).
        frame: 0-based frame index in the video (frame-annotated formats such as CVAT), or None.
        time_s: seconds from the video's first frame (CSV, AVA of any timeline), or None. Exactly one
            of ``frame`` and ``time_s`` is set.
        box: ``(x1, y1, x2, y2)``: pixels of the video frame when ``normalised`` is False, else
            fractions of its width and height in [0, 1].
        person: the person's id in the file (a track id, a ``person_id`` column); "" where none is given.
        actions: the person's action names at this instant, sorted and without repeats; empty for a
            person doing none of the labelled actions (a non-actor, the model learns "no actor" there).
        where: where the record comes from, for messages: ``"tasks.xml: track 3, frame 120"``,
            ``"labels.csv:17"``.
        normalised: whether ``box`` is in fractions of the frame (True) or pixels (False).
    """

    video: str
    frame: int | None
    time_s: float | None
    box: tuple[float, float, float, float]
    person: str
    actions: tuple[str, ...]
    where: str
    normalised: bool = False

    def __post_init__(self) -> None:
        if (self.frame is None) == (self.time_s is None):
            raise ValueError(f"{self.where}: a labelled box has a frame or a time, exactly one of them")


@dataclass
class TimedLabels:
    """What a reader of timed key frames (a CSV, AVA CSVs) gives: the file names its key frames itself.

    Attributes:
        boxes: the labelled people, ``time_s`` set.
        keyframes: video -> the times (seconds) of its key frames, those where nobody is labelled included.
        actions: the action names the files declare, in their order (an AVA label map), or empty when
            they declare none (the names found are then the classes).
        splits: video -> "train" or "val" where the files say (AVA's train and val CSVs); empty otherwise.
        where: video -> the first place it is named (for messages about the video).
        keyframe_where: (video, time) -> the first row naming that key frame (for messages about it).
    """

    boxes: list[LabelledBox] = field(default_factory=list)
    keyframes: dict[str, set[float]] = field(default_factory=dict)
    actions: list[str] = field(default_factory=list)
    splits: dict[str, str] = field(default_factory=dict)
    where: dict[str, str] = field(default_factory=dict)
    keyframe_where: dict[tuple[str, float], str] = field(default_factory=dict)


def people_to_boxes(people: Mapping[tuple, dict], normalised: bool) -> list[LabelledBox]:
    """The ``LabelledBox`` of each person a timed reader gathered: ``people`` maps ``(video, time_s, key)`` to
    ``{"box", "person", "actions" (a set), "where"}``, in the order the file first names them."""
    return [LabelledBox(video=video, frame=None, time_s=time_s, box=p["box"], person=p["person"],
                        actions=tuple(sorted(p["actions"])), where=p["where"], normalised=normalised)
            for (video, time_s, _), p in people.items()]


__all__ = ["AnnotationError", "LabelledBox", "TimedLabels", "people_to_boxes"]
