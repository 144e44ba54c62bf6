import json

import numpy as np
import pytest
import torch

import bmvit
from bmvit.cli import main
from bmvit.inference.export import OUTPUT_NAMES, example_clip, export_model, load_exported

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def model(model_file):
    return bmvit.load(model_file)


def _expected(model, batch: int) -> list[np.ndarray]:
    with torch.no_grad():
        out = model(example_clip(model, batch, seed=7))
    return [out[name].numpy() for name in OUTPUT_NAMES]


def test_cli_onnx_export_matches_pytorch_at_batch_1_and_2(model, model_file, tmp_path, capsys):
    path = tmp_path / "tiny.onnx"
    assert main(["export", "--weights", str(model_file), "--format", "onnx", "--out", str(path)]) == 0
    assert f"{path} (onnx; batch 1: max |diff|" in capsys.readouterr().out
    run = load_exported(path, "onnx")
    shapes = {"pred_boxes": 4, "pred_actor": 2, "pred_actions": 9}
    for batch in (1, 2):  # clips the export never saw
        got = run(example_clip(model, batch, seed=7).numpy())
        for name, g, e in zip(OUTPUT_NAMES, got, _expected(model, batch)):
            assert g.shape == e.shape == (batch, 16, shapes[name])
            np.testing.assert_allclose(g, e, rtol=0, atol=1e-4, err_msg=name)
    meta = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["bmvit"])
    assert meta["class_names"][0] == "walk" and meta["input_size"] == [8, 64, 64] and meta["sampling_stride"] == 8
    assert main(["export", "--weights", str(tmp_path / "none.safetensors"), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow  # TorchScript is deprecated in torch 2.13; the format stays for libtorch (C++) users
def test_torchscript_matches_pytorch(model, tmp_path):
    export_model(model, tmp_path / "tiny.pt", "torchscript", verify=False)
    run = load_exported(tmp_path / "tiny.pt", "torchscript")
    for batch in (1, 3):
        for g, e in zip(run(example_clip(model, batch, seed=7)), _expected(model, batch)):
            np.testing.assert_allclose(g, e, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_torch_export_program_matches_pytorch(model, tmp_path):
    result = export_model(model, tmp_path / "tiny.pt2", "export")
    assert max(result.max_abs_diff.values()) < 1e-5
    with pytest.raises(ValueError, match=r"\*\.pt2"):
        export_model(model, tmp_path / "tiny.bin", "export")


def test_failed_check_leaves_no_file(model, tmp_path):
    with pytest.raises(RuntimeError, match="differs from PyTorch"):
        export_model(model, tmp_path / "tiny.onnx", "onnx", atol=-1.0)  # nothing can pass a negative tolerance
    assert list(tmp_path.iterdir()) == []
