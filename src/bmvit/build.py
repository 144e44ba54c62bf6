"""Config sections -> components. The one place that maps a config to constructor arguments.

Each component's builder takes only its own section (plus facts derived from the data, such as
the trained class ids), so no component ever sees the whole configuration tree; the few builders
that take the run ``Config`` (a family's, ``create_split_dataset``, ``create_eval_loader``) only
pick sections out of it for the components they build.

A *detector family* is what the engine needs to know of a kind of detector besides the model:
its criterion, its post-processing, what its dataset adds to each item, and which inputs its
forward takes. BMViT's is ``SINGLE_STAGE`` below; a model class may carry another as its
``family`` attribute (the two-stage baseline does, ``bmvit.baselines.twostage``), and the engine
and trainer reach every family through ``family_of(model)`` only.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from bmvit.config import (
    Config,
    ConfigError,
    DataConfig,
    EvalConfig,
    LossConfig,
    MatcherConfig,
    ModelConfig,
    OptimConfig,
)
from bmvit.models.weights import KINETICS_MEAN, KINETICS_STD, Normalisation


@dataclass(frozen=True)
class DetectorFamily:
    """How the engine trains and evaluates one kind of detector.

    Attributes:
        name: for messages and logs.
        criterion: ``(config, num_classes) -> nn.Module`` mapping ``(outputs, targets)`` to a dict of
            losses with a ``"loss"`` entry.
        postprocess: ``(eval config) -> nn.Module`` mapping host outputs to one dict per clip with
            ``boxes_xyxy [K, 4]`` (normalised, model input) and ``action_scores [K, C]``.
        dataset: ``(base dataset, config, split, train) -> dataset`` whose items the family's model
            and criterion need (the base dataset itself when nothing is added).
        inputs: ``(clips [B, 3, T, H, W], targets on the device) -> tuple``, the model's positional
            arguments for a batch.
    """

    name: str
    criterion: Callable[[Config, int], nn.Module]
    postprocess: Callable[[EvalConfig], nn.Module]
    dataset: Callable[[Dataset, Config, str, bool], Dataset]
    inputs: Callable[[Tensor, list[dict[str, Any]]], tuple]


def _single_stage_criterion(config: Config, num_classes: int) -> nn.Module:
    return create_criterion(config.matcher, config.loss, num_classes)


def _single_stage_postprocess(cfg: EvalConfig) -> nn.Module:
    return create_postprocess(cfg)


def _same_dataset(dataset: Dataset, config: Config, split: str, train: bool) -> Dataset:
    return dataset


def _clips_only(clips: Tensor, targets: list[dict[str, Any]]) -> tuple:
    return (clips,)


SINGLE_STAGE = DetectorFamily(
    name="single_stage", criterion=_single_stage_criterion, postprocess=_single_stage_postprocess,
    dataset=_same_dataset, inputs=_clips_only,
)
"""BMViT: the clips in, matched set loss, thresholded tokens out."""


def family_of(model: nn.Module) -> DetectorFamily:
    """The family of ``model`` (looking through a ``DistributedDataParallel`` wrapper): its class's
    ``family`` attribute, else ``SINGLE_STAGE``."""
    return getattr(getattr(model, "module", model), "family", SINGLE_STAGE)


def create_model_from_config(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """Build the detector a ``model`` section describes, with ``num_classes`` action outputs."""
    from bmvit.models import create_model

    cfg.validate()
    backbone_overrides: dict[str, Any] = dict(cfg.backbone_overrides)
    if cfg.input_size is not None:
        backbone_overrides["input_size"] = tuple(int(v) for v in cfg.input_size)
    if cfg.drop_path_rate is not None:
        backbone_overrides["drop_path_rate"] = float(cfg.drop_path_rate)
    if cfg.activation_checkpointing:
        backbone_overrides["use_checkpoint"] = True
    return create_model(
        cfg.name,
        num_classes=cfg.num_classes or num_classes,
        backbone_weights=cfg.backbone_weights,
        weights_format=cfg.weights_format,
        token_selection=cfg.token_selection,
        backbone_overrides=backbone_overrides,
        **_head_overrides(cfg),
    )


def _head_overrides(cfg: ModelConfig) -> dict[str, Any]:
    """The box-parametrisation fields a run config sets (the preset's own values otherwise)."""
    overrides: dict[str, Any] = {}
    if cfg.box_reference is not None:
        overrides["box_reference"] = cfg.box_reference
    if cfg.box_local_range is not None:
        overrides["box_local_range"] = float(cfg.box_local_range)
    return overrides


def create_criterion(matcher_cfg: MatcherConfig, loss_cfg: LossConfig, num_classes: int) -> nn.Module:
    """BMViT's set criterion: Hungarian matching of key-frame tokens to actors, then the losses."""
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
        nonactor_boxes=loss_cfg.nonactor_boxes,
    )


