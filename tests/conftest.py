"""Fixtures shared by every test, among them ``serve``: a local HTTP server with ``Range`` support (the
downloads of ``bmvit.data.download`` and of the weights hub are tested against it, never the internet)."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from bmvit.data.synthetic import write_synthetic_dataset


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tests run tiny models on small inputs: one thread avoids OpenMP spinning on a busy 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A few seconds of the synthetic AVA-format dataset: 2 train videos, 1 val video, 160x120."""
    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root, seed=3, num_videos=2, num_val_videos=1, seconds=6, size=(160, 120), workers=1)
    return root


@pytest.fixture(scope="session")
def tiny_frames_dataset(tmp_path_factory) -> Path:
    """The tiny synthetic dataset with JPEG frame folders too (2 train videos, 1 val, 160x120, 6 s)."""
    root = tmp_path_factory.mktemp("synth_frames")
    write_synthetic_dataset(root, seed=3, num_videos=2, num_val_videos=1, seconds=6, size=(160, 120), frames=True,
                            workers=1)
    return root


@pytest.fixture
def tiny_overrides():
    return make_tiny_overrides


def make_tiny_overrides(root: Path, out_dir: Path, **extra: object) -> list[str]:
    """Overrides that make synthetic_tiny.yaml train in seconds: a 4x64x64 clip, batch 2."""
    values = {
        "data.root": root,
        "train.out_dir": out_dir,
        "model.input_size": "[4, 64, 64]",
        # The config starts from the whole shipped 8x128x128 detector; a 4x64x64 model can take only its
        # backbone (relative-position tables resized), which still exercises the shipped file.
        "model.init_weights": "",
        "model.backbone_weights": "mvit_tiny_8x128.synthetic_seed1",
        "data.sampling_stride": 8,
        "data.num_workers": 0,
        "data.cache_videos": "false",
        "train.batch_size": 2,
        "train.epochs": 2,
        "train.eval_every": 1,
        "train.tensorboard": "false",
        "train.max_minutes": 0,
        "eval.batch_size": 4,
        **extra,
    }
    return [f"{k}={v}" for k, v in values.items()]


# ---------------------------------------------------------------------------------------------------------
# a local HTTP server


@dataclass
class Server:
    """A running test server: its base URL and the requests it saw, as (method, path, Range header)."""

    url: str
    files: dict[str, bytes]
    mode: str
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    cut: set[str] = field(default_factory=set)  # files already cut once
    content_types: dict[str, str] = field(default_factory=dict)  # path -> Content-Type (none sent otherwise)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def gets(self, path: str) -> list[str | None]:
        """The Range headers of the GET requests for ``path`` (None: no Range), in order."""
        return [rng for method, p, rng in self.requests if method == "GET" and p == path]

    def methods(self, path: str) -> list[str]:
        return [method for method, p, _ in self.requests if p == path]


class Handler(BaseHTTPRequestHandler):
    """Serves ``server.state.files`` by path, the way ``server.state.mode`` says."""

    server: ThreadingHTTPServer

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass  # keep the test output clean

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._serve(send_body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(send_body=True)

    def _serve(self, send_body: bool) -> None:
        state: Server = self.server.state  # type: ignore[attr-defined]
        rng = self.headers.get("Range")
        with state.lock:
            state.requests.append((self.command, self.path, rng))
        if self.command == "HEAD" and state.mode == "no_head":
            self.send_error(405)
            return
        data = state.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        # "lie": Content-Length says 100 bytes more than the file has, and only the file is sent
        announced = len(data) + (100 if state.mode == "lie" else 0)
        start = None
        if rng and send_body and state.mode != "ignore_range":
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
        if start is not None and start >= announced:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{announced}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if start is not None:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{announced - 1}/{announced}")
            self.send_header("Content-Length", str(announced - start))
            payload = data[start:]
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(announced))
            payload = data
        if self.path in state.content_types:
            self.send_header("Content-Type", state.content_types[self.path])
        self.end_headers()
        if not send_body:
            return
        if state.mode == "cut_once":
            with state.lock:
                first = self.path not in state.cut
                state.cut.add(self.path)
            if first:  # half of it, then the connection drops (HTTP/1.0: closed after the answer)
                self.wfile.write(payload[: len(payload) // 2])
                return
        self.wfile.write(payload)


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    """``serve(files, mode="range", content_types=None)``: start a server for ``{path: bytes}`` (paths under
    ``/trainval/``, the server's ``url``); stopped after the test.

    Modes: ``range`` (HEAD and Range answered), ``ignore_range`` (always 200, the whole file), ``cut_once``
    (the first GET of each file sends half of it and closes the connection), ``lie`` (Content-Length says
    100 bytes more than are sent), ``no_head`` (HEAD answers 405)."""
    running: list[ThreadingHTTPServer] = []

    def start(files: dict[str, bytes], mode: str = "range", content_types: dict[str, str] | None = None) -> Server:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        state = Server(url=f"http://127.0.0.1:{httpd.server_address[1]}/trainval/", files=files, mode=mode,
                       content_types=dict(content_types or {}))
        httpd.state = state  # type: ignore[attr-defined]
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        running.append(httpd)
        return state

    yield start
    for httpd in running:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def weights_home(tmp_path: Path, monkeypatch) -> Path:
    """An empty weights cache (``BMVIT_HOME``), online, no mirror: the folder ``BMVIT_HOME`` points to."""
    from bmvit import hub

    monkeypatch.setenv(hub.HOME_ENV, str(tmp_path / "home"))
    monkeypatch.delenv(hub.OFFLINE_ENV, raising=False)
    monkeypatch.delenv(hub.MIRROR_ENV, raising=False)
    return tmp_path / "home"
