"""``bmvit.hub``: weights by name, the cache, and downloads into it, against a local HTTP server.

The records are the test's own (``monkeypatch.setitem`` on ``KNOWN_WEIGHTS``) with addresses on the
``serve`` server of ``tests/conftest.py`` (127.0.0.1, Range support, every request recorded), and
``BMVIT_HOME`` is a temporary folder: nothing here reaches the internet or the user's cache.
"""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest

import bmvit
from bmvit import hub
from bmvit.models import weights

FAST = {"retries": 0, "backoff_s": 0.01, "timeout_s": 10.0, "progress": False}
DEMO = hub.ASSETS_DIR / "bmvit_mvit_tiny_synthetic.safetensors"  # the shipped demo detector


@pytest.fixture(autouse=True)
def home(weights_home: Path) -> Path:
    """An empty cache, online, no mirror (tests/conftest.py)."""
    return weights_home


def payload(n: int, seed: int = 0) -> bytes:
    """``n`` bytes that differ from one offset to the next, so a misplaced byte is caught."""
    return bytes((i * 31 + seed * 7 + (i >> 8)) % 251 for i in range(n))


DATA = payload(200_000, 4)


def record(monkeypatch, name: str, file_name: str, url: str | None, data: bytes | None = DATA,
           **fields) -> hub.WeightsSpec:
    """Add a record to ``KNOWN_WEIGHTS`` for this test; its sha256 is ``data``'s unless ``sha256=`` says."""
    fields.setdefault("sha256", hashlib.sha256(data).hexdigest() if data is not None else None)
    spec = hub.WeightsSpec(name=name, file_name=file_name, source_format="bmvit", input_size=(8, 128, 128),
                           mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225), num_classes=9,
                           license="Apache-2.0 (test)", url=url, backbone="mvit_tiny", **fields)
    monkeypatch.setitem(hub.KNOWN_WEIGHTS, name, spec)
    return spec


def free_port() -> int:
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cache_files(home: Path) -> list[str]:
    folder = home / "weights"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# ---------------------------------------------------------------------------------------------- the plain case


def test_a_name_is_downloaded_checked_and_then_served_from_the_cache(serve, monkeypatch, home: Path):
    server = serve({"/trainval/w.pth": DATA})
    spec = record(monkeypatch, "test.plain", "w.pth", server.url + "w.pth")
    path = weights.resolve_weights_path("test.plain")  # what backbone_weights= and init_weights= go through
    assert path == home / "weights" / "w.pth" == hub.cache_path(spec) and path.read_bytes() == DATA
    assert cache_files(home) == ["w.pth"]  # no .part left
    seen = len(server.requests)
    assert hub.resolve("test.plain", **FAST) == path and hub.resolve("w.pth", **FAST) == path  # by file name too
    assert len(server.requests) == seen  # the cache answered: no request at all


def test_create_model_takes_a_record_name_as_backbone_weights(serve, monkeypatch):
    server = serve({"/trainval/tiny.safetensors": DEMO.read_bytes()})
    record(monkeypatch, "test.tiny_backbone", "tiny.safetensors", server.url + "tiny.safetensors",
           data=DEMO.read_bytes())
    model = bmvit.create_model("bmvit_mvit_tiny", num_classes=9, backbone_weights="test.tiny_backbone")
    report = model.backbone_weights_report
    assert report.spec == "test.tiny_backbone" and report.loaded  # the record was recognised (sha256 checked)
    assert server.methods("/trainval/tiny.safetensors") == ["HEAD", "GET"]


def test_a_shipped_record_needs_neither_cache_nor_network(monkeypatch, home: Path):
    monkeypatch.setenv(hub.OFFLINE_ENV, "1")
    path = weights.resolve_weights_path("mvit_tiny_8x128.synthetic_seed1")
    assert path == hub.ASSETS_DIR / "bmvit_mvit_tiny_synthetic_pretrain.safetensors"
    assert not home.exists()


