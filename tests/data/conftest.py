"""Test media for the data tests: frames whose pixels identify their index, and H.264 files of them.

Handed to tests as fixtures (``make_frames``, ``write_h264``) because pytest runs with
``--import-mode=importlib``, which does not put ``tests/`` on ``sys.path``: test modules cannot import a
helper module beside them, but every test below this folder sees this conftest's fixtures.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest


def indexed_frames(n: int, h: int, w: int) -> list[np.ndarray]:
    """``n`` RGB frames ``[h, w, 3]`` uint8 whose content identifies their index (a colour ramp that moves
    with the index plus a white column at ``2 * index``), so a decoder returning the wrong frame is caught."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for i in range(n):
        img = np.stack([(xx * 5 + i * 3) % 256, (yy * 7 + i * 5) % 256, np.full_like(xx, (i * 11) % 256)], -1)
        img[:, (i * 2) % w] = 255
        out.append(img.astype(np.uint8))
    return out


def encode_h264(path: Path, frames: list[np.ndarray], *, lossless: bool = False, fps: int = 30,
                gop: int = 12) -> Path:
    """Write ``frames`` (RGB ``[H, W, 3]`` uint8) as H.264 at ``fps``, a key frame exactly every ``gop`` frames
    and B-frames between; returns ``path``.

    Lossy (default): ordinary yuv420p at CRF 18, as most video files are. ``lossless``: H.264 RGB at QP 0,
    which decodes to the exact pixels. The container follows the extension (``.mp4``, ``.mkv``).
    """
    # Fixed GOP, no scene cuts and one encoder thread: the same key frames on every machine, which the
    # seeking and forward-decoding tests depend on.
    x264 = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=2:threads=1"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264rgb" if lossless else "libx264", rate=fps)
        s.width, s.height = frames[0].shape[1], frames[0].shape[0]
        s.pix_fmt = "rgb24" if lossless else "yuv420p"
        s.options = {**({"qp": "0"} if lossless else {"crf": "18"}), "x264-params": x264}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


@pytest.fixture(scope="session")
def make_frames() -> Callable[..., list[np.ndarray]]:
    """``indexed_frames(n, h, w)``."""
    return indexed_frames


@pytest.fixture(scope="session")
def write_h264() -> Callable[..., Path]:
    """``encode_h264(path, frames, *, lossless=False, fps=30, gop=12)``."""
    return encode_h264