def create_postprocess(cfg: EvalConfig) -> nn.Module:
    """BMViT's outputs -> per-clip detections (actor threshold, optional NMS)."""
    from bmvit.postprocess import PostProcess

    return PostProcess(threshold=cfg.threshold, nms_iou=cfg.nms_iou)


ACT_DEFAULT_PATHS = {
    "ucf101_24": {"annotations": "UCF101v2-GT.pkl", "frames_dir": "rgb-images"},
    "jhmdb_21": {"annotations": "JHMDB-GT.pkl", "frames_dir": "Frames"},
}
"""File names of the ACT / MOC-Detector layout, used where ``data.act.annotations`` / ``data.act.frames_dir`` are null."""


def resolve_data_paths(cfg: DataConfig) -> dict[str, Path | None]:
    """Absolute paths of the annotation files; a clear error when the root lacks them.

    AVA: ``train_csv``, ``val_csv``, ``label_map``, ``exclusions`` (None if absent). UCF101-24 /
    JHMDB-21: ``annotations`` (the ACT ground truth) and ``media`` (the frame or video folder). Custom
    (a root of ``bmvit data import``): AVA's keys (no exclusions) and ``dataset`` (its ``dataset.yaml``).
    """
    cfg.validate()
    if not cfg.root:
        raise FileNotFoundError("data.root is not set: pass data.root=/path/to/dataset (see README, Data)")
    root = Path(cfg.root)
    if not root.is_dir():
        raise FileNotFoundError(f"data.root {root} is not a directory")
    if cfg.format in DataConfig.ACT_FORMATS:
        return _resolve_act_paths(cfg, root)
    if cfg.format == "custom":
        return _resolve_custom_paths(root)
    paths: dict[str, Path | None] = {}
    for key in ("train_csv", "val_csv", "label_map", "exclusions"):
        rel = getattr(cfg.ava, key)
        paths[key] = (root / rel) if rel else None
    for key in ("train_csv", "val_csv", "label_map"):
        if not paths[key].is_file():
            raise FileNotFoundError(f"data.ava.{key}: {paths[key]} does not exist (data.root={root})")
    if paths["exclusions"] is not None and not paths["exclusions"].is_file():
        paths["exclusions"] = None
    return paths


def _resolve_custom_paths(root: Path) -> dict[str, Path | None]:
    from bmvit.data.custom.root import ANNOTATION_FILES, DATASET_FILE, LABEL_MAP_FILE

    paths: dict[str, Path | None] = {
        "dataset": root / DATASET_FILE,
        "train_csv": root / ANNOTATION_FILES["train"],
        "val_csv": root / ANNOTATION_FILES["val"],
        "label_map": root / LABEL_MAP_FILE,
    }
    for key, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(f"data.format=custom: {path} does not exist (data.root={root} must be a root "
                                    "written by `bmvit data import`, see docs/custom_data.md)")
    paths["exclusions"] = None
    return paths


def _resolve_act_paths(cfg: DataConfig, root: Path) -> dict[str, Path | None]:
    defaults = ACT_DEFAULT_PATHS[cfg.format]
    annotations = root / (cfg.act.annotations or defaults["annotations"])
    if not annotations.is_file():
        raise FileNotFoundError(
            f"data.act.annotations: {annotations} does not exist (data.root={root}, data.format={cfg.format}; "
            f"expected ACT's {defaults['annotations']} or a JSON file with the same keys, see docs/ucf_jhmdb.md)"
        )
    if cfg.source == "frames":
        key, media = "data.act.frames_dir", root / (cfg.act.frames_dir or defaults["frames_dir"])
    else:
        key, media = "data.act.videos_dir", root / cfg.act.videos_dir
    if not media.is_dir():
        raise FileNotFoundError(f"{key}: {media} is not a directory (data.root={root}, data.source={cfg.source})")
    return {"annotations": annotations, "media": media}