# -------------------------------------------------------------------------------------------------- failures


def test_wrong_sha256_deletes_the_download_and_names_both_digests(serve, monkeypatch, home: Path):
    server = serve({"/trainval/w.pth": DATA})
    record(monkeypatch, "test.bad_hash", "w.pth", server.url + "w.pth", sha256="0" * 64)
    with pytest.raises(hub.WeightsError) as err:
        hub.resolve("test.bad_hash", **FAST)
    message = str(err.value)
    assert hashlib.sha256(DATA).hexdigest() in message and "0" * 64 in message, message
    assert message.startswith(f"cannot download test.bad_hash from {server.url}w.pth: its sha256 is ")
    assert "\n" not in message and cache_files(home) == []  # neither the file nor its .part


def test_an_interrupted_download_resumes_with_a_range(serve, monkeypatch, home: Path):
    server = serve({"/trainval/w.pth": DATA}, mode="cut_once")  # the first GET sends half and hangs up
    record(monkeypatch, "test.cut", "w.pth", server.url + "w.pth")
    with pytest.raises(hub.WeightsError, match=r"w\.pth\.part has 100000 bytes, the server announced 200000; "
                                               r"w\.pth\.part \(97\.7 KiB\) is kept, the next run resumes it"):
        hub.resolve("test.cut", **FAST)
    assert cache_files(home) == ["w.pth.part"]
    path = hub.resolve("test.cut", **FAST)
    assert server.gets("/trainval/w.pth") == [None, "bytes=100000-"]  # the second call asked for the rest only
    assert path.read_bytes() == DATA and cache_files(home) == ["w.pth"]


def test_a_server_that_is_down_is_named_and_the_partial_file_kept(monkeypatch, home: Path):
    url = f"http://127.0.0.1:{free_port()}/w.pth"
    record(monkeypatch, "test.down", "w.pth", url)
    (home / "weights").mkdir(parents=True)
    (home / "weights" / "w.pth.part").write_bytes(DATA[:1000])
    with pytest.raises(hub.WeightsError) as err:
        hub.resolve("test.down", **FAST)
    message = str(err.value)
    assert message.startswith(f"cannot download test.down from {url}: cannot reach the server: "), message
    assert "w.pth.part (1000 B) is kept, the next run resumes it" in message and "\n" not in message
    assert (home / "weights" / "w.pth.part").read_bytes() == DATA[:1000]


def test_offline_mode_opens_no_connection_and_says_where_to_put_the_file(serve, monkeypatch, home: Path):
    server = serve({"/trainval/w.pth": DATA})
    record(monkeypatch, "test.offline", "w.pth", server.url + "w.pth")
    monkeypatch.setenv(hub.OFFLINE_ENV, "1")
    with pytest.raises(hub.OfflineError) as err:
        weights.resolve_weights_path("test.offline")
    assert str(err.value) == (f"BMVIT_OFFLINE is set: bmvit downloads nothing, and weights 'test.offline' are not in "
                              f"the cache: get {server.url}w.pth and save it as {home / 'weights' / 'w.pth'} "
                              "(or unset BMVIT_OFFLINE)")
    with pytest.raises(hub.OfflineError, match=r"trainval/x.pth is not in the cache: get it and save it as .*-x\.pth"):
        hub.fetch_url(server.url + "x.pth", **FAST)  # an address too
    assert server.requests == [] and not home.exists()
    (home / "weights").mkdir(parents=True)
    (home / "weights" / "w.pth").write_bytes(DATA)  # placed by hand: found, still offline
    assert weights.resolve_weights_path("test.offline") == home / "weights" / "w.pth"


