"""Joint clip/box transforms: hand-computed boxes, letterbox round trips, boxes that follow the pixels."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bmvit.data.transforms import (
    ColorJitter,
    Compose,
    HorizontalFlip,
    RandomZoom,
    Resize,
    ToModelInput,
    ToTensorClip,
    adjust_colour,
    create_transforms,
    hflip,
    letterbox_geometry,
    resize_frames,
    zoom,
)


def clip_and_target(h=100, w=200, t=2, seed=0):
    rng = np.random.default_rng(seed)
    clip = rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)
    target = {
        "boxes_xyxy": np.array([[0.3, 0.3, 0.6, 0.6], [0.0, 0.0, 0.1, 0.1]], dtype=np.float32),
        "labels": np.array([[1, 0, 0], [0, 1, 1]], dtype=np.float32),
        "person_ids": np.array([4, 9]),
        "video_id": "v",
    }
    return clip, target


def tensors(h=100, w=200, t=2):
    return ToTensorClip()(*clip_and_target(h, w, t))


def test_to_tensor_layout():
    clip, target = clip_and_target()
    out, tgt = ToTensorClip()(clip, target)
    assert out.shape == (2, 3, 100, 200) and out.dtype == torch.uint8
    assert torch.equal(out[1, 2], torch.from_numpy(clip[1, :, :, 2]))
    assert tgt["boxes_xyxy"].dtype == torch.float32 and tgt["person_ids"].dtype == torch.int64
    with pytest.raises(ValueError, match=r"expected a clip \[T, H, W, 3\], got shape \(4, 5\)"):
        ToTensorClip()(np.zeros((4, 5), np.uint8), {})


def test_hflip_boxes_pixels_and_label_swap():
    clip, target = tensors()
    out, tgt = hflip(clip, target, swap_columns=[(1, 2)])
    torch.testing.assert_close(tgt["boxes_xyxy"], torch.tensor([[0.4, 0.3, 0.7, 0.6], [0.9, 0.0, 1.0, 0.1]]))
    assert torch.equal(out[..., 0], clip[..., -1]) and torch.equal(out[..., 17], clip[..., 200 - 1 - 17])
    assert tgt["labels"].tolist() == [[1, 0, 0], [0, 1, 1]]  # the swapped columns were both 0 or both 1
    _, tgt = hflip(clip, {**target, "labels": torch.tensor([[0.0, 1.0, 0.0]] * 2)}, swap_columns=[(1, 2)])
    assert tgt["labels"].tolist() == [[0, 0, 1]] * 2
    # flipping twice is the identity
    back, tgt2 = hflip(*hflip(clip, target))
    assert torch.equal(back, clip)
    torch.testing.assert_close(tgt2["boxes_xyxy"], target["boxes_xyxy"])


def test_horizontal_flip_probability():
    clip, target = tensors()
    assert HorizontalFlip(p=0.0)(clip, target)[0] is clip
    torch.testing.assert_close(
        HorizontalFlip(p=1.0)(clip, target)[1]["boxes_xyxy"][0], torch.tensor([0.4, 0.3, 0.7, 0.6])
    )


def test_square_resize_keeps_normalised_boxes():
    clip, target = tensors()
    out, tgt = Resize(64)(clip, target)
    assert out.shape == (2, 3, 64, 64) and out.dtype == torch.float32
    assert torch.equal(tgt["boxes_xyxy"], target["boxes_xyxy"])
    ref = F.interpolate(clip.float() / 255, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(out, ref.clamp(0, 1))
    assert "letterbox" not in tgt


def test_letterbox_hand_computed_and_round_trip():
    clip, target = tensors(h=100, w=200)
    out, tgt = Resize(64, mode="letterbox", fill=0.5)(clip, target)
    box = tgt["letterbox"]
    # scale 0.32: content 32 x 64, centred vertically: 16 rows of padding above and below
    assert box.content_size == (32, 64) and (box.pad_top, box.pad_left) == (16, 0)
    assert box.orig_size == (100, 200) and box.input_size == (64, 64)
    assert torch.all(out[..., :16, :] == 0.5) and torch.all(out[..., 48:, :] == 0.5)
    torch.testing.assert_close(out[..., 16:48, :], resize_frames(clip, (32, 64)))
    # x unchanged; y -> 0.25 + 0.5 * y
    torch.testing.assert_close(tgt["boxes_xyxy"], torch.tensor([[0.3, 0.4, 0.6, 0.55], [0.0, 0.25, 0.1, 0.3]]))
    torch.testing.assert_close(box.boxes_to_original(tgt["boxes_xyxy"]), target["boxes_xyxy"])
    # numpy works too, and predictions reaching into the padding are clipped to the frame
    back = box.boxes_to_original(np.array([[0.0, 0.0, 1.0, 1.0]]))
    np.testing.assert_allclose(back, [[0.0, 0.0, 1.0, 1.0]])
    np.testing.assert_allclose(box.boxes_to_original(np.array([[0.0, 0.0, 1.0, 1.0]]), clip=False), [[0, -0.5, 1, 1.5]])


@pytest.mark.parametrize(
    "orig, inp", [((100, 200), (64, 64)), ((240, 180), (64, 64)), ((37, 91), (50, 30)), ((64, 64), (64, 64))]
)
def test_letterbox_round_trip_random_boxes(orig, inp):
    box = letterbox_geometry(orig, inp)
    assert box.content_size[0] <= inp[0] and box.content_size[1] <= inp[1]
    assert box.content_size[0] == inp[0] or box.content_size[1] == inp[1]  # one side fills the input
    g = torch.Generator().manual_seed(0)
    a = torch.rand(20, 2, generator=g) * 0.5
    boxes = torch.cat([a, a + 0.1 + torch.rand(20, 2, generator=g) * 0.4], dim=1)
    torch.testing.assert_close(box.boxes_to_original(box.boxes_to_input(boxes)), boxes)


def test_zoom_in_crop_hand_computed():
    clip, target = tensors(h=100, w=200)
    out, tgt = zoom(clip, target, x0=50, y0=20, width=100, height=50)
    assert torch.equal(out, clip[..., 20:70, 50:150])
    # box 0 in pixels (60, 30, 120, 60) -> window (10, 10, 70, 40) / (100, 50); box 1 (0..20, 0..10) vanishes
    torch.testing.assert_close(tgt["boxes_xyxy"], torch.tensor([[0.1, 0.2, 0.7, 0.8]]))
    assert tgt["labels"].tolist() == [[1, 0, 0]] and tgt["person_ids"].tolist() == [4]
    assert tgt["video_id"] == "v"


def test_zoom_clips_partial_boxes_and_min_visible():
    clip, target = tensors(h=100, w=200)
    # window x in [90, 190): box 0 (60..120 px) keeps 30 of its 60 px width
    _, tgt = zoom(clip, target, x0=90, y0=0, width=100, height=50)
    torch.testing.assert_close(tgt["boxes_xyxy"], torch.tensor([[0.0, 0.6, 0.3, 1.0]]))
    # box 0 is cut horizontally at 90 px and vertically at 50 px: 30 x 20 of 60 x 30 px = 1/3 visible
    _, tgt = zoom(clip, target, x0=90, y0=0, width=100, height=50, min_visible=0.4)
    assert tgt["boxes_xyxy"].shape == (0, 4) and tgt["labels"].shape == (0, 3)


def test_zoom_out_pads():
    clip, target = tensors(h=100, w=200)
    out, tgt = zoom(clip, target, x0=-50, y0=-25, width=300, height=150, fill=1.0)
    assert out.shape == (2, 3, 150, 300)
    assert torch.equal(out[..., 25:125, 50:250], clip)
    assert torch.all(out[..., :25, :] == 255) and torch.all(out[..., :, :50] == 255)
    torch.testing.assert_close(tgt["boxes_xyxy"][0], torch.tensor([110 / 300, 55 / 150, 170 / 300, 85 / 150]))
    assert len(tgt["boxes_xyxy"]) == 2


def test_random_zoom_validates():
    with pytest.raises(ValueError, match="scale must be 0 < low <= high"):
        RandomZoom((1.2, 0.8))


def test_boxes_follow_the_pixels_under_random_training_transforms():
    """Paint each box white on black; after random zoom + flip + resize the box still frames the white."""
    h, w = 120, 160
    boxes = np.array([[0.25, 0.3, 0.5, 0.8], [0.6, 0.1, 0.9, 0.4]], dtype=np.float32)
    clip = np.zeros((2, h, w, 3), dtype=np.uint8)
    for x1, y1, x2, y2 in boxes:
        clip[:, round(y1 * h) : round(y2 * h), round(x1 * w) : round(x2 * w)] = 255
    steps = Compose([ToTensorClip(), RandomZoom((0.6, 1.4)), HorizontalFlip(0.5), Resize(64)])
    random.seed(0)
    for _ in range(20):
        out, tgt = steps(clip, {"boxes_xyxy": boxes, "labels": np.eye(2, dtype=np.float32)})
        frame = out[0, 0]
        for x1, y1, x2, y2 in tgt["boxes_xyxy"].tolist():
            assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1
            i1, i2, j1, j2 = round(y1 * 64), round(y2 * 64), round(x1 * 64), round(x2 * 64)
            inner = frame[i1 + 2 : i2 - 2, j1 + 2 : j2 - 2]
            if inner.numel():
                assert inner.min() > 0.9  # inside the box: white
        white = frame > 0.5
        covered = torch.zeros_like(white)
        for x1, y1, x2, y2 in tgt["boxes_xyxy"].tolist():
            covered[
                max(0, round(y1 * 64) - 1) : round(y2 * 64) + 1, max(0, round(x1 * 64) - 1) : round(x2 * 64) + 1
            ] = True
        assert not (white & ~covered).any()  # every white pixel lies in a kept box


def test_colour_adjustments():
    g = torch.Generator().manual_seed(0)
    clip = torch.rand(2, 3, 8, 8, generator=g)
    torch.testing.assert_close(adjust_colour(clip), clip)
    torch.testing.assert_close(adjust_colour(clip, brightness=0.5), clip * 0.5)
    gray = torch.full((1, 3, 4, 4), 0.4)
    torch.testing.assert_close(adjust_colour(gray, saturation=0.0, hue=0.3), gray)  # grey has no colour to change
    desat = adjust_colour(clip, saturation=0.0)
    torch.testing.assert_close(desat[:, 0], desat[:, 1])
    flat = adjust_colour(clip, contrast=0.0)
    torch.testing.assert_close(
        flat, torch.full_like(clip, float((clip * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(1).mean()))
    )
    # the combined map equals the four steps applied one after the other (clamping only at the end)
    b, c, s = 1.2, 0.7, 1.3
    step = clip * b
    mean = (step * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(1).mean()
    step = (step - mean) * c + mean
    grey = (step * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(1, keepdim=True)
    step = (step - grey) * s + grey
    torch.testing.assert_close(adjust_colour(clip, b, c, s), step.clamp(0, 1))
    # a full hue turn is the identity; ColorJitter applies one draw to every frame
    torch.testing.assert_close(adjust_colour(clip, hue=1.0), clip, atol=1e-5, rtol=0)
    random.seed(1)
    jittered, _ = ColorJitter(0.5, 0.5, 0.5, 0.1, p=1.0)(torch.stack([clip[0], clip[0]]), {})
    torch.testing.assert_close(jittered[0], jittered[1])


def test_to_model_input():
    clip = torch.full((4, 3, 8, 8), 255, dtype=torch.uint8)
    target = {"boxes_xyxy": torch.tensor([[0.1, 0.2, 0.5, 0.6]])}
    out, tgt = ToModelInput(mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))(clip, target)
    assert out.shape == (3, 4, 8, 8) and out.dtype == torch.float32
    assert out[0].unique().tolist() == [1.0] and out[1].unique().tolist() == [3.0] and out[2].unique().tolist() == [1.0]
    torch.testing.assert_close(tgt["boxes"], torch.tensor([[0.3, 0.4, 0.4, 0.4]]))
    assert "boxes_xyxy" not in tgt
    with pytest.raises(ValueError, match="3 positive stds"):
        ToModelInput(std=(0.1, 0.0, 0.1))


def test_create_transforms_eval_is_deterministic_and_shaped():
    clip, target = clip_and_target(h=90, w=160, t=4)
    steps = create_transforms(False, 32)
    a, ta = steps(clip, target)
    b, _ = steps(clip, target)
    assert a.shape == (3, 4, 32, 32) and torch.equal(a, b)
    torch.testing.assert_close(ta["boxes"][0], torch.tensor([0.45, 0.45, 0.3, 0.3]))
    letter = create_transforms(False, 32, resize="letterbox")(clip, target)[1]
    assert letter["letterbox"].content_size == (18, 32)
    assert [type(s).__name__ for s in create_transforms(True, 32).transforms] == [
        "ToTensorClip",
        "HorizontalFlip",
        "Resize",
        "ToModelInput",
    ]  # the defaults: flip only
    train = create_transforms(True, 32, scale_jitter=(0.7, 1.2), color_jitter=0.3)
    assert train.transforms[1].scale == (0.7, 1.2) and train.transforms[4].contrast == 0.3
    assert [type(s).__name__ for s in train.transforms] == [
        "ToTensorClip",
        "RandomZoom",
        "HorizontalFlip",
        "Resize",
        "ColorJitter",
        "ToModelInput",
    ]
    out, tgt = train(clip, target)
    assert out.shape == (3, 4, 32, 32) and tgt["labels"].shape[0] == tgt["boxes"].shape[0]


@pytest.mark.parametrize(
    "train, resize, options",
    [
        (False, "square", {}),
        (False, "letterbox", {}),
        (True, "square", {"scale_jitter": (0.7, 1.2), "color_jitter": 0.3, "flip_swap_columns": [(1, 2)]}),
        (True, "letterbox", {"scale_jitter": (0.8, 1.0), "color_jitter": 0.4}),
    ],
)
def test_the_uint8_hand_off_equals_the_float_pipeline(train, resize, options):
    """Workers resize in uint8, flip after the resize and defer colour jitter; ``normalize_clips`` on the
    device finishes the clip. Same random draws, same boxes, and pixels within the uint8 rounding of
    the resize (amplified at most by the jitter's colour factors)."""
    from bmvit.data.transforms import normalize_clips

    mean, std = (0.45, 0.4, 0.35), (0.225, 0.25, 0.2)
    common = dict(mean=mean, std=std, resize=resize, hflip=1.0 if train else 0.0, **options)
    clip, target = clip_and_target(h=90, w=160, t=3, seed=4)
    for seed in range(4):
        random.seed(seed)
        ref, ref_target = create_transforms(train, 48, **common)(clip, target)
        random.seed(seed)
        small, small_target = create_transforms(train, 48, output="uint8", **common)(clip, target)
        assert small.dtype == torch.uint8 and small.shape == ref.shape == (3, 3, 48, 48)
        torch.testing.assert_close(small_target["boxes"], ref_target["boxes"], rtol=0, atol=1e-6)
        assert torch.equal(small_target["labels"], ref_target["labels"])
        out = normalize_clips(small[None], mean, std, [small_target.get("colour")])[0]
        levels = ((out - ref) * torch.tensor(std).view(3, 1, 1, 1) * 255).abs()
        # The resize rounds to the nearest level (< 1 apart); brightness, contrast and saturation above 1
        # stretch that difference by at most their product.
        bound = float(np.prod([max(1.0, f) for f in small_target.get("colour", (1.0, 1.0, 1.0))[:3]]))
        assert levels.max() <= bound, (seed, float(levels.max()))
        assert levels.mean() < 0.5


def test_normalize_clips_passes_float_clips_and_normalises_uint8():
    from bmvit.data.transforms import normalize_clips

    clips = torch.full((2, 3, 1, 2, 2), 255, dtype=torch.uint8)
    out = normalize_clips(clips, (0.5, 0.25, 0.0), (0.5, 0.25, 1.0))
    assert out.dtype == torch.float32 and out[:, 0].unique().tolist() == [1.0] and out[:, 1].unique().tolist() == [3.0]
    ready = torch.randn(1, 3, 1, 2, 2)
    assert normalize_clips(ready, (0.5,) * 3, (0.5,) * 3) is ready
    # a deferred brightness of 0.5 halves the clip before the normalisation, only in the clip that has it
    half = normalize_clips(clips, (0.0,) * 3, (1.0,) * 3, [(0.5, 1.0, 1.0, 0.0), None])
    assert half[0].unique().tolist() == [0.5] and half[1].unique().tolist() == [1.0]


def test_min_decode_size_leaves_room_for_the_zoom():
    from bmvit.data.transforms import min_decode_size

    assert min_decode_size(256) == (256, 256)
    assert min_decode_size(256, (0.8, 1.0)) == (320, 320)
    assert min_decode_size((128, 160), (1.0, 1.5)) == (128, 160)  # zooming out needs no more pixels


# ------------------------------------------------------------------------------------------------
# data.resize: short_side (aspect kept, short side to the input, long side cropped)


def frame_60x80(t=2):
    """A uint8 [T, 60, 80, 3] clip of distinct columns, three people (normalised xyxy of the 60x80 frame):
    one inside the crop, one cut by its right edge, one in the 6 px the centre crop drops on the left."""
    x = np.arange(80, dtype=np.uint8) * 3
    clip = np.broadcast_to(x[None, None, :, None], (t, 60, 80, 3)).copy()
    target = {
        "boxes_xyxy": np.array([[0.3, 0.25, 0.6, 0.75], [0.8, 0.2, 0.95, 0.4], [0.0, 0.1, 0.1, 0.5]], np.float32),
        "labels": np.eye(3, dtype=np.float32),
        "person_ids": np.array([1, 2, 3]),
    }
    return clip, target


def test_short_side_geometry_hand_computed():
    """60x80 -> 40x40: scale max(40/60, 40/80) = 2/3; resized 40 x round(53.33) = 40x53; centre crop
    left = (53 - 40) // 2 = 6 (floor), top = 0."""
    from bmvit.data.transforms import short_side_geometry

    g = short_side_geometry((60, 80), (40, 40))
    assert (g.resized_size, g.crop_top, g.crop_left) == ((40, 53), 0, 6)
    # portrait: the short side is the width; 53 - 40 = 13 rows to spare, centre top 6
    p = short_side_geometry((80, 60), (40, 40))
    assert (p.resized_size, p.crop_top, p.crop_left) == ((53, 40), 6, 0)
    # an odd excess rounds the centre down: 90x160 -> 48: 48 x round(85.33) = 85, left = 37 // 2 = 18
    assert short_side_geometry((90, 160), (48, 48)).crop_left == 18
    # a non-square input: the smallest scale that covers it (here the width sets it)
    assert short_side_geometry((60, 80), (30, 60)).resized_size == (45, 60)
    with pytest.raises(ValueError, match="leaves the resized 40x53 frame"):
        short_side_geometry((60, 80), (40, 40), offset=(0, 14))


def test_short_side_boxes_hand_computed_and_round_trip():
    """x_in = (x * 53 - 6) / 40, y unchanged (the rows are not cropped).

    [0.3, 0.25, 0.6, 0.75] -> x: (15.9 - 6) / 40 = 0.2475, (31.8 - 6) / 40 = 0.645.
    [0.8, 0.2, 0.95, 0.4] -> x: (42.4 - 6) / 40 = 0.91, (50.35 - 6) / 40 = 1.10875, clipped to 1.
    [0.0, 0.1, 0.1, 0.5] -> x: -0.15, -0.0175: wholly left of the crop, dropped with its labels and id.
    """
    clip, target = ToTensorClip()(*frame_60x80())
    out, tgt = Resize(40, "short_side")(clip, target)
    assert out.shape == (2, 3, 40, 40) and out.dtype == torch.float32
    torch.testing.assert_close(
        tgt["boxes_xyxy"], torch.tensor([[0.2475, 0.25, 0.645, 0.75], [0.91, 0.2, 1.0, 0.4]]), rtol=0, atol=1e-6
    )
    assert tgt["person_ids"].tolist() == [1, 2] and tgt["labels"].tolist() == [[1, 0, 0], [0, 1, 0]]
    record = tgt["letterbox"]
    assert (record.resized_size, record.crop_top, record.crop_left) == ((40, 53), 0, 6)
    # back to the original frame: the inside box exactly, the cut one up to the crop's right edge, 46 / 53
    back = record.boxes_to_original(tgt["boxes_xyxy"])
    torch.testing.assert_close(back[0], torch.tensor([0.3, 0.25, 0.6, 0.75]), rtol=0, atol=1e-6)
    torch.testing.assert_close(back[1], torch.tensor([0.8, 0.2, 46 / 53, 0.4]), rtol=0, atol=1e-6)
    # numpy boxes too (the engine passes torch, a predictor may pass either); unclipped it is exact
    np.testing.assert_allclose(record.boxes_to_original(np.array([[0.0, 0.0, 1.0, 1.0]])), [[6 / 53, 0, 46 / 53, 1]])
    raw = record.boxes_to_input(torch.as_tensor(target["boxes_xyxy"]))
    torch.testing.assert_close(record.boxes_to_original(raw, clip=False), torch.as_tensor(target["boxes_xyxy"]))
    # the pixels are the resized frame's columns 6..45
    torch.testing.assert_close(out, resize_frames(clip, (40, 53))[..., 6:46])


def test_short_side_random_crop_is_seeded_and_drops_people_out_of_view():
    clip, target = ToTensorClip()(*frame_60x80())
    step = Resize(40, "short_side", random_crop=True)
    offsets = []
    for seed in range(12):
        random.seed(seed)
        out, tgt = step(clip, target)
        random.seed(seed)
        again, tgt_again = step(clip, target)
        assert torch.equal(out, again) and tgt["letterbox"] == tgt_again["letterbox"]  # same seed, same crop
        left = tgt["letterbox"].crop_left
        assert tgt["letterbox"].crop_top == 0 and 0 <= left <= 13
        offsets.append(left)
        torch.testing.assert_close(out, resize_frames(clip, (40, 53))[..., left : left + 40])
        # the boxes follow the crop; a person is kept exactly when its box overlaps the window
        x = np.asarray(target["boxes_xyxy"])[:, [0, 2]] * 53 - left
        visible = (np.minimum(x[:, 1], 40) - np.maximum(x[:, 0], 0)) > 0
        assert tgt["person_ids"].tolist() == [i for i, v in zip([1, 2, 3], visible) if v]
        expected = np.clip(np.asarray(target["boxes_xyxy"])[visible] * [53 / 40, 1, 53 / 40, 1] - [left / 40, 0] * 2,
                           0, 1)
        torch.testing.assert_close(tgt["boxes_xyxy"], torch.as_tensor(expected, dtype=torch.float32),
                                   rtol=0, atol=1e-6)
    assert len(set(offsets)) > 3  # the offset does vary with the seed
    # both cases were met: person 3 (x2 = 5.3 px of the resized frame) kept when left <= 5, dropped when >= 6
    assert min(offsets) <= 5 and max(offsets) >= 6, offsets


def test_short_side_in_the_pipelines():
    """Training crops at random, evaluation in the centre; ``input_geometry`` (what a predictor can use
    without a target) gives the evaluation record."""
    from bmvit.data.transforms import input_geometry

    clip, target = frame_60x80(t=4)
    evaluation = create_transforms(False, 40, resize="short_side")
    a, ta = evaluation(clip, target)
    b, tb = evaluation(clip, target)
    assert a.shape == (3, 4, 40, 40) and torch.equal(a, b)
    assert ta["letterbox"] == input_geometry("short_side", (60, 80), (40, 40))
    assert ta["person_ids"].tolist() == [1, 2]
    assert input_geometry("square", (60, 80), (40, 40)) is None
    assert input_geometry("letterbox", (60, 80), (40, 40)) == letterbox_geometry((60, 80), (40, 40))
    with pytest.raises(ValueError, match="mode must be one of"):
        input_geometry("crop", (60, 80), (40, 40))
    with pytest.raises(ValueError, match="mode must be one of"):
        Resize(40, "crop")
    train = create_transforms(True, 40, resize="short_side")
    assert [type(s).__name__ for s in train.transforms] == ["ToTensorClip", "Resize", "HorizontalFlip", "ToModelInput"]
    assert train.transforms[1].random_crop and not evaluation.transforms[1].random_crop
    random.seed(3)
    lefts = {create_transforms(True, 40, resize="short_side", hflip=0.0)(clip, target)[1]["letterbox"].crop_left
             for _ in range(10)}
    assert len(lefts) > 1


@pytest.mark.parametrize("train, options", [
    (False, {}),
    (True, {"scale_jitter": (0.8, 1.0), "color_jitter": 0.3, "flip_swap_columns": [(1, 2)]}),
    (True, {"scale_jitter": (1.0, 1.3)}),
])
def test_short_side_uint8_and_float_paths_give_the_same_geometry(train, options):
    """Same seed: the same crop record, the same boxes and people, pixels within the uint8 rounding."""
    from bmvit.data.transforms import normalize_clips

    mean, std = (0.45, 0.4, 0.35), (0.225, 0.25, 0.2)
    common = dict(mean=mean, std=std, resize="short_side", hflip=0.5 if train else 0.0, **options)
    clip, target = clip_and_target(h=90, w=160, t=3, seed=4)
    for seed in range(6):
        random.seed(seed)
        ref, ref_target = create_transforms(train, 48, **common)(clip, target)
        random.seed(seed)
        small, small_target = create_transforms(train, 48, output="uint8", **common)(clip, target)
        assert small.dtype == torch.uint8 and small.shape == ref.shape == (3, 3, 48, 48)
        assert small_target["letterbox"] == ref_target["letterbox"]
        torch.testing.assert_close(small_target["boxes"], ref_target["boxes"], rtol=0, atol=1e-6)
        assert torch.equal(small_target["person_ids"], ref_target["person_ids"])
        assert torch.equal(small_target["labels"], ref_target["labels"])
        out = normalize_clips(small[None], mean, std, [small_target.get("colour")])[0]
        levels = ((out - ref) * torch.tensor(std).view(3, 1, 1, 1) * 255).abs()
        bound = float(np.prod([max(1.0, f) for f in small_target.get("colour", (1.0, 1.0, 1.0))[:3]]))
        assert levels.max() <= bound, (seed, float(levels.max()))


def test_min_decode_size_covers_the_short_side():
    """A source decodes at ``reduced_size(stored, min_decode_size(...))``: the short side then reaches the
    input, so the short-side resize never upscales (and a zoom-in crop still holds input-size detail)."""
    from bmvit.data.transforms import min_decode_size, short_side_geometry
    from bmvit.data.video import reduced_size

    for stored in [(720, 1280), (1080, 1920), (480, 640), (1280, 720)]:
        for size, jitter in [(256, (1.0, 1.0)), (224, (0.8, 1.0)), ((160, 256), (1.0, 1.0))]:
            decoded = reduced_size(stored, min_decode_size(size, jitter))
            ih, iw = (size, size) if isinstance(size, int) else size
            low = min(1.0, jitter[0])
            assert decoded[0] >= ih / low - 1e-9 and decoded[1] >= iw / low - 1e-9, (stored, size, decoded)
            resized = short_side_geometry(decoded, (ih, iw)).resized_size
            assert resized[0] <= decoded[0] and resized[1] <= decoded[1], (stored, size, decoded, resized)
