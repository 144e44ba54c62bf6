"""Read CVAT for video 1.1 XML (a CVAT task or job export with tracks) into labelled person boxes.

``read_cvat`` parses each file once into ``CvatVideo`` objects; the importer, which knows each video's
fps, size and key frames, asks ``CvatVideo.boxes_at(frames)`` for the people at those frames.

Format facts this reader relies on, and where they come from (CVAT's documentation page "XML annotation
format", ``site/content/en/docs/other/xml_format.md``, and its source: the exporter and importer in
``cvat/apps/dataset_manager/formats/cvat.py``, the frame mapping in ``cvat/apps/dataset_manager/bindings.py``,
the interpolation in ``TrackManager.get_interpolated_shapes`` of ``cvat/apps/dataset_manager/annotation.py``,
and ``stop_frame`` in ``cvat/apps/engine/task.py``; read in 2024-era versions of the cvat-ai/cvat repository):

* Frame numbers. CVAT numbers a task's frames 0..size-1 internally, but the exporter writes every shape's
  ``frame`` through ``abs_frame_id``: ``frame = start_frame + index * step``. So the ``frame`` attribute of a
  ``<box>`` is the absolute, 0-based frame number of the video file, not the task-relative index.
  ``<meta><task>`` gives ``<start_frame>`` (the first video frame in the task), ``<stop_frame>`` (the last one,
  inclusive: CVAT stores ``min(requested stop, start + (size - 1) * step)``) and ``<frame_filter>``
  (``step=N`` when only every N-th frame is in the task, empty for every frame). A task with
  start_frame=100 and step=2 has task index k at video frame 100 + 2k, and its boxes say 100, 102, ...
  A job export (``<meta><job>``) writes its own ``start_frame``/``stop_frame`` in the same absolute numbers,
  and its boxes too. This reader returns the ``frame`` values as they are (they already are video frame
  indices) and rejects a box whose frame is not one of the task's frames (before ``start_frame``, after
  ``stop_frame``, or off the step grid): that is a file with task-relative numbers or a wrong ``<meta>``.
* Interpolation. Between two consecutive shapes of a track (whatever their ``keyframe`` flag), a rectangle
  is interpolated linearly in its corner coordinates: at frame f between shapes at f0 and f1,
  ``p = p0 + (p1 - p0) * (f - f0) / (f1 - f0)`` for each of xtl, ytl, xbr, ybr (CVAT computes it on task
  indices; the mapping to video frames is affine, so the fraction is the same). The interpolated shape is a
  copy of the earlier shape: its attributes (and ``occluded``) are those of the previous key frame; mutable
  attributes change only at key frames, and a shape that omits an attribute keeps the previous value.
  A dense export (the default) writes every frame from a track's first shape to its last, interpolated ones
  with ``keyframe="0"`` and coordinates rounded to 0.01 px; this reader rounds the boxes it interpolates the
  same way, so a keyframes-only file and CVAT's dense export of it give the same boxes. Frames between two
  task frames (step > 1) are interpolated too: CVAT has no annotation there, but the linear estimate is
  what an importer asking for such a frame wants.
* ``outside="1"``: the object is absent from that frame and every following frame until the track's next
  shape that is not outside. Frames between a visible shape and a following outside shape are visible,
  interpolated towards the outside shape's coordinates (CVAT interpolates from any visible shape). A track
  whose last shape is visible goes on, unchanged, to the end of the task (``stop_frame``); a dense export
  writes those frames out, and a file without a stop frame ends the track at its last shape.
* Names. A task export has ``<meta><task><name>`` (the task name) and, for a video task,
  ``<meta><task><source>`` (the video's file name) and ``<meta><task><original_size>``; some versions put
  ``<source>``/``<original_size>`` directly under ``<meta>``, which is read too. A job export
  (``<meta><job>``) has no task name and no source: its name is the XML file's stem, so name the file after
  the video. A project export (``<meta><project>`` with several ``<task>``) tags each track with
  ``task_id`` but numbers frames of later tasks with an offset that differs across CVAT versions, so only a
  one-task project export is read; for more tasks, export each task.
* Attributes. Labels are declared in ``<labels><label>`` with ``<attributes><attribute>`` giving ``name``,
  ``mutable``, ``input_type`` (checkbox, select, radio, number, text), ``default_value`` and ``values``;
  every shape repeats its attributes as ``<attribute name="...">value</attribute>``, checkboxes as
  ``true``/``false``. CVAT for images exports (``<image>`` elements) are a different format.

The XML is parsed with the standard library's ``xml.etree.ElementTree``: the files are the user's own
exports, not data from an untrusted party, so ``defusedxml``'s protection against entity-expansion attacks
is not needed (CVAT uses it because its server parses uploads from anyone).
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NoReturn

import numpy as np

from bmvit.data.custom.records import AnnotationError, LabelledBox

ActionsFrom = Literal["auto", "attributes", "labels"]
# A shape's actions from the shape element and the track's attribute values so far (updated in place).
_ShapeActions = Callable[[ET.Element, dict[str, object]], tuple[str, ...]]

# Checkbox values CVAT writes ("true"/"false") and the spellings people type by hand.
_TRUE = frozenset({"true", "True", "TRUE", "1"})
_FALSE = frozenset({"false", "False", "FALSE", "0"})
# Values of a select/radio/text action attribute that mean "no action".
_NO_ACTION = frozenset({"", "none", "__undefined__"})
_SHAPE_TAGS = frozenset({"box", "polygon", "polyline", "points", "ellipse", "cuboid", "mask", "skeleton", "tag"})
# Two tracks of one person (labels mode: one track per action) are drawn over each other: near-equal boxes.
_SAME_PERSON_IOU = 0.95


@dataclass(frozen=True, eq=False)
class CvatTrack:
    """One track of rectangles, as written in the file (sorted by frame).

    Attributes:
        id: the track's ``id``.
        label: the track's label.
        frames: ``[n]`` int64, strictly increasing video frame indices of its ``<box>`` shapes.
        boxes: ``[n, 4]`` float64 ``(xtl, ytl, xbr, ybr)`` pixels of each shape.
        outside: ``[n]`` bool, whether the object is absent from that shape's frame on.
        actions: each shape's action names (sorted tuple), read as ``CvatVideo.actions_from`` says.
    """

    id: int
    label: str
    frames: np.ndarray
    boxes: np.ndarray
    outside: np.ndarray
    actions: tuple[tuple[str, ...], ...]

    def visible_span(self, stop_frame: int | None) -> tuple[int, int] | None:
        """First and last video frame where the track is visible (None if it never is); a last visible
        shape lasts to ``stop_frame`` (when known)."""
        visible = np.flatnonzero(~self.outside)
        if visible.size == 0:
            return None
        first, last = int(visible[0]), int(visible[-1])
        if last + 1 < len(self.frames):
            # Visible (interpolated) up to the frame before the next shape, which is outside.
            end = int(self.frames[last + 1]) - 1
        else:
            end = max(int(self.frames[last]), stop_frame) if stop_frame is not None else int(self.frames[last])
        return int(self.frames[first]), end

    def box_at(self, frame: int, index: int, stop_frame: int | None) -> tuple[tuple[float, ...], int] | None:
        """The track's box at ``frame`` and the index of the shape whose actions hold there, or None where
        the track is absent. ``index`` is the last shape at or before ``frame`` (-1 for none)."""
        if index < 0 or self.outside[index]:
            return None
        f0 = int(self.frames[index])
        if f0 == frame:
            return tuple(float(v) for v in self.boxes[index]), index
        if index + 1 < len(self.frames):
            f1 = int(self.frames[index + 1])
            t = (frame - f0) / (f1 - f0)
            p0, p1 = self.boxes[index].tolist(), self.boxes[index + 1].tolist()
            # Rounded to 0.01 px as CVAT writes interpolated shapes in a dense export.
            return tuple(round(a + (b - a) * t, 2) for a, b in zip(p0, p1)), index
        if stop_frame is not None and frame <= stop_frame:
            return tuple(float(v) for v in self.boxes[index]), index
        return None


@dataclass(eq=False)
class CvatVideo:
    """The tracks of one CVAT task (one video).

    Attributes:
        name: the task name (a job export: the XML file's stem).
        source: the video file name from ``<source>``, or None.
        size: ``(width, height)`` from ``<original_size>``, or None.
        path: the XML file.
        tracks: the people's tracks (tracks of other labels in attributes mode, and tracks without a
            rectangle, are left out), by id.
        action_names: every action the file declares, in declaration order.
        actions_from: how actions were read: ``"attributes"`` or ``"labels"``.
        start_frame, stop_frame, frame_step: the task's video frames: ``start_frame``,
            ``start_frame + frame_step``, ... up to ``stop_frame`` (inclusive; None when not given).
        ignored_tracks: label -> number of tracks not read because their label is not the person label
            (attributes mode).
        ignored_shapes: shape element (``polygon``, ``points``, ...) -> number of such shapes in tracks,
            not read (only ``<box>`` is a person).
    """

    name: str
    source: str | None
    size: tuple[int, int] | None
    path: Path
    tracks: list[CvatTrack]
    action_names: tuple[str, ...]
    actions_from: Literal["attributes", "labels"]
    start_frame: int = 0
    stop_frame: int | None = None
    frame_step: int = 1
    ignored_tracks: dict[str, int] = field(default_factory=dict)
    ignored_shapes: dict[str, int] = field(default_factory=dict)

    @property
    def video(self) -> str:
        """The video as ``LabelledBox.video`` names it: the source if given, else the task name."""
        return self.source if self.source else self.name

    def frame_span(self) -> tuple[int, int] | None:
        """``(first, last)`` video frame where any track is visible, inclusive; None if none ever is."""
        spans = [s for t in self.tracks if (s := t.visible_span(self.stop_frame)) is not None]
        if not spans:
            return None
        return min(s[0] for s in spans), max(s[1] for s in spans)

    def boxes_at(self, frames: Iterable[int]) -> list[LabelledBox]:
        """Every visible person at each of ``frames`` (0-based video frame indices), interpolated between
        the track's shapes as CVAT does.

        Returns the records ordered by frame (each asked frame once, ascending), then by person id
        (numerically): ``frame`` set, ``time_s`` None, ``box`` ``(x1, y1, x2, y2)`` pixels
        (= ``xtl, ytl, xbr, ybr``), ``person`` the track id, ``actions`` the sorted action names.
        In labels mode, tracks whose boxes coincide at a frame (IoU >= 0.95) are one person with all
        their actions, under the lowest track id and that track's box.
        """
        asked = sorted({int(f) for f in frames})
        if not asked or not self.tracks:
            return []
        asked_arr = np.asarray(asked, dtype=np.int64)
        # One binary search per track for all asked frames: the last shape at or before each frame.
        indices = [np.searchsorted(t.frames, asked_arr, side="right") - 1 for t in self.tracks]
        out: list[LabelledBox] = []
        for j, frame in enumerate(asked):
            people: list[tuple[int, tuple[float, ...], tuple[str, ...]]] = []
            for track, idx in zip(self.tracks, indices):
                found = track.box_at(frame, int(idx[j]), self.stop_frame)
                if found is not None:
                    people.append((track.id, found[0], track.actions[found[1]]))
            if self.actions_from == "labels":
                groups = _merge_same_person(people)
            else:
                groups = [(tid, box, acts, ()) for tid, box, acts in people]
            out.extend(self._record(frame, *g) for g in groups)
        return out

    def _record(self, frame: int, track_id: int, box: tuple[float, ...], actions: tuple[str, ...],
                merged: tuple[int, ...]) -> LabelledBox:
        also = f" (merged with {', '.join(map(str, merged))})" if merged else ""
        return LabelledBox(
            video=self.video, frame=frame, time_s=None, box=(box[0], box[1], box[2], box[3]),
            person=str(track_id), actions=actions, where=f"{self.path.name}: track {track_id}{also}, frame {frame}",
        )


def read_cvat(path: str | Path, *, actions_from: ActionsFrom = "auto", person_label: str = "person",
              action_attribute: str | None = None) -> list[CvatVideo]:
    """Read CVAT for video 1.1 XML exports: one ``CvatVideo`` per task, sorted by file.

    Args:
        path: one XML file, or a folder: every ``*.xml`` in it (one task per file; an unzipped export's
            ``annotations.xml`` included), or, if it has none, every ``*/annotations.xml`` below it.
        actions_from: ``"attributes"``: tracks labelled ``person_label`` are the people, each checkbox
            attribute of that label that is true is an action named by the attribute, and the value of
            ``action_attribute`` (a select/radio/text attribute) is one action too ("", "none",
            "__undefined__" mean none); tracks of other labels are counted in ``ignored_tracks``.
            ``"labels"``: every track is a person whose label is its action (``person_label`` itself:
            no action); coinciding boxes of two tracks are one person. ``"auto"``: attributes when the
            person label declares checkbox attributes or ``action_attribute`` is given, else labels.
        person_label: the label of people.
        action_attribute: a select/radio/text attribute of the person label whose value is an action.

    Raises:
        AnnotationError: a file that is not a CVAT for video 1.1 export, or malformed content; the
            one-line message names the file and the track.
    """
    if actions_from not in ("auto", "attributes", "labels"):
        raise ValueError(f"actions_from must be 'auto', 'attributes' or 'labels', not {actions_from!r}")
    options = _Options(actions_from, person_label, action_attribute)
    return [_read_file(f, options) for f in _xml_files(Path(path))]


# --- files and parsing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    actions_from: ActionsFrom
    person_label: str
    action_attribute: str | None


@dataclass(frozen=True)
class _Attribute:
    name: str
    input_type: str
    default: str
    values: tuple[str, ...]


@dataclass
class _Meta:
    """What the reader needs from ``<meta>``."""

    kind: str  # "task", "job", "project" or "none"
    name: str | None = None
    source: str | None = None
    size: tuple[int, int] | None = None
    start_frame: int = 0
    stop_frame: int | None = None
    step: int = 1
    task_id: str | None = None
    labels: dict[str, list[_Attribute]] = field(default_factory=dict)  # declaration order


@dataclass
class _Reading:
    """How tracks are read, fixed once ``<meta>`` is known."""

    file: str
    mode: Literal["attributes", "labels"]
    person_label: str
    checkboxes: tuple[_Attribute, ...]
    action_attribute: _Attribute | None
    meta: _Meta
    action_names: list[str]
    ignored_tracks: dict[str, int] = field(default_factory=dict)
    ignored_shapes: dict[str, int] = field(default_factory=dict)


def _xml_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise AnnotationError(f"{path}: no such file or folder")
    files = sorted(path.glob("*.xml")) or sorted(path.glob("*/annotations.xml"))
    if not files:
        raise AnnotationError(f"{path}: no *.xml file (CVAT for video 1.1 exports) in this folder")
    return files


def _read_file(path: Path, options: _Options) -> CvatVideo:
    file = path.name
    reading: _Reading | None = None
    tracks: list[CvatTrack] = []
    seen_version = False
    try:
        root_tag = _root_tag(path)
        if root_tag != "annotations":
            raise AnnotationError(f"{file}: not a CVAT for video 1.1 export (the root element is <{root_tag}>, "
                                  "not <annotations>)")
        # End events only (each element complete); the loop touches every element, so it stays short.
        for _, elem in ET.iterparse(path, events=("end",)):
            tag = elem.tag
            if tag == "track":
                if reading is None:  # no <meta>: a hand-written file; read with defaults
                    reading = _reading(file, _Meta(kind="none"), options)
                track = _read_track(elem, reading)
                if track is not None:
                    tracks.append(track)
                elem.clear()  # free the parsed shapes: long videos have many
            elif tag == "meta":
                reading = _reading(file, _parse_meta(elem, file), options)
                elem.clear()
            elif tag == "version":
                seen_version = True
            elif tag == "image":
                raise AnnotationError(f"{file}: not a CVAT for video 1.1 export (it has <image> elements: a CVAT "
                                      "for images export; export the task as CVAT for video 1.1)")
    except ET.ParseError as e:
        # The parser's message names the line and column ("mismatched tag: line 7, column 4").
        raise AnnotationError(f"{file}: malformed XML ({e})") from None
    if not seen_version:
        raise AnnotationError(f"{file}: not a CVAT for video 1.1 export (no <version> in <annotations>)")
    if reading is None:
        reading = _reading(file, _Meta(kind="none"), options)
    meta = reading.meta
    name = meta.name if meta.name else path.stem
    tracks.sort(key=lambda t: t.id)
    return CvatVideo(
        name=name, source=meta.source, size=meta.size, path=path, tracks=tracks,
        action_names=tuple(reading.action_names), actions_from=reading.mode, start_frame=meta.start_frame,
        stop_frame=meta.stop_frame, frame_step=meta.step, ignored_tracks=dict(reading.ignored_tracks),
        ignored_shapes=dict(reading.ignored_shapes),
    )


def _root_tag(path: Path) -> str:
    """The root element's tag, read from the start of the file."""
    with path.open("rb") as stream:
        for _, elem in ET.iterparse(stream, events=("start",)):
            return elem.tag
    return ""