def test_a_mirror_replaces_every_records_address(serve, monkeypatch, home: Path):
    server = serve({"/trainval/w.pth": DATA})
    record(monkeypatch, "test.mirrored", "w.pth", "https://weights.invalid/some/path/w.pth")
    monkeypatch.setenv(hub.MIRROR_ENV, server.url)  # trailing slash or not: the same
    assert hub.download_url(hub.KNOWN_WEIGHTS["test.mirrored"]) == server.url + "w.pth"
    assert hub.resolve("test.mirrored", **FAST).read_bytes() == DATA
    assert server.methods("/trainval/w.pth") == ["HEAD", "GET"]
    monkeypatch.setenv(hub.MIRROR_ENV, "ftp://mirror/weights")
    with pytest.raises(hub.WeightsError, match="BMVIT_WEIGHTS_MIRROR must be an http:// or https:// address"):
        hub.download_url(hub.KNOWN_WEIGHTS["test.mirrored"])


@pytest.mark.parametrize("content_type, body", [
    ("text/html; charset=utf-8", DATA),  # refused by its Content-Type, before the body is written
    ("application/octet-stream", b"  <!DOCTYPE html>\n<html><body>Sign in</body></html>"),  # by its first bytes
])
def test_a_web_page_instead_of_a_file_leaves_nothing_in_the_cache(serve, monkeypatch, home: Path, content_type, body):
    server = serve({"/trainval/w.pth": body}, content_types={"/trainval/w.pth": content_type})
    record(monkeypatch, "test.html", "w.pth", server.url + "w.pth", sha256=None)
    if content_type.startswith("text/html"):  # refused before a byte is written: an older partial file goes too
        (home / "weights").mkdir(parents=True)
        (home / "weights" / "w.pth.part").write_bytes(b"x" * 10)
    with pytest.raises(hub.WeightsError, match=r"^cannot download test\.html from .*: the server sent a web page "
                                               r"\((text/html|its first bytes are HTML)\), not a weights file"):
        hub.resolve("test.html", **FAST)
    assert cache_files(home) == []


def test_an_unknown_name_suggests_the_closest(home: Path):
    with pytest.raises(FileNotFoundError) as err:
        weights.resolve_weights_path("mvitv2_s_16x4.k40")
    assert isinstance(err.value, hub.UnknownWeightsError)
    assert str(err.value) == ("'mvitv2_s_16x4.k40' is neither an existing file nor the name of known weights (did you "
                              "mean mvitv2_s_16x4.k400, mvitv2_s_16x4.k400_tv, vit_b_16x4.videomae_k400?); "
                              "`bmvit weights list` shows every name")
    with pytest.raises(FileNotFoundError, match=r"no name is close"):
        hub.resolve("zzzz", **FAST)
    # A path with folders is a path: not downloaded, but the record its file name matches is named.
    with pytest.raises(FileNotFoundError, match=r"does not exist; its file name is that of the record "
                                                r"'mvitv2_s_16x4.k400_tv'"):
        hub.resolve("weights/mvit_v2_s-ae3be167.pth", **FAST)
    assert not home.exists()


def test_a_manual_record_prints_its_steps_and_where_to_save_the_file(serve, monkeypatch, home: Path):
    server = serve({"/trainval/m.pth": DATA})
    record(monkeypatch, "test.manual", "m.pth", "https://drive.invalid/file/d/abc/view",
           manual="open {url} in a browser and press Download")
    with pytest.raises(hub.ManualDownloadError) as err:
        weights.resolve_weights_path("test.manual")
    assert str(err.value) == ("weights 'test.manual' cannot be downloaded by bmvit: open "
                              "https://drive.invalid/file/d/abc/view in a browser and press Download; save the file "
                              f"as {home / 'weights' / 'm.pth'} (or set BMVIT_WEIGHTS_MIRROR to a mirror that holds "
                              "m.pth)")
    assert server.requests == []
    monkeypatch.setenv(hub.MIRROR_ENV, server.url)  # a mirror that holds it serves manual records too
    assert hub.resolve("test.manual", **FAST).read_bytes() == DATA


