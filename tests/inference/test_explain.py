import sys

import av
import numpy as np
import pytest
import torch

import bmvit
from bmvit.cli import main
from bmvit.data.transforms import normalize_clips
from bmvit.inference.explain import explain, save_explanation
from bmvit.inference.predictor import Predictor


@pytest.fixture(scope="module")
def predictor(model_file) -> Predictor:
    return Predictor(bmvit.load(model_file), device="cpu", threshold=0.0)


def test_explanation_holds_the_models_own_attention(predictor, synthetic_video):
    expl = explain(predictor, synthetic_video, 2.0, max_tokens=3)
    assert expl.token_grid == (4, 4) and expl.p_actor.shape == (4, 4)
    assert expl.boxes_xyxy_norm.shape == (16, 4) and expl.frames.shape == (8, 120, 160, 3)
    assert len(expl.selected) == 3 and not expl.below_threshold
    # The selected tokens are the three most confident, best first.
    assert expl.selected == np.argsort(-expl.p_actor.reshape(-1), kind="stable")[:3].tolist()
    # Recompute the forward pass: the maps are its last-block attention rows of the central query
    # slice, averaged over heads (class-token column dropped: each map sums to less than 1).
    clip, _ = predictor.transform(expl.frames, {})  # uint8, normalised as the training loop does
    assert clip.dtype == torch.uint8
    inputs = normalize_clips(clip[None], predictor.spec.mean, predictor.spec.std)
    with torch.no_grad():
        attention = predictor.model(inputs, return_attention=True)["attention"][0]  # [heads, 4, 4, 4, Tk, Hk, Wk]
    for row, token in enumerate(expl.selected):
        y, x = divmod(token, 4)
        expected = attention[:, 2, y, x].mean(0).numpy()
        np.testing.assert_allclose(expl.attention[row], expected, rtol=0, atol=1e-6)
        assert 0.5 < expl.attention[row].sum() < 1.0
    # p(actor) and the boxes agree with the detections of the same key frame.
    dets = expl.detections
    assert dets.token_indices[:3].tolist() == expl.selected
    np.testing.assert_allclose(dets.boxes_xyxy_norm[:3].numpy(), expl.boxes_xyxy_norm[expl.selected], atol=1e-6)


def test_figure_is_written_without_touching_pyplot(predictor, synthetic_video, tmp_path):
    pyplot_figures = sys.modules["matplotlib.pyplot"].get_fignums() if "matplotlib.pyplot" in sys.modules else []
    path = save_explanation(explain(predictor, synthetic_video, 1.0, max_tokens=2), tmp_path / "fig.png")
    with av.open(str(path)) as container:  # a PNG FFmpeg decodes
        image = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert image.shape[0] > 200 and image.shape[1] > 600 and image.std() > 10
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == pyplot_figures


def test_no_token_above_threshold_shows_the_most_confident(model_file, synthetic_video):
    strict = Predictor(bmvit.load(model_file), device="cpu", threshold=0.99)
    expl = explain(strict, synthetic_video, 1.0)
    assert expl.below_threshold and expl.selected == [int(np.argmax(expl.p_actor))] and len(expl.detections) == 0


def test_cli_explain_and_its_errors(model_file, synthetic_video, tmp_path, capsys):
    out = tmp_path / "fig.png"
    assert main(["explain", "--weights", str(model_file), "--source", str(synthetic_video), "--time", "1.5",
                 "--out", str(out), "--device", "cpu", "--threshold", "0", "--max-tokens", "1"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["explain", "--weights", str(model_file), "--source", str(synthetic_video), "--time", "9",
                 "--out", str(tmp_path / "late.png"), "--device", "cpu"]) == 2
    assert "outside video scene (0 to 3.00 s)" in capsys.readouterr().err
    assert not (tmp_path / "late.png").exists()


def test_explanation_under_bf16_autocast_is_float32_and_close(model_file, synthetic_video, predictor):
    # The CPU's bf16 autocast runs the code path a GPU's does (amp="auto" there).
    bf16 = Predictor(bmvit.load(model_file), device="cpu", threshold=0.0, amp="bf16")
    fast = explain(bf16, synthetic_video, 2.0, max_tokens=3)
    exact = explain(predictor, synthetic_video, 2.0, max_tokens=3)
    assert fast.attention.dtype == fast.p_actor.dtype == np.float32
    np.testing.assert_allclose(fast.p_actor, exact.p_actor, rtol=0, atol=0.05)
    np.testing.assert_allclose(fast.attention, exact.attention, rtol=0, atol=0.05)