def _text(elem: ET.Element | None, child: str) -> str | None:
    if elem is None:
        return None
    found = elem.find(child)
    if found is None or found.text is None:
        return None
    return found.text.strip()


def _int(text: str | None, what: str, file: str) -> int | None:
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise AnnotationError(f"{file}: <{what}> is {text!r}, not an integer") from None


def _parse_meta(meta: ET.Element, file: str) -> _Meta:
    task = meta.find("task")
    job = meta.find("job")
    project = meta.find("project")
    if task is not None:
        out = _Meta(kind="task")
        holder = task
        out.labels = _parse_labels(task.find("labels"))
    elif job is not None:
        out = _Meta(kind="job")
        holder = job
        out.labels = _parse_labels(job.find("labels"))
    elif project is not None:
        tasks = project.findall("tasks/task")
        if len(tasks) != 1:
            raise AnnotationError(
                f"{file}: a CVAT project export with {len(tasks)} tasks: its tracks cannot be attributed to the "
                "tasks' videos reliably (CVAT offsets the frame numbers of later tasks, differently across "
                "versions); export each task as CVAT for video 1.1 instead")
        out = _Meta(kind="project")
        holder = tasks[0]
        out.labels = _parse_labels(project.find("labels"))
    else:
        return _Meta(kind="none")
    out.name = _text(holder, "name") or None
    out.task_id = _text(holder, "id")
    out.source = _text(holder, "source") or _text(meta, "source") or None
    size_elem = holder.find("original_size")
    if size_elem is None:
        size_elem = meta.find("original_size")
    if size_elem is not None:
        w = _int(_text(size_elem, "width"), "width", file)
        h = _int(_text(size_elem, "height"), "height", file)
        out.size = (w, h) if w and h else None
    out.start_frame = _int(_text(holder, "start_frame"), "start_frame", file) or 0
    out.step = _frame_step(_text(holder, "frame_filter"), file)
    stop = _int(_text(holder, "stop_frame"), "stop_frame", file)
    size = _int(_text(holder, "size"), "size", file)
    if out.kind != "job" and size:
        # The task's last frame; CVAT stores stop_frame as this already, but older files may not.
        last = out.start_frame + (size - 1) * out.step
        stop = last if stop is None or stop == 0 else min(stop, last)
    if stop is not None:
        # A requested stop may fall between task frames: the last task frame is on the grid.
        stop = out.start_frame + (stop - out.start_frame) // out.step * out.step
    out.stop_frame = stop
    return out


