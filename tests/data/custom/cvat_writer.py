"""Test helper: write CVAT for video 1.1 XML from plain Python data, the way CVAT's exporter writes it.

Give each track its key shapes (``TrackBox``: visible boxes, and ``outside`` boxes where the person
leaves); ``write_cvat_video_xml`` writes the task's ``<meta>`` (labels with checkbox attributes,
``start_frame``, ``stop_frame``, ``frame_filter``, ``original_size``, ``source``) and one ``<track>`` per
track. Dense (CVAT's export): every task frame from a track's first shape to its last, the in-between
ones interpolated linearly in the corners with ``keyframe="0"`` and the previous key shape's attributes,
and a visible last shape carried to the end of the task. Keyframes only (``dense=False``): just the given
shapes, as a person writing the file by hand would. Coordinates are written with 2 decimals, as CVAT does.

Frames are video frame numbers (``start_frame + k * frame_step``), as CVAT writes them. Load the module
from a test with ``importlib`` (pytest's importlib mode puts no test folder on ``sys.path``)::

    spec = importlib.util.spec_from_file_location("cvat_writer", Path(__file__).parent / "cvat_writer.py")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr


@dataclass(frozen=True)
class TrackBox:
    """One shape of a track.

    Attributes:
        frame: video frame number.
        box: ``(x1, y1, x2, y2)`` = ``(xtl, ytl, xbr, ybr)`` pixels.
        outside: the person is absent from this frame until the track's next shape.
        occluded: CVAT's occluded flag (written, not interpreted).
        keyframe: written as ``keyframe``; the shapes you give are key frames.
        attributes: attribute values; a bool is written ``true``/``false``. A declared checkbox the shape
            leaves out keeps its value from the previous shape (``false`` at the first).
    """

    frame: int
    box: tuple[float, float, float, float]
    outside: bool = False
    occluded: bool = False
    keyframe: bool = True
    attributes: Mapping[str, str | bool] = field(default_factory=dict)


@dataclass(frozen=True)
class Track:
    """A CVAT track: its ``id``, ``label`` and key shapes (``boxes``, in frame order)."""

    id: int
    label: str
    boxes: Sequence[TrackBox]


def write_cvat_video_xml(path: str | Path, *, task_name: str, source: str | None,
                         size: tuple[int, int] = (320, 240), labels: Mapping[str, Sequence[str]],
                         tracks: Sequence[Track], start_frame: int = 0, stop_frame: int | None = None,
                         frame_step: int = 1, dense: bool = True, close_tracks: bool = True) -> Path:
    """Write one task's CVAT for video 1.1 XML to ``path``; returns ``path``.

    Args:
        task_name: ``<meta><task><name>``.
        source: the video file name, ``<meta><task><source>`` (None: no ``<source>``).
        size: ``(width, height)``, ``<original_size>``.
        labels: label name -> its checkbox attribute names (mutable, default ``false``).
        tracks: the tracks; each ``Track.boxes`` in increasing frame order, frames on the task's grid.
        start_frame, frame_step: the task's first video frame and ``frame_filter`` step.
        stop_frame: the task's last video frame; default: the last frame of any given shape.
        dense: write every task frame of each track (CVAT's export) rather than only the given shapes.
        close_tracks: after a track's last shape, if visible, add an ``outside`` shape at the next task
            frame (when there is one), so the person is gone after the last given frame; without it the
            last box lasts to ``stop_frame``, as in CVAT.
    """
    path = Path(path)
    last = max((b.frame for t in tracks for b in t.boxes), default=start_frame)
    stop = stop_frame if stop_frame is not None else last
    n_frames = (stop - start_frame) // frame_step + 1
    parts = [_meta(task_name, source, size, labels, start_frame, stop, frame_step, n_frames)]
    for track in tracks:
        shapes = _closed(track.boxes, frame_step, stop) if close_tracks else list(track.boxes)
        shapes = _with_attributes(shapes, labels.get(track.label, ()))
        if dense:
            shapes = _dense(shapes, frame_step, stop)
        parts.append(f'  <track id="{track.id}" label={quoteattr(track.label)} source="manual">\n')
        parts.extend(_box_xml(s) for s in shapes)
        parts.append("  </track>\n")
    parts.append("</annotations>\n")
    path.write_text("".join(parts), encoding="utf-8")
    return path


def _closed(boxes: Sequence[TrackBox], step: int, stop: int) -> list[TrackBox]:
    shapes = list(boxes)
    if shapes and not shapes[-1].outside and shapes[-1].frame + step <= stop:
        end = shapes[-1]
        shapes.append(TrackBox(end.frame + step, end.box, outside=True, occluded=end.occluded))
    return shapes


def _with_attributes(shapes: list[TrackBox], checkboxes: Sequence[str]) -> list[TrackBox]:
    """Every shape with every declared attribute (values carried forward) and 2-decimal coordinates, as
    CVAT stores and writes them."""
    values: dict[str, str | bool] = {name: False for name in checkboxes}
    out = []
    for s in shapes:
        values.update(s.attributes)
        box = tuple(float(f"{v:.2f}") for v in s.box)
        out.append(TrackBox(s.frame, box, s.outside, s.occluded, s.keyframe, dict(values)))  # type: ignore[arg-type]
    return out


def _dense(shapes: list[TrackBox], step: int, stop: int) -> list[TrackBox]:
    """CVAT's dense export: interpolated shapes on every task frame between consecutive shapes (after a
    visible one), and a visible last shape repeated to ``stop``."""
    out: list[TrackBox] = []
    for s0, s1 in zip(shapes, shapes[1:]):
        out.append(s0)
        if s0.outside:
            continue
        for f in range(s0.frame + step, s1.frame, step):
            t = (f - s0.frame) / (s1.frame - s0.frame)
            box = tuple(a + (b - a) * t for a, b in zip(s0.box, s1.box))
            out.append(TrackBox(f, box, False, s0.occluded, False, s0.attributes))  # type: ignore[arg-type]
    if shapes:
        end = shapes[-1]
        out.append(end)
        if not end.outside:
            out.extend(TrackBox(f, end.box, False, end.occluded, False, end.attributes)
                       for f in range(end.frame + step, stop + 1, step))
    return out


def _box_xml(s: TrackBox) -> str:
    x1, y1, x2, y2 = s.box
    head = (f'    <box frame="{s.frame}" keyframe="{int(s.keyframe)}" outside="{int(s.outside)}" '
            f'occluded="{int(s.occluded)}" xtl="{x1:.2f}" ytl="{y1:.2f}" xbr="{x2:.2f}" ybr="{y2:.2f}" z_order="0">\n')
    attrs = "".join(f'      <attribute name={quoteattr(k)}>{escape(_value(v))}</attribute>\n'
                    for k, v in s.attributes.items())
    return head + attrs + "    </box>\n"


def _value(v: str | bool) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def _meta(name: str, source: str | None, size: tuple[int, int], labels: Mapping[str, Sequence[str]],
          start: int, stop: int, step: int, n_frames: int) -> str:
    label_xml = []
    for label, checkboxes in labels.items():
        attrs = "".join(
            "            <attribute>\n"
            f"              <name>{escape(a)}</name>\n"
            "              <mutable>True</mutable>\n"
            "              <input_type>checkbox</input_type>\n"
            "              <default_value>false</default_value>\n"
            "              <values>false</values>\n"
            "            </attribute>\n" for a in checkboxes)
        label_xml.append(
            "        <label>\n"
            f"          <name>{escape(label)}</name>\n"
            "          <color>#33ddff</color>\n"
            "          <type>any</type>\n"
            f"          <attributes>\n{attrs}          </attributes>\n"
            "        </label>\n")
    source_xml = f"      <source>{escape(source)}</source>\n" if source is not None else ""
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        "<annotations>\n"
        "  <version>1.1</version>\n"
        "  <meta>\n"
        "    <task>\n"
        "      <id>1</id>\n"
        f"      <name>{escape(name)}</name>\n"
        f"      <size>{n_frames}</size>\n"
        "      <mode>interpolation</mode>\n"
        "      <overlap>5</overlap>\n"
        "      <bugtracker></bugtracker>\n"
        "      <created>2024-01-01 00:00:00.000000+00:00</created>\n"
        "      <updated>2024-01-01 00:00:00.000000+00:00</updated>\n"
        "      <subset>default</subset>\n"
        f"      <start_frame>{start}</start_frame>\n"
        f"      <stop_frame>{stop}</stop_frame>\n"
        f"      <frame_filter>{f'step={step}' if step > 1 else ''}</frame_filter>\n"
        "      <segments>\n"
        "        <segment>\n"
        "          <id>1</id>\n"
        "          <start>0</start>\n"
        f"          <stop>{n_frames - 1}</stop>\n"
        "          <url>http://localhost:8080/api/jobs/1</url>\n"
        "        </segment>\n"
        "      </segments>\n"
        "      <owner>\n"
        "        <username>tester</username>\n"
        "        <email></email>\n"
        "      </owner>\n"
        "      <assignee></assignee>\n"
        f"      <labels>\n{''.join(label_xml)}      </labels>\n"
        "      <original_size>\n"
        f"        <width>{size[0]}</width>\n"
        f"        <height>{size[1]}</height>\n"
        "      </original_size>\n"
        f"{source_xml}"
        "    </task>\n"
        "    <dumped>2024-01-01 00:00:00.000000+00:00</dumped>\n"
        "  </meta>\n"
    )


__all__ = ["Track", "TrackBox", "write_cvat_video_xml"]
