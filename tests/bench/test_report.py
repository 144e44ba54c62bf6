"""The bench's printed table."""

from __future__ import annotations

from bmvit.bench.report import Row, format_table


def test_format_table_aligns_columns_and_shows_missing_values():
    rows = [Row("matmul", "fp32 mm", 200.0, "GFLOP/s", note="ref"),
            Row("torchvision", "skipped", None, "", note="no torchvision"),
            Row("backbone", "x forward", 0.5, "s", 0.25, "matmul rate")]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["section", "measurement", "value", "ratio", "note"]
    assert set(lines[1]) == {"-"}
    value, ratio = lines[0].index("value"), lines[0].index("ratio")
    assert lines[2][value:].startswith("200 GFLOP/s") and lines[3][value:].startswith("- ")
    assert lines[4][value:].startswith("0.5 s") and lines[4][ratio:].startswith("0.25 x matmul rate")
