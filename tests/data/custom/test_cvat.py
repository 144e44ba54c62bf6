"""CVAT for video 1.1 reader: hand-written exports with boxes computed by hand, the writer's dense and
keyframes-only files, frame numbering, action modes, and every error."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

from bmvit.data.custom.cvat import CvatVideo, read_cvat
from bmvit.data.custom.records import AnnotationError, LabelledBox


def _load_writer() -> ModuleType:
    # pytest's importlib mode puts no test folder on sys.path: load the helper beside this file by path
    # (registered before running it, which dataclasses need).
    name = "bmvit_tests_cvat_writer"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("cvat_writer.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


cw = _load_writer()

HEAD = '<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n  <version>1.1</version>\n'


def task_meta(*, labels: str, start: int = 0, stop: int = 20, step: int = 1, name: str = "walk_clip",
              source: str | None = "clip.mp4", size: tuple[int, int] = (320, 240)) -> str:
    n = (stop - start) // step + 1
    src = f"<source>{source}</source>" if source else ""
    return (f"  <meta><task><id>7</id><name>{name}</name><size>{n}</size><mode>interpolation</mode>"
            f"<start_frame>{start}</start_frame><stop_frame>{stop}</stop_frame>"
            f"<frame_filter>{f'step={step}' if step > 1 else ''}</frame_filter>"
            f"<labels>{labels}</labels>"
            f"<original_size><width>{size[0]}</width><height>{size[1]}</height></original_size>{src}"
            "</task><dumped>2024-01-01</dumped></meta>\n")


def checkbox(name: str) -> str:
    return (f"<attribute><name>{name}</name><mutable>True</mutable><input_type>checkbox</input_type>"
            "<default_value>false</default_value><values>false</values></attribute>")


def label(name: str, *attributes: str) -> str:
    return f"<label><name>{name}</name><type>any</type><attributes>{''.join(attributes)}</attributes></label>"


def box(frame: int, xyxy: tuple[float, float, float, float], *, outside: int = 0, keyframe: int = 1,
        **attrs: str) -> str:
    x1, y1, x2, y2 = xyxy
    inner = "".join(f'<attribute name="{k}">{v}</attribute>' for k, v in attrs.items())
    return (f'    <box frame="{frame}" keyframe="{keyframe}" outside="{outside}" occluded="0" xtl="{x1}" ytl="{y1}" '
            f'xbr="{x2}" ybr="{y2}" z_order="0">{inner}</box>\n')


def track(track_id: int, label_name: str, *boxes: str) -> str:
    return f'  <track id="{track_id}" label="{label_name}" source="manual">\n{"".join(boxes)}  </track>\n'


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


PERSON_LABELS = label("person", checkbox("walk"), checkbox("talk")) + label("car")

# Track 0: key frames 0 and 10 only (frame 5 interpolated), walking, then talking too from 10, gone at 15.
# Track 1: visible 0-4 (key frames 0 and 4), outside at 5, back from 8 to the task's end (20); no action.
# Track 2: a car (not a person). Track 3: a person drawn as polygons (not a box).
TASK_XML = (
    HEAD + task_meta(labels=PERSON_LABELS)
    + track(0, "person",
            box(0, (10, 20, 50, 100), walk="true", talk="false"),
            box(10, (30, 40, 70, 140), walk="true", talk="true"),
            box(15, (30, 40, 70, 140), outside=1, walk="true", talk="true"))
    + track(1, "person",
            box(0, (100, 100, 150, 200), walk="false", talk="false"),
            box(4, (104, 100, 154, 200), walk="false", talk="false"),
            box(5, (104, 100, 154, 200), outside=1, walk="false", talk="false"),
            box(8, (200, 50, 240, 150), walk="false", talk="false"))
    + track(2, "car", box(0, (0, 0, 30, 30)))
    + '  <track id="3" label="person" source="manual">\n'
      '    <polygon frame="0" keyframe="1" outside="0" occluded="0" points="1,1;5,1;5,5"></polygon>\n'
      '    <polygon frame="3" keyframe="1" outside="1" occluded="0" points="1,1;5,1;5,5"></polygon>\n'
      "  </track>\n"
    + "</annotations>\n"
)


def lb(frame: int, xyxy: tuple[float, ...], person: str, actions: tuple[str, ...], file: str = "task.xml",
       video: str = "clip.mp4", where_track: str | None = None) -> LabelledBox:
    return LabelledBox(video=video, frame=frame, time_s=None, box=tuple(float(v) for v in xyxy), person=person,
                       actions=actions, where=f"{file}: track {where_track or person}, frame {frame}")


def test_hand_written_task_boxes_at(tmp_path: Path) -> None:
    (video,) = read_cvat(write(tmp_path, "task.xml", TASK_XML))
    assert (video.name, video.source, video.size, video.video) == ("walk_clip", "clip.mp4", (320, 240), "clip.mp4")
    assert video.actions_from == "attributes"
    assert video.action_names == ("walk", "talk")
    assert video.ignored_tracks == {"car": 1}
    assert video.ignored_shapes == {"polygon": 2}
    assert [t.id for t in video.tracks] == [0, 1]
    assert (video.start_frame, video.stop_frame, video.frame_step) == (0, 20, 1)
    assert video.frame_span() == (0, 20)
    got = video.boxes_at([21, 12, 0, 5, 2, 6, 10, 15, 5])  # any order, repeats: each frame once, ascending
    assert got == [
        lb(0, (10, 20, 50, 100), "0", ("walk",)),
        lb(0, (100, 100, 150, 200), "1", ()),
        # frame 2: track 0 at 2/10 of the way: 10 + 20 * 0.2 = 14 ...; track 1 halfway from 0 to 4
        lb(2, (14, 24, 54, 108), "0", ("walk",)),
        lb(2, (102, 100, 152, 200), "1", ()),
        # frame 5: halfway between key frames 0 and 10, the attributes of key frame 0; track 1 outside
        lb(5, (20, 30, 60, 120), "0", ("walk",)),
        lb(6, (22, 32, 62, 124), "0", ("walk",)),
        lb(10, (30, 40, 70, 140), "0", ("talk", "walk")),
        lb(10, (200, 50, 240, 150), "1", ()),
        # frame 12: towards the outside shape at 15 (same box); track 1 visible since 8 and to the task's end
        lb(12, (30, 40, 70, 140), "0", ("talk", "walk")),
        lb(12, (200, 50, 240, 150), "1", ()),
        lb(15, (200, 50, 240, 150), "1", ()),
        # frame 21: after the task's stop_frame: nobody
    ]


def test_outside_gap_frames(tmp_path: Path) -> None:
    (video,) = read_cvat(write(tmp_path, "task.xml", TASK_XML))
    frames_of_1 = sorted({b.frame for b in video.boxes_at(range(0, 25)) if b.person == "1"})
    assert frames_of_1 == [0, 1, 2, 3, 4, *range(8, 21)]
    frames_of_0 = sorted({b.frame for b in video.boxes_at(range(0, 25)) if b.person == "0"})
    assert frames_of_0 == list(range(0, 15))


def test_interpolated_frames_keep_the_previous_key_frame_attributes(tmp_path: Path) -> None:
    # A shape that leaves an attribute out keeps its value: talk set at 4 lasts through 6 and 8.
    xml = (HEAD + task_meta(labels=PERSON_LABELS)
           + track(5, "person", box(0, (0, 0, 10, 10), walk="true"), box(4, (0, 0, 10, 10), talk="true"),
                   box(8, (0, 0, 10, 10), walk="false"))
           + "</annotations>\n")
    (video,) = read_cvat(write(tmp_path, "t.xml", xml))
    assert [b.actions for b in video.boxes_at([0, 3, 4, 6, 8, 9])] == [
        ("walk",), ("walk",), ("talk", "walk"), ("talk", "walk"), ("talk",), ("talk",)]


def sample_tracks(rng: random.Random, n_tracks: int, n_frames: int, gap: int) -> list:
    tracks = []
    for tid in range(n_tracks):
        shapes = []
        first = rng.randrange(0, 3 * gap)
        for f in range(first, n_frames - gap, gap):
            x, y = rng.uniform(0, 500), rng.uniform(0, 300)
            shapes.append(cw.TrackBox(f, (x, y, x + rng.uniform(20, 80), y + rng.uniform(40, 160)),
                                      attributes={"walk": rng.random() < 0.5, "talk": rng.random() < 0.3}))
            if rng.random() < 0.15:  # leaves for a while
                shapes.append(cw.TrackBox(f + gap // 2, shapes[-1].box, outside=True))
        tracks.append(cw.Track(tid, "person", shapes))
    return tracks


def test_dense_and_keyframes_only_give_the_same_boxes(tmp_path: Path) -> None:
    tracks = sample_tracks(random.Random(1), n_tracks=4, n_frames=120, gap=7)
    common = dict(task_name="synth", source="synth.mp4", size=(640, 480), labels={"person": ["walk", "talk"]},
                  tracks=tracks, stop_frame=119)
    (tmp_path / "dense").mkdir()
    (tmp_path / "sparse").mkdir()
    dense = cw.write_cvat_video_xml(tmp_path / "dense" / "a.xml", dense=True, **common)
    sparse = cw.write_cvat_video_xml(tmp_path / "sparse" / "a.xml", dense=False, **common)
    (d,) = read_cvat(dense)
    (s,) = read_cvat(sparse)
    assert sum(len(t.frames) for t in d.tracks) > 3 * sum(len(t.frames) for t in s.tracks)
    assert d.frame_span() == s.frame_span()
    frames = range(0, 121)
    got_dense, got_sparse = d.boxes_at(frames), s.boxes_at(frames)
    assert len(got_dense) > 200
    assert got_dense == got_sparse


def test_writer_dense_output_is_what_cvat_writes(tmp_path: Path) -> None:
    tracks = [cw.Track(0, "person", [cw.TrackBox(0, (0, 0, 10, 10), attributes={"walk": True}),
                                     cw.TrackBox(4, (4, 0, 14, 10))])]
    path = cw.write_cvat_video_xml(tmp_path / "w.xml", task_name="w", source="w.mp4", labels={"person": ["walk"]},
                                   tracks=tracks, stop_frame=9)
    text = path.read_text()
    assert text.count("<box ") == 6  # 0..4, and the closing outside box at 5
    assert '<box frame="2" keyframe="0" outside="0" occluded="0" xtl="2.00" ytl="0.00" xbr="12.00"' in text
    assert '<box frame="5" keyframe="1" outside="1"' in text
    assert text.count('<attribute name="walk">true</attribute>') == 6
    (video,) = read_cvat(path)
    assert video.frame_span() == (0, 4)


def test_start_frame_and_step_map_to_video_frames(tmp_path: Path) -> None:
    # Task from video frame 100, every 2nd frame: task index k is video frame 100 + 2k, as CVAT writes it.
    xml = (HEAD + task_meta(labels=PERSON_LABELS, start=100, stop=120, step=2)
           + track(0, "person", box(100, (0, 0, 10, 10), walk="true"), box(110, (10, 0, 20, 10), walk="true"),
                   box(116, (10, 0, 20, 10), outside=1))
           + "</annotations>\n")
    (video,) = read_cvat(write(tmp_path, "step.xml", xml))
    assert (video.start_frame, video.stop_frame, video.frame_step) == (100, 120, 2)
    got = video.boxes_at([98, 100, 104, 105, 110, 114, 116])
    assert [(b.frame, b.box) for b in got] == [
        (100, (0.0, 0.0, 10.0, 10.0)),
        (104, (4.0, 0.0, 14.0, 10.0)),  # 2 task frames of 5 between the key frames
        (105, (5.0, 0.0, 15.0, 10.0)),  # between two task frames: the same line
        (110, (10.0, 0.0, 20.0, 10.0)),
        (114, (10.0, 0.0, 20.0, 10.0)),
    ]
    assert video.frame_span() == (100, 115)


def test_step_frames_written_by_the_writer_read_back(tmp_path: Path) -> None:
    tracks = [cw.Track(3, "person", [cw.TrackBox(100, (0, 0, 10, 10)), cw.TrackBox(110, (10, 0, 20, 10))])]
    path = cw.write_cvat_video_xml(tmp_path / "s.xml", task_name="s", source="s.mp4", labels={"person": ["walk"]},
                                   tracks=tracks, start_frame=100, stop_frame=130, frame_step=2)
    (video,) = read_cvat(path)
    assert video.tracks[0].frames.tolist() == [100, 102, 104, 106, 108, 110, 112]  # 112: closing outside
    assert video.frame_span() == (100, 111)


@pytest.mark.parametrize("frame", [5, 101, 122])
def test_a_frame_off_the_task_grid_is_an_error(tmp_path: Path, frame: int) -> None:
    # 5: task-relative numbering; 101: between task frames; 122: after stop_frame.
    xml = (HEAD + task_meta(labels=PERSON_LABELS, start=100, stop=120, step=2)
           + track(4, "person", box(frame, (0, 0, 10, 10))) + "</annotations>\n")
    with pytest.raises(AnnotationError, match=rf"grid\.xml: track 4, frame {frame}: not a frame of the task"):
        read_cvat(write(tmp_path, "grid.xml", xml))


LABELS_XML = (
    HEAD + task_meta(labels=label("person") + label("walk") + label("talk") + label("sit"))
    + track(1, "walk", box(0, (10, 10, 50, 100)), box(4, (10, 10, 50, 100), outside=1))
    + track(2, "talk", box(0, (10.5, 10, 50, 100)), box(2, (10.5, 10, 50, 100), outside=1))
    + track(3, "person", box(0, (200, 10, 240, 100)), box(2, (200, 10, 240, 100), outside=1))
    + "</annotations>\n"
)


def test_labels_mode_merges_coinciding_tracks(tmp_path: Path) -> None:
    (video,) = read_cvat(write(tmp_path, "labels.xml", LABELS_XML))
    assert video.actions_from == "labels"  # auto: the person label declares no checkbox
    assert video.action_names == ("walk", "talk", "sit")
    assert video.boxes_at([0, 1, 3]) == [
        LabelledBox("clip.mp4", 0, None, (10.0, 10.0, 50.0, 100.0), "1", ("talk", "walk"),
                    "labels.xml: track 1 (merged with 2), frame 0"),
        lb(0, (200, 10, 240, 100), "3", (), file="labels.xml"),
        LabelledBox("clip.mp4", 1, None, (10.0, 10.0, 50.0, 100.0), "1", ("talk", "walk"),
                    "labels.xml: track 1 (merged with 2), frame 1"),
        lb(1, (200, 10, 240, 100), "3", (), file="labels.xml"),
        lb(3, (10, 10, 50, 100), "1", ("walk",), file="labels.xml"),
    ]


def test_labels_mode_keeps_boxes_apart_below_the_iou(tmp_path: Path) -> None:
    xml = (HEAD + task_meta(labels=label("walk") + label("talk"))
           + track(1, "walk", box(0, (10, 10, 50, 100))) + track(2, "talk", box(0, (14, 10, 54, 100)))
           + "</annotations>\n")
    (video,) = read_cvat(write(tmp_path, "apart.xml", xml))
    assert [(b.person, b.actions) for b in video.boxes_at([0])] == [("1", ("walk",)), ("2", ("talk",))]


def test_auto_detection_and_explicit_modes(tmp_path: Path) -> None:
    path = write(tmp_path, "task.xml", TASK_XML)
    assert read_cvat(path)[0].actions_from == "attributes"
    (as_labels,) = read_cvat(path, actions_from="labels")
    assert as_labels.actions_from == "labels"
    assert as_labels.action_names == ("car",)
    assert [(b.person, b.actions) for b in as_labels.boxes_at([0])] == [("0", ()), ("1", ()), ("2", ("car",))]
    with pytest.raises(AnnotationError, match=r"labels\.xml: actions_from='attributes' but label 'person'"):
        read_cvat(write(tmp_path, "labels.xml", LABELS_XML), actions_from="attributes")
    with pytest.raises(ValueError, match="actions_from"):
        read_cvat(path, actions_from="tracks")  # type: ignore[arg-type]


def test_action_attribute_select(tmp_path: Path) -> None:
    select = ("<attribute><name>action</name><mutable>True</mutable><input_type>select</input_type>"
              "<default_value>none</default_value><values>none\nwalk\nrun</values></attribute>")
    xml = (HEAD + task_meta(labels=label("person", select, checkbox("talk")))
           + track(0, "person", box(0, (0, 0, 10, 10), action="walk", talk="false"),
                   box(5, (0, 0, 10, 10), action="none", talk="true"), box(8, (0, 0, 10, 10), action="run"),
                   box(9, (0, 0, 10, 10), action="__undefined__", talk="false"))
           + "</annotations>\n")
    path = write(tmp_path, "select.xml", xml)
    (video,) = read_cvat(path, action_attribute="action")
    assert video.actions_from == "attributes"
    assert video.action_names == ("talk", "walk", "run")
    assert [b.actions for b in video.boxes_at([0, 3, 5, 8, 9])] == [
        ("walk",), ("walk",), ("talk",), ("run", "talk"), ()]
    # Without action_attribute the checkbox alone decides.
    assert [b.actions for b in read_cvat(path)[0].boxes_at([0, 8])] == [(), ("talk",)]


def test_job_export(tmp_path: Path) -> None:
    xml = (HEAD + "  <meta><job><id>12</id><size>10</size><mode>interpolation</mode>"
           "<start_frame>50</start_frame><stop_frame>59</stop_frame><frame_filter></frame_filter>"
           f"<labels>{PERSON_LABELS}</labels></job>"
           "<original_size><width>320</width><height>240</height></original_size></meta>\n"
           + track(0, "person", box(50, (0, 0, 10, 10), walk="true")) + "</annotations>\n")
    (video,) = read_cvat(write(tmp_path, "lobby_cam.xml", xml))
    assert (video.name, video.source, video.size, video.video) == ("lobby_cam", None, (320, 240), "lobby_cam")
    assert video.frame_span() == (50, 59)  # the last visible box lasts to the job's end
    assert [(b.frame, b.actions) for b in video.boxes_at([49, 50, 59, 60])] == [(50, ("walk",)), (59, ("walk",))]


def test_project_export_with_one_task_reads_and_with_two_is_refused(tmp_path: Path) -> None:
    def project(n_tasks: int) -> str:
        tasks = "".join(f"<task><id>{i}</id><name>t{i}</name><size>21</size><start_frame>0</start_frame>"
                        f"<stop_frame>20</stop_frame><frame_filter></frame_filter><source>v{i}.mp4</source></task>"
                        for i in range(1, n_tasks + 1))
        return (HEAD + f"  <meta><project><id>1</id><name>p</name><tasks>{tasks}</tasks>"
                f"<labels>{PERSON_LABELS}</labels></project></meta>\n"
                + '  <track id="0" label="person" source="manual" task_id="1" subset="default">\n'
                + box(3, (0, 0, 10, 10), walk="true") + "  </track>\n</annotations>\n")

    (video,) = read_cvat(write(tmp_path, "one.xml", project(1)))
    assert (video.name, video.video) == ("t1", "v1.mp4")
    assert video.boxes_at([3])[0].actions == ("walk",)
    with pytest.raises(AnnotationError, match=r"two\.xml: a CVAT project export with 2 tasks.*export each task"):
        read_cvat(write(tmp_path, "two.xml", project(2)))


def test_folder_of_task_files(tmp_path: Path) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    write(folder, "b_task.xml", TASK_XML.replace("<name>walk_clip</name>", "<name>second</name>")
          .replace("<source>clip.mp4</source>", "<source>b.mp4</source>"))
    write(folder, "a_task.xml", TASK_XML)
    write(folder, "notes.txt", "not an export")
    videos = read_cvat(folder)
    assert all(isinstance(v, CvatVideo) for v in videos)
    assert [(v.path.name, v.name, v.video) for v in videos] == [
        ("a_task.xml", "walk_clip", "clip.mp4"), ("b_task.xml", "second", "b.mp4")]
    # A folder of unzipped exports, each with its annotations.xml.
    for sub in ("x", "y"):
        (tmp_path / "unzipped" / sub).mkdir(parents=True)
        write(tmp_path / "unzipped" / sub, "annotations.xml", TASK_XML)
    assert [v.path.parent.name for v in read_cvat(tmp_path / "unzipped")] == ["x", "y"]
    with pytest.raises(AnnotationError, match="no such file or folder"):
        read_cvat(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnnotationError, match=r"no \*\.xml"):
        read_cvat(tmp_path / "empty")


def one_track(*boxes: str, track_id: int = 9, size: tuple[int, int] = (320, 240)) -> str:
    return HEAD + task_meta(labels=PERSON_LABELS, size=size) + track(track_id, "person", *boxes) + "</annotations>\n"


@pytest.mark.parametrize(("text", "message"), [
    (one_track(box(0, (50, 10, 40, 20))), r"track 9, frame 0: empty box .*xbr > xtl"),
    (one_track(box(0, (10, 10, 40, 10))), r"track 9, frame 0: empty box"),
    (one_track(box(3, ("ten", 10, 40, 20))), r"track 9, frame 3: xtl='ten' is not a number"),
    (one_track(box(3, (10, 10, "nan", 20))), r"track 9, frame 3: box .* not a finite number"),
    (one_track(box(3, (10, 10, "inf", 20))), r"track 9, frame 3: box .* not a finite number"),
    (one_track('    <box frame="x" outside="0" xtl="1" ytl="1" xbr="2" ybr="2"></box>\n'),
     r"track 9: a <box> with frame 'x'"),
    (one_track(box(0, (10, 10, 40, 20), walk="yes")), r"track 9, frame 0: checkbox attribute 'walk' is 'yes'"),
    (one_track(), r"track 9: the track has no shapes"),
    (one_track(box(4, (10, 10, 40, 20)), box(2, (10, 10, 40, 20))), r"track 9, frame 2: frames out of order"),
    (one_track(box(4, (10, 10, 40, 20)), box(4, (10, 10, 40, 20))), r"track 9, frame 4: frames repeated"),
    (one_track(box(1, (400, 10, 440, 20))), r"track 9, frame 1: box .* entirely outside the 320x240 frame"),
    (one_track(box(1, (-50, 10, -1, 20))), r"track 9, frame 1: box .* entirely outside"),
])
def test_track_errors_name_the_file_and_the_track(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(AnnotationError, match=r"^bad\.xml: " + message):
        read_cvat(write(tmp_path, "bad.xml", text))


def test_a_box_partly_outside_the_frame_or_outside_and_off_frame_is_accepted(tmp_path: Path) -> None:
    # Clipping to the frame is the importer's job; an outside shape is never drawn.
    text = one_track(box(0, (-5, 10, 40, 20)), box(2, (300, 200, 330, 250)), box(3, (900, 900, 950, 950), outside=1))
    (video,) = read_cvat(write(tmp_path, "ok.xml", text))
    assert len(video.boxes_at([0, 2, 3])) == 2


@pytest.mark.parametrize(("text", "message"), [
    (HEAD + task_meta(labels=PERSON_LABELS) + '  <track id="1" label="person">\n    <box frame="0"></box>\n  </trak>\n',
     r"malformed XML \(mismatched tag: line 7, column 4\)"),
    ("", r"malformed XML"),
    ('<?xml version="1.0"?>\n<dataset><version>1.1</version></dataset>\n',
     r"not a CVAT for video 1.1 export \(the root element is <dataset>"),
    (HEAD + task_meta(labels=PERSON_LABELS)
     + '  <image id="0" name="f.jpg" width="320" height="240"><box label="person" xtl="1" ytl="1" xbr="9" ybr="9"'
       ' occluded="0"></box></image>\n</annotations>\n',
     r"not a CVAT for video 1\.1 export \(it has <image> elements"),
    ("<annotations>" + track(1, "person", box(0, (1, 1, 9, 9))) + "</annotations>",
     r"not a CVAT for video 1\.1 export \(no <version>"),
    (HEAD.replace("<version>1.1</version>", "") + task_meta(labels=PERSON_LABELS)
     .replace("<frame_filter></frame_filter>", "<frame_filter>every=2</frame_filter>") + "</annotations>",
     r"<frame_filter> is 'every=2'"),
    (HEAD + task_meta(labels=PERSON_LABELS) + '  <track id="one" label="person"></track>\n</annotations>\n',
     r"a <track> with id 'one'"),
])
def test_file_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(AnnotationError, match=r"^bad\.xml: " + message):
        read_cvat(write(tmp_path, "bad.xml", text))


def test_long_dense_video_round_trip(tmp_path: Path) -> None:
    # A scaled-down long video (30 s at 30 fps, 20 tracks, dense: ~15k boxes); 10 min reads the same way,
    # every track answered by binary search.
    n_frames = 900
    tracks = sample_tracks(random.Random(2), n_tracks=20, n_frames=n_frames, gap=45)
    path = cw.write_cvat_video_xml(tmp_path / "long.xml", task_name="long", source="long.mp4", size=(640, 480),
                                   labels={"person": ["walk", "talk"], "car": []}, tracks=tracks,
                                   stop_frame=n_frames - 1)
    (video,) = read_cvat(path)
    assert sum(len(t.frames) for t in video.tracks) > 12_000
    asked = list(range(0, n_frames, 3)) + list(range(1, n_frames, 3))  # 600 frames
    got = video.boxes_at(asked)
    assert {b.frame for b in got} <= set(asked)
    # Every key shape of every track comes back exactly at its own frame.
    keys = {(str(t.id), b.frame): (tuple(float(f"{v:.2f}") for v in b.box)) for t in tracks for b in t.boxes
            if not b.outside and b.frame % 3 < 2}
    found = {(b.person, b.frame): b.box for b in got}
    assert keys and all(found[k] == v for k, v in keys.items())
