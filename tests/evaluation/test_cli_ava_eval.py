"""``bmvit ava-eval`` end to end, as a user runs it (a subprocess of ``python -m bmvit``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "ava_eval_example"
LABEL_MAP = 'item {\n  name: "stand"\n  id: 12\n}\n'
GT = "v,0902,0.1,0.1,0.5,0.5,12,0\n"


def ava_eval(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bmvit", "ava-eval", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def test_example_prints_per_class_ap_and_map_last_and_writes_json_and_plot(tmp_path):
    out, png = tmp_path / "result.json", tmp_path / "ap.png"
    proc = ava_eval("--groundtruth", EXAMPLE / "groundtruth.csv", "--detections", EXAMPLE / "detections.csv",
                    "--labelmap", EXAMPLE / "labelmap.pbtxt", "--exclusions", EXAMPLE / "excluded.csv",
                    "--json", out, "--plot", png)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "mAP: 0.5"
    assert any(line.split() == ["12", "stand", "0.5"] for line in lines)
    data = json.loads(out.read_text())
    assert set(data) == {"mAP", "protocol", "per_class"}
    assert data["mAP"] == 0.5 and data["protocol"] == "activitynet"
    assert len(data["per_class"]) == 60
    assert all(set(c) == {"id", "name", "ap"} for c in data["per_class"])
    expected = {c["id"]: c["ap"] for c in json.loads((EXAMPLE / "expected.json").read_text())["per_class"]}
    assert {c["id"]: c["ap"] for c in data["per_class"] if c["ap"] is not None} == expected
    assert png.read_bytes()[:4] == b"\x89PNG"

    # --compare against the JSON just written: the same numbers, so no class wins or loses.
    cmp_png = tmp_path / "cmp.png"
    proc = ava_eval("-g", EXAMPLE / "groundtruth.csv", "-d", EXAMPLE / "detections.csv", "-l",
                    EXAMPLE / "labelmap.pbtxt", "-e", EXAMPLE / "excluded.csv", "--compare", out, "--plot", cmp_png)
    assert proc.returncode == 0, proc.stderr
    assert "better in 0, worse in 0 of 4 classes" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "mAP: 0.5" and cmp_png.is_file()


@pytest.mark.parametrize(
    "det_text, labels, where",
    [
        ("v,0902,0.1,0.1,0.5,0.5,12,0.9\nv,0902,0.1,0.1,0.5,12\n", LABEL_MAP, "det.csv:2:"),  # 6 columns
        ("v,902.5,0.1,0.1,0.5,0.5,12,0.9\n", LABEL_MAP, "det.csv:1: timestamp '902.5'"),
        ("v,0902,0.1,0.1,0.5,0.5,12,n/a\n", LABEL_MAP, "det.csv:1: score 'n/a' is not a number"),
        ("v,0902,0.1,0.1,0.5,0.5,12,0.9\n", "# no items\n", "labels.pbtxt: no classes"),
    ],
)
def test_bad_input_exit_code_2_with_file_and_line_and_no_traceback(tmp_path, det_text, labels, where):
    (tmp_path / "gt.csv").write_text(GT)
    (tmp_path / "det.csv").write_text(det_text)
    (tmp_path / "labels.pbtxt").write_text(labels)
    proc = ava_eval("--groundtruth", tmp_path / "gt.csv", "--detections", tmp_path / "det.csv",
                    "--labelmap", tmp_path / "labels.pbtxt")
    assert proc.returncode == 2
    assert where in proc.stderr and "Traceback" not in proc.stderr
    assert "mAP:" not in proc.stdout


def test_compare_needs_plot_and_missing_file_is_reported(tmp_path):
    (tmp_path / "gt.csv").write_text(GT)
    (tmp_path / "labels.pbtxt").write_text(LABEL_MAP)
    base = ["-g", tmp_path / "gt.csv", "-d", tmp_path / "gt.csv", "-l", tmp_path / "labels.pbtxt"]
    proc = ava_eval(*base, "--compare", tmp_path / "other.json")
    assert proc.returncode == 2 and "--compare needs --plot" in proc.stderr
    proc = ava_eval("-g", tmp_path / "nope.csv", "-d", tmp_path / "gt.csv", "-l", tmp_path / "labels.pbtxt")
    assert proc.returncode == 2 and "nope.csv" in proc.stderr and "Traceback" not in proc.stderr
