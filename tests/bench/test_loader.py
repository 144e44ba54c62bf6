"""``bmvit bench --only loader --data ROOT``: the loader on an AVA-layout root written by ``write_ava_layout``."""

from __future__ import annotations

import json

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
    assert roots[0]["decoded_size_at_min_size"] == [96, 128]  # a JPEG too small to halve for 64x64
    assert roots[1]["decoded_size_at_min_size"] == [64, 85]  # video: converted straight to the reduced size
    assert "frames 128x96 (root): training clips, 0 workers" in printed and "x Pillow's full decode time" in printed
    assert "Pillow full decode of the same JPEGs" in printed
    assert main(["bench", "--only", "matmul", "--data", str(root)]) == 2
    assert "--data is for the loader section" in capsys.readouterr().err
