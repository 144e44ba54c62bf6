"""The paper's qualitative figure (supplementary Fig. 3) for one key frame of any video.

Left top: p(actor) of every key-frame token as a heat map over the token grid (16x16 for BMViT
MViTv2-S), laid over the key frame. Left bottom: the box every token predicts, those with
p(actor) > theta in yellow. Right: for each selected token, its last-layer attention over all
T' x H' x W' tokens, one panel per key time slice, laid over the clip frame of that slice.

The attention is the model's own (``BMViT.forward(..., return_attention=True)``: the softmax of the
backbone's last block, averaged over heads here), not a recomputation. The keys of that block may be
pooled (BMViT MViTv2-S: 8x8x8 keys for 8x16x16 queries); each map is shown at the keys' own
resolution, stretched over the frame.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bmvit.box_ops import box_cxcywh_to_xyxy
from bmvit.inference.predictor import KeyFrameClip, Predictor, clip_frame_indices
from bmvit.postprocess import outputs_to_host
from bmvit.inference.results import Detections


@dataclass
class Explanation:
    """Everything the figure shows, as arrays (all boxes normalised xyxy of the original frame).

    Attributes:
        video_id, time_s: the key frame.
        frames: ``uint8 [T, H, W, 3]`` the clip's original frames; ``key_position`` is the key frame's.
        token_grid: ``(H', W')`` of the candidate tokens shown.
        p_actor: ``[H', W']`` p(actor) of each token.
        boxes_xyxy_norm: ``[H' * W', 4]`` the box each token predicts.
        selected: tokens shown on the right, as indices into the ``H' x W'`` grid (p > threshold, best
            first; the single most confident token when none passes, with ``below_threshold`` True).
        token_offset: index of the grid's first token among the model's candidates (0 unless the
            model decodes every time slice, ``token_selection="all"``: then the central slice is shown).
        attention: ``[len(selected), Tk, Hk, Wk]`` last-layer attention of each selected token,
            mean over heads (rows sum to at most 1: the class token takes the rest).
        canvas_xyxy: where the model's input canvas lies on the frame, in pixels (the frame itself for
            the square resize; larger with letterbox padding; the crop window with a short-side resize):
            the token and key grids span it.
        detections: the key frame's final detections.
    """

    video_id: str
    time_s: float
    frames: np.ndarray
    key_position: int
    token_grid: tuple[int, int]
    p_actor: np.ndarray
    boxes_xyxy_norm: np.ndarray
    selected: list[int]
    token_offset: int
    below_threshold: bool
    attention: np.ndarray
    threshold: float
    canvas_xyxy: tuple[float, float, float, float]
    clip_times_s: np.ndarray
    detections: Detections


def explain(predictor: Predictor, source: str | os.PathLike, time_s: float, max_tokens: int = 4) -> Explanation:
    """Run the model on the clip around ``time_s`` seconds of ``source`` and gather the figure's data."""
    plan = predictor.plan(source, fps=1.0)
    duration = plan.num_frames / plan.video_fps
    if not 0.0 <= time_s < duration:
        raise ValueError(f"--time {time_s} s is outside video {plan.video_id} (0 to {duration:.2f} s)")
    spec = predictor.spec
    key_index, indices = clip_frame_indices(time_s, spec, plan.video_fps, plan.num_frames)
    frames = plan.source.read_frames(indices)
    clip, _ = predictor.transform(frames, {})  # uint8 [3, T, H', W'], resized as in training
    with torch.inference_mode():
        # The predictor's own preparation (normalised on the device) and precision, so that the figure
        # shows what `bmvit predict` computes for this key frame.
        inputs = predictor.model_input(clip[None])
        with predictor.autocast():
            outputs = predictor.model(inputs, return_attention=True)
    outputs = outputs_to_host(outputs)  # float32 on the CPU, the attention included
    result = predictor.postprocess(outputs)[0]
    n_sel, h, w = outputs["token_grid"]
    p_all = outputs["pred_actor"][0].float().softmax(-1)[:, 0].cpu()
    boxes = predictor.boxes_to_frame(box_cxcywh_to_xyxy(outputs["pred_boxes"][0].float().cpu()), plan.image_size)
    # With token_selection="all" the candidates cover every time slice; the figure shows the central one.
    t_show = n_sel // 2
    shown = slice(t_show * h * w, (t_show + 1) * h * w)
    selected = [int(i) for i in result["token_indices"].tolist() if shown.start <= i < shown.stop][:max_tokens]
    below = not selected
    if below:
        selected = [shown.start + int(p_all[shown].argmax())]
    selection = predictor.model.config.token_selection
    attention = _token_attention(outputs["attention"][0].float().cpu(), selected, selection, (n_sel, h, w))
    keyframe = KeyFrameClip(float(time_s), key_index, indices)
    key_position = int(np.flatnonzero(indices == key_index)[0]) if key_index in indices else spec.num_frames // 2
    ih, iw = plan.image_size
    canvas = predictor.boxes_to_frame(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), plan.image_size) \
        if spec.resize == "square" else _input_canvas(predictor, plan.image_size)
    canvas_px = tuple(float(v) for v in (canvas[0] * torch.tensor([iw, ih, iw, ih])).tolist())
    clip_times = (np.arange(spec.num_frames) - spec.num_frames // 2) * spec.stride / spec.timeline_fps
    return Explanation(
        video_id=plan.video_id, time_s=float(time_s), frames=frames, key_position=key_position, token_grid=(h, w),
        p_actor=p_all[shown].reshape(h, w).numpy(), boxes_xyxy_norm=boxes[shown].numpy(),
        selected=[i - shown.start for i in selected], token_offset=shown.start, below_threshold=below,
        attention=attention,
        threshold=predictor.threshold, canvas_xyxy=canvas_px, clip_times_s=clip_times,
        detections=predictor.to_detections(result, keyframe, plan),
    )


def _input_canvas(predictor: Predictor, image_size: tuple[int, int]) -> Tensor:
    """The model input's extent in the frame, normalised ``[1, 4]`` xyxy: larger than the frame with
    letterbox padding, the crop window inside it with a short-side resize."""
    from bmvit.data.transforms import input_geometry

    geometry = input_geometry(predictor.spec.resize, image_size, predictor.spec.input_hw)
    return geometry.boxes_to_original(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), clip=False)