def data_label_map(cfg: DataConfig) -> dict[int, str]:
    """``{class id: name}`` of the evaluated classes: AVA's label-map file, or every class of the ACT
    ground truth (ids ``1..N`` in the order of its ``labels``)."""
    paths = resolve_data_paths(cfg)
    if cfg.format not in DataConfig.ACT_FORMATS:  # AVA, and an imported root
        from bmvit.data.ava import read_label_map

        return read_label_map(paths["label_map"])
    from bmvit.data.ucf_jhmdb import read_act_annotations

    return read_act_annotations(paths["annotations"]).label_map()


@dataclass
class ClassInfo:
    """The classes a model predicts (trained) and the classes evaluated (the label map)."""

    class_ids: list[int]
    label_map: dict[int, str]

    @property
    def class_names(self) -> list[str]:
        return [self.label_map.get(c, f"class_{c}") for c in self.class_ids]


def read_class_info(data_cfg: DataConfig) -> ClassInfo:
    """Trained classes = every action id in the training annotations (80 on AVA); evaluated = the label map.

    UCF101-24 / JHMDB-21: both are every class of the ACT ground truth (ids ``1..24`` / ``1..21``).
    Custom: both are the classes of its ``dataset.yaml`` (a class without training examples included).
    """
    from bmvit.data.ava import read_annotations, read_label_map

    if data_cfg.format == "custom":
        from bmvit.data.custom.root import read_dataset_info

        resolve_data_paths(data_cfg)
        info = read_dataset_info(data_cfg.root)
        return ClassInfo(class_ids=sorted(info.classes), label_map=dict(info.classes))
    if data_cfg.format in DataConfig.ACT_FORMATS:
        label_map = data_label_map(data_cfg)
        return ClassInfo(class_ids=sorted(label_map), label_map=label_map)
    paths = resolve_data_paths(data_cfg)
    label_map = read_label_map(paths["label_map"])
    rows = read_annotations(paths["train_csv"], skip_bad=data_cfg.skip_bad)
    class_ids = sorted(int(c) for c in np.unique(rows.action_ids) if c >= 0)
    if not class_ids:
        raise ValueError(f"{paths['train_csv']} holds no action labels")
    return ClassInfo(class_ids=class_ids, label_map=label_map)


def create_split_dataset(config: Config, model: nn.Module, split: str, class_ids: list[int], train: bool) -> Dataset:
    """The dataset of ``split`` for ``model``: ``create_dataset`` at the model's input size, wrapped by
    the model's family (``DetectorFamily.dataset``). With ``loss.nonactor_boxes`` its targets keep the
    people who are not actors (``KeyFrameDataset(keep_non_actors=True)``), whom the criterion then trains."""
    base = create_dataset(config.data, split, class_ids, tuple(model.input_size), train,
                          keep_non_actors=config.loss.nonactor_boxes)
    return family_of(model).dataset(base, config, split, train)


