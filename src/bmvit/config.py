"""Typed run configuration: dataclasses are the single source of defaults.

A YAML file (``--config F``) and dotted ``key=value`` arguments only override fields that exist;
an unknown key or a value of the wrong type is an error that names the key. Every field carries
its meaning in ``metadata["help"]``, which ``bmvit config show`` prints.

The tree has one section per component (model, data, matcher, loss, optim, train, eval), and each
component is built from its own section only.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
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
    """Which detector to build. The resolved model config is also stored in every checkpoint."""

    name: str = _f("bmvit_mvit_tiny", "detector preset from bmvit.list_models()")
    num_classes: int = _f(0, "action classes predicted; 0 = the number of trained classes found in the training data")
    input_size: list = _f([], "clip size [T, H, W] fed to the model; [] = the preset's own")
    drop_path_rate: float = _f(-1.0, "stochastic depth of the backbone; -1 = the preset's own")
    activation_checkpointing: bool = _f(False, "recompute backbone blocks in backward to save memory")
    token_selection: str = _f("central", "key-frame tokens decoded: central | temporal_mean | all")
    backbone_weights: str = _f("", "pretrained backbone weights file (torchvision, slowfast, videomae, hiera, bmvit) "
                                   "or the name of weights shipped in bmvit/assets; '' = random weights")
    weights_format: str = _f("", "format of backbone_weights; '' = detect from the keys")
    init_weights: str = _f("", "a trained bmvit detector file (or shipped weights' name) whose every tensor, heads "
                               "included, starts the run; same architecture and classes; '' = none")
    backbone_overrides: dict = _f({}, "extra fields of the backbone config, e.g. {depths: [1, 1, 2, 1]}")
    box_reference: str = _f("", "box parametrisation: token_center | token_local | none; '' = the preset's own")
    box_local_range: float = _f(0.0, "token_local: reach of a box centre from its token's cell, in cells; 0 = preset's")


@dataclass
class DataConfig:
    """Where the data lives (AVA format, UCF101-24, JHMDB-21) and how clips are sampled and augmented."""

    format: str = _f(
        "ava", "dataset format: ava (AVA CSVs, AVA frame-mAP) | ucf101_24 | jhmdb_21 (ACT tube pickle, ACT frame-mAP)"
    )
    root: str = _f("", "dataset root (annotations/, frame_lists/, videos/ or frames/)")
    source: str = _f("video", "clip source: video (decode files with PyAV) | frames (AVA jpg folders)")
    train_csv: str = _f("annotations/ava_train_v2.2.csv", "training annotations, relative to root")
    val_csv: str = _f("annotations/ava_val_v2.2.csv", "validation annotations, relative to root")
    label_map: str = _f(
        "annotations/ava_action_list_v2.2_for_activitynet_2019.pbtxt", "label map of the evaluated classes"
    )
    exclusions: str = _f("annotations/ava_val_excluded_timestamps_v2.2.csv", "excluded val key frames ('' = none)")
    sampling_stride: int = _f(4, "frames between two sampled frames of a clip (16x4 in the paper)")
    fps: float = _f(30.0, "frame rate that maps seconds to frame indices")
    time_offset: float = _f(900.0, "second of the annotation timeline at video time 0 (AVA: 900)")
    first_second: int = _f(902, "first valid key-frame second")
    last_second: int = _f(1798, "last valid key-frame second")
    resize: str = _f("square", "frame to input: square (resize the whole frame) | letterbox (keep aspect, pad)")
    mean: list = _f([0.45, 0.45, 0.45], "per-channel mean (RGB, [0, 1] scale); PySlowFast's for Kinetics MViT")
    std: list = _f([0.225, 0.225, 0.225], "per-channel std")
    hflip: float = _f(0.5, "probability of a horizontal flip in training")
    flip_swap_pairs: list = _f([], "action-id pairs a horizontal flip exchanges, e.g. [[3, 4]] for move_left/right")
    scale_jitter: list = _f([1.0, 1.0], "random zoom range in training (1.0 = none)")
    color_jitter: float = _f(0.0, "strength of brightness/contrast/saturation jitter in training")
    cache_videos: bool = _f(False, "decode each video once per worker and keep it in memory (small datasets)")
    num_workers: int = _f(-1, "data-loader worker processes per rank; -1 = the CPU cores per process on this node")
    max_bad_clips: float = _f(0.001, "fraction of training clips that may be unreadable (skipped, logged and counted) "
                                     "before the run stops; 0 = stop at the first")
    skip_bad: bool = _f(False, "skip (and count) malformed annotation rows instead of stopping")
    person_boxes_train: str = _f(
        "", "two-stage models: detector person-box CSV for training, relative to root ('' = annotated actors only)"
    )
    person_boxes_val: str = _f("", "two-stage models: detector person-box CSV classified in evaluation (required)")
    person_box_threshold: float = _f(0.8, "two-stage models: keep person boxes scoring >= this (PySlowFast's 0.8)")
    person_box_jitter: float = _f(0.05, "two-stage models: training box jitter, fraction of the box size")
    annotations: str = _f(
        "", "ucf101_24/jhmdb_21: ACT ground truth (.pkl or .json), relative to root; '' = UCF101v2-GT.pkl / JHMDB-GT.pkl"
    )
    frames_dir: str = _f(
        "", "ucf101_24/jhmdb_21, source=frames: folder of <video>/%05d.jpg|png, relative to root; '' = rgb-images / Frames"
    )
    videos_dir: str = _f("videos", "ucf101_24/jhmdb_21, source=video: folder of <video><video_ext>, relative to root")
    video_ext: str = _f(".avi", "ucf101_24/jhmdb_21, source=video: extension of the video files")
    split_index: int = _f(1, "ucf101_24/jhmdb_21: which train/test split (1-based; UCF101-24 has 1, JHMDB-21 has 3)")
    eval_all_frames: bool = _f(
        True, "ucf101_24/jhmdb_21: score every frame of the test videos (ACT protocol), not only annotated ones"
    )

    FORMATS = ("ava", "ucf101_24", "jhmdb_21")
    NUM_SPLITS = {"ava": 1, "ucf101_24": 1, "jhmdb_21": 3}

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the key when a data value is out of its allowed set."""
        if self.format not in self.FORMATS:
            raise ConfigError(f"data.format must be one of {' | '.join(self.FORMATS)}, got {self.format!r}")
        if self.source not in ("video", "frames"):
            raise ConfigError(f"data.source must be video or frames, got {self.source!r}")
        if self.resize not in ("square", "letterbox"):
            raise ConfigError(f"data.resize must be square or letterbox, got {self.resize!r}")
        if self.sampling_stride < 1:
            raise ConfigError(f"data.sampling_stride must be >= 1, got {self.sampling_stride}")
        if self.num_workers < -1:
            raise ConfigError(f"data.num_workers must be >= 0, or -1 for one per CPU core of this rank; got {self.num_workers}")
        if not 0.0 <= self.max_bad_clips < 1.0:
            raise ConfigError(f"data.max_bad_clips must be a fraction in [0, 1), got {self.max_bad_clips}")
        splits = self.NUM_SPLITS[self.format]
        if self.format != "ava" and not 1 <= self.split_index <= splits:
            raise ConfigError(f"data.split_index must be 1..{splits} for {self.format}, got {self.split_index}")


