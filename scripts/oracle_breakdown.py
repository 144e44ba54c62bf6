"""Where does a model's frame-mAP go? Replace one part of its detections with the truth at a time.

An error analysis of a trained bmvit model file on the val split of an AVA-format dataset (the data
section of ``--config``, with ``key=value`` overrides such as ``data.root=...``); docs/demo.md shows
it on the demo's model. Not part of the package: run it from a checkout. For every val key frame it
runs the model once and writes several detection files to ``--out``, each scored with the official
frame-mAP protocol:

- ``model``: every candidate token, score ``p_actor * p_action`` (the model as evaluated, with θ = 0);
- ``model_nms``: the same after class-agnostic greedy NMS at IoU 0.5 in ``p_actor`` order (are the
  tokens that outrank an actor's own token near-duplicates of its box?);
- ``oracle_actor``: one detection per ground-truth actor, from the token whose grid cell holds the
  actor's box centre (the token the matcher trains for it): that token's box, its action
  probabilities. Perfect actor selection, the model's boxes and actions;
- ``oracle_actor_best_box``: the same, with the best box (IoU with the truth) of the 3x3 cells around;
- ``oracle_box``: the ground-truth box with the own-cell token's action probabilities (the action head
  alone);
- ``oracle_box_random``: the ground-truth box with random action scores (chance for the action head).

It also prints, over the val actors: the share whose own-cell box has IoU >= 0.5, and how many of the
clip's tokens score a higher p(actor) than the own-cell token (median), and than the best token of the
3x3 cells around it.

Usage (``OUT/oracle_breakdown.json`` gets the summary; ``OUT/<variant>.csv`` the detections):

    python scripts/oracle_breakdown.py --weights runs/demo/model.safetensors --config configs/synthetic_tiny.yaml \
        --out runs/demo/oracle [key=value ...]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bmvit.box_ops import box_cxcywh_to_xyxy, box_iou, grid_cell_index
from bmvit.build import create_dataset, resolve_data_paths
from bmvit.checkpoint import load_model
from bmvit.config import load_config
from bmvit.evaluation.frame_map import evaluate_ava_files
from bmvit.postprocess import greedy_nms
from bmvit.build import read_class_info

VARIANTS = ("model", "model_nms", "oracle_actor", "oracle_actor_best_box", "oracle_box", "oracle_box_random")


def neighbourhood(row: int, col: int, height: int, width: int) -> list[int]:
    """Row-major indices of the (up to) 3x3 cells around ``(row, col)`` of an ``height x width`` grid."""
    return [r * width + c for r in range(max(0, row - 1), min(height, row + 2))
            for c in range(max(0, col - 1), min(width, col + 2))]


def keyframe_rows(outputs: dict[str, Tensor], target: dict, class_ids: list[int], rng: np.random.Generator,
                  stats: dict[str, list[float]]) -> dict[str, list[tuple]]:
    """Detection rows of every variant for one clip (batch of one); appends to ``stats``."""
    _, height, width = outputs["token_grid"]
    p_actor = outputs["pred_actor"][0].float().softmax(-1)[:, 0]  # [N]
    p_action = outputs["pred_actions"][0].float().sigmoid()  # [N, C]
    boxes = box_cxcywh_to_xyxy(outputs["pred_boxes"][0].float())  # [N, 4] normalised xyxy
    key = (target["video_id"], int(target["timestamp"]))
    rows: dict[str, list[tuple]] = {name: [] for name in VARIANTS}

    def add(name: str, box: Tensor, scores: Tensor | np.ndarray) -> None:
        rows[name] += [(*key, *box.tolist(), cid, float(s)) for cid, s in zip(class_ids, scores)]

    for token in range(len(p_actor)):
        add("model", boxes[token], p_actor[token] * p_action[token])
    by_actor = torch.argsort(p_actor, descending=True, stable=True)
    for token in by_actor[greedy_nms(boxes[by_actor], 0.5)].tolist():
        add("model_nms", boxes[token], p_actor[token] * p_action[token])
    for m in torch.nonzero(target["labels"].sum(-1) > 0).flatten().tolist():
        own = int(grid_cell_index(target["boxes"][m, :2], height, width))
        gt = box_cxcywh_to_xyxy(target["boxes"][m:m + 1].float())  # [1, 4]
        around = neighbourhood(own // width, own % width, height, width)  # holds ``own``
        ious = box_iou(boxes[around], gt)[:, 0]  # [len(around)]
        best = around[int(ious.argmax())]
        stats["own_iou_at_least_0.5"].append(float(ious[around.index(own)] >= 0.5))
        stats["own_rank"].append(float((p_actor > p_actor[own]).sum()))
        stats["neighbourhood_rank"].append(float((p_actor > p_actor[around].max()).sum()))
        add("oracle_actor", boxes[own], p_action[own])
        add("oracle_actor_best_box", boxes[best], p_action[own])
        add("oracle_box", gt[0], p_action[own])
        add("oracle_box_random", gt[0], rng.random(len(class_ids)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="a bmvit model file (model.safetensors)")
    parser.add_argument("--config", required=True, help="the run config (its data section is read)")
    parser.add_argument("--out", required=True, help="folder for the detection CSVs and the JSON summary")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.root=DIR")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.config, args.overrides)
    classes = read_class_info(config.data)
    model = load_model(args.weights).eval()
    dataset = create_dataset(config.data, "val", classes.class_ids, tuple(model.input_size), train=False,
                             output="float")
    rng = np.random.default_rng(0)
    stats: dict[str, list[float]] = {"own_iou_at_least_0.5": [], "own_rank": [], "neighbourhood_rank": []}
    rows: dict[str, list[tuple]] = {name: [] for name in VARIANTS}
    with torch.inference_mode():
        for i in range(len(dataset)):
            clip, target = dataset[i]
            for name, new in keyframe_rows(model(clip[None]), target, classes.class_ids, rng, stats).items():
                rows[name] += new
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = resolve_data_paths(config.data)
    summary = {"actors": len(stats["own_rank"]),
               "own_iou_at_least_0.5": float(np.mean(stats["own_iou_at_least_0.5"])),
               "own_rank_median": float(np.median(stats["own_rank"])),
               "neighbourhood_rank_median": float(np.median(stats["neighbourhood_rank"]))}
    for name in VARIANTS:
        path = out / f"{name}.csv"
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows([(v, f"{t:04d}", *(f"{x:.4f}" for x in box), c, f"{s:.6f}")
                                     for v, t, *box, c, s in rows[name]])
        result = evaluate_ava_files(paths["val_csv"], path, paths["label_map"], paths["exclusions"])
        summary[name] = result.mAP
        print(f"{name:24s} mAP {result.mAP:.4f}  " + " ".join(f"{c.name}={c.ap:.3f}" for c in result.per_class
                                                             if c.ap is not None))
    (out / "oracle_breakdown.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k not in VARIANTS}))


if __name__ == "__main__":
    main()