def _token_attention(attention: Tensor, tokens: list[int], selection: str, grid: tuple[int, int, int]) -> np.ndarray:
    """``attention [heads, Tq, Hq, Wq, Tk, Hk, Wk]`` -> ``[len(tokens), Tk, Hk, Wk]`` for candidate tokens,
    mean over heads. Candidates of ``central`` are the query slice ``Tq // 2``; of ``all``, every query;
    ``temporal_mean`` averages a candidate's queries over time (its token is that mean)."""
    mean_heads = attention.mean(0)  # [Tq, Hq, Wq, Tk, Hk, Wk]
    tq, hq, wq = mean_heads.shape[:3]
    _, h, w = grid
    if (hq, wq) != (h, w):
        raise RuntimeError(f"the attention's query grid {hq}x{wq} is not the candidates' grid {h}x{w}")
    maps = []
    for n in tokens:
        t, rest = divmod(n, h * w)
        y, x = divmod(rest, w)
        if selection == "temporal_mean":
            maps.append(mean_heads[:, y, x].mean(0))
        elif selection == "all":
            maps.append(mean_heads[t, y, x])
        else:
            maps.append(mean_heads[tq // 2, y, x])
    return torch.stack(maps).numpy()


def plot_explanation(expl: Explanation):
    """The figure (a matplotlib ``Figure`` on an Agg canvas; pyplot is never touched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tk = expl.attention.shape[1]
    rows = len(expl.selected)
    fh, fw = expl.frames.shape[1:3]
    panel_w, left_w = 1.9, 3.6  # inches of one attention panel and of the left column
    row_h = panel_w * fh / fw + 0.35
    left_h = 2 * (left_w * fh / fw + 0.4)
    # Unused grid rows below the last token keep the rows at the top and at their natural height.
    grid_rows = max(rows, int(np.ceil(left_h / row_h)))
    fig = Figure(figsize=(left_w + 0.8 + tk * panel_w, max(left_h, grid_rows * row_h) + 0.5), dpi=110,
                 layout="constrained")
    FigureCanvasAgg(fig)
    outer = fig.add_gridspec(1, 2, width_ratios=[left_w + 0.8, tk * panel_w])
    left = outer[0].subgridspec(2, 1)
    right = outer[1].subgridspec(grid_rows, tk)
    _plot_heatmap(fig, fig.add_subplot(left[0]), expl)
    _plot_boxes(fig.add_subplot(left[1]), expl)
    for r, token in enumerate(expl.selected):
        _plot_attention_row([fig.add_subplot(right[r, c]) for c in range(tk)], expl, r, token)
    note = " (no token above θ: the most confident shown)" if expl.below_threshold else ""
    fig.suptitle(f"{expl.video_id} at t={expl.time_s:.2f} s: tokens with p(actor) > θ={expl.threshold:g}{note}",
                 fontsize=11)
    return fig


def _frame_axes(ax, frame: np.ndarray) -> None:
    ax.imshow(frame, extent=(0, frame.shape[1], frame.shape[0], 0))
    ax.set_xlim(0, frame.shape[1])
    ax.set_ylim(frame.shape[0], 0)
    ax.set_xticks([])
    ax.set_yticks([])


def _grid_rect(expl: Explanation, token: int):
    """Pixel rectangle ``(x, y, w, h)`` of a token's grid cell on the frame."""
    h, w = expl.token_grid
    x0, y0, x1, y1 = expl.canvas_xyxy
    y, x = divmod(token, w)
    cw, ch = (x1 - x0) / w, (y1 - y0) / h
    return x0 + x * cw, y0 + y * ch, cw, ch


def _plot_heatmap(fig, ax, expl: Explanation) -> None:
    from matplotlib.patches import Rectangle

    key = expl.frames[expl.key_position]
    _frame_axes(ax, (key.astype(np.float32) * 0.5).astype(np.uint8))
    x0, y0, x1, y1 = expl.canvas_xyxy
    image = ax.imshow(expl.p_actor, extent=(x0, x1, y1, y0), cmap="viridis", vmin=0.0, vmax=1.0, alpha=0.7,
                      interpolation="nearest")
    for token in expl.selected:
        ax.add_patch(Rectangle(_grid_rect(expl, token)[:2], *_grid_rect(expl, token)[2:], fill=False, color="yellow",
                               lw=1.5))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
    h, w = expl.token_grid
    ax.set_title(f"p(actor) of the {h}x{w} key-frame tokens", fontsize=9)


def _plot_boxes(ax, expl: Explanation) -> None:
    from matplotlib.patches import Rectangle

    key = expl.frames[expl.key_position]
    _frame_axes(ax, key)
    fh, fw = key.shape[:2]
    scale = np.array([fw, fh, fw, fh])
    chosen = set(expl.selected)
    for token, box in enumerate(expl.boxes_xyxy_norm * scale):
        if token not in chosen:
            ax.add_patch(Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, color="white", lw=0.5,
                                   alpha=0.45))
    for token in expl.selected:
        box = expl.boxes_xyxy_norm[token] * scale
        ax.add_patch(Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, color="yellow", lw=2.0))
        top = box[1] > 0.08 * fh  # room for the label above the box, else inside it
        ax.text(box[0], box[1], f"{token}", color="black", fontsize=7, va="bottom" if top else "top",
                bbox={"facecolor": "yellow", "pad": 1, "lw": 0})
    ax.set_title(f"boxes of all {len(expl.boxes_xyxy_norm)} tokens (p > θ in yellow)", fontsize=9)


