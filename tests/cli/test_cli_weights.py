"""``bmvit weights list | download | path`` end to end through ``bmvit.cli.main``, against a local server.

The records are the test's own, served by the ``serve`` fixture of ``tests/conftest.py`` on 127.0.0.1, and
the cache is a temporary ``BMVIT_HOME``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bmvit import hub
from bmvit.cli import main

DATA = bytes(range(256)) * 400


@pytest.fixture(autouse=True)
def home(weights_home: Path) -> Path:
    """An empty cache, online, no mirror (tests/conftest.py)."""
    return weights_home


def record(monkeypatch, name: str, file_name: str, url: str, **fields) -> None:
    fields.setdefault("sha256", hashlib.sha256(DATA).hexdigest())
    monkeypatch.setitem(hub.KNOWN_WEIGHTS, name, hub.WeightsSpec(
        name=name, file_name=file_name, source_format="bmvit", input_size=(8, 128, 128), mean=(0.45, 0.45, 0.45),
        std=(0.225, 0.225, 0.225), num_classes=9, license="Apache-2.0 (test); made up", url=url, backbone="mvit_tiny",
        dataset="test bytes", **fields))


def rows(out: str) -> dict[str, list[str]]:
    """``bmvit weights list``'s table as name -> cells (cells are separated by two spaces or more)."""
    import re

    return {cells[0]: cells for line in out.splitlines() if (cells := re.split(r"\s{2,}", line.strip()))[0]}


def test_download_then_list_shows_it_cached(serve, monkeypatch, capsys, home: Path):
    server = serve({"/trainval/w.pth": DATA})
    record(monkeypatch, "test.cli", "w.pth", server.url + "w.pth")
    assert main(["weights", "list"]) == 0
    table = rows(capsys.readouterr().out)
    assert table["name"] == ["name", "kind", "source", "license", "size", "here", "classes", "dataset"]
    assert table["test.cli"] == ["test.cli", "backbone", server.url.split("/")[2], "Apache-2.0", "-", "-", "9",
                                 "test bytes"]
    assert table["mvit_tiny_8x128.synthetic_demo"][2:6] == ["bmvit (shipped)", "Apache-2.0", "7.1 MiB", "shipped"]
    assert table["vit_b_16x4.videomae_k400"][2] == "drive.google.com (manual)"

    assert main(["weights", "download", "test.cli"]) == 0
    assert capsys.readouterr().out == f"test.cli: {home / 'weights' / 'w.pth'}\n"
    assert (home / "weights" / "w.pth").read_bytes() == DATA
    assert main(["weights", "list", "--kind", "backbone"]) == 0
    table = rows(capsys.readouterr().out)
    assert table["test.cli"][4:6] == ["100.0 KiB", "cached"] and "mvit_tiny_8x128.synthetic_demo" not in table
    assert main(["weights", "path", "test.cli"]) == 0
    assert capsys.readouterr().out == f"{home / 'weights' / 'w.pth'}\n"


def test_download_reports_each_failure_on_one_line_and_exits_1(serve, monkeypatch, capsys, home: Path):
    server = serve({"/trainval/w.pth": DATA})
    record(monkeypatch, "test.good", "w.pth", server.url + "w.pth")
    record(monkeypatch, "test.gone", "gone.pth", server.url + "gone.pth")
    assert main(["weights", "download", "test.good", "test.gone", "test.nam", "--retries", "0"]) == 1
    captured = capsys.readouterr()
    assert captured.out == f"test.good: {home / 'weights' / 'w.pth'}\n"
    assert captured.err.splitlines() == [
        f"bmvit weights download: test.gone: cannot download test.gone from {server.url}gone.pth: HTTP 404 Not Found",
        "bmvit weights download: test.nam: 'test.nam' is neither an existing file nor the name of known weights (did "
        "you mean test.gone, test.good?); `bmvit weights list` shows every name",
    ]


def test_offline_download_and_path_of_an_unknown_name(monkeypatch, capsys, home: Path):
    monkeypatch.setenv(hub.OFFLINE_ENV, "1")
    assert main(["weights", "download", "mvitv2_s_16x4.k400"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bmvit weights download: mvitv2_s_16x4.k400: BMVIT_OFFLINE is set") and err.count("\n") == 1
    assert f"save it as {home / 'weights' / 'MViTv2_S_16x4_k400_f302660347.pyth'}" in err
    assert main(["weights", "list"]) == 0 and "offline: BMVIT_OFFLINE is set" in capsys.readouterr().out
    assert main(["weights", "path", "nope"]) == 2
    assert "'nope' is neither an existing file nor the name of known weights" in capsys.readouterr().err
