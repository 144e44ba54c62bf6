"""Figures of frame-mAP results: per-class AP bars, and the per-class difference between two results.

The comparison figure is the supplementary's Fig. 2 (single- vs two-stage MViTv2-S on AVA v2.2): two bars
per class, sorted, the difference written on top of each pair, green where the first result is better and
red where it is worse. Matplotlib's Agg canvas is used directly, so nothing touches pyplot's global state.

A result is a ``FrameMapResult`` or its JSON form ``{"mAP", "protocol", "per_class": [{"id", "name", "ap"}]}``
(``ap`` null for a class without ground truth); APs are fractions and are drawn as percentages.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bmvit.evaluation.frame_map import FrameMapResult

BETTER_COLOR = "#2ca02c"
WORSE_COLOR = "#d62728"

ResultLike = FrameMapResult | dict[str, Any]


@dataclass(frozen=True)
class ClassComparison:
    """One class present (with ground truth) in both results; APs as fractions, ``diff = ap - other_ap``."""

    id: int
    name: str
    ap: float
    other_ap: float

    @property
    def diff(self) -> float:
        return self.ap - self.other_ap


@dataclass(frozen=True)
class Comparison:
    """Per-class comparison of two results, sorted by the first result's AP, descending.

    Attributes:
        classes: the classes with an AP in both results.
        wins / losses: classes where the first result's AP is higher / lower (equal APs count for neither).
        mAP / other_mAP: the two results' mAPs as reported (over their own classes).
    """

    classes: list[ClassComparison]
    wins: int
    losses: int
    mAP: float
    other_mAP: float


def load_result_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read a result JSON written by ``bmvit ava-eval --json`` (or ``FrameMapResult.to_json``), checked."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"result JSON not found: {path}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    return _checked(data, path)


def compare_results(result: ResultLike, other: ResultLike) -> Comparison:
    """Match two results class by class (by id); classes without an AP in either are left out."""
    a, b = _as_json(result), _as_json(other)
    other_ap = {c["id"]: c["ap"] for c in b["per_class"] if c["ap"] is not None}
    classes = [
        ClassComparison(id=c["id"], name=c["name"], ap=float(c["ap"]), other_ap=float(other_ap[c["id"]]))
        for c in a["per_class"]
        if c["ap"] is not None and c["id"] in other_ap
    ]
    classes.sort(key=lambda c: (-c.ap, c.id))
    return Comparison(
        classes=classes,
        wins=sum(c.diff > 0 for c in classes),
        losses=sum(c.diff < 0 for c in classes),
        mAP=float(a["mAP"]),
        other_mAP=float(b["mAP"]),
    )


def plot_per_class_ap(result: ResultLike, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Bar chart of the per-class AP (classes with ground truth), sorted from best to worst; returns ``path``."""
    data = _as_json(result)
    entries = sorted((c for c in data["per_class"] if c["ap"] is not None), key=lambda c: (-c["ap"], c["id"]))
    if not entries:
        raise ValueError("no class has an AP (no ground truth): nothing to plot")
    fig, ax = _figure(len(entries))
    x = range(len(entries))
    ax.bar(x, [100 * c["ap"] for c in entries], color="#1f77b4", width=0.8)
    _class_axis(ax, [c["name"] for c in entries])
    ax.set_ylabel("AP (%)")
    ax.set_title(title or f"Per-class AP, frame-mAP@0.5 = {100 * data['mAP']:.2f} ({data.get('protocol', '?')})")
    return _save(fig, path)


def plot_compare(
    result: ResultLike,
    other: ResultLike,
    path: str | os.PathLike,
    *,
    names: tuple[str, str] = ("ours", "other"),
) -> Comparison:
    """Two bars per class (``result``, ``other``), sorted by ``result``'s AP, with ``result - other`` in AP
    points on top of each pair: green where ``result`` is better, red where it is worse.

    The title gives both mAPs and how many classes each one wins. Returns the comparison it drew.
    """
    comparison = compare_results(result, other)
    if not comparison.classes:
        raise ValueError("the two results share no class with an AP: nothing to compare")
    n = len(comparison.classes)
    fig, ax = _figure(n)
    x = list(range(n))
    width = 0.4
    ax.bar([i - width / 2 for i in x], [100 * c.ap for c in comparison.classes], width, label=names[0], color="#1f77b4")
    ax.bar([i + width / 2 for i in x], [100 * c.other_ap for c in comparison.classes], width, label=names[1],
           color="#ff7f0e")
    top = max(max(c.ap, c.other_ap) for c in comparison.classes) * 100
    for i, c in zip(x, comparison.classes):
        if c.diff == 0:
            continue
        ax.text(i, 100 * max(c.ap, c.other_ap) + 0.01 * top + 0.2, f"{100 * c.diff:+.1f}", ha="center", va="bottom",
                rotation=90, fontsize=7, color=BETTER_COLOR if c.diff > 0 else WORSE_COLOR)
    _class_axis(ax, [c.name for c in comparison.classes])
    ax.set_ylim(0, top * 1.15 + 1)
    ax.set_ylabel("AP (%)")
    ax.legend(loc="upper right")
    ax.set_title(
        f"{names[0]}: {100 * comparison.mAP:.2f} mAP, better in {comparison.wins} classes;\n"
        f"{names[1]}: {100 * comparison.other_mAP:.2f} mAP, better in {comparison.losses} (of {n})",
        fontsize=10,  # two lines: one line overflowed the figure with a few classes
    )
    _save(fig, path)
    return comparison


# ---------------------------------------------------------------------------------------------------------


def _as_json(result: ResultLike) -> dict[str, Any]:
    if isinstance(result, FrameMapResult):
        return result.to_json()
    return _checked(result, "result")


def _checked(data: Any, where: str) -> dict[str, Any]:
    """Validate the result schema; errors name ``where`` (a file or 'result') and the offending entry."""
    if not isinstance(data, dict) or "per_class" not in data or "mAP" not in data:
        raise ValueError(f"{where}: expected an object with 'mAP' and 'per_class' (bmvit ava-eval --json output)")
    if not isinstance(data["mAP"], (int, float)) or isinstance(data["mAP"], bool):
        raise ValueError(f"{where}: 'mAP' must be a number, got {data['mAP']!r}")
    if not isinstance(data["per_class"], list):
        raise ValueError(f"{where}: 'per_class' must be a list, got {type(data['per_class']).__name__}")
    for i, c in enumerate(data["per_class"]):
        ok = (isinstance(c, dict) and isinstance(c.get("id"), int) and isinstance(c.get("name"), str) and "ap" in c
              and (c["ap"] is None or (isinstance(c["ap"], (int, float)) and math.isfinite(c["ap"]))))
        if not ok:
            raise ValueError(f"{where}: per_class[{i}] must be {{'id': int, 'name': str, 'ap': number or null}}, "
                             f"got {c!r}")
    return data


def _figure(num_classes: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.0, 0.28 * num_classes + 2.0), 5.5), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _class_axis(ax, names: list[str]) -> None:
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=90, fontsize=7)
    ax.set_xlim(-0.7, len(names) - 0.3)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    return path


__all__ = [
    "ClassComparison",
    "Comparison",
    "compare_results",
    "load_result_json",
    "plot_compare",
    "plot_per_class_ap",
]