def test_the_real_google_drive_records_are_manual():
    drive = [s for s in hub.KNOWN_WEIGHTS.values() if s.url and "drive.google.com" in s.url]
    assert drive and all(s.manual for s in drive)
    assert all(s.manual is None for s in hub.KNOWN_WEIGHTS.values() if s not in drive)


# ---------------------------------------------------------------------------------------------- addresses


def test_addresses_are_cached_under_a_hashed_name(serve, monkeypatch, home: Path):
    server = serve({"/trainval/w.pth": DATA, "/trainval/other/w.pth": DATA[:1000], "/trainval/v2/w.pth": DATA,
                    "/trainval/v3/w.pth": DATA})
    first, second = server.url + "w.pth", server.url + "other/w.pth"
    a, b = hub.resolve(first, **FAST), hub.resolve(second, **FAST)
    assert a != b and a.name.endswith("-w.pth") and b.name.endswith("-w.pth")  # same file name, no collision
    assert a.name == hashlib.sha256(first.encode()).hexdigest()[:8] + "-w.pth"
    assert a.read_bytes() == DATA and b.read_bytes() == DATA[:1000]
    seen = len(server.requests)
    assert hub.resolve(first, **FAST) == a and len(server.requests) == seen
    with pytest.raises(hub.WeightsError, match=rf"^cannot download {server.url}v2/w.pth: its sha256 is "):
        hub.fetch_url(server.url + "v2/w.pth#sha256=" + "1" * 64, **FAST)  # a #sha256= fragment is checked
    good = hub.fetch_url(server.url + "v3/w.pth#sha256=" + hashlib.sha256(DATA).hexdigest(), **FAST)
    assert good.read_bytes() == DATA


def test_a_records_address_is_cached_as_the_record(serve, monkeypatch, home: Path):
    server = serve({"/trainval/w.pth": DATA})
    record(monkeypatch, "test.by_url", "w.pth", server.url + "w.pth", sha256="0" * 64)
    with pytest.raises(hub.WeightsError, match="the record expects 0000"):  # the record's sha256 applies
        hub.resolve(server.url + "w.pth", **FAST)


# ------------------------------------------------------------------------------------------------ bmvit.load


def test_bmvit_load_takes_a_url_a_name_or_a_path(serve, monkeypatch, home: Path):
    server = serve({"/trainval/model.safetensors": DEMO.read_bytes()})
    url = server.url + "model.safetensors"
    model = bmvit.load(url)
    assert model.metadata["class_names"][0] == "walk" and not model.training
    cached = hub.url_cache_path(url)
    assert cached.read_bytes() == DEMO.read_bytes()
    seen = len(server.requests)
    bmvit.load(url)
    assert len(server.requests) == seen  # the second load reads the cache
    assert bmvit.load("mvit_tiny_8x128.synthetic_demo").metadata == model.metadata  # the shipped record
    assert bmvit.load(str(cached)).metadata == model.metadata  # and the path, as ever
    assert bmvit.load("bmvit_mvit_tiny", weights=url).metadata == model.metadata  # a preset with an address


def test_bmvit_load_refuses_backbone_records_and_suggests_models(home: Path):
    with pytest.raises(ValueError, match=r"'mvitv2_s_16x4.k400' names backbone weights, not a bmvit model: use "
                                         r"bmvit.create_model\(PRESET, backbone_weights='mvitv2_s_16x4.k400'\)"):
        bmvit.load("mvitv2_s_16x4.k400")
    with pytest.raises(FileNotFoundError, match=r"model file mvit_tiny_8x128.synthetic_dem does not exist, and it is "
                                                r"not the name of a bmvit model \(did you mean "
                                                r"mvit_tiny_8x128.synthetic_demo"):
        bmvit.load("mvit_tiny_8x128.synthetic_dem")
    with pytest.raises(FileNotFoundError, match=r"^model file runs/none/model.safetensors does not exist$"):
        bmvit.load("runs/none/model.safetensors")
    assert not home.exists()
