"""``write_synthetic_dataset(non_actors=True)`` / ``bmvit synth --non-actors``: the people who are not acting,
as AVA rows with an empty action id, added to an output that is otherwise the default one."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest

from bmvit.data.ava import group_by_keyframe, read_annotations
from bmvit.data.synthetic.keyframes import keyframe_boxes, keyframe_seconds
from bmvit.data.synthetic.scene import CLASSES
from bmvit.data.synthetic.write import (
    NON_ACTOR_MIN_VISIBLE,
    SyntheticSummary,
    create_split_video_spec,
    write_synthetic_dataset,
)

SEED, SIZE, SECONDS = 3, (128, 96), 6

# sha256 of the default (non_actors=False) files of this set, as written before the option existed
# (generator version 1): the option must not change a byte of the default output.
DEFAULT_SHA256 = {
    "annotations/ava_train_v2.2.csv": "f7a99acdf5bccd5e",
    "annotations/ava_val_v2.2.csv": "d01196bef45551ea",
    "annotations/ava_val_excluded_timestamps_v2.2.csv": "e3b0c44298fc1c14",
    "frame_lists/train.csv": "443bdab146069f4a",
}


def _write(root: Path, non_actors: bool) -> SyntheticSummary:
    return write_synthetic_dataset(root, SEED, num_videos=2, num_val_videos=1, seconds=SECONDS, size=SIZE, workers=1,
                                   non_actors=non_actors)


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SyntheticSummary, Path, SyntheticSummary]:
    plain, extra = tmp_path_factory.mktemp("plain"), tmp_path_factory.mktemp("nonactors")
    return plain, _write(plain, False), extra, _write(extra, True)


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def test_default_output_is_unchanged(both):
    plain, summary, _, _ = both
    for name, digest in DEFAULT_SHA256.items():
        assert _sha(plain / name) == digest, name
    assert summary.non_actors is None
    assert "non-actor" not in summary.describe() and "--non-actors" not in (plain / "README.txt").read_text()


@pytest.mark.parametrize("split", ["train", "val"])
def test_actor_rows_are_unchanged_and_the_extra_rows_have_an_empty_action(both, split):
    plain, _, extra, _ = both
    name = f"annotations/ava_{split}_v2.2.csv"
    rows = _rows(extra / name)
    # Dropping the empty-action rows gives the default file back, byte for byte (same order, same text).
    actor_lines = [line for line in (extra / name).read_text().splitlines(keepends=True) if ",," not in line]
    assert "".join(actor_lines) == (plain / name).read_text()
    non_actor = [r for r in rows if r[6] == ""]
    assert non_actor and all(len(r) == 8 and r[7] != "" for r in non_actor)


def test_exactly_the_visible_people_who_are_not_acting_are_listed(both):
    """From the scene itself: every (key frame, track) with no labels at that time, minus the hidden ones."""
    _, _, extra, _ = both
    seen = 0
    for split, index in (("train", 0), ("train", 1), ("val", 0)):
        vid = f"syn_{split}_{index:03d}"
        spec = create_split_video_spec(SEED, split, index, SIZE, SECONDS)
        visible = {(b.timestamp, b.person_id): b.visible for b in keyframe_boxes(spec, non_actors=True)}
        idle = {(s, tr.person_id) for s in keyframe_seconds(SECONDS) for tr in spec.tracks
                if not tr.labels_at(float(s - 900))}
        assert idle <= visible.keys()
        seen += len(idle)
        expected = {key for key in idle if visible[key] >= NON_ACTOR_MIN_VISIBLE}
        listed = {(int(r[1]), int(r[7])) for r in _rows(extra / f"annotations/ava_{split}_v2.2.csv")
                  if r[0] == vid and r[6] == ""}
        assert listed == expected, split
        # A non-actor's row carries the same box keyframe_boxes gives it (3 decimals).
        boxes = {(b.timestamp, b.person_id): b.box_xyxy for b in keyframe_boxes(spec, non_actors=True)}
        for r in _rows(extra / f"annotations/ava_{split}_v2.2.csv"):
            if r[0] == vid and r[6] == "":
                assert [float(v) for v in r[2:6]] == pytest.approx(boxes[(int(r[1]), int(r[7]))], abs=5e-4)
    assert seen, "the set has people who are not acting"


def test_actors_listed_by_default_are_those_with_labels(both):
    spec = create_split_video_spec(SEED, "train", 0, SIZE, SECONDS)
    everyone = keyframe_boxes(spec, non_actors=True)
    assert [b for b in everyone if b.labels] == keyframe_boxes(spec)
    assert len(everyone) == len(spec.tracks) * len(keyframe_seconds(SECONDS))


def test_videos_and_exclusions_do_not_change(both):
    plain, summary, extra, summary_extra = both
    for name in ("videos/syn_train_000.mp4", "videos/syn_val_000.mp4",
                 "annotations/ava_val_excluded_timestamps_v2.2.csv", "frame_lists/val.csv"):
        assert (plain / name).read_bytes() == (extra / name).read_bytes(), name
    assert summary_extra.excluded == summary.excluded
    assert summary_extra.actors == summary.actors and summary_extra.class_counts == summary.class_counts


def test_summary_and_readme_count_the_non_actor_rows(both):
    _, summary, extra, summary_extra = both
    for split in ("train", "val"):
        rows = _rows(extra / f"annotations/ava_{split}_v2.2.csv")
        assert summary_extra.non_actors[split] == sum(r[6] == "" for r in rows)
        assert summary_extra.rows[split] == summary.rows[split] + summary_extra.non_actors[split] == len(rows)
    text = summary_extra.describe()
    assert f"{summary_extra.non_actors['train']} non-actor rows (empty action id)" in text
    assert "--non-actors" in (extra / "README.txt").read_text()


def test_readers_take_the_rows_as_people_without_an_action(both):
    _, _, extra, _ = both
    path = extra / "annotations/ava_train_v2.2.csv"
    rows = read_annotations(path)
    assert (rows.action_ids == -1).sum() == sum(r[6] == "" for r in _rows(path))
    keyframes = group_by_keyframe(rows, list(range(1, len(CLASSES) + 1)))
    people = sum(len(k) for k in keyframes)
    non_actors = sum(int((k.labels.sum(axis=1) == 0).sum()) for k in keyframes)
    assert non_actors == (rows.action_ids == -1).sum() and people > non_actors
    assert all(np.isin(k.labels, (0.0, 1.0)).all() for k in keyframes)


def test_cli_option(tmp_path, capsys):
    import argparse

    from bmvit.cli import synth

    parser = argparse.ArgumentParser()
    synth.add_arguments(parser)
    out = tmp_path / "d"
    assert not parser.parse_args(["--out", str(out)]).non_actors  # off by default
    assert synth.run(parser.parse_args(["--out", str(out), "--seed", str(SEED), "--videos", "1", "--val-videos", "1", "--seconds",
                 str(SECONDS), "--size", f"{SIZE[0]}x{SIZE[1]}", "--workers", "1", "--non-actors",
                 "--figure", str(tmp_path / "kf.png")])) == 0
    assert "non-actor rows (empty action id)" in capsys.readouterr().out
    assert any(r[6] == "" for r in _rows(out / "annotations/ava_val_v2.2.csv"))
    assert (tmp_path / "kf.png").is_file()  # the figure draws a person without an action too