def create_dataset(
    cfg: DataConfig, split: str, class_ids: list[int], input_size: tuple[int, int, int], train: bool,
    output: str = "uint8", keep_non_actors: bool = False,
):
    """The dataset of ``split`` ("train" or "val") at the model's input size: an ``AVADataset``, or for
    UCF101-24 / JHMDB-21 a ``KeyFrameDataset`` whose "val" is the test split of ``data.act.split_index``.
    A detector family may wrap it (``DetectorFamily.dataset``; see ``create_split_dataset``).

    Clips are ``uint8 [3, T, H, W]`` (``output="uint8"``, the loaders' hand-off: the engine normalises
    them on the model's device with ``transforms.normalize_clips``) or normalised float32 (``"float"``).
    ``keep_non_actors``: targets keep the annotated people without a trained action, with ``is_actor``
    (``loss.nonactor_boxes``; see ``KeyFrameDataset``)."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    num_frames, height, width = input_size
    if height != width:
        raise ValueError(f"the model input must be square, got {height}x{width}")
    if cfg.format in DataConfig.ACT_FORMATS:
        return _act_dataset(cfg, split, class_ids, num_frames, height, train, output, keep_non_actors)
    if cfg.format == "custom":
        return _custom_dataset(cfg, split, class_ids, num_frames, height, train, output, keep_non_actors)
    from bmvit.data.ava import AVA_VALID_SECONDS
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
        time_offset=cfg.ava.time_offset,
        fps=cfg.fps,
        valid_seconds=AVA_VALID_SECONDS,
        exclusions=paths["exclusions"] if split == "val" else None,
        **_augmentation(cfg),
        cache_videos=cfg.cache_videos,
        skip_bad=cfg.skip_bad,
        output=output,
        keep_non_actors=keep_non_actors,
    )


def resolve_normalisation(cfg: DataConfig, weights: Normalisation | None, weights_given: bool) -> Normalisation:
    """The mean/std a run feeds its model: ``data.mean/std`` when set, else the weights' own.

    Set explicitly and different from what the weights were trained with, they are used as asked, with a
    warning naming both. Left null with weights whose normalisation cannot be known (a file that matches no
    record), Kinetics' values are assumed, with a warning saying so; with no pretrained weights at all,
    Kinetics' values without one.
    """
    if cfg.mean is not None and cfg.std is not None:
        chosen = Normalisation(tuple(cfg.mean), tuple(cfg.std), "data.mean/std")
        if weights is not None and not (_close(chosen.mean, weights.mean) and _close(chosen.std, weights.std)):
            warnings.warn(f"data.mean/std {list(chosen.mean)}/{list(chosen.std)} differ from the normalisation the "
                          f"weights were trained with, {list(weights.mean)}/{list(weights.std)} ({weights.source}); "
                          "using data.mean/std as set (leave them null to use the weights' own)", stacklevel=2)
        return chosen
    if cfg.mean is not None or cfg.std is not None:
        raise ConfigError("set both data.mean and data.std, or neither (null: the weights' own)")
    if weights is not None:
        return weights
    if weights_given:
        warnings.warn("the pretrained weights match no known record, so their normalisation cannot be known; "
                      f"assumed Kinetics' mean {list(KINETICS_MEAN)} and std {list(KINETICS_STD)} "
                      "(set data.mean/std to choose)", stacklevel=2)
    return Normalisation(KINETICS_MEAN, KINETICS_STD, "Kinetics' default")


def clip_normalisation(cfg: DataConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` of the data section, Kinetics' where null: a run resolves them against its weights
    first (``resolve_normalisation``); a dataset or evaluation built on its own gets the default."""
    return (tuple(cfg.mean) if cfg.mean is not None else KINETICS_MEAN,
            tuple(cfg.std) if cfg.std is not None else KINETICS_STD)


def _close(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= 1e-6 for x, y in zip(a, b))


def _augmentation(cfg: DataConfig) -> dict[str, Any]:
    """The transform settings of the data section (``keyframe_transform`` drops augmentation outside training).
    A null mean/std (not resolved against weights, e.g. a dataset built on its own) is Kinetics'."""
    mean, std = clip_normalisation(cfg)
    return {
        "mean": mean,
        "std": std,
        "resize": cfg.resize,
        "hflip": cfg.hflip,
        "scale_jitter": tuple(cfg.scale_jitter),
        "color_jitter": cfg.color_jitter,
        "flip_swap_class_ids": [tuple(int(v) for v in pair) for pair in cfg.flip_swap_pairs],
    }


