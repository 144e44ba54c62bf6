"""``bmvit.data.download``: resumable, size-checked, parallel downloads, against a local HTTP server.

The server (the ``serve`` fixture of ``tests/conftest.py``, shared with the weights hub's tests) runs in
a thread of the test (``ThreadingHTTPServer`` on 127.0.0.1, a free port): it serves a few small files,
answers ``HEAD`` and ``Range`` requests (206 with ``Content-Range``, 416 past the end) and records every
request, so the tests can tell which bytes were asked for. Its variants: a server that ignores ``Range``,
one that cuts the connection half-way the first time a file is fetched, one that announces more bytes
than it sends, one without ``HEAD``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bmvit.data import download as dl

FAST = {"backoff_s": 0.01, "timeout_s": 10.0}  # retries without the real pauses


def payload(n: int, seed: int = 0) -> bytes:
    """``n`` bytes that differ from one offset to the next, so a misplaced byte is caught."""
    return bytes((i * 31 + seed * 7 + (i >> 8)) % 251 for i in range(n))


A, B, C = payload(300_000, 1), payload(123_457, 2), payload(70_001, 3)


def videos(**named: bytes) -> dict[str, bytes]:
    return {f"/trainval/{name}": data for name, data in named.items()}


def fetch(server: Server, folder: Path, names: list[str], **kwargs) -> dl.DownloadSummary:
    return dl.download_videos(names, folder, base_url=server.url, progress=False, **{**FAST, **kwargs})


# ------------------------------------------------------------------------------------------ the plain case


def test_every_file_is_downloaded_in_parallel_and_reported(serve, tmp_path: Path):
    server = serve(videos(**{"a.mkv": A, "-b.mp4": B, "c.webm": C, "empty.mkv": b""}))
    lines: list[str] = []
    summary = fetch(server, tmp_path / "raw", ["a.mkv", "-b.mp4", "c.webm", "empty.mkv"], workers=3,
                    log=lines.append)
    assert [(r.name, r.status) for r in summary.results] == [
        ("a.mkv", "downloaded"), ("-b.mp4", "downloaded"), ("c.webm", "downloaded"), ("empty.mkv", "downloaded")]
    assert (tmp_path / "raw" / "a.mkv").read_bytes() == A and (tmp_path / "raw" / "-b.mp4").read_bytes() == B
    assert (tmp_path / "raw" / "c.webm").read_bytes() == C and (tmp_path / "raw" / "empty.mkv").read_bytes() == b""
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["-b.mp4", "a.mkv", "c.webm", "empty.mkv"]
    assert server.gets("/trainval/a.mkv") == [None]  # a fresh file: one GET, no range
    assert summary.ok and sum(r.received for r in summary.results) == len(A) + len(B) + len(C)
    text = summary.describe()
    assert f"download into {tmp_path / 'raw'} from {server.url} (3 at a time)" in text
    assert "downloaded:    4 file(s)" in text and "already there: 0 file(s)" in text and "failed:        0" in text
    assert sorted(lines) == sorted(f"downloaded {n}: {dl.human_bytes(len(d))}"
                                   for n, d in [("a.mkv", A), ("-b.mp4", B), ("c.webm", C), ("empty.mkv", b"")])


def test_urls():
    assert dl.file_url(dl.OFFICIAL_BASE_URL, "-5KQ66BBWC4.mkv") == \
        "https://s3.amazonaws.com/ava-dataset/trainval/-5KQ66BBWC4.mkv"
    assert dl.file_url("http://mirror/ava/trainval", "a b.mkv") == "http://mirror/ava/trainval/a%20b.mkv"
    assert dl.list_url(dl.OFFICIAL_BASE_URL) == \
        "https://s3.amazonaws.com/ava-dataset/annotations/ava_file_names_trainval_v2.1.txt"


# ---------------------------------------------------------------------------------------------- resuming


def test_partial_file_is_continued_with_a_range(serve, tmp_path: Path):
    server = serve(videos(**{"a.mkv": A}))
    (tmp_path / "a.mkv.part").write_bytes(A[:100_000])
    (result,) = fetch(server, tmp_path, ["a.mkv"]).results
    assert result.status == "downloaded" and result.resumed_from == 100_000
    assert result.received == len(A) - 100_000
    assert server.gets("/trainval/a.mkv") == ["bytes=100000-"]
    assert (tmp_path / "a.mkv").read_bytes() == A and not (tmp_path / "a.mkv.part").exists()


def test_shorter_file_in_place_is_continued(serve, tmp_path: Path):
    # what an interrupted ``wget -c`` leaves: the name itself, too short
    server = serve(videos(**{"a.mkv": A}))
    (tmp_path / "a.mkv").write_bytes(A[:5000])
    (result,) = fetch(server, tmp_path, ["a.mkv"]).results
    assert (result.status, result.received) == ("downloaded", len(A) - 5000)
    assert server.gets("/trainval/a.mkv") == ["bytes=5000-"]
    assert (tmp_path / "a.mkv").read_bytes() == A and not (tmp_path / "a.mkv.part").exists()


def test_server_ignoring_range_restarts_the_file_cleanly(serve, tmp_path: Path):
    server = serve(videos(**{"a.mkv": A}), mode="ignore_range")
    (tmp_path / "a.mkv.part").write_bytes(b"x" * 50_000)  # not A's bytes: appending to them would show
    (result,) = fetch(server, tmp_path, ["a.mkv"]).results
    assert server.gets("/trainval/a.mkv") == ["bytes=50000-"]  # asked for the rest, got the whole file (200)
    assert (result.status, result.resumed_from, result.received) == ("downloaded", 0, len(A))
    assert (tmp_path / "a.mkv").read_bytes() == A


def test_connection_cut_mid_file_is_resumed_to_identical_bytes(serve, tmp_path: Path):
    server = serve(videos(**{"a.mkv": A, "-b.mp4": B}), mode="cut_once")
    lines: list[str] = []
    summary = fetch(server, tmp_path, ["a.mkv", "-b.mp4"], workers=2, log=lines.append)
    assert [r.status for r in summary.results] == ["downloaded", "downloaded"]
    assert [r.attempts for r in summary.results] == [2, 2]
    assert server.gets("/trainval/a.mkv") == [None, f"bytes={len(A) // 2}-"]
    assert (tmp_path / "a.mkv").read_bytes() == A and (tmp_path / "-b.mp4").read_bytes() == B
    assert summary.results[0].received == len(A)  # each byte once: half, then the other half
    retry = next(line for line in lines if line.startswith("retry  a.mkv"))
    assert f"a.mkv.part has {len(A) // 2} bytes, the server announced {len(A)}" in retry


def test_size_other_than_content_length_is_reported_and_not_renamed(serve, tmp_path: Path):
    server = serve(videos(**{"a.mkv": A}), mode="lie")  # announces len(A) + 100, sends len(A)
    lines: list[str] = []
    summary = fetch(server, tmp_path, ["a.mkv"], retries=2, log=lines.append)
    (result,) = summary.results
    assert (result.status, result.attempts) == ("failed", 3)
    assert f"a.mkv.part has {len(A)} bytes, the server announced {len(A) + 100}" in result.reason
    assert "the next run resumes it" in result.reason
    assert not (tmp_path / "a.mkv").exists() and (tmp_path / "a.mkv.part").read_bytes() == A
    assert server.gets("/trainval/a.mkv") == [None, f"bytes={len(A)}-", f"bytes={len(A)}-"]
    assert sum(line.startswith("retry  a.mkv") for line in lines) == 2
    assert not summary.ok and "failed:        1 file(s)" in summary.describe()
    assert f"    a.mkv: a.mkv.part has {len(A)} bytes" in summary.describe()


# ----------------------------------------------------------------------------------- nothing to fetch again


def test_complete_files_are_not_fetched_again(serve, tmp_path: Path):
    server = serve(videos(**{"a.mkv": A, "-b.mp4": B}))
    (tmp_path / "a.mkv").write_bytes(A)
    (tmp_path / "a.mkv.part").write_bytes(A[:10])  # a leftover beside the complete file: removed
    (tmp_path / "-b.mp4.part").write_bytes(B)  # complete, but the run ended before the rename
    summary = fetch(server, tmp_path, ["a.mkv", "-b.mp4"])
    assert [(r.status, r.received) for r in summary.results] == [("present", 0), ("downloaded", 0)]
    assert server.methods("/trainval/a.mkv") == ["HEAD"] and server.methods("/trainval/-b.mp4") == ["HEAD"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["-b.mp4", "a.mkv"]
    assert (tmp_path / "-b.mp4").read_bytes() == B and not (tmp_path / "-b.mp4.part").exists()
    assert "already there: 1 file(s)" in summary.describe()


def test_without_head_a_complete_file_is_recognised_by_its_range(serve, tmp_path: Path):
    server = serve(videos(**{"a.mkv": A}), mode="no_head")
    (tmp_path / "a.mkv").write_bytes(A)
    (result,) = fetch(server, tmp_path, ["a.mkv"]).results
    assert (result.status, result.received) == ("present", 0)
    assert server.requests == [("HEAD", "/trainval/a.mkv", None), ("GET", "/trainval/a.mkv", f"bytes={len(A)}-")]
    assert (tmp_path / "a.mkv").read_bytes() == A  # the 416 sends no body


def test_same_video_under_another_extension_is_kept(serve, tmp_path: Path):
    server = serve(videos(**{"a.mkv": A}))
    (tmp_path / "a.mp4").write_bytes(b"re-encoded")
    (result,) = fetch(server, tmp_path, ["a.mkv"]).results
    assert result.status == "present" and "kept as a.mp4" in result.reason
    assert server.requests == [] and not (tmp_path / "a.mkv").exists()


# ------------------------------------------------------------------------------------------------ failures


def test_missing_file_fails_at_once_and_the_others_finish(serve, tmp_path: Path):
    server = serve(videos(**{"a.mkv": A}))
    lines: list[str] = []
    summary = fetch(server, tmp_path, ["gone.mkv", "a.mkv", "../up.mkv"], workers=2, log=lines.append)
    gone, a, up = summary.results
    assert (gone.status, gone.attempts) == ("failed", 1) and gone.reason.startswith("HTTP 404")
    assert a.status == "downloaded" and (tmp_path / "a.mkv").read_bytes() == A
    assert (up.status, up.reason) == ("failed", "not a plain file name")
    assert server.methods("/trainval/gone.mkv") == ["HEAD"]
    assert "FAILED gone.mkv: HTTP 404" in "\n".join(lines)
    assert not (tmp_path / "gone.mkv.part").exists()


def test_unreachable_server_is_retried_then_reported(tmp_path: Path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    summary = dl.download_videos(["a.mkv"], tmp_path, base_url=f"http://127.0.0.1:{port}/", progress=False,
                                 retries=1, **FAST)
    (result,) = summary.results
    assert (result.status, result.attempts) == ("failed", 2) and "cannot reach the server" in result.reason


def test_bad_arguments():
    with pytest.raises(ValueError, match="download workers must be >= 1"):
        dl.download_videos(["a.mkv"], "unused", workers=0)
    for url in ("ftp://mirror/ava/", "file:///data/ava/", "mirror/ava"):
        with pytest.raises(ValueError, match="must be an http:// or https:// address"):
            dl.download_videos(["a.mkv"], "unused", base_url=url)


def test_cli_refuses_bad_download_arguments_before_downloading(tmp_path: Path, capsys):
    import argparse

    from bmvit.cli import data_prepare

    def run_cli(*argv) -> int:
        parser = argparse.ArgumentParser()
        data_prepare.add_arguments(parser)
        return data_prepare.run(parser.parse_args([str(a) for a in argv]))

    ann = tmp_path / "ann"
    ann.mkdir()
    common = ["--download", "--videos", tmp_path / "raw", "--out", tmp_path / "root"]
    assert run_cli(*common, "--annotations", ann, "--download-workers", "0") == 2
    assert "error: --download-workers must be >= 1, got 0" in capsys.readouterr().err
    assert run_cli(*common, "--annotations", ann, "--download-url", "ftp://mirror/") == 2
    assert "must be an http:// or https:// address" in capsys.readouterr().err
    assert run_cli(*common, "--annotations", tmp_path / "nope") == 2
    assert f"error: annotation folder not found: {tmp_path / 'nope'}" in capsys.readouterr().err
    assert not (tmp_path / "raw").exists() and not (tmp_path / "root").exists()


# ---------------------------------------------------------------------------------------------- the list


def test_list_comes_from_the_argument_the_annotations_or_the_server(serve, tmp_path: Path):
    listing = "a.mkv\n\n-b.mp4\n"
    server = serve({**videos(**{"a.mkv": A}), "/annotations/ava_file_names_trainval_v2.1.txt": listing.encode()})
    ann = tmp_path / "ann"
    ann.mkdir()
    names, where = dl.names_to_download(None, ann, base_url=server.url, **FAST)
    assert names == ["a.mkv", "-b.mp4"] and where == ann / "ava_file_names_trainval_v2.1.txt"
    assert where.read_text() == listing  # kept: prepare-ava then uses it as its list
    assert dl.names_to_download(None, ann, base_url=server.url) == (names, where)  # read, not fetched again
    assert server.methods("/annotations/ava_file_names_trainval_v2.1.txt") == ["HEAD", "GET"]
    (tmp_path / "mine.txt").write_text("c.webm\n")
    assert dl.names_to_download(tmp_path / "mine.txt", ann) == (["c.webm"], tmp_path / "mine.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(OSError, match="cannot fetch the video list .*HTTP 404.*--video-list"):
        dl.names_to_download(None, empty, base_url=server.url + "nested/", **FAST)


def test_bmvit_offline_refuses_every_download_before_touching_a_file(serve, tmp_path: Path, monkeypatch):
    from bmvit.models.weights import OfflineError, open_url

    server = serve(videos(**{"a.mkv": A}))
    monkeypatch.setenv("BMVIT_OFFLINE", "1")
    with pytest.raises(OfflineError, match="BMVIT_OFFLINE is set: bmvit downloads nothing"):
        fetch(server, tmp_path / "raw", ["a.mkv"])
    with pytest.raises(OfflineError, match="the video list"):
        dl.names_to_download(None, tmp_path, base_url=server.url)
    with pytest.raises(OfflineError):
        open_url(server.url + "a.mkv")
    assert server.requests == [] and not (tmp_path / "raw").exists()
    monkeypatch.setenv("BMVIT_OFFLINE", "0")  # 0 (or empty) allows downloads
    assert fetch(server, tmp_path / "raw", ["a.mkv"]).ok
