"""Typed run configuration: dataclasses are the single source of defaults.

A YAML file (``--config F``) and dotted ``key=value`` arguments only override fields that exist;
an unknown key or a value of the wrong type is an error that names the key. Every field carries
its meaning in ``metadata["help"]``, which ``bmvit config show`` prints.

The tree has one section per component (model, data, matcher, loss, optim, train, eval), and each
component is built from its own section only.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import typing
import warnings
from dataclasses import dataclass, field
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml


def _f(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with its documentation attached."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class ModelConfig:
    """Which detector to build. The resolved model config is also stored in every checkpoint.

    A field left at None takes the preset's own value (or, for ``num_classes``, the data's)."""

    name: str = _f("bmvit_mvit_tiny", "detector preset from bmvit.list_models()")
    num_classes: int | None = _f(None, "action classes predicted; null = the trained classes found in the training data")
    input_size: list | None = _f(None, "clip size [T, H, W] fed to the model; null = the preset's own")
    drop_path_rate: float | None = _f(None, "stochastic depth of the backbone; null = the preset's own")
    activation_checkpointing: bool = _f(False, "recompute backbone blocks in backward to save memory")
    token_selection: str = _f("central", "key-frame tokens decoded: central | temporal_mean | all")
    backbone_weights: str | None = _f(None, "pretrained backbone weights file (torchvision, slowfast, videomae, hiera, "
                                            "bmvit) or the name of weights shipped in bmvit/assets; null = random")
    weights_format: str | None = _f(None, "format of backbone_weights; null = detect from the keys")
    init_weights: str | None = _f(None, "a trained bmvit detector file (or shipped weights' name) whose every tensor, "
                                        "heads included, starts the run; same architecture and classes; null = none")
    backbone_overrides: dict = _f({}, "extra fields of the backbone config, e.g. {depths: [1, 1, 2, 1]}")
    box_reference: str | None = _f(None, "box parametrisation: token_center | token_local | none; null = the preset's")
    box_local_range: float | None = _f(None, "token_local: reach of a box centre from its token's cell, in cells; "
                                             "null = the preset's")

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the key when a model value is out of its allowed set."""
        if self.num_classes is not None and self.num_classes < 1:
            raise ConfigError(f"model.num_classes must be >= 1 (or null for the data's), got {self.num_classes}")
        if self.input_size is not None and (len(self.input_size) != 3 or any(int(v) < 1 for v in self.input_size)):
            raise ConfigError(f"model.input_size must be [T, H, W] (or null for the preset's), got {self.input_size}")
        if self.drop_path_rate is not None and not 0.0 <= self.drop_path_rate < 1.0:
            raise ConfigError(f"model.drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        if self.token_selection not in ("central", "temporal_mean", "all"):
            raise ConfigError(f"model.token_selection must be central, temporal_mean or all, got {self.token_selection!r}")
        if self.box_reference not in (None, "token_center", "token_local", "none"):
            raise ConfigError(f"model.box_reference must be token_center, token_local or none, got {self.box_reference!r}")
        if self.box_local_range is not None and self.box_local_range <= 0:
            raise ConfigError(f"model.box_local_range must be > 0, got {self.box_local_range}")


@dataclass
class AVAFilesConfig:
    """AVA's files (data.format: ava), relative to data.root."""

    train_csv: str = _f("annotations/ava_train_v2.2.csv", "training annotations")
    val_csv: str = _f("annotations/ava_val_v2.2.csv", "validation annotations")
    label_map: str = _f("annotations/ava_action_list_v2.2_for_activitynet_2019.pbtxt", "label map of the evaluated classes")
    exclusions: str | None = _f("annotations/ava_val_excluded_timestamps_v2.2.csv", "excluded val key frames "
                                                                                     "(null = none)")
    time_offset: float = _f(900.0, "second of the annotation timeline at video time 0 (AVA: 900)")


@dataclass
class ACTFilesConfig:
    """UCF101-24 / JHMDB-21's files and protocol (data.format: ucf101_24 | jhmdb_21), relative to data.root."""

    annotations: str | None = _f(None, "ACT ground truth (.pkl or .json); null = UCF101v2-GT.pkl / JHMDB-GT.pkl")
    frames_dir: str | None = _f(None, "source=frames: folder of <video>/%05d.jpg|png; null = rgb-images / Frames")
    videos_dir: str = _f("videos", "source=video: folder of <video><video_ext>")
    video_ext: str = _f(".avi", "source=video: extension of the video files")
    split_index: int = _f(1, "which train/test split (1-based; UCF101-24 has 1, JHMDB-21 has 3)")
    eval_all_frames: bool = _f(True, "score every frame of the test videos (ACT protocol), not only annotated ones")


@dataclass
class DataConfig:
    """Where the data lives (AVA format, UCF101-24, JHMDB-21) and how clips are sampled and augmented."""

    format: str = _f(
        "ava", "dataset format: ava (AVA CSVs, AVA frame-mAP) | ucf101_24 | jhmdb_21 (ACT tube pickle, ACT frame-mAP) | "
               "custom (a root written by bmvit data import: dataset.yaml, AVA frame-mAP)"
    )
    root: str = _f("", "dataset root (annotations/, frame_lists/, videos/ or frames/)")
    source: str = _f("video", "clip source: video (decode files with PyAV) | frames (jpg folders)")
    sampling_stride: int = _f(4, "frames between two sampled frames of a clip (16x4 in the paper)")
    fps: float = _f(30.0, "frame rate that maps seconds to frame indices")
    resize: str = _f("square", "frame to input: square (resize the whole frame) | letterbox (keep aspect, pad) | "
                               "short_side (keep aspect, short side to the input, crop the long side: random in "
                               "training, centre in evaluation; people outside the crop are not seen)")
    mean: list | None = _f(None, "per-channel mean (RGB, [0, 1] scale); null = the pretrained weights' own (their "
                                 "record, or the model file of init_weights), Kinetics' 0.45 when none say")
    std: list | None = _f(None, "per-channel std; null = the weights' own, Kinetics' 0.225 when none say")
    hflip: float = _f(0.5, "probability of a horizontal flip in training")
    flip_swap_pairs: list = _f([], "action-id pairs a horizontal flip exchanges, e.g. [[3, 4]] for move_left/right")
    scale_jitter: list = _f([1.0, 1.0], "random zoom range in training (1.0 = none)")
    color_jitter: float = _f(0.0, "strength of brightness/contrast/saturation jitter in training")
    decode: str = _f("auto", "where JPEG frames (data.source=frames) are decoded: cpu (the loader workers) | device "
                             "(the training GPU, nvJPEG through torchvision) | auto (the GPU only where it can be "
                             "used and is measured faster at start-up, else the workers)")
    cache_videos: bool = _f(False, "decode each video once per worker and keep it in memory (small datasets)")
    num_workers: int = _f(-1, "data-loader worker processes per rank; -1 = the CPU cores per process on this node")
    max_bad_clips: float = _f(0.001, "fraction of training clips that may be unreadable (skipped, logged and counted) "
                                     "before the run stops; 0 = stop at the first")
    skip_bad: bool = _f(False, "skip (and count) malformed annotation rows instead of stopping")
    ava: AVAFilesConfig = field(default_factory=AVAFilesConfig)
    act: ACTFilesConfig = field(default_factory=ACTFilesConfig)

    FORMATS = ("ava", "ucf101_24", "jhmdb_21", "custom")
    DECODE_SETTINGS = ("auto", "cpu", "device")
    NUM_SPLITS = {"ava": 1, "ucf101_24": 1, "jhmdb_21": 3, "custom": 1}
    ACT_FORMATS = ("ucf101_24", "jhmdb_21")

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the key when a data value is out of its allowed set."""
        if self.format not in self.FORMATS:
            raise ConfigError(f"data.format must be one of {' | '.join(self.FORMATS)}, got {self.format!r}")
        if self.source not in ("video", "frames"):
            raise ConfigError(f"data.source must be video or frames, got {self.source!r}")
        if self.decode not in self.DECODE_SETTINGS:
            raise ConfigError(f"data.decode must be auto, cpu or device, got {self.decode!r}")
        if self.resize not in ("square", "letterbox", "short_side"):
            raise ConfigError(f"data.resize must be square, letterbox or short_side, got {self.resize!r}")
        if self.sampling_stride < 1:
            raise ConfigError(f"data.sampling_stride must be >= 1, got {self.sampling_stride}")
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None and (len(value) != 3 or not all(isinstance(v, (int, float)) for v in value)):
                raise ConfigError(f"data.{key} must be three numbers (RGB) or null, got {value}")
        if self.std is not None and any(v <= 0 for v in self.std):
            raise ConfigError(f"data.std must be > 0, got {self.std}")
        if self.num_workers < -1:
            raise ConfigError(f"data.num_workers must be >= 0, or -1 for one per CPU core of this rank; got {self.num_workers}")
        if not 0.0 <= self.max_bad_clips < 1.0:
            raise ConfigError(f"data.max_bad_clips must be a fraction in [0, 1), got {self.max_bad_clips}")
        if self.decode == "device" and self.source != "frames":
            raise ConfigError("data.decode=device decodes JPEG frame folders: set data.source=frames, or data.decode "
                              "to auto or cpu")
        if self.format == "custom" and self.source != "video":
            raise ConfigError("data.source must be video for data.format=custom (an imported root holds videos)")
        splits = self.NUM_SPLITS[self.format]
        if self.format in self.ACT_FORMATS and not 1 <= self.act.split_index <= splits:
            raise ConfigError(f"data.act.split_index must be 1..{splits} for {self.format}, got {self.act.split_index}")


@dataclass
class PersonBoxConfig:
    """The two-stage baseline's person boxes (models named twostage_*; ignored by BMViT)."""

    train_boxes: str | None = _f(None, "detector person-box CSV for training, relative to data.root (null = the "
                                       "annotated actors only)")
    val_boxes: str | None = _f(None, "detector person-box CSV whose boxes are classified in evaluation (required)")
    box_threshold: float = _f(0.8, "keep person boxes scoring >= this (PySlowFast's 0.8)")
    box_jitter: float = _f(0.05, "training box jitter, fraction of the box size")

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the key when a value is out of range."""
        if not 0.0 <= self.box_threshold <= 1.0:
            raise ConfigError(f"twostage.box_threshold must be in [0, 1], got {self.box_threshold}")
        if not 0.0 <= self.box_jitter < 0.5:
            raise ConfigError(f"twostage.box_jitter must be in [0, 0.5), got {self.box_jitter}")


@dataclass
class MatcherConfig:
    """Costs of the Hungarian matching between key-frame tokens and ground-truth actors."""

    cost_actor: float = _f(1.0, "weight of -p(actor)")
    cost_bbox: float = _f(5.0, "weight of the L1 distance of cxcywh boxes")
    cost_giou: float = _f(2.0, "weight of -GIoU")
    cost_action: float = _f(0.0, "weight of the action cost (0 = off)")
    cost_center: float = _f(0.0, "weight of the distance (grid cells, L1) from a token's cell centre to the box centre")

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the key when a cost is negative."""
        _non_negative(self, "matcher")


@dataclass
class LossConfig:
    """Weights of the set criterion."""

    eos_coef: float = _f(0.1, "weight of the no-actor class in the actor cross-entropy")
    weight_actor: float = _f(1.0, "actor/no-actor cross-entropy")
    weight_bbox: float = _f(5.0, "L1 box loss on matched tokens")
    weight_giou: float = _f(2.0, "GIoU loss on matched tokens")
    weight_action: float = _f(1.0, "action loss on matched tokens")
    action_loss: str = _f("bce", "bce | focal")
    o2m_weight: float = _f(0.0, "one-to-many auxiliary box and action losses (H-DETR hybrid matching), relative "
                                "weight; 0 = off")
    o2m_repeats: int = _f(4, "tokens per actor in the one-to-many matching")
    nonactor_boxes: bool = _f(False, "box loss on people who are not actors too (the supplementary's Sec. 3 "
                                     "'additional bounding boxes'; off, as in the paper's final model): the datasets "
                                     "keep annotated people without a trained action in the targets, the matcher matches "
                                     "tokens to them as to actors, and a matched token learns their box (L1 + GIoU) and "
                                     "the no-actor class, never an action (docs/ablations.md#non-actor-boxes)")

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the key when a weight is negative or the loss unknown."""
        _non_negative(self, "loss", skip=("action_loss", "o2m_repeats"))
        if self.action_loss not in ("bce", "focal"):
            raise ConfigError(f"loss.action_loss must be bce or focal, got {self.action_loss!r}")
        if self.o2m_repeats < 1:
            raise ConfigError(f"loss.o2m_repeats must be >= 1, got {self.o2m_repeats}")


@dataclass
class OptimConfig:
    """AdamW with a cosine schedule, warm-up and layer-wise learning-rate decay."""

    lr: float = _f(1e-4, "peak learning rate of the backbone's last layer for the global batch")
    head_lr_mult: float = _f(1.0, "learning-rate multiplier of the projection and heads")
    layer_decay: float = _f(1.0, "layer-wise learning-rate decay of the backbone (1.0 = off)")
    layer_decay_unit: str = _f("block", "what one layer_decay step spans: block (every backbone block) | stage (every "
                                         "stage of a hierarchical backbone, MViT or Hiera; ViT has none: an error)")
    weight_decay: float = _f(0.05, "AdamW weight decay (not on norms, biases, rel-pos tables)")
    warmup_epochs: float = _f(1.0, "linear warm-up length in epochs")
    min_lr_ratio: float = _f(0.01, "final learning rate as a fraction of the peak")
    clip_grad: float = _f(1.0, "max gradient norm (0 = off)")
    frozen_blocks: int = _f(0, "backbone blocks kept at their pretrained values, from the input (the patch "
                               "embedding with them); -1 = the whole backbone; 0 = none (small datasets: freeze some)")

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the key when a value is out of range."""
        _non_negative(self, "optim")
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if not 0.0 < self.layer_decay <= 1.0:
            raise ConfigError(f"optim.layer_decay must be in (0, 1] (1 = off), got {self.layer_decay}")
        if self.layer_decay_unit not in ("block", "stage"):
            raise ConfigError(f"optim.layer_decay_unit must be block or stage, got {self.layer_decay_unit!r}")
        if self.min_lr_ratio > 1.0:
            raise ConfigError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.frozen_blocks < -1:
            raise ConfigError(f"optim.frozen_blocks must be >= 0, or -1 for the whole backbone; got {self.frozen_blocks}")


@dataclass
class TrainConfig:
    """The training run."""

    out_dir: str = _f("runs/train", "run folder: config, checkpoints, logs, metrics")
    epochs: int = _f(10, "training epochs")
    batch_size: int = _f(8, "clips per process per step")
    global_batch_size: int = _f(0, "clips per optimiser step over all processes; sets batch_size to it / (processes x "
                                   "grad_accum), which must divide it; 0 = batch_size as given")
    grad_accum: int = _f(1, "steps of gradient accumulation per optimiser step")
    amp: str = _f("auto", "autocast: auto (bf16 on CUDA, off on CPU) | bf16 | off")
    eval_every: int = _f(1, "evaluate every N epochs (and after the last)")
    seed: int = _f(0, "random seed")
    device: str = _f("auto", "auto | cpu | cuda")
    log_every: int = _f(10, "console log interval in steps")
    max_steps: int = _f(0, "stop after this many optimiser steps (0 = no limit); for smoke tests")
    max_minutes: float = _f(0.0, "stop training after this many minutes, then evaluate (0 = no limit); checked "
                                 "every log_every steps, by all ranks together")
    checkpoint_every_steps: int = _f(0, "also write last.safetensors every this many optimiser steps, so --resume "
                                        "continues mid-epoch (0 = at the end of each epoch only)")
    compile: bool = _f(False, "torch.compile the backbone (CUDA; measure with `bmvit bench --device cuda` first)")
    keep: str = _f("last", "the epoch model.safetensors and the *_val files hold: last (the headline, as PySlowFast "
                           "reports) | best (the best val mAP; selected on the val set itself)")
    tensorboard: bool = _f(True, "write TensorBoard event files when tensorboard is installed")

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the key when a training value is out of range."""
        for key in ("epochs", "batch_size", "grad_accum", "eval_every", "log_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("max_steps", "checkpoint_every_steps", "global_batch_size"):
            if getattr(self, key) < 0:
                raise ConfigError(f"train.{key} must be >= 0 (0 = off), got {getattr(self, key)}")
        if self.amp not in ("auto", "bf16", "off"):
            raise ConfigError(f"train.amp must be auto, bf16 or off, got {self.amp!r}")
        if self.keep not in ("last", "best"):
            raise ConfigError(f"train.keep must be last or best, got {self.keep!r}")
        if self.device != "auto" and self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ConfigError(f"train.device must be auto, cpu or cuda, got {self.device!r}")


@dataclass
class EvalConfig:
    """Evaluation and post-processing."""

    threshold: float = _f(0.3, "tokens with p(actor) > threshold become detections")
    nms_iou: float = _f(0.0, "0 = no NMS (the method's default); else class-agnostic greedy NMS of the kept "
                             "tokens at this box IoU, in (0, 1)")
    max_rows_per_keyframe: int = _f(0, "AVA rows written per key frame, highest scores first; 0 = every row above "
                                       "the threshold (the activitynet protocol applies its own cap of 50 when scoring)")
    protocol: str = _f("activitynet", "the headline protocol of AVA runs: activitynet (the official evaluator) | "
                                      "slowfast (PySlowFast's copy, no cap); both are computed and reported")
    batch_size: int = _f(8, "clips per process in evaluation")

    PROTOCOLS = ("activitynet", "slowfast")

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the key when a post-processing value is out of range."""
        if not 0.0 <= self.threshold < 1.0:
            raise ConfigError(f"eval.threshold must be in [0, 1), got {self.threshold}")
        if not 0.0 <= self.nms_iou < 1.0:
            raise ConfigError(f"eval.nms_iou must be in [0, 1) (0 = no NMS), got {self.nms_iou}")
        if self.max_rows_per_keyframe < 0:
            raise ConfigError(f"eval.max_rows_per_keyframe must be >= 0 (0 = no cap), got {self.max_rows_per_keyframe}")
        if self.protocol not in self.PROTOCOLS:
            raise ConfigError(f"eval.protocol must be one of {' | '.join(self.PROTOCOLS)}, got {self.protocol!r}")
        if self.batch_size < 1:
            raise ConfigError(f"eval.batch_size must be >= 1, got {self.batch_size}")


@dataclass
class Config:
    """The whole run configuration."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    matcher: MatcherConfig = field(default_factory=MatcherConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    twostage: PersonBoxConfig = field(default_factory=PersonBoxConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Every section's checks: a bad value fails before anything is built, naming its key."""
        for section in dataclasses.fields(self):
            getattr(self, section.name).validate()


def _non_negative(section: Any, name: str, skip: tuple[str, ...] = ()) -> None:
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if f.name not in skip and isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise ConfigError(f"{name}.{f.name} must be >= 0, got {value}")


class ConfigError(ValueError):
    """A configuration key or value that does not fit the dataclasses."""


MOVED_KEYS: dict[str, str] = {
    "data.train_csv": "data.ava.train_csv",
    "data.val_csv": "data.ava.val_csv",
    "data.label_map": "data.ava.label_map",
    "data.exclusions": "data.ava.exclusions",
    "data.time_offset": "data.ava.time_offset",
    "data.annotations": "data.act.annotations",
    "data.frames_dir": "data.act.frames_dir",
    "data.videos_dir": "data.act.videos_dir",
    "data.video_ext": "data.act.video_ext",
    "data.split_index": "data.act.split_index",
    "data.eval_all_frames": "data.act.eval_all_frames",
    "data.person_boxes_train": "twostage.train_boxes",
    "data.person_boxes_val": "twostage.val_boxes",
    "data.person_box_threshold": "twostage.box_threshold",
    "data.person_box_jitter": "twostage.box_jitter",
}
"""Keys that moved, old -> new. The old names are read for one release, with a warning naming the
new key (a checkpoint's stored run config is read without one)."""


REMOVED_KEYS: dict[str, tuple[Any, str]] = {
    "data.first_second": (902, "AVA's key frames are seconds 902-1798 (bmvit.data.ava.AVA_VALID_SECONDS)"),
    "data.last_second": (1798, "AVA's key frames are seconds 902-1798 (bmvit.data.ava.AVA_VALID_SECONDS)"),
    "optim.betas": ([0.9, 0.999], "AdamW runs with betas (0.9, 0.999)"),
}
"""Keys that are gone, with the only value they may still hold for one release and why."""

LEGACY_NONE: dict[str, Any] = {
    "model.num_classes": 0,
    "model.input_size": [],
    "model.drop_path_rate": -1.0,
    "model.backbone_weights": "",
    "model.weights_format": "",
    "model.init_weights": "",
    "model.box_reference": "",
    "model.box_local_range": 0.0,
    "data.act.annotations": "",
    "data.act.frames_dir": "",
    "data.ava.exclusions": "",
}
"""Values that meant "not set" before these fields took null; read as null. An empty ``key=`` on the
command line is null too, for every field that takes null."""


def _move_old_keys(data: dict[str, Any], where: str, warn: bool, stacklevel: int = 4) -> dict[str, Any]:
    """``data`` (nested sections) with the keys of ``MOVED_KEYS`` under their new names, the keys of
    ``REMOVED_KEYS`` dropped when they hold their only value, and ``LEGACY_NONE`` values as None."""
    data = copy.deepcopy(data)
    for old, (only, why) in REMOVED_KEYS.items():
        section, key = old.split(".")
        if isinstance(data.get(section), dict) and key in data[section]:
            value = data[section].pop(key)
            if value != only and not (isinstance(value, (list, tuple)) and list(value) == only):
                raise ConfigError(f"{where}: config key {old!r} is gone ({why}); it cannot be {value!r}")
            if warn:
                warnings.warn(f"{where}: config key {old!r} is gone ({why}); remove it", FutureWarning,
                              stacklevel=stacklevel)
    for old, new in MOVED_KEYS.items():
        *old_sections, old_key = old.split(".")
        parent = data
        for name in old_sections:
            parent = parent.get(name) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or old_key not in parent:
            continue
        value = parent.pop(old_key)
        *new_sections, new_key = new.split(".")
        target = data
        for name in new_sections:
            target = target.setdefault(name, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{where}: config key {'.'.join(new_sections)!r} is a section; give a mapping")
        if new_key in target:
            raise ConfigError(f"{where}: both {old!r} and its new name {new!r} are set; keep {new!r}")
        target[new_key] = value
        if warn:
            warnings.warn(f"{where}: config key {old!r} is now {new!r}; the old name will stop working in the "
                          "next release", FutureWarning, stacklevel=stacklevel)
    for dotted, old_value in LEGACY_NONE.items():
        *sections, key = dotted.split(".")
        parent = data
        for name in sections:
            parent = parent.get(name) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and key in parent and not isinstance(parent[key], bool) \
                and parent[key] == old_value:
            parent[key] = None
    return data


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a field's type, converting only where it is lossless (int -> float).

    A field typed ``X | None`` also takes None, which an empty ``key=`` on the command line gives."""
    args = typing.get_args(annotation)
    if type(None) in args:
        if value is None or value == "":
            return None
        annotation = next(a for a in args if a is not type(None))
    elif value is None:
        raise ConfigError(f"config key {key!r} cannot be null")
    target = annotation if isinstance(annotation, type) else typing.get_origin(annotation) or annotation
    if target is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if target in (list, dict, str, bool, int, float):
        if isinstance(value, tuple) and target is list:
            return list(value)
        if not isinstance(value, target) or (target is int and isinstance(value, bool)):
            raise ConfigError(f"config key {key!r} expects {target.__name__}, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"config key {key!r} has an unsupported type {annotation!r}")


def _apply(section: Any, overrides: dict[str, Any], prefix: str) -> None:
    hints = typing.get_type_hints(type(section))
    names = {f.name for f in dataclasses.fields(section)}
    for key, value in overrides.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key {full!r}; valid keys here: {', '.join(sorted(names))}")
        current = getattr(section, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {full!r} is a section; give a mapping, got {value!r}")
            _apply(current, value, f"{full}.")
        else:
            setattr(section, key, _coerce(value, hints[key], full))


class _ConfigLoader(yaml.SafeLoader):
    """YAML 1.2's booleans: only true/false are booleans; on/off/yes/no stay strings (``train.amp: off``)."""


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_ConfigLoader)


def _parse_scalar(text: str) -> Any:
    # YAML's scalar rules: 3 -> int, 3.0 -> float, true -> bool, [1, 2] -> list; strings stay as typed.
    value = _yaml_load(text) if text.strip() else None
    if value is None:
        return ""
    return text if isinstance(value, str) else value


def _dotted_to_nested(pairs: list[str]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} is not of the form key=value (e.g. train.epochs=3)")
        key, text = pair.split("=", 1)
        parts = key.strip().split(".")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {pair!r} sets a key below a non-section")
        node[parts[-1]] = _parse_scalar(text)
    return nested


def _float_from_yaml_string(value: Any) -> Any:
    # PyYAML (YAML 1.1) reads "1e-4" as a string; where the field is a float, the user meant a number.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def load_config(path: str | Path | Sequence[str | Path] | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file(s), then dotted ``key=value`` overrides; raises ConfigError on any misfit.

    Several files are applied in order, each overriding the keys it sets (a recipe, then an ablation
    of it: ``--config base.yaml --config ablation.yaml``); a mapping-valued field is replaced whole."""
    config = Config()
    paths = [] if path is None else [path] if isinstance(path, (str, Path)) else list(path)
    for one in paths:
        _apply_file(config, Path(one))
    return apply_overrides(config, overrides or [])


def _apply_file(config: Config, path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    data = _yaml_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    try:
        data = _move_old_keys(data, str(path), warn=True, stacklevel=4)
        _apply(config, _fix_yaml_floats(data, config), "")
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply dotted ``key=value`` overrides in place (and return the config)."""
    if overrides:
        nested = _move_old_keys(_dotted_to_nested(overrides), "override", warn=True)
        _apply(config, _fix_yaml_floats(nested, config), "")
    return config


def _fix_yaml_floats(data: dict[str, Any], section: Any) -> dict[str, Any]:
    """Turn '1e-4'-style strings into floats where the field is a float."""
    if not dataclasses.is_dataclass(section):
        return data
    hints = typing.get_type_hints(type(section))
    fixed = {}
    for key, value in data.items():
        current = getattr(section, key, None)
        if isinstance(value, dict) and dataclasses.is_dataclass(current):
            fixed[key] = _fix_yaml_floats(value, current)
        elif float in (hints.get(key), *typing.get_args(hints.get(key))):
            fixed[key] = _float_from_yaml_string(value)
        else:
            fixed[key] = value
    return fixed


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a Config from ``Config.to_dict()`` output (e.g. read back from a checkpoint)."""
    config = Config()
    _apply(config, _move_old_keys(data, "stored config", warn=False), "")
    return config


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def describe_config(config: Config) -> str:
    """The resolved config as YAML-like text, each field followed by its meaning."""
    lines: list[str] = []
    _describe(config, "", lines)
    return "\n".join(lines)


def _describe(section: Any, indent: str, lines: list[str]) -> None:
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            lines.append(f"{indent}{f.name}:  # {type(value).__doc__.strip().splitlines()[0]}")
            _describe(value, indent + "  ", lines)
            continue
        text = yaml.safe_dump(value, default_flow_style=True).strip()
        text = text.removesuffix("\n...").removesuffix("...").strip()
        lines.append(f"{indent}{f.name}: {text}  # {f.metadata.get('help', '')}")


__all__ = [
    "ACTFilesConfig",
    "AVAFilesConfig",
    "Config",
    "ConfigError",
    "apply_overrides",
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "MatcherConfig",
    "ModelConfig",
    "OptimConfig",
    "PersonBoxConfig",
    "TrainConfig",
    "config_from_dict",
    "describe_config",
    "load_config",
    "save_config",
]

