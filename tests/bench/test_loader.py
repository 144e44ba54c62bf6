"""``bmvit bench --only loader --data ROOT``: the loader on an AVA-layout root written by ``write_ava_layout``."""

from __future__ import annotations

import json

import pytest
import torch

from bmvit.bench.ava_layout import write_ava_layout
from bmvit.cli import main
from bmvit.data.dataset import AVADataset


def test_loader_on_a_data_root_reports_each_source_against_pillow(tmp_path, capsys):
    root = tmp_path / "root"
    info = write_ava_layout(root, num_videos=1, num_frames=150, size=(128, 96), videos=True)
    assert info["keyframes"] == 2 and AVADataset(root, "train", source="frames").keyframe_keys() == [
        ("bench000", 902), ("bench000", 903)]
    out = tmp_path / "bench.json"
    argv = ["bench", "--quick", "--only", "loader", "--threads", "1", "--repeats", "1", "--data", str(root),
            "--json", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    roots = json.loads(out.read_text())["results"]["loader"]["roots"]
    assert [r["source"] for r in roots] == ["frames", "video"]
    for r in roots:
        assert r["frame_size"] == [96, 128] and r["clip"] == [8, 64, 64] and r["num_clips"] == 2
        assert all(r[k] > 0 for k in ("workers0", "workers1", "read_full", "read_min_size", "pillow_full_decode"))
    assert roots[0]["read_encoded"] > 0 and "read_encoded" not in roots[1]  # frame folders only
    assert roots[0]["decoded_size_at_min_size"] == [96, 128]  # a JPEG too small to halve for 64x64
    assert roots[1]["decoded_size_at_min_size"] == [64, 85]  # video: converted straight to the reduced size
    assert "frames 128x96 (root): training clips, 0 workers" in printed and "x Pillow's full decode time" in printed
    assert "Pillow full decode of the same JPEGs" in printed and "frames 128x96 (root): files read undecoded" in printed
    assert main(["bench", "--only", "matmul", "--data", str(root)]) == 2
    assert "--data is for the loader section" in capsys.readouterr().err


def test_device_decoding_bench_measures_both_paths_and_the_references(tmp_path):
    """``bmvit bench --device cuda --data ROOT``'s measurement, with PyAV on the CPU standing in for nvJPEG."""
    from bmvit.bench.loader import bench_device_decoding
    from bmvit.bench.report import device_decoding_rows, format_table
    from bmvit.data.device_decode import pyav_decoder

    root = tmp_path / "root"
    write_ava_layout(root, num_videos=1, num_frames=150, size=(128, 96))
    r = bench_device_decoding(root, torch.device("cpu"), workers=(0, 1), batch_size=2, batches=2, repeats=1,
                              num_frames=4, size=64, decoder=pyav_decoder("cpu"))
    assert r["frame_size"] == [96, 128] and r["clip"] == [4, 64, 64]
    keys = ("workers0", "device0", "workers1", "device1", "decoder_only", "pillow_full_decode")
    assert all(r[k] > 0 and len(r["runs"][k]) == 1 for k in keys)
    table = format_table(device_decoding_rows(r))
    assert "frames 128x96 (root): 1 workers reading, the device decoding" in table
    assert "x 1 workers decoding" in table and "Pillow full decode of the same JPEGs, one core" in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a CUDA device")
def test_device_decoding_bench_needs_a_gpu(tmp_path, capsys):
    root = tmp_path / "root"
    write_ava_layout(root, num_videos=1, num_frames=150, size=(128, 96))
    assert main(["bench", "--device", "cuda", "--data", str(root)]) == 2  # no CUDA device here
    assert "no such CUDA device here" in capsys.readouterr().err
