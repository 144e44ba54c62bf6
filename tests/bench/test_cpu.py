"""``bmvit bench`` on the CPU: the quick run's table and JSON, and its configuration errors."""

from __future__ import annotations

import json

import pytest

from bmvit.bench import SECTIONS, BenchConfig
from bmvit.bench.report import Row
from bmvit.cli import main
from bmvit.cli.bench import SECTION_NAMES


def test_quick_bench_prints_the_table_and_writes_positive_numbers(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--threads", "1", "--repeats", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert set(report) == {"machine", "config", "results", "elapsed_s", "rows"}
    assert report["machine"]["nproc"] >= 1 and report["machine"]["cpu_model"]
    assert report["config"] == {"threads": 1, "repeats": 1, "quick": True, "sections": list(SECTIONS)}
    results = report["results"]
    assert set(results) == set(SECTIONS)
    assert results["matmul"]["gflops"] > 0
    for name in ("mvit_tiny", "mvit_tiny_det"):
        assert results["backbone"][name]["gmacs"] > 0
        assert results["backbone"][name]["forward"]["median_s"] > 0
        assert len(results["backbone"][name]["forward_backward"]["runs_s"]) == 1
    assert results["matcher"]["match"]["median_s"] > 0 and results["matcher"]["num_actors"] >= 8
    assert 0 < results["step"]["criterion_median_s"] < results["step"]["step"]["median_s"]
    assert results["step"]["step_with_loader"]["median_s"] > 0 and results["step"]["step"]["matmul_gflops"] > 0
    assert all(results["loader"][f"{s}_workers{w}"] > 0 for s in ("video", "frames") for w in (0, 1, 2))
    assert results["evaluator"]["num_rows"] == 2000 and results["evaluator"]["total_s"] > 0
    assert results["predict"]["keyframes"] == 4  # a 4 s synthetic video at one key frame per second
    assert 0 < results["predict"]["forward_s"] < results["predict"]["seconds"]
    for flag in ("off", "on"):
        memory = results["memory"][f"checkpointing_{flag}"]
        assert memory["checkpointing"] == (flag == "on")
        assert memory["peak_rss_mb"] >= memory["step_peak_mb"] >= memory["rss_before_step_mb"] > 0
    # torchvision is not installed beside bmvit: its section says so instead of failing
    if results["torchvision"] is None:
        assert "skipped: torchvision does not import here" in printed
    # the table: a header, then one line per row, every measured value positive
    rows = [Row(**r) for r in report["rows"]]
    assert {r.section for r in rows} == set(SECTIONS)
    assert all(r.value > 0 for r in rows if r.value is not None and r.unit)
    assert printed.splitlines()[1].startswith("section") and len(printed.splitlines()) == len(rows) + 3
    assert "x matmul rate" in printed and "x step time" in printed


def test_bad_section_is_a_clear_error(capsys):
    with pytest.raises(ValueError, match="unknown benchmark section.*nope.*matmul"):
        BenchConfig(sections=("matmul", "nope"))
    assert main(["bench", "--only", "nope"]) == 2
    assert "unknown benchmark section" in capsys.readouterr().err


def test_cli_lists_the_same_sections_as_the_library():
    assert SECTION_NAMES == SECTIONS  # the CLI keeps its own copy so that `bmvit --help` does not import torch