@dataclass
class MatcherConfig:
    """Costs of the Hungarian matching between key-frame tokens and ground-truth actors."""

    cost_actor: float = _f(1.0, "weight of -p(actor)")
    cost_bbox: float = _f(5.0, "weight of the L1 distance of cxcywh boxes")
    cost_giou: float = _f(2.0, "weight of -GIoU")
    cost_action: float = _f(0.0, "weight of the action cost (0 = off)")
    cost_center: float = _f(0.0, "weight of the distance (grid cells, L1) from a token's cell centre to the box centre")


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
                                "weight; 0 = off (docs/training_notes.md, section 8)")
    o2m_repeats: int = _f(4, "tokens per actor in the one-to-many matching")


@dataclass
class OptimConfig:
    """AdamW with a cosine schedule, warm-up and layer-wise learning-rate decay."""

    lr: float = _f(1e-4, "peak learning rate of the backbone's last layer for the global batch")
    head_lr_mult: float = _f(1.0, "learning-rate multiplier of the projection and heads")
    layer_decay: float = _f(1.0, "layer-wise learning-rate decay of the backbone (1.0 = off)")
    weight_decay: float = _f(0.05, "AdamW weight decay (not on norms, biases, rel-pos tables)")
    betas: list = _f([0.9, 0.999], "AdamW betas")
    warmup_epochs: float = _f(1.0, "linear warm-up length in epochs")
    min_lr_ratio: float = _f(0.01, "final learning rate as a fraction of the peak")
    clip_grad: float = _f(1.0, "max gradient norm (0 = off)")


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
        if self.device != "auto" and self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ConfigError(f"train.device must be auto, cpu or cuda, got {self.device!r}")


