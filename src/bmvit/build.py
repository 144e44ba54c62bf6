"""Config sections -> components. The one place that maps a config to constructor arguments.

Each builder takes only its own section (plus facts derived from the data, such as the trained
class ids), so no component ever sees the whole configuration tree.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bmvit.config import DataConfig, EvalConfig, LossConfig, MatcherConfig, ModelConfig, OptimConfig


def create_model_from_config(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """Build the detector a ``model`` section describes, with ``num_classes`` action outputs."""
    from bmvit.models import create_model

    backbone_overrides: dict[str, Any] = dict(cfg.backbone_overrides)
    if cfg.input_size:
        backbone_overrides["input_size"] = tuple(int(v) for v in cfg.input_size)
    if cfg.drop_path_rate >= 0:
        backbone_overrides["drop_path_rate"] = float(cfg.drop_path_rate)
    if cfg.activation_checkpointing:
        backbone_overrides["use_checkpoint"] = True
    return create_model(
        cfg.name,
        num_classes=cfg.num_classes or num_classes,
        backbone_weights=cfg.backbone_weights or None,
        weights_format=cfg.weights_format or None,
        token_selection=cfg.token_selection,
        backbone_overrides=backbone_overrides,
        **_head_overrides(cfg),
    )


def _head_overrides(cfg: ModelConfig) -> dict[str, Any]:
    """The box-parametrisation fields a run config sets (the preset's own values otherwise)."""
    overrides: dict[str, Any] = {}
    if cfg.box_reference:
        overrides["box_reference"] = cfg.box_reference
    if cfg.box_local_range > 0:
        overrides["box_local_range"] = float(cfg.box_local_range)
    return overrides


def model_kind(model: nn.Module) -> str:
    """``"twostage"`` for a model that classifies given person boxes, else ``"single_stage"`` (BMViT);
    looks through a ``DistributedDataParallel`` wrapper."""
    return getattr(getattr(model, "module", model), "kind", "single_stage")


def create_criterion(
    matcher_cfg: MatcherConfig, loss_cfg: LossConfig, num_classes: int, kind: str = "single_stage"
) -> nn.Module:
    if kind == "twostage":
        from bmvit.twostage import TwoStageCriterion

        return TwoStageCriterion(num_classes, weight_action=loss_cfg.weight_action)
    from bmvit.losses import SetCriterion
    from bmvit.matcher import HungarianMatcher

    matcher = HungarianMatcher(
        cost_actor=matcher_cfg.cost_actor,
        cost_bbox=matcher_cfg.cost_bbox,
        cost_giou=matcher_cfg.cost_giou,
        cost_action=matcher_cfg.cost_action,
        cost_center=matcher_cfg.cost_center,
    )
    return SetCriterion(
        matcher,
        num_classes=num_classes,
        eos_coef=loss_cfg.eos_coef,
        weight_actor=loss_cfg.weight_actor,
        weight_bbox=loss_cfg.weight_bbox,
        weight_giou=loss_cfg.weight_giou,
        weight_action=loss_cfg.weight_action,
        action_loss=loss_cfg.action_loss,
        o2m_weight=loss_cfg.o2m_weight,
        o2m_repeats=loss_cfg.o2m_repeats,
    )


def create_postprocess(cfg: EvalConfig, kind: str = "single_stage") -> nn.Module:
    if kind == "twostage":
        from bmvit.twostage import TwoStagePostProcess

        return TwoStagePostProcess()
    from bmvit.postprocess import PostProcess

    return PostProcess(threshold=cfg.threshold, nms_iou=cfg.nms_iou)


ACT_DEFAULT_PATHS = {
    "ucf101_24": {"annotations": "UCF101v2-GT.pkl", "frames_dir": "rgb-images"},
    "jhmdb_21": {"annotations": "JHMDB-GT.pkl", "frames_dir": "Frames"},
}
"""File names of the ACT / MOC-Detector layout, used where ``data.annotations`` / ``data.frames_dir`` are ''."""


def resolve_data_paths(cfg: DataConfig) -> dict[str, Path | None]:
    """Absolute paths of the annotation files; a clear error when the root lacks them.

    AVA: ``train_csv``, ``val_csv``, ``label_map``, ``exclusions`` (None if absent). UCF101-24 /
    JHMDB-21: ``annotations`` (the ACT ground truth) and ``media`` (the frame or video folder).
    """
    cfg.validate()
    if not cfg.root:
        raise FileNotFoundError("data.root is not set: pass data.root=/path/to/dataset (see README, Data)")
    root = Path(cfg.root)
    if not root.is_dir():
        raise FileNotFoundError(f"data.root {root} is not a directory")
    if cfg.format != "ava":
        return _resolve_act_paths(cfg, root)
    paths: dict[str, Path | None] = {}
    for key in ("train_csv", "val_csv", "label_map", "exclusions"):
        rel = getattr(cfg, key)
        paths[key] = (root / rel) if rel else None
    for key in ("train_csv", "val_csv", "label_map"):
        if not paths[key].is_file():
            raise FileNotFoundError(f"data.{key}: {paths[key]} does not exist (data.root={root})")
    if paths["exclusions"] is not None and not paths["exclusions"].is_file():
        paths["exclusions"] = None
    return paths


def _resolve_act_paths(cfg: DataConfig, root: Path) -> dict[str, Path | None]:
    defaults = ACT_DEFAULT_PATHS[cfg.format]
    annotations = root / (cfg.annotations or defaults["annotations"])
    if not annotations.is_file():
        raise FileNotFoundError(
            f"data.annotations: {annotations} does not exist (data.root={root}, data.format={cfg.format}; "
            f"expected ACT's {defaults['annotations']} or a JSON file with the same keys, see docs/ucf_jhmdb.md)"
        )
    if cfg.source == "frames":
        key, media = "data.frames_dir", root / (cfg.frames_dir or defaults["frames_dir"])
    else:
        key, media = "data.videos_dir", root / cfg.videos_dir
    if not media.is_dir():
        raise FileNotFoundError(f"{key}: {media} is not a directory (data.root={root}, data.source={cfg.source})")
    return {"annotations": annotations, "media": media}


def data_label_map(cfg: DataConfig) -> dict[int, str]:
    """``{class id: name}`` of the evaluated classes: AVA's label-map file, or every class of the ACT
    ground truth (ids ``1..N`` in the order of its ``labels``)."""
    paths = resolve_data_paths(cfg)
    if cfg.format == "ava":
        from bmvit.data.ava import read_label_map

        return read_label_map(paths["label_map"])
    from bmvit.data.ucf_jhmdb import read_act_annotations

    return read_act_annotations(paths["annotations"]).label_map()


def create_dataset(
    cfg: DataConfig, split: str, class_ids: list[int], input_size: tuple[int, int, int], train: bool,
    kind: str = "single_stage", output: str = "uint8",
):
    """The dataset of ``split`` ("train" or "val") at the model's input size: an ``AVADataset``, or for
    UCF101-24 / JHMDB-21 a ``KeyFrameDataset`` whose "val" is the test split of ``data.split_index``.
    For a two-stage model it is wrapped in a ``PersonBoxDataset`` that adds the person boxes to classify.

    Clips are ``uint8 [3, T, H, W]`` (``output="uint8"``, the loaders' hand-off: the engine normalises
    them on the model's device with ``transforms.normalize_clips``) or normalised float32 (``"float"``)."""
    if kind == "twostage":
        base = create_dataset(cfg, split, class_ids, input_size, train, output=output)
        return _person_box_dataset(cfg, split, base, train)
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    num_frames, height, width = input_size
    if height != width:
        raise ValueError(f"the model input must be square, got {height}x{width}")
    if cfg.format != "ava":
        return _act_dataset(cfg, split, class_ids, num_frames, height, train, output)
    from bmvit.data.dataset import AVADataset

    paths = resolve_data_paths(cfg)
    return AVADataset(
        root=cfg.root,
        annotation_csv=paths["train_csv" if split == "train" else "val_csv"],
        split=split,
        num_frames=num_frames,
        stride=cfg.sampling_stride,
        input_size=height,
        class_ids=class_ids,
        source=cfg.source,
        train=train,
        mean=tuple(cfg.mean),
        std=tuple(cfg.std),
        resize=cfg.resize,
        time_offset=cfg.time_offset,
        fps=cfg.fps,
        valid_seconds=(cfg.first_second, cfg.last_second),
        exclusions=paths["exclusions"] if split == "val" else None,
        hflip=cfg.hflip if train else 0.0,
        flip_swap_class_ids=[tuple(int(v) for v in pair) for pair in cfg.flip_swap_pairs],
        scale_jitter=tuple(cfg.scale_jitter) if train else (1.0, 1.0),
        color_jitter=cfg.color_jitter if train else 0.0,
        cache_videos=cfg.cache_videos,
        skip_bad=cfg.skip_bad,
        output=output,
    )


def _act_dataset(
    cfg: DataConfig, split: str, class_ids: list[int], num_frames: int, size: int, train: bool, output: str = "uint8"
):
    """UCF101-24 / JHMDB-21 key frames: every annotated frame of the train videos; for "val" every frame
    of the test videos (``data.eval_all_frames``, ACT's frame-mAP scores detections on unannotated frames
    too). Key-frame ``timestamp`` is the 1-based frame number, which evaluation rows carry."""
    from bmvit.data.transforms import build_transforms
    from bmvit.data.ucf_jhmdb import read_act_annotations, ucf_jhmdb_dataset

    paths = resolve_data_paths(cfg)
    ann = read_act_annotations(paths["annotations"])
    column = {c: j for j, c in enumerate(class_ids)}
    swaps = [(column[a], column[b]) for a, b in cfg.flip_swap_pairs if a in column and b in column]
    transform = build_transforms(
        train,
        size,
        mean=tuple(cfg.mean),
        std=tuple(cfg.std),
        resize=cfg.resize,
        hflip=cfg.hflip if train else 0.0,
        scale_jitter=tuple(cfg.scale_jitter) if train else (1.0, 1.0),
        color_jitter=cfg.color_jitter if train else 0.0,
        flip_swap_columns=swaps,
        output=output,
    )
    frames = cfg.source == "frames"
    dataset = ucf_jhmdb_dataset(
        ann,
        cfg.format,
        "train" if split == "train" else "test",
        split_index=cfg.split_index,
        frames_root=paths["media"] if frames else None,
        video_root=None if frames else paths["media"],
        video_ext=cfg.video_ext,
        num_frames=num_frames,
        stride=cfg.sampling_stride,
        class_ids=class_ids,
        include_unannotated=split != "train" and cfg.eval_all_frames,
        skip_bad=cfg.skip_bad,
        transform=transform,
    )
    dataset.cache_videos = cfg.cache_videos
    return dataset


def _person_box_dataset(cfg: DataConfig, split: str, base, train: bool):
    from bmvit.data.person_boxes import PersonBoxDataset, person_boxes_path, read_person_boxes

    relative = cfg.person_boxes_train if split == "train" else cfg.person_boxes_val
    if not relative and split != "train":
        raise FileNotFoundError("a two-stage model classifies detector boxes: set data.person_boxes_val to a "
                                "person-box CSV (AVA: PySlowFast's ava_detection_val_boxes_and_labels.csv)")
    boxes = read_person_boxes(person_boxes_path(cfg.root, relative), cfg.person_box_threshold) if relative else None
    return PersonBoxDataset(base, boxes, train=train, jitter=cfg.person_box_jitter if train else 0.0)


def _layer_id(name: str, num_layers: int) -> int:
    """Depth of a parameter for layer-wise LR decay: stem 0, block i -> i + 1, the rest (norm, heads) last."""
    if name.startswith("backbone."):
        match = re.search(r"\.blocks\.(\d+)\.", name)
        if match:
            return int(match.group(1)) + 1
        if re.search(r"(patch_embed|cls_token|pos_embed|rel_pos)", name) and ".blocks." not in name:
            return 0
    return num_layers + 1


def create_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW with layer-wise LR decay and no weight decay on norms, biases and position tables.

    On CUDA the fused AdamW kernel updates every parameter in a few launches instead of several per
    tensor; the CPU keeps the default implementation, which is what the CPU tests pin down."""
    no_decay = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    num_layers = max((int(m.group(1)) for n in names if (m := re.search(r"\.blocks\.(\d+)\.", n))), default=-1) + 1
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer = _layer_id(name, num_layers)
        decay = not (param.ndim <= 1 or name in no_decay or name.endswith(".bias"))
        scale = cfg.layer_decay ** (num_layers + 1 - layer)
        if not name.startswith("backbone."):
            scale = cfg.head_lr_mult
        group = groups.setdefault(
            (layer, decay, name.startswith("backbone.")),
            {"params": [], "weight_decay": cfg.weight_decay if decay else 0.0, "lr_scale": scale},
        )
        group["params"].append(param)
    param_groups = [groups[k] for k in sorted(groups)]
    for group in param_groups:
        group["lr"] = cfg.lr * group["lr_scale"]
    on_cuda = all(p.is_cuda for group in param_groups for p in group["params"]) and bool(param_groups)
    return torch.optim.AdamW(param_groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=True if on_cuda else None)


def create_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay to ``min_lr_ratio``, stepped once per optimiser step."""
    total = max(1, steps_per_epoch * epochs)
    warmup = min(total - 1, int(round(cfg.warmup_epochs * steps_per_epoch)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
