"""``Predictor`` and ``bmvit predict`` on a CUDA device give the CPU's detections.

Float32 (``amp="off"``, TF32 off): boxes and scores within 1e-4 of the CPU's, token by token. bf16
autocast (``amp="auto"`` on a GPU that supports it): scores and boxes within 0.05, and every token
clear of the threshold by more than that margin on the same side of it. The CLI writes the same CSV
rows on both devices, within the same tolerances (plus the CSV's rounding: 4 decimals for boxes, 6
for scores).

Run by ``scripts/gpu_check.sh`` (``pytest -m gpu``); skipped without CUDA.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

import bmvit
from bmvit.inference.predictor import SHIPPED_WEIGHTS, Predictor

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.usefixtures("exact_fp32"),  # tests/gpu/conftest.py
]

DEVICE = "cuda"
FP32_ATOL = 1e-4  # float32 on both devices: only the order of the sums differs
BF16_ATOL = 0.05  # bf16 keeps 8 bits of mantissa; also the margin around the threshold
CSV_ROUNDING = {"box": 5e-5, "score": 5e-7}  # write_ava_csv's %.4f and %.6f


def write_random_model_file(path: Path) -> Path:
    """A random-weights tiny BMViT (8x64x64, stride 8) saved as the trainer saves one; used when the shipped
    checkpoint is not installed."""
    from bmvit.checkpoint import save_model
    from bmvit.config import Config
    from bmvit.data.synthetic import CLASSES
    from bmvit.build import ClassInfo
    from bmvit.trainer import model_metadata

    torch.manual_seed(0)
    input_size = (8, 64, 64)
    model = bmvit.create_model("bmvit_mvit_tiny", num_classes=len(CLASSES), proj_dim=32, head_hidden_dim=32,
                               backbone_overrides={"input_size": input_size})
    config = Config()
    config.model.name = "bmvit_mvit_tiny"
    config.model.input_size = list(input_size)
    config.data.sampling_stride = 8
    classes = ClassInfo(class_ids=list(range(1, len(CLASSES) + 1)), label_map=dict(enumerate(CLASSES, 1)))
    save_model(path, model, model_metadata(model, config, classes))
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """The shipped checkpoint (trained on the synthetic scenes: its scores spread over [0, 1] and its
    boxes follow the figures), else a random tiny model."""
    if SHIPPED_WEIGHTS.is_file():
        return SHIPPED_WEIGHTS
    return write_random_model_file(tmp_path_factory.mktemp("models") / "tiny.safetensors")


@pytest.fixture(scope="module")
def scene_video(tmp_path_factory) -> Path:
    """20 s of the synthetic dataset's scenes, 160x120 at 30 fps: 20 key frames, more than one CUDA batch."""
    from bmvit.data.synthetic import create_video_spec, encode_video

    spec = create_video_spec(np.random.default_rng(0), size=(160, 120), seconds=20)
    path = tmp_path_factory.mktemp("videos") / "scene.mp4"
    encode_video(spec, path)
    return path


def _by_token(det) -> dict[str, torch.Tensor]:
    """A ``Detections``' per-token tensors in token order (near-equal scores may sort differently)."""
    order = det.token_indices.argsort()
    return {"tokens": det.token_indices[order], "boxes": det.boxes_xyxy_norm[order],
            "actor": det.actor_scores[order], "actions": det.action_scores[order]}


def test_defaults_on_cuda(model_file):
    predictor = Predictor(bmvit.load(model_file), device=DEVICE)
    assert predictor.batch_size == 16 and predictor.device.type == "cuda"
    assert predictor.amp_dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else None)
    assert next(predictor.model.parameters()).is_cuda


def test_uint8_clips_are_normalised_on_the_device(model_file, scene_video):
    from bmvit.data.transforms import normalize_clips
    from bmvit.data.video import VideoFileSource

    predictor = Predictor(bmvit.load(model_file), device=DEVICE, threshold=0.0, amp="off")
    spec = predictor.spec
    frames = VideoFileSource(scene_video).read_clip_at_time(3.0, spec.num_frames, spec.stride,
                                                             sample_fps=spec.timeline_fps)
    clip, _ = predictor.transform(frames, {})
    uint8_batch = torch.stack([clip, clip])
    pinned_input = predictor.model_input(predictor._stack([clip, clip]))
    assert pinned_input.device.type == torch.device(DEVICE).type and pinned_input.dtype == torch.float32
    expected = normalize_clips(uint8_batch.to(DEVICE), spec.mean, spec.std)
    torch.testing.assert_close(pinned_input, expected, rtol=0, atol=0)
    # Already-normalised float clips, on either device, give the same results as the uint8 ones.
    outputs, from_uint8 = predictor.forward_clips(uint8_batch)
    _, from_float = predictor.forward_clips(expected)
    assert all(v.device.type == "cpu" and v.dtype == torch.float32 for v in outputs.values() if torch.is_tensor(v))
    for key in from_uint8[0]:
        torch.testing.assert_close(from_uint8[0][key], from_float[0][key], rtol=0, atol=0)