def _frame_step(frame_filter: str | None, file: str) -> int:
    if not frame_filter:
        return 1
    match = re.fullmatch(r"\s*step\s*=\s*(\d+)\s*", frame_filter)
    if match is None or int(match.group(1)) < 1:
        raise AnnotationError(f"{file}: <frame_filter> is {frame_filter!r}, expected 'step=N' (N >= 1) or empty")
    return int(match.group(1))


def _parse_labels(labels: ET.Element | None) -> dict[str, list[_Attribute]]:
    out: dict[str, list[_Attribute]] = {}
    if labels is None:
        return out
    for label in labels.findall("label"):
        name = _text(label, "name")
        if not name or label.find("parent") is not None:  # skeleton points are parts, not labels of people
            continue
        attributes = []
        for attr in label.findall("attributes/attribute"):
            attr_name = _text(attr, "name")
            if not attr_name:
                continue  # 1.0-style one-line attribute specs: not supported, and not written by CVAT 1.1
            values = tuple(v.strip() for v in (_text(attr, "values") or "").split("\n") if v.strip())
            attributes.append(_Attribute(attr_name, (_text(attr, "input_type") or "").lower(),
                                         _text(attr, "default_value") or "", values))
        out[name] = attributes
    return out


def _reading(file: str, meta: _Meta, options: _Options) -> _Reading:
    """Settle how actions are read (``actions_from``) from the declared labels."""
    declared = meta.labels.get(options.person_label, [])
    checkboxes = tuple(a for a in declared if a.input_type == "checkbox")
    action_attr: _Attribute | None = None
    if options.action_attribute is not None:
        action_attr = next((a for a in declared if a.name == options.action_attribute), None)
        if action_attr is None:
            # Not declared (a file without <meta>): read its values as text.
            action_attr = _Attribute(options.action_attribute, "text", "", ())
        elif action_attr.input_type == "checkbox":
            checkboxes = tuple(dict.fromkeys((*checkboxes, action_attr)))
            action_attr = None
    mode = options.actions_from
    if mode == "auto":
        mode = "attributes" if checkboxes or options.action_attribute is not None else "labels"
    if mode == "attributes" and not checkboxes and action_attr is None:
        raise AnnotationError(f"{file}: actions_from='attributes' but label {options.person_label!r} declares no "
                              "checkbox attribute (and no action_attribute was given)")
    if mode == "attributes":
        names = [a.name for a in checkboxes]
        if action_attr is not None:
            names += [v for v in action_attr.values if v.lower() not in _NO_ACTION]
    else:
        names = [label for label in meta.labels if label != options.person_label]
    return _Reading(file=file, mode=mode, person_label=options.person_label, checkboxes=checkboxes,
                    action_attribute=action_attr if mode == "attributes" else None, meta=meta,
                    action_names=list(dict.fromkeys(names)))


