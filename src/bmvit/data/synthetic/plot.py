"""A picture of a written dataset: key frames with their ground-truth boxes and labels.

It reads only the files on disk (the annotation CSV and the mp4s), never the generator's scenes, so
the figure shows what a reader of the dataset gets.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np

from bmvit.data.synthetic.keyframes import AVA_FIRST_SECOND
from bmvit.data.synthetic.scene import CLASSES, FPS


def plot_keyframes(root: str | os.PathLike, out_png: str | os.PathLike, n: int = 6, split: str = "val",
                   columns: int = 3) -> list[tuple[str, int]]:
    """Draw ``n`` key frames of ``split`` (spread over its videos) with their ground-truth boxes and labels.

    ``root`` is a dataset ``write_synthetic_dataset`` wrote; the PNG goes to ``out_png`` (its folder is
    created). Returns the ``(video_id, timestamp)`` pairs drawn, in order.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(root)
    names = {i: name for i, name in enumerate(CLASSES, 1)}
    people: dict[tuple[str, int], dict[int, tuple[list[float], list[str]]]] = {}
    with open(root / "annotations" / f"ava_{split}_v2.2.csv", newline="") as f:
        for vid, ts, x1, y1, x2, y2, action, pid in csv.reader(f):
            box = [float(x1), float(y1), float(x2), float(y2)]
            labels = people.setdefault((vid, int(ts)), {}).setdefault(int(pid), (box, []))[1]
            labels.append(names[int(action)] if action else "no action")  # empty id: a non-actor (--non-actors)
    keys = sorted(people)
    if not keys:
        raise ValueError(f"{root / 'annotations' / f'ava_{split}_v2.2.csv'}: no annotated key frames to draw")
    chosen = [keys[int(i)] for i in np.linspace(0, len(keys) - 1, min(n, len(keys)))]
    rows = math.ceil(len(chosen) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    palette = plt.get_cmap("tab10")
    for ax, (vid, ts) in zip(axes.flat, chosen):
        image = _decode_frame(root / "videos" / f"{vid}.mp4", (ts - AVA_FIRST_SECOND) * FPS)
        height, width = image.shape[:2]
        ax.imshow(image)
        by_x = sorted(people[(vid, ts)].items(), key=lambda item: item[1][0][0])
        for rank, (pid, (box, labels)) in enumerate(by_x):
            x1, y1, x2, y2 = box[0] * width, box[1] * height, box[2] * width, box[3] * height
            colour = palette(pid % 10)
            ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=1.5))
            above = rank % 2 == 0  # alternate above/below from left to right so neighbours' labels do not overlap
            ax.text(x1, y1 - 2 if above else y2 + 2, f"{pid}: " + ", ".join(labels), color="white", fontsize=7,
                    va="bottom" if above else "top", bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "linewidth": 0})
        ax.set_title(f"{vid} @ {ts:04d}", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return chosen


def _decode_frame(path: Path, index: int) -> np.ndarray:
    """Frame ``index`` (0-based) of a video as uint8 RGB [H, W, 3], decoding from the start."""
    import av

    with av.open(str(path)) as container:
        for k, frame in enumerate(container.decode(video=0)):
            if k == index:
                return frame.to_ndarray(format="rgb24")
    raise ValueError(f"{path}: has no frame {index}")
