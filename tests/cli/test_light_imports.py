"""The commands that need no model never import torch or ``bmvit.models``.

``bmvit ava-eval``, ``bmvit config show``, ``bmvit data check``, ``bmvit weights list`` and every ``--help``
are run the way a user runs them: a fresh interpreter, so that nothing a previous test imported hides an
import. Each child runs ``bmvit.cli.main`` and then reports which heavy modules ended up in ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bmvit.cli import COMMANDS
from bmvit.cli.data import SUBCOMMANDS as DATA_SUBCOMMANDS

EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "ava_eval_example"

# Runs each argv of sys.argv[1] (a JSON list of argvs) through bmvit.cli.main in this one process, the
# command's own output captured, then prints one JSON line: exit codes, outputs and the banned modules seen.
CHILD = r"""
import contextlib, io, json, sys

from bmvit.cli import main

runs = []
for argv in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as exit_:  # --help and argparse errors end this way
            code = exit_.code
    runs.append({"argv": argv, "code": code, "out": out.getvalue()})
banned = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision") or m == "bmvit.models"
                or m.startswith("bmvit.models."))
print(json.dumps({"runs": runs, "banned": banned}))
"""


def run_fresh(*argvs: list[str]) -> list[dict]:
    """Run ``argvs`` in one fresh interpreter; assert it imported neither torch nor the models."""
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps([[str(a) for a in argv] for argv in argvs])],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["banned"] == [], f"{argvs} imported {report['banned'][:5]}"
    return report["runs"]


def test_every_help_imports_neither_torch_nor_the_models():
    argvs = [["--help"]] + [[name, "--help"] for name in COMMANDS]
    argvs += [["data", name, "--help"] for name in DATA_SUBCOMMANDS] + [["config", "show", "--help"]]
    runs = run_fresh(*argvs)
    for run in runs:
        assert run["code"] == 0 and run["out"].startswith("usage: bmvit"), run


def test_ava_eval_imports_neither_torch_nor_the_models(tmp_path):
    (tmp_path / "gt.csv").write_text("v,0902,0.1,0.1,0.5,0.5,12,0\nv,0903,0.2,0.2,0.6,0.6,14,1\n")
    (tmp_path / "det.csv").write_text("v,0902,0.1,0.1,0.5,0.5,12,0.9\nv,0903,0.5,0.5,0.9,0.9,14,0.8\n"
                                      "v,0903,0.2,0.2,0.6,0.6,14,0.7\n")
    (tmp_path / "labels.pbtxt").write_text('item {\n  name: "stand"\n  id: 12\n}\n'
                                           'item {\n  name: "walk"\n  id: 14\n}\n')
    (run,) = run_fresh(["ava-eval", "-g", tmp_path / "gt.csv", "-d", tmp_path / "det.csv",
                        "-l", tmp_path / "labels.pbtxt", "--json", tmp_path / "result.json"])
    assert run["code"] == 0 and run["out"].splitlines()[-1] == "mAP: 0.75", run
    assert json.loads((tmp_path / "result.json").read_text())["mAP"] == 0.75


def test_ava_eval_with_a_plot_imports_neither_torch_nor_the_models(tmp_path):
    # --plot pulls in matplotlib, which may pull in optional packages of its own: check that none is torch.
    png = tmp_path / "ap.png"
    (run,) = run_fresh(["ava-eval", "-g", EXAMPLE / "groundtruth.csv", "-d", EXAMPLE / "detections.csv",
                        "-l", EXAMPLE / "labelmap.pbtxt", "-e", EXAMPLE / "excluded.csv", "--plot", png])
    assert run["code"] == 0 and run["out"].splitlines()[-1] == "mAP: 0.5", run
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_weights_list_and_path_import_neither_torch_nor_the_models():
    runs = run_fresh(["weights", "list"], ["weights", "path", "mvitv2_s_16x4.k400"],
                     ["weights", "list", "--help"], ["weights", "download", "--help"])
    assert [run["code"] for run in runs] == [0, 0, 0, 0], runs
    assert "mvitv2_s_16x4.k400" in runs[0]["out"]
    assert runs[1]["out"].strip().endswith("MViTv2_S_16x4_k400_f302660347.pyth")


def test_config_show_imports_neither_torch_nor_the_models():
    (run,) = run_fresh(["config", "show", "train.epochs=2"])
    assert run["code"] == 0 and "  epochs: 2  #" in run["out"], run


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    # The smallest root `bmvit synth` writes: two 64x64 videos of 6 s (the writer may import what it likes).
    root = tmp_path_factory.mktemp("light") / "synth"
    proc = subprocess.run([sys.executable, "-m", "bmvit", "synth", "--out", str(root), "--videos", "1",
                           "--val-videos", "1", "--seconds", "6", "--size", "64x64", "--workers", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return root


def test_data_check_imports_neither_torch_nor_the_models(synthetic_root):
    # Exit 0 or 1 (such a small root may have no train rows); the point is that the whole check ran,
    # decoding included (PyAV is allowed, torch is not).
    (run,) = run_fresh(["data", "check", synthetic_root, "--expected-frames", "auto", "--decode-sample", "1"])
    assert run["code"] in (0, 1) and "summary:" in run["out"], run


def test_public_names_stay_importable_and_listed():
    """`import bmvit` is light, yet every exported name resolves, by attribute and by `from bmvit import`."""
    child = (
        "import sys, bmvit\n"
        "assert 'torch' not in sys.modules and 'bmvit.models' not in sys.modules, 'import bmvit is heavy'\n"
        "assert set(bmvit.__all__) <= set(dir(bmvit)), set(bmvit.__all__) - set(dir(bmvit))\n"
        "try:\n"
        "    bmvit.no_such_name\n"
        "except AttributeError:\n"
        "    pass\n"
        "else:\n"
        "    raise AssertionError('bmvit.no_such_name resolved')\n"
        "from bmvit import Detections, Predictor, create_backbone, create_model, list_backbones, list_models, load\n"
        "for name in bmvit.__all__:\n"
        "    assert getattr(bmvit, name) is not None, name\n"
        "assert bmvit.create_model is create_model and 'bmvit_mvit_tiny' in bmvit.list_models()\n"
        "from bmvit import distributed  # a submodule still imports through the package\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