# --- tracks ---------------------------------------------------------------------------------------------


def _read_track(elem: ET.Element, r: _Reading) -> CvatTrack | None:
    """One ``<track>``: its boxes checked and stored sorted, or None for a track that is not a person's."""
    raw_id = elem.get("id")
    try:
        track_id = int(raw_id) if raw_id is not None else None
    except ValueError:
        track_id = None
    if track_id is None:
        raise AnnotationError(f"{r.file}: a <track> with id {raw_id!r} (an integer id is required)")
    label = elem.get("label", "")
    where = f"{r.file}: track {track_id}"
    if len(elem) == 0:
        raise AnnotationError(f"{where}: the track has no shapes")
    if r.meta.kind == "project" and elem.get("task_id") not in (None, r.meta.task_id):
        raise AnnotationError(f"{where}: task_id {elem.get('task_id')} is not the export's task {r.meta.task_id}")
    if r.mode == "attributes" and label != r.person_label:
        r.ignored_tracks[label] = r.ignored_tracks.get(label, 0) + 1
        return None
    if r.mode == "labels":
        fixed: tuple[str, ...] = () if label == r.person_label else (label,)
        if fixed and fixed[0] not in r.action_names:
            r.action_names.append(fixed[0])  # used without being declared (a file without <meta>)
        return _read_boxes(elem, track_id, label, where, r, lambda shape, state: fixed)
    return _read_boxes(elem, track_id, label, where, r, _attribute_actions(r, where))