@dataclass
class EvalConfig:
    """Evaluation and post-processing."""

    threshold: float = _f(0.3, "tokens with p(actor) > threshold become detections")
    nms_iou: float = _f(0.0, "0 = no NMS (the method's default); else class-agnostic greedy NMS of the kept "
                             "tokens at this box IoU, in (0, 1)")
    max_rows_per_keyframe: int = _f(50, "AVA rows written per key frame, highest scores first (the official cap)")
    protocol: str = _f("activitynet", "activitynet (official) | slowfast")
    batch_size: int = _f(8, "clips per process in evaluation")

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the key when a post-processing value is out of range."""
        if not 0.0 <= self.threshold < 1.0:
            raise ConfigError(f"eval.threshold must be in [0, 1), got {self.threshold}")
        if not 0.0 <= self.nms_iou < 1.0:
            raise ConfigError(f"eval.nms_iou must be in [0, 1) (0 = no NMS), got {self.nms_iou}")


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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ConfigError(ValueError):
    """A configuration key or value that does not fit the dataclasses."""


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a field's type, converting only where it is lossless (int -> float)."""
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


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file, then dotted ``key=value`` overrides; raises ConfigError on any misfit."""
    config = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        data = _yaml_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
        try:
            _apply(config, _fix_yaml_floats(data, config), "")
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    return apply_overrides(config, overrides or [])


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply dotted ``key=value`` overrides in place (and return the config)."""
    if overrides:
        _apply(config, _fix_yaml_floats(_dotted_to_nested(overrides), config), "")
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
        elif hints.get(key) is float:
            fixed[key] = _float_from_yaml_string(value)
        else:
            fixed[key] = value
    return fixed


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a Config from ``Config.to_dict()`` output (e.g. read back from a checkpoint)."""
    config = Config()
    _apply(config, data, "")
    return config


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def describe_config(config: Config) -> str:
    """The resolved config as YAML-like text, each field followed by its meaning."""
    lines: list[str] = []
    for section_field in dataclasses.fields(config):
        section = getattr(config, section_field.name)
        lines.append(f"{section_field.name}:  # {type(section).__doc__.strip().splitlines()[0]}")
        for f in dataclasses.fields(section):
            value = yaml.safe_dump(getattr(section, f.name), default_flow_style=True).strip()
            value = value.removesuffix("\n...").removesuffix("...").strip()
            lines.append(f"  {f.name}: {value}  # {f.metadata.get('help', '')}")
    return "\n".join(lines)


__all__ = [
    "Config",
    "ConfigError",
    "apply_overrides",
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "MatcherConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "config_from_dict",
    "describe_config",
    "load_config",
    "save_config",
]