def _act_dataset(
    cfg: DataConfig, split: str, class_ids: list[int], num_frames: int, size: int, train: bool, output: str = "uint8",
    keep_non_actors: bool = False,
):
    """UCF101-24 / JHMDB-21 key frames: every annotated frame of the train videos; for "val" every frame
    of the test videos (``data.act.eval_all_frames``, ACT's frame-mAP scores detections on unannotated frames
    too). Key-frame ``timestamp`` is the 1-based frame number, which evaluation rows carry."""
    from bmvit.data.dataset import keyframe_transform
    from bmvit.data.ucf_jhmdb import read_act_annotations, ucf_jhmdb_dataset

    paths = resolve_data_paths(cfg)
    ann = read_act_annotations(paths["annotations"])
    transform = keyframe_transform(class_ids, size, train, **_augmentation(cfg), output=output)
    frames = cfg.source == "frames"
    dataset = ucf_jhmdb_dataset(
        ann,
        cfg.format,
        "train" if split == "train" else "test",
        split_index=cfg.act.split_index,
        frames_root=paths["media"] if frames else None,
        video_root=None if frames else paths["media"],
        video_ext=cfg.act.video_ext,
        num_frames=num_frames,
        stride=cfg.sampling_stride,
        class_ids=class_ids,
        include_unannotated=split != "train" and cfg.act.eval_all_frames,
        skip_bad=cfg.skip_bad,
        transform=transform,
        keep_non_actors=keep_non_actors,
    )
    dataset.cache_videos = cfg.cache_videos
    return dataset


def _custom_dataset(
    cfg: DataConfig, split: str, class_ids: list[int], num_frames: int, size: int, train: bool, output: str = "uint8",
    keep_non_actors: bool = False,
):
    """The key frames of a root written by ``bmvit data import``: every video at its own frame rate, clip
    strides counted on a ``data.fps`` timeline."""
    from bmvit.data.custom.root import custom_dataset, read_dataset_info
    from bmvit.data.dataset import keyframe_transform
    from bmvit.data.transforms import min_decode_size

    resolve_data_paths(cfg)
    augmentation = _augmentation(cfg)
    return custom_dataset(
        read_dataset_info(cfg.root),
        split,
        class_ids,
        num_frames=num_frames,
        stride=cfg.sampling_stride,
        sample_fps=cfg.fps,
        transform=keyframe_transform(class_ids, size, train, **augmentation, output=output),
        cache_videos=cfg.cache_videos,
        decode_size=min_decode_size(size, augmentation["scale_jitter"]),  # as AVADataset: the same pixels
        keep_non_actors=keep_non_actors,
    )


def create_eval_loader(config: Config, model: nn.Module, classes: ClassInfo,
                       device: torch.device | None = None, decode: str | None = None) -> Iterable:
    """The val split's loader for ``model``, built once per run: this rank's share of the key frames,
    in order; a clip that cannot be read becomes an empty one (``EvalItems``). ``decode`` overrides
    ``data.decode`` (training passes the choice it made for its own loader); see ``decoding_loader``."""
    from bmvit import distributed as dist_utils
    from bmvit.data.loader import EvalItems, ShardSampler, create_loader, default_num_workers

    dataset = EvalItems(create_split_dataset(config, model, "val", classes.class_ids, train=False),
                        (3, *model.input_size))
    sampler = ShardSampler(len(dataset), dist_utils.get_rank(), dist_utils.get_world_size(), shuffle=False)
    num_workers = default_num_workers(config.data.num_workers)

    def make(items: Dataset) -> DataLoader:
        return create_loader(items, sampler, config.eval.batch_size, num_workers, 0, device)

    loader, _ = decoding_loader(config.data, device or torch.device("cpu"), dataset, make, on_bad="zero",
                                setting=decode, because="as the training loader" if decode else None,
                                probe_batches=max(8, 3 * num_workers))
    return loader


@dataclass(frozen=True)
class Decoding:
    """Where a loader's JPEG frames are decoded: ``where`` is ``"workers"`` or ``"device"``; ``message`` says
    why, with the measured clips/s when ``data.decode=auto`` compared the two."""

    where: str
    message: str