def _attribute_actions(r: _Reading, where: str) -> _ShapeActions:
    """A function giving a shape's actions from its ``<attribute>`` children, carrying values forward from
    the track's previous shapes (a shape that omits an attribute keeps its value, as in CVAT)."""
    checkbox_names = {a.name for a in r.checkboxes}
    select = r.action_attribute
    cache: dict[tuple[object, ...], tuple[str, ...]] = {}

    def actions(shape: ET.Element, state: dict[str, object]) -> tuple[str, ...]:
        if not state:  # the track's first shape: start from the declared defaults
            for a in r.checkboxes:
                state[a.name] = a.default in _TRUE
            if select is not None:
                state[select.name] = select.default
        for child in shape:
            if child.tag != "attribute":
                continue
            name = child.get("name")
            value = child.text or ""
            if name in checkbox_names:
                if value in _TRUE or value.strip() in _TRUE:
                    state[name] = True
                elif value in _FALSE or value.strip() in _FALSE:
                    state[name] = False
                else:
                    raise AnnotationError(f"{where}, frame {shape.get('frame')}: checkbox attribute {name!r} is "
                                          f"{value!r}, not true or false")
            elif select is not None and name == select.name:
                state[name] = value.strip()
        key = tuple(state[a.name] for a in r.checkboxes) + ((state[select.name],) if select is not None else ())
        found = cache.get(key)
        if found is None:
            names = {a.name for a in r.checkboxes if state[a.name]}
            if select is not None:
                value = str(state[select.name])
                if value.lower() not in _NO_ACTION:
                    names.add(value)
                    if value not in r.action_names:
                        r.action_names.append(value)  # a text attribute declares no values
            found = cache[key] = tuple(sorted(names))
        return found

    return actions