def _plot_attention_row(axes, expl: Explanation, row: int, token: int) -> None:
    from matplotlib.patches import Rectangle

    maps = expl.attention[row]  # [Tk, Hk, Wk]
    tk = maps.shape[0]
    t_frames = expl.frames.shape[0]
    x0, y0, x1, y1 = expl.canvas_xyxy
    vmax = float(maps.max()) or 1.0
    p = float(expl.p_actor.reshape(-1)[token])
    top = _token_label(expl, token)
    key_slice = (expl.key_position * tk) // t_frames
    for k, ax in enumerate(axes):
        # Slice k covers clip frames [k T / Tk, (k + 1) T / Tk): show its middle one, or the key frame.
        position = expl.key_position if k == key_slice else min(t_frames - 1, int((k + 0.5) * t_frames / tk))
        _frame_axes(ax, expl.frames[position])
        ax.imshow(maps[k], extent=(x0, x1, y1, y0), cmap="inferno", vmin=0.0, vmax=vmax, alpha=0.6,
                  interpolation="nearest")
        if k == key_slice:  # the token itself
            ax.add_patch(Rectangle(_grid_rect(expl, token)[:2], *_grid_rect(expl, token)[2:], fill=False,
                                   color="cyan", lw=1.2))
        ax.set_title(f"{expl.clip_times_s[position]:+.2f} s" + (" (key)" if k == key_slice else ""), fontsize=7,
                     pad=2)
    axes[0].set_ylabel(f"token {token}\np={p:.2f}\n{top}", fontsize=7, rotation=0, ha="right", va="center")


def _token_label(expl: Explanation, token: int) -> str:
    det = expl.detections
    where = (det.token_indices == token + expl.token_offset).nonzero()
    if len(where) == 0:
        return ""
    name, score = det.top_actions(1)[int(where[0, 0])][0]
    return f"{name} {score:.2f}"


def save_explanation(expl: Explanation, out_png: str | os.PathLike) -> Path:
    """Render the figure to PNG and write it atomically."""
    from bmvit.checkpoint import atomic_write_bytes

    buffer = io.BytesIO()
    plot_explanation(expl).savefig(buffer, format="png", bbox_inches="tight", pad_inches=0.1)
    atomic_write_bytes(out_png, buffer.getvalue())
    return Path(out_png)


__all__ = ["Explanation", "explain", "plot_explanation", "save_explanation"]