def decoding_loader(
    cfg: DataConfig,
    device: torch.device,
    items: Dataset,
    make: Callable[[Dataset], DataLoader],
    *,
    on_bad: str,
    setting: str | None = None,
    because: str | None = None,
    probe_batches: int = 8,
) -> tuple[Iterable, Decoding]:
    """The loader of ``items`` (``SeededItems`` or ``EvalItems`` over a ``KeyFrameDataset``), decoding JPEG
    frames where ``data.decode`` (or ``setting``) says, and where that is.

    ``cpu``: in the loader workers (``make(items)``). ``device``: on ``device`` with nvJPEG
    (``data.device_decode``); an error naming the reason when that cannot be done. ``auto``: on the device
    only where that can be done and ``compare_loaders`` measures it faster over ``probe_batches`` batches
    (the clips/s summed over processes, so every process chooses alike; a device path that raises while
    measured, on any process, is not chosen and the message gives its error); elsewhere in the workers.
    ``on_bad``: what the device path does with a clip that does not decode (``DeviceDecodedBatches``).
    ``because``: why ``setting`` overrides ``data.decode``, for the message. The returned ``Decoding`` says
    where and why; its message is empty where a model on the CPU leaves ``auto`` nothing to choose.
    """
    from bmvit import distributed as dist_utils
    from bmvit.data.device_decode import DeviceDecodedBatches, compare_loaders, encoded_items, nvjpeg_decoder

    setting = setting or cfg.decode
    said = because or f"data.decode={setting}"
    if setting == "cpu":
        return make(items), Decoding("workers", f"JPEG frames decoded in the loader workers ({said})")
    base = items.dataset
    problem = _device_decode_problem(cfg, base)
    decoder, why = (None, problem) if problem else nvjpeg_decoder(device)
    if decoder is None:
        if setting == "device":
            raise ConfigError(f"data.decode=device cannot be used{f' ({because})' if because else ''}: {why}")
        # A model on the CPU leaves auto nothing to choose: nothing to say either.
        message = f"frames decoded in the loader workers (data.decode=auto: {why})" if device.type == "cuda" else ""
        return make(items), Decoding("workers", message)

    def on_device() -> DeviceDecodedBatches:
        return DeviceDecodedBatches(make(encoded_items(items)), base.apply_transform, decoder, device, on_bad=on_bad)

    if setting == "device":
        return on_device(), Decoding("device", f"JPEG frames decoded on the device by {why} ({said})")
    combine = dist_utils.all_reduce_sum if dist_utils.is_dist() else None
    chosen, rates, errors = compare_loaders({"workers": lambda: make(items), "device": on_device}, probe_batches,
                                            device, combine, may_fail=("device",))
    if rates["device"] == float("-inf"):  # failed here, or on another process (its rate summed in)
        failure = errors.get("device", "on another process")
        message = (f"data.decode=auto: decoding on the device ({why}) failed while measured ({failure}); "
                   f"decoding in the loader workers, {rates['workers']:.1f} clips/s over {probe_batches} batches")
    else:
        message = (f"data.decode=auto: {rates['device']:.1f} clips/s decoding on the device ({why}), "
                   f"{rates['workers']:.1f} in the loader workers, over {probe_batches} batches: decoding "
                   f"{'on the device' if chosen == 'device' else 'in the workers'}")
    return (on_device() if chosen == "device" else make(items)), Decoding(chosen, message)


def _device_decode_problem(cfg: DataConfig, dataset: Dataset) -> str | None:
    """Why this dataset's frames cannot be decoded on the device, or None when they can."""
    from bmvit.data.dataset import KeyFrameDataset

    if cfg.source != "frames":
        return "the frames come from video files (data.source=video); the device decodes JPEG frame folders"
    if not isinstance(dataset, KeyFrameDataset):
        return f"the model's dataset ({type(dataset).__name__}) is not a key-frame dataset of frame folders"
    for ref in dataset.videos.values():
        names = ref.frame_paths[:1] if ref.frame_paths else [ref.pattern]
        if ref.kind != "frames" or not all(n.lower().endswith((".jpg", ".jpeg")) for n in names):
            return f"the frames of video {ref.path} are not JPEG files"
    return None


def _layer_id(name: str, num_layers: int) -> int:
    """Depth of a parameter for layer-wise LR decay: stem 0, block i -> i + 1, the rest (norm, heads) last."""
    if name.startswith("backbone."):
        match = re.search(r"\.blocks\.(\d+)\.", name)
        if match:
            return int(match.group(1)) + 1
        if re.search(r"(patch_embed|cls_token|pos_embed|rel_pos)", name) and ".blocks." not in name:
            return 0
    return num_layers + 1