def test_float32_on_cuda_equals_the_cpu(model_file, scene_video):
    cpu = Predictor(bmvit.load(model_file), device="cpu", threshold=0.0, amp="off").predict(scene_video)
    gpu = Predictor(bmvit.load(model_file), device=DEVICE, threshold=0.0, amp="off").predict(scene_video)
    assert [d.timestamp for d in gpu] == [d.timestamp for d in cpu] == [float(t) for t in range(20)]
    for c, g in zip(cpu, gpu, strict=True):
        c, g = _by_token(c), _by_token(g)
        assert torch.equal(c["tokens"], g["tokens"])  # threshold 0: every token, on both
        torch.testing.assert_close(g["boxes"], c["boxes"], rtol=0, atol=FP32_ATOL)
        torch.testing.assert_close(g["actor"], c["actor"], rtol=0, atol=FP32_ATOL)
        torch.testing.assert_close(g["actions"], c["actions"], rtol=0, atol=FP32_ATOL)


@pytest.mark.skipif(torch.cuda.is_available() and not torch.cuda.is_bf16_supported(), reason="no bf16 on this GPU")
def test_bf16_on_cuda_is_close_to_float32_on_the_cpu(model_file, scene_video):
    cpu = Predictor(bmvit.load(model_file), device="cpu", threshold=0.0, amp="off")
    gpu = Predictor(bmvit.load(model_file), device=DEVICE, threshold=0.0, amp="bf16")
    threshold = float(cpu.model.metadata["threshold"])
    kept = clear = 0
    for c, g in zip(cpu.predict(scene_video), gpu.predict(scene_video), strict=True):
        assert g.action_scores.dtype == g.boxes_xyxy.dtype == torch.float32
        c, g = _by_token(c), _by_token(g)
        torch.testing.assert_close(g["actor"], c["actor"], rtol=0, atol=BF16_ATOL)
        torch.testing.assert_close(g["actions"], c["actions"], rtol=0, atol=BF16_ATOL)
        torch.testing.assert_close(g["boxes"], c["boxes"], rtol=0, atol=BF16_ATOL)
        # The tokens above the checkpoint's threshold: the same ones, but for those within the margin.
        far = (c["actor"] - threshold).abs() > BF16_ATOL
        assert torch.equal((g["actor"] > threshold)[far], (c["actor"] > threshold)[far])
        kept += int((c["actor"] > threshold).sum())
        clear += int(far.sum())
    assert clear >= 0.9 * 20 * len(c["tokens"])  # "mostly": nearly every token is clear of the margin
    if model_file == SHIPPED_WEIGHTS:
        assert kept > 0  # the trained model finds the figures: the comparison above is not vacuous


def _csv_rows(path: Path) -> dict[tuple[str, str], list[tuple[int, np.ndarray, float]]]:
    """``(video_id, second)`` -> ``(action_id, box [4], score)`` of each row of an AVA CSV."""
    rows: dict[tuple[str, str], list[tuple[int, np.ndarray, float]]] = {}
    with open(path) as f:
        for video_id, second, x1, y1, x2, y2, action, score in csv.reader(f):
            rows.setdefault((video_id, second), []).append(
                (int(action), np.array([float(x1), float(y1), float(x2), float(y2)]), float(score)))
    return rows


def _assert_same_rows(expected: Path, got: Path, box_atol: float, score_atol: float) -> None:
    """Same key frames and number of rows; every row scoring more than a margin above its key frame's cut
    (the lowest score written: rows near it may trade places across the ``--max-rows`` cap) has a row
    with the same action, a box within ``box_atol`` and a score within ``score_atol`` in the other file."""
    a, b = _csv_rows(expected), _csv_rows(got)
    assert a.keys() == b.keys()
    margin = 2 * score_atol
    for key in a:
        assert len(a[key]) == len(b[key]), key
        for mine, theirs in ((a[key], b[key]), (b[key], a[key])):
            cut = min(score for _, _, score in mine)
            for action, box, score in mine:
                if score <= cut + margin:
                    continue
                assert any(action == other_action and np.abs(box - other_box).max() <= box_atol
                           and abs(score - other_score) <= score_atol
                           for other_action, other_box, other_score in theirs), (key, action, box, score)


@pytest.mark.parametrize("amp", ["off", "auto"])
def test_cli_predict_on_cuda_writes_the_cpus_rows(model_file, scene_video, tmp_path, amp):
    from bmvit.cli import main

    common = ["predict", "--weights", str(model_file), "--source", str(scene_video), "--threshold", "0"]
    assert main([*common, "--out", str(tmp_path / "cpu"), "--device", "cpu"]) == 0
    assert main([*common, "--out", str(tmp_path / "cuda"), "--device", DEVICE, "--amp", amp]) == 0
    bf16 = amp == "auto" and torch.cuda.is_bf16_supported()
    box_atol = (BF16_ATOL if bf16 else FP32_ATOL) + CSV_ROUNDING["box"]
    score_atol = (BF16_ATOL if bf16 else FP32_ATOL) + CSV_ROUNDING["score"]
    cpu_csv, cuda_csv = tmp_path / "cpu" / "scene.csv", tmp_path / "cuda" / "scene.csv"
    assert len(_csv_rows(cpu_csv)) == 20  # one key frame a second
    _assert_same_rows(cpu_csv, cuda_csv, box_atol, score_atol)
