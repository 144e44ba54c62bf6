"""AVADataset / KeyFrameDataset on a small fabricated AVA-layout folder, with DataLoader workers."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from bmvit.data.ava import KeyFrame
from bmvit.data.dataset import AVADataset, KeyFrameDataset, VideoRef, collate_fn
from bmvit.data.transforms import create_transforms
from bmvit.data.video import clip_indices

H, W, FPS, SECONDS = 48, 64, 30, 4
T, STRIDE = 4, 2

ANNOTATIONS = {
    "train": (
        "vidA,0902,0.1,0.2,0.5,0.9,1,0\n"
        "vidA,0902,0.1,0.2,0.5,0.9,3,0\n"
        "vidA,0902,0.6,0.1,0.9,0.8,2,1\n"
        "vidA,0904,0.2,0.2,0.6,0.6,1,0\n"
        "vidB,0903,0.25,0.25,0.75,0.5,3,5\n"
    ),
    "val": ("vidA,0902,0.1,0.2,0.5,0.9,1,0\nvidA,0903,0.1,0.2,0.5,0.9,2,0\nvidB,0902,0.2,0.2,0.4,0.4,3,1\n"),
}
LABEL_MAP = 'item { name: "one" id: 1 }\nitem { name: "two" id: 2 }\nitem { name: "three" id: 3 }\n'


def frames_of(video: int) -> list[np.ndarray]:
    yy, xx = np.mgrid[0:H, 0:W]
    return [
        np.stack([(xx * 4 + i * 3 + video * 50) % 256, (yy * 5 + i) % 256, np.full_like(xx, (i * 7) % 256)], -1).astype(
            np.uint8
        )
        for i in range(FPS * SECONDS)
    ]


def write_video(path: Path, frames: list[np.ndarray]) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264rgb", rate=FPS)
        s.width, s.height, s.pix_fmt, s.options = W, H, "rgb24", {"qp": "0"}  # lossless
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def write_png(path: Path, img: np.ndarray) -> None:
    ctx = av.CodecContext.create("png", "w")
    ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = W, H, "rgb24", Fraction(1, FPS)
    path.write_bytes(b"".join(bytes(p) for p in ctx.encode(av.VideoFrame.from_ndarray(img, format="rgb24"))))


@pytest.fixture(scope="module")
def ava_root(tmp_path_factory) -> Path:
    """videos/*.mkv (lossless), frames/<vid>/<vid>_%06d.png listed in frame_lists, annotations."""
    root = tmp_path_factory.mktemp("ava")
    for d in ("videos", "frames", "annotations", "frame_lists"):
        (root / d).mkdir()
    rows = ["original_vido_id video_id frame_id path labels"]
    for v, vid in enumerate(("vidA", "vidB")):
        frames = frames_of(v)
        write_video(root / "videos" / f"{vid}.mkv", frames)
        (root / "frames" / vid).mkdir()
        for i, frame in enumerate(frames):
            name = f"{vid}/{vid}_{i + 1:06d}.png"
            write_png(root / "frames" / name, frame)
            rows.append(f'{vid} {v} {i} {name} ""')
    for split in ("train", "val"):
        (root / "frame_lists" / f"{split}.csv").write_text("\n".join(rows) + "\n")
    for split, text in ANNOTATIONS.items():
        (root / "annotations" / f"ava_{split}_v2.2.csv").write_text(text)
    (root / "annotations" / "ava_val_excluded_timestamps_v2.2.csv").write_text("vidA,0903\n")
    (root / "annotations" / "ava_action_list_v2.2_for_activitynet_2019.pbtxt").write_text(LABEL_MAP)
    return root


def make(root, split="train", **kw) -> AVADataset:
    kw.setdefault("train", False)
    return AVADataset(root, split, num_frames=T, stride=STRIDE, input_size=32, **kw)


def test_keyframes_targets_hand_computed(ava_root):
    ds = make(ava_root)
    assert ds.class_ids == [1, 2, 3] and ds.class_names == ["one", "two", "three"]
    assert ds.keyframe_keys() == [("vidA", 902), ("vidA", 904), ("vidB", 903)]
    clip, target = ds[0]
    assert clip.shape == (3, T, 32, 32) and clip.dtype == torch.float32
    assert target["video_id"] == "vidA" and target["timestamp"] == 902 and target["orig_size"] == (H, W)
    torch.testing.assert_close(target["boxes"], torch.tensor([[0.3, 0.55, 0.4, 0.7], [0.75, 0.45, 0.3, 0.7]]))
    assert target["labels"].tolist() == [[1, 0, 1], [0, 1, 0]] and target["labels"].dtype == torch.float32
    assert target["person_ids"].tolist() == [0, 1]


def test_clip_is_sampled_like_pyslowfast(ava_root):
    ds = make(ava_root)
    ds.decode_size = None  # frames at their stored size, to compare pixel for pixel
    frames = frames_of(0)
    # second 902 -> frame (902 - 900) * 30 = 60; 4 frames at stride 2 from 60 - 4
    np.testing.assert_array_equal(ds.read_clip(0), np.stack([frames[i] for i in (56, 58, 60, 62)]))
    # second 904 -> frame 120 of a 120-frame video: clamped to the last frame
    assert clip_indices(120, T, STRIDE, 120).tolist() == [116, 118, 119, 119]
    np.testing.assert_array_equal(ds.read_clip(1), np.stack([frames[i] for i in (116, 118, 119, 119)]))
    clip, _ = ds[0]
    expected, _ = create_transforms(False, 32)(np.stack([frames[i] for i in (56, 58, 60, 62)]), {})
    torch.testing.assert_close(clip, expected)


def test_video_and_frames_give_the_same_clips(ava_root):
    video, frames = make(ava_root), make(ava_root, source="frames")
    assert frames.videos["vidA"].frame_paths is not None  # the frame list was used (PNG frames: listed paths)
    cached = make(ava_root, cache_videos=True)
    for ds in (video, frames, cached):
        ds.decode_size = None
    for i in range(len(video)):
        np.testing.assert_array_equal(video.read_clip(i), frames.read_clip(i))
    np.testing.assert_array_equal(cached.read_clip(2), video.read_clip(2))


def test_decoding_at_the_needed_size_keeps_the_model_input(ava_root):
    """The built-in transforms let the sources decode smaller frames (here video frames converted to
    43x32 for a 32x32 input; PNG frames are never decoded small); the model input stays within a few
    grey levels of the full decode's (measured: mean 0.6, max 28 on these sharp-edged test frames)."""
    for source in ("video", "frames"):
        small = make(ava_root, source=source, output="uint8")
        assert small.decode_size == (32, 32)
        full = make(ava_root, source=source, output="uint8")
        full.decode_size = None
        for i in range(len(small)):
            (a, ta), (b, tb) = small[i], full[i]
            assert ta["orig_size"] == tb["orig_size"] == (H, W)
            diff = (a.float() - b.float()).abs()
            assert diff.mean() < 1.5 and diff.max() <= 40, (source, i, float(diff.mean()), float(diff.max()))


def test_val_split_applies_exclusions(ava_root, caplog):
    with caplog.at_level(logging.INFO, logger="bmvit.data"):
        ds = make(ava_root, "val")
    assert ds.keyframe_keys() == [("vidA", 902), ("vidB", 902)]
    assert any("1 excluded key frame(s) removed" in r.getMessage() for r in caplog.records)
    assert make(ava_root, "val", exclusions=None).keyframe_keys() == [
        ("vidA", 902),
        ("vidA", 903),
        ("vidB", 902),
    ]


def test_non_actors_are_dropped(ava_root):
    ds = make(ava_root, class_ids=[3, 1])
    _, target = ds[0]
    # person 1 only does action 2 (not trained): a non-actor, left out; person 0 keeps columns [3, 1]
    assert target["labels"].tolist() == [[1, 1]] and target["person_ids"].tolist() == [0]
    _, target = make(ava_root, class_ids=[2])[2]  # vidB's only person does action 3
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0, 1)


def test_non_actors_are_kept_with_the_flag(ava_root):
    """keep_non_actors (loss.nonactor_boxes): the people without a trained action stay, with an all-zero
    label row and is_actor False; the actors' rows are those of the default."""
    ds = make(ava_root, class_ids=[3, 1], keep_non_actors=True)
    _, target = ds[0]
    assert target["person_ids"].tolist() == [0, 1]
    assert target["labels"].tolist() == [[1, 1], [0, 0]]
    assert target["is_actor"].tolist() == [True, False] and target["is_actor"].dtype == torch.bool
    # person 1: xyxy (.6, .1, .9, .8) -> cxcywh (.75, .45, .3, .7)
    torch.testing.assert_close(target["boxes"], torch.tensor([[0.3, 0.55, 0.4, 0.7], [0.75, 0.45, 0.3, 0.7]]))
    _, default = make(ava_root, class_ids=[3, 1])[0]
    assert "is_actor" not in default
    assert torch.equal(default["boxes"], target["boxes"][:1]) and torch.equal(default["labels"], target["labels"][:1])
    _, target = make(ava_root, class_ids=[2], keep_non_actors=True)[2]  # vidB's only person does action 3
    assert target["boxes"].shape == (1, 4) and target["labels"].tolist() == [[0]]
    assert target["is_actor"].tolist() == [False]


def test_is_actor_follows_the_people_a_transform_keeps(ava_root):
    """is_actor is derived after the transform: a crop that drops people drops their flags with them."""
    ds = make(ava_root, class_ids=[3, 1], keep_non_actors=True, train=True, resize="short_side",
              scale_jitter=(1.0, 1.6), hflip=0.5)
    torch.manual_seed(0)
    for index in range(len(ds)):
        for _ in range(4):
            _, target = ds[index]
            assert target["is_actor"].tolist() == (target["labels"].sum(-1) > 0).tolist()
            assert len(target["is_actor"]) == len(target["boxes"]) == len(target["person_ids"])


def test_synthetic_non_actors_reach_the_targets_only_with_the_flag(tmp_path):
    from bmvit.data.synthetic import write_synthetic_dataset

    write_synthetic_dataset(tmp_path, seed=3, num_videos=2, num_val_videos=1, seconds=6, size=(128, 96), workers=1,
                            non_actors=True)
    kept = AVADataset(tmp_path, "train", num_frames=2, stride=4, input_size=32, train=False, keep_non_actors=True)
    plain = AVADataset(tmp_path, "train", num_frames=2, stride=4, input_size=32, train=False)
    rows = (tmp_path / "annotations" / "ava_train_v2.2.csv").read_text().splitlines()
    fields = [r.split(",") for r in rows]
    people = {(f[0], f[1], f[7]) for f in fields}  # (video, key frame, person)
    non_actors = {(f[0], f[1], f[7]) for f in fields if f[6] == ""}
    assert non_actors, "the tiny set has people who are not acting"
    assert sum(len(kept[i][1]["boxes"]) for i in range(len(kept))) == len(people)
    assert sum(int((~kept[i][1]["is_actor"]).sum()) for i in range(len(kept))) == len(non_actors)
    assert sum(len(plain[i][1]["boxes"]) for i in range(len(plain))) == len(people) - len(non_actors)


def test_exclusions_explicit_file(ava_root, tmp_path):
    path = tmp_path / "ex.csv"
    path.write_text("vidA,0904\n")
    assert make(ava_root, exclusions=path).keyframe_keys() == [("vidA", 902), ("vidB", 903)]
    assert len(make(ava_root, "train")) == 3  # "auto" excludes on val only
    with pytest.raises(FileNotFoundError, match="excluded-timestamps CSV not found"):
        make(ava_root, exclusions=tmp_path / "none.csv")


def test_augmentation_settings(ava_root):
    ds = make(
        ava_root,
        train=True,
        hflip=0.3,
        scale_jitter=(0.7, 1.1),
        color_jitter=0.25,
        flip_swap_class_ids=[(1, 3), (2, 99)],
    )
    steps = {type(t).__name__: t for t in ds.transform.transforms}
    assert steps["HorizontalFlip"].p == 0.3 and steps["HorizontalFlip"].swap_columns == [(0, 2)]
    assert steps["RandomZoom"].scale == (0.7, 1.1) and steps["ColorJitter"].saturation == 0.25
    assert [type(t).__name__ for t in make(ava_root, train=False, hflip=0.3).transform.transforms] == [
        "ToTensorClip",
        "Resize",
        "ToModelInput",
    ]


def test_dataloader_with_workers(ava_root):
    ds = make(ava_root)
    first = ds[0][0]  # the main process opens the videos first: forked workers must not share them
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_fn, shuffle=False)
    batches = list(loader)
    assert [b[0].shape for b in batches] == [(2, 3, T, 32, 32), (1, 3, T, 32, 32)]
    targets = [t for _, ts in batches for t in ts]
    assert [(t["video_id"], t["timestamp"]) for t in targets] == ds.keyframe_keys()
    torch.testing.assert_close(batches[0][0][0], first)  # workers decode exactly what the main process does
    torch.testing.assert_close(batches[0][0][1], ds[1][0])
    train = make(ava_root, train=True, source="frames", scale_jitter=(0.6, 1.3), color_jitter=0.2)
    for clips, ts in DataLoader(train, batch_size=3, num_workers=2, collate_fn=collate_fn):
        assert clips.shape == (3, 3, T, 32, 32) and len(ts) == 3
        for t in ts:
            assert t["boxes"].shape[0] == t["labels"].shape[0] and t["boxes"].shape[1] == 4
            assert bool(((t["boxes"] >= 0) & (t["boxes"] <= 1)).all())


def test_missing_video_is_named(ava_root, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "vidA.mkv").write_bytes((ava_root / "videos" / "vidA.mkv").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"1 annotated video\(s\) have no file in .*videos.*\['vidB'\]"):
        make(ava_root, video_dir=videos)
    with pytest.raises(FileNotFoundError, match="frame folder not found"):
        make(ava_root, source="frames", frame_dir=tmp_path / "none")


def test_truncated_video_error_names_keyframe(ava_root, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for vid in ("vidA", "vidB"):
        data = (ava_root / "videos" / f"{vid}.mkv").read_bytes()
        (videos / f"{vid}.mkv").write_bytes(data[: len(data) // 3] if vid == "vidA" else data)
    ds = make(ava_root, video_dir=videos)
    with pytest.raises(
        ValueError, match=r"key frame vidA,904: video vidA: frame 11\d \(t=3.\d+ s\) could not be decoded"
    ):
        ds[1]
    assert ds[2][1]["video_id"] == "vidB"


def test_bad_annotation_row(ava_root, tmp_path, caplog):
    bad = tmp_path / "bad.csv"
    bad.write_text(ANNOTATIONS["train"] + "vidA,0903,0.5,0.2,0.4,0.9,1,0\n")
    with pytest.raises(ValueError, match=r"bad\.csv:6: box .* x1 >= x2"):
        make(ava_root, annotation_csv=bad)
    with caplog.at_level(logging.WARNING, logger="bmvit.data"):
        ds = make(ava_root, annotation_csv=bad, skip_bad=True)
    assert ds.skipped_rows == 1 and len(ds) == 3


def test_keyframe_dataset_checks_labels(ava_root):
    k = KeyFrame("vidA", 902, np.array([[0.1, 0.1, 0.2, 0.2]]), ((1,),), np.array([0]), labels=None)
    refs = {"vidA": VideoRef("video", str(ava_root / "videos" / "vidA.mkv"))}
    with pytest.raises(ValueError, match=r"key frame vidA,902: labels must be \[P, C\] = \[1, 2\]"):
        KeyFrameDataset([k], refs, [1, 2], transform=create_transforms(False, 32))
    with pytest.raises(ValueError, match=r"no video given for 1 video id\(s\).*vidA"):
        KeyFrameDataset([k], {}, [1], transform=create_transforms(False, 32))


def test_frame_index_records(ava_root):
    """Records with a frame index (UCF/JHMDB style) are centred on that frame, not on a time."""
    k = KeyFrame(
        "vidB",
        5,
        np.array([[0.1, 0.1, 0.2, 0.2]]),
        ((1,),),
        np.array([0]),
        labels=np.ones((1, 1), np.float32),
        frame_index=10,
    )
    refs = {"vidB": VideoRef("video", str(ava_root / "videos" / "vidB.mkv"))}
    ds = KeyFrameDataset([k], refs, [1], num_frames=T, stride=STRIDE, transform=create_transforms(False, 32))
    frames = frames_of(1)
    np.testing.assert_array_equal(ds.read_clip(0), np.stack([frames[i] for i in (6, 8, 10, 12)]))


def test_synthetic_dataset_loads(tmp_path):
    synthetic = pytest.importorskip("bmvit.data.synthetic")
    if not hasattr(synthetic, "write_synthetic_dataset"):
        pytest.skip("synthetic generator not available")
    synthetic.write_synthetic_dataset(
        tmp_path, seed=0, num_videos=1, num_val_videos=1, seconds=4, size=(64, 64), frames=True, workers=1
    )
    video = AVADataset(tmp_path, "val", num_frames=4, stride=4, input_size=32, train=False)
    frames = AVADataset(tmp_path, "val", num_frames=4, stride=4, input_size=32, train=False, source="frames")
    assert len(video) > 0 and video.keyframe_keys() == frames.keyframe_keys()
    clip_v, target = video[0]
    clip_f, _ = frames[0]
    assert clip_v.shape == (3, 4, 32, 32)
    # H.264 video vs JPEGs extracted from it: the same frames up to JPEG loss
    assert (clip_v - clip_f).abs().mean() < 0.1
    assert target["labels"].shape[1] == len(video.class_ids)