def _block_stages(model: nn.Module, num_blocks: int) -> list[int]:
    """The stage of each backbone block, read from the backbone's config: MViT's ``depths`` or Hiera's
    ``stages`` (blocks per stage). Raises ``ConfigError`` for a backbone without stages (ViT), rather than
    falling back to blocks: a run asked for per-stage decay would otherwise train with another schedule."""
    backbone = getattr(model, "backbone", None)
    cfg = getattr(backbone, "cfg", None)
    depths = next((getattr(cfg, key) for key in ("depths", "stages") if isinstance(getattr(cfg, key, None), tuple)),
                  None)
    if depths is None:
        raise ConfigError(f"optim.layer_decay_unit=stage needs a hierarchical backbone (MViT, Hiera) with "
                          f"stages; {type(backbone).__name__} has none: use optim.layer_decay_unit=block")
    if sum(depths) != num_blocks:
        raise ConfigError(f"optim.layer_decay_unit=stage: the backbone's stages {tuple(depths)} hold {sum(depths)} "
                          f"blocks, its parameters name {num_blocks}")
    return [s for s, depth in enumerate(depths) for _ in range(depth)]


def freeze_backbone(model: nn.Module, frozen_blocks: int) -> int:
    """Stop training the first ``frozen_blocks`` backbone blocks and its stem (patch embedding, position
    tables outside the blocks); -1: the whole backbone. Their parameters get ``requires_grad=False``, so
    the optimiser (``create_optimizer``) and DDP leave them out. Returns the number of parameters frozen."""
    if frozen_blocks == 0:
        return 0
    names = [n for n, _ in model.named_parameters() if n.startswith("backbone.")]
    num_layers = max((int(m.group(1)) for n in names if (m := re.search(r"\.blocks\.(\d+)\.", n))), default=-1) + 1
    if frozen_blocks > num_layers:
        raise ConfigError(f"optim.frozen_blocks={frozen_blocks} but the backbone has {num_layers} blocks "
                          "(-1 freezes all of it)")
    frozen = 0
    for name, param in model.named_parameters():
        if not name.startswith("backbone."):
            continue
        if frozen_blocks == -1 or _layer_id(name, num_layers) <= frozen_blocks:
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


def create_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW with layer-wise LR decay and no weight decay on norms, biases and position tables.

    A parameter at depth ``d`` of ``n`` (stem 0, units 1..n, the rest n + 1) gets ``layer_decay ** (n + 1 - d)``
    of the peak rate. The unit is a block (``optim.layer_decay_unit=block``: ``n`` = the number of blocks) or
    a stage of a hierarchical backbone (``stage``: every block of stage ``s`` at depth ``s + 1``).

    On CUDA the fused AdamW kernel updates every parameter in a few launches instead of several per
    tensor; the CPU keeps the default implementation, which is what the CPU tests pin down."""
    no_decay = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    num_layers = max((int(m.group(1)) for n in names if (m := re.search(r"\.blocks\.(\d+)\.", n))), default=-1) + 1
    # Depth of every _layer_id value in decay units: the identity for blocks, a block's stage for stages.
    if cfg.layer_decay_unit == "stage":
        stages = _block_stages(model, num_layers)
        num_units = stages[-1] + 1 if stages else 0
        unit_of = [0, *(s + 1 for s in stages), num_units + 1]
    elif cfg.layer_decay_unit == "block":
        num_units, unit_of = num_layers, list(range(num_layers + 2))
    else:
        raise ConfigError(f"optim.layer_decay_unit must be block or stage, got {cfg.layer_decay_unit!r}")
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer = unit_of[_layer_id(name, num_layers)]
        decay = not (param.ndim <= 1 or name in no_decay or name.endswith(".bias"))
        scale = cfg.layer_decay ** (num_units + 1 - layer)
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
    return torch.optim.AdamW(param_groups, lr=cfg.lr, fused=True if on_cuda else None)


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