def _read_boxes(elem: ET.Element, track_id: int, label: str, where: str, r: _Reading,
                actions_of: _ShapeActions) -> CvatTrack | None:
    frames: list[int] = []
    boxes: list[tuple[float, float, float, float]] = []
    outside: list[bool] = []
    actions: list[tuple[str, ...]] = []
    state: dict[str, object] = {}
    meta = r.meta
    # The frames CVAT can write for this task (see the module docstring): a job's tracks may begin before
    # the job, so only its end bounds them.
    low = meta.start_frame if meta.kind != "job" else 0
    high = meta.stop_frame if meta.stop_frame is not None else math.inf
    start, step = meta.start_frame, meta.step
    width, height = meta.size if meta.size is not None else (math.inf, math.inf)
    previous = -1
    # A dense export of a long video has ~10^5 boxes per track: checks inline, messages only on failure.
    for shape in elem:
        if shape.tag != "box":
            if shape.tag in _SHAPE_TAGS:
                r.ignored_shapes[shape.tag] = r.ignored_shapes.get(shape.tag, 0) + 1
            continue
        get = shape.get
        try:  # a missing attribute is None: TypeError
            frame = int(get("frame"))  # type: ignore[arg-type]
            x1, y1 = float(get("xtl")), float(get("ytl"))  # type: ignore[arg-type]
            x2, y2 = float(get("xbr")), float(get("ybr"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            _raise_bad_numbers(shape, where)
        is_outside = get("outside") == "1"
        if frame <= previous or frame < low or frame > high or (frame - start) % step:
            _raise_bad_frame(frame, previous, where, meta)
        # "0 < span < inf" also catches nan and infinite coordinates.
        if not (0 < x2 - x1 < math.inf and 0 < y2 - y1 < math.inf) or (
                not is_outside and (x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height)):
            _raise_bad_box((x1, y1, x2, y2), f"{where}, frame {frame}", meta.size)
        previous = frame
        frames.append(frame)
        boxes.append((x1, y1, x2, y2))
        outside.append(is_outside)
        actions.append(actions_of(shape, state))
    if not frames:
        return None  # a track of polygons, points...: counted in ignored_shapes
    return CvatTrack(id=track_id, label=label, frames=np.asarray(frames, dtype=np.int64),
                     boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
                     outside=np.asarray(outside, dtype=bool), actions=tuple(actions))


def _raise_bad_numbers(shape: ET.Element, where: str) -> NoReturn:
    raw = shape.get("frame")
    try:
        int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise AnnotationError(f"{where}: a <box> with frame {raw!r} (an integer frame number is required)") from None
    for key in ("xtl", "ytl", "xbr", "ybr"):
        value = shape.get(key)
        try:
            float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise AnnotationError(f"{where}, frame {raw}: {key}={value!r} is not a number") from None
    raise AssertionError("unreachable: a number failed to parse once only")


def _raise_bad_frame(frame: int, previous: int, where: str, meta: _Meta) -> NoReturn:
    if previous >= 0 and frame <= previous:
        word = "repeated" if frame == previous else "out of order"
        raise AnnotationError(f"{where}, frame {frame}: frames {word} (after frame {previous}); a track's shapes "
                              "must have increasing frames")
    # A frame off the task's grid means task-relative numbers, or a <meta> that does not belong to the tracks.
    raise AnnotationError(
        f"{where}, frame {frame}: not a frame of the task (start_frame {meta.start_frame}, stop_frame "
        f"{meta.stop_frame}, step {meta.step}); CVAT writes video frame numbers start_frame + index * step")


def _raise_bad_box(box: tuple[float, float, float, float], where: str, size: tuple[int, int] | None) -> NoReturn:
    x1, y1, x2, y2 = box
    if not all(math.isfinite(v) for v in box):
        raise AnnotationError(f"{where}: box ({x1}, {y1}, {x2}, {y2}) has a coordinate that is not a finite number")
    if not (x2 > x1 and y2 > y1):
        raise AnnotationError(f"{where}: empty box (xtl {x1}, ytl {y1}, xbr {x2}, ybr {y2}): needs xbr > xtl and "
                              "ybr > ytl")
    w, h = size if size is not None else (0, 0)
    raise AnnotationError(f"{where}: box ({x1}, {y1}, {x2}, {y2}) lies entirely outside the {w}x{h} frame "
                          "(<original_size>)")


# --- labels mode: one person drawn as several tracks ----------------------------------------------------


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _merge_same_person(people: list[tuple[int, tuple[float, ...], tuple[str, ...]]]
                       ) -> Iterator[tuple[int, tuple[float, ...], tuple[str, ...], tuple[int, ...]]]:
    """Group one frame's tracks whose boxes coincide (IoU >= 0.95, transitively): yields per group the
    lowest track id, its box, the union of the actions, and the other track ids."""
    people = sorted(people, key=lambda p: p[0])
    parent = list(range(len(people)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(people)):
        for j in range(i + 1, len(people)):
            if _iou(people[i][1], people[j][1]) >= _SAME_PERSON_IOU:
                parent[find(j)] = find(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(people)):
        groups.setdefault(find(i), []).append(i)
    for members in sorted(groups.values(), key=lambda m: people[m[0]][0]):
        head = people[members[0]]
        actions = sorted({a for m in members for a in people[m][2]})
        yield head[0], head[1], tuple(actions), tuple(people[m][0] for m in members[1:])


__all__ = ["CvatTrack", "CvatVideo", "read_cvat"]
