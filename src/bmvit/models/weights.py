"""Pretrained backbone weights: records of the files we know, and strict loading of any of them.

A file is read as tensors only (``safetensors``, or ``torch.load(..., weights_only=True)`` for
``.pth``/``.pyth``), unwrapped from its container, recognised by its keys (or named with
``weights_format``), renamed by the backbone's pure remap function for that format and loaded
strictly: every key is used, or is one the format says to drop (a source classifier) or to leave
at its initial value; anything else is an error that names the keys.

Each backbone class declares the formats it reads as ``weights_formats: dict[str, WeightsFormat]``
next to its remap functions (``mvit.py`` declares ``torchvision``, ``slowfast`` and ``bmvit``);
a new backbone adds its own (``videomae``, ``hiera``) the same way, with no change here.

Records after timm's ``PretrainedCfg`` and torchvision's ``WeightsEnum``; strict loading with
named keys after nanoGPT's ``from_pretrained``.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.request
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

_CONTAINER_KEYS = ("model_state", "state_dict", "model", "module")


@dataclass(frozen=True)
class WeightsFormat:
    """How one source format becomes a backbone's state dict.

    Attributes:
        name: ``"torchvision"``, ``"slowfast"``, ``"bmvit"``, ...
        remap: pure ``remap(state_dict, model) -> state_dict`` in the model's names, tensors
            resized where the input size differs; keys it does not know pass through unchanged.
        detect: ``detect(keys) -> bool``, whether a state dict's keys look like this format.
        drop: regular expressions (full match) of remapped keys that are left out on purpose
            and reported, e.g. the source's classifier head.
        missing: regular expressions of model keys this format does not provide (left at init).
    """

    name: str
    remap: Callable[[dict[str, Tensor], nn.Module], dict[str, Tensor]]
    detect: Callable[[Collection[str]], bool]
    drop: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()


KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)
"""PySlowFast's Kinetics normalisation (RGB, [0, 1] scale): what a model is fed when no weights say otherwise."""


@dataclass(frozen=True)
class Normalisation:
    """The per-channel mean and std (RGB, [0, 1] scale) some weights were trained with, and where that is known from."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str


def weights_normalisation(model: nn.Module, detector_metadata: dict | None = None) -> Normalisation | None:
    """The normalisation ``model``'s pretrained weights expect: a bmvit model file's metadata
    (``detector_metadata``, the file ``model.init_weights`` started it from) first, else the
    ``KNOWN_WEIGHTS`` record its backbone weights' file matched (``model.backbone_weights_report``).
    None when no weights were loaded, or when they match no record (a bare state dict)."""
    if detector_metadata and "mean" in detector_metadata and "std" in detector_metadata:
        return Normalisation(tuple(detector_metadata["mean"]), tuple(detector_metadata["std"]),
                             "the model file of model.init_weights")
    report = getattr(model, "backbone_weights_report", None)
    if report is not None and report.spec in KNOWN_WEIGHTS:
        spec = KNOWN_WEIGHTS[report.spec]
        return Normalisation(spec.mean, spec.std, f"the record of {spec.name}")
    return None


@dataclass(frozen=True)
class WeightsSpec:
    """A pretrained weights file we know of. The license travels with the record.

    ``sha256`` may be a prefix of the digest (torchvision names its files with one).
    """

    name: str  # ``arch.tag``
    file_name: str
    source_format: str
    input_size: tuple[int, int, int]  # (T, H, W) the weights were trained at
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_classes: int  # of the source classifier (dropped on load)
    license: str
    url: str | None = None
    sha256: str | None = None
    backbone: str = "mvitv2_s"  # the preset these weights fit


KNOWN_WEIGHTS: dict[str, WeightsSpec] = {
    spec.name: spec
    for spec in (
        WeightsSpec(
            name="mvitv2_s_16x4.k400",
            file_name="MViTv2_S_16x4_k400_f302660347.pyth",
            source_format="slowfast",
            input_size=(16, 224, 224),
            mean=(0.45, 0.45, 0.45),
            std=(0.225, 0.225, 0.225),
            num_classes=400,
            license="Apache-2.0 (PySlowFast model zoo); trained on Kinetics-400",
            url="https://dl.fbaipublicfiles.com/pyslowfast/model_zoo/mvitv2/pysf_video_models/"
            "MViTv2_S_16x4_k400_f302660347.pyth",
        ),
        WeightsSpec(
            name="mvitv2_s_16x4.k400_tv",
            file_name="mvit_v2_s-ae3be167.pth",
            source_format="torchvision",
            input_size=(16, 224, 224),
            mean=(0.45, 0.45, 0.45),
            std=(0.225, 0.225, 0.225),
            num_classes=400,
            license="BSD-3-Clause (torchvision; weights ported from PySlowFast); trained on Kinetics-400",
            url="https://download.pytorch.org/models/mvit_v2_s-ae3be167.pth",
            sha256="ae3be167",
        ),
        # VideoMAE publishes its checkpoints on Google Drive without stable file names (MODEL_ZOO.md);
        # save a download under file_name for the record to be recognised. ImageNet mean/std, as
        # VideoMAE's data pipeline normalises.
        WeightsSpec(
            name="vit_b_16x4.videomae_k400_ft_k400",
            file_name="videomae_vit_b_16x4_k400_e1600_ft.pth",
            source_format="videomae",
            input_size=(16, 224, 224),
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            num_classes=400,
            license="CC BY-NC 4.0 (VideoMAE); trained on Kinetics-400",
            url="https://drive.google.com/file/d/1MzwteHH-1yuMnFb8vRBQDvngV1Zl-d3z/view",
            backbone="vit_b",
        ),
        WeightsSpec(
            name="vit_b_16x4.videomae_k400",
            file_name="videomae_vit_b_16x4_k400_e1600_pretrain.pth",
            source_format="videomae",
            input_size=(16, 224, 224),
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            num_classes=0,  # MAE pre-training: no classifier; the decoder is dropped on load
            license="CC BY-NC 4.0 (VideoMAE); self-supervised on Kinetics-400",
            url="https://drive.google.com/file/d/1tEhLyskjb755TJ65ptsrafUG2llSwQE1/view",
            backbone="vit_b",
        ),
        # The hiera package does not state the video mean/std; these are the Kinetics values of
        # PySlowFast and MAE-ST, the recipes Hiera's video training follows (unverified).
        WeightsSpec(
            name="hiera_l_16x224.mae_k400_ft_k400",
            file_name="hiera_large_16x224.pth",
            source_format="hiera",
            input_size=(16, 224, 224),
            mean=(0.45, 0.45, 0.45),
            std=(0.225, 0.225, 0.225),
            num_classes=400,
            license="CC BY-NC 4.0 (Hiera model zoo; the code is Apache-2.0); trained on Kinetics-400",
            url="https://dl.fbaipublicfiles.com/hiera/hiera_large_16x224.pth",
            backbone="hiera_l",
        ),
        WeightsSpec(
            name="hiera_l_16x224.mae_k400",
            file_name="mae_hiera_large_16x224.pth",
            source_format="hiera",
            input_size=(16, 224, 224),
            mean=(0.45, 0.45, 0.45),
            std=(0.225, 0.225, 0.225),
            num_classes=0,  # MAE pre-training: no classifier; fusion heads and decoder are dropped on load
            license="CC BY-NC 4.0 (Hiera model zoo; the code is Apache-2.0); self-supervised on Kinetics-400",
            url="https://dl.fbaipublicfiles.com/hiera/mae_hiera_large_16x224.pth",
            backbone="hiera_l",
        ),
        WeightsSpec(
            name="hiera_b_16x224.mae_k400_ft_k400",
            file_name="hiera_base_16x224.pth",
            source_format="hiera",
            input_size=(16, 224, 224),
            mean=(0.45, 0.45, 0.45),
            std=(0.225, 0.225, 0.225),
            num_classes=400,
            license="CC BY-NC 4.0 (Hiera model zoo; the code is Apache-2.0); trained on Kinetics-400",
            url="https://dl.fbaipublicfiles.com/hiera/hiera_base_16x224.pth",
            backbone="hiera_b",
        ),
        # Ours, shipped in bmvit/assets: the whole tiny detector after configs/synthetic_pretrain.yaml's four
        # stages (288 synthetic videos of seed 1, then 288 of seed 2, never the demo's seed-0 videos; 345 min
        # on 2 CPU cores, docs/demo.md#the-pretrained-detector); the demo starts from all of it. The name is
        # from its first stages, on seed 1 only.
        WeightsSpec(
            name="mvit_tiny_8x128.synthetic_seed1",
            file_name="bmvit_mvit_tiny_synthetic_pretrain.safetensors",
            source_format="bmvit",
            input_size=(8, 128, 128),
            mean=(0.45, 0.45, 0.45),
            std=(0.225, 0.225, 0.225),
            num_classes=9,
            license="Apache-2.0 (bmvit); trained on `bmvit synth --videos 288` videos of seeds 1 and 2",
            sha256="617e6dc8354b2d8d1966a1fd2230d3609b589b6b3395afef5b36502b401eb837",
            backbone="mvit_tiny",
        ),
    )
}


# Weights that ship inside the package; a config may name them instead of giving a path.
ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"


def resolve_weights_path(path: str | Path) -> Path:
    """The file that ``backbone_weights=path`` means.

    An existing path is taken as it is. Otherwise a ``KNOWN_WEIGHTS`` record's name or file name
    whose file ships with the package (``bmvit/assets``) resolves to that file, so a config can say
    ``backbone_weights: mvit_tiny_8x128.synthetic_seed1`` from any working directory.

    Raises:
        FileNotFoundError: neither a file nor a shipped record; the message lists the shipped ones.
    """
    if Path(path).exists():
        return Path(path)
    shipped = {spec.name: ASSETS_DIR / spec.file_name for spec in KNOWN_WEIGHTS.values()
               if (ASSETS_DIR / spec.file_name).is_file()}
    for name, file in shipped.items():
        if str(path) in (name, file.name):
            return file
    names = ", ".join(sorted(shipped)) or "none"
    raise FileNotFoundError(f"weights file {str(path)!r} does not exist, and it is not the name of weights that ship "
                            f"with bmvit (shipped: {names})")


@dataclass
class LoadReport:
    """What ``load_backbone_weights`` did. Keys are the model's names unless said otherwise."""

    path: str
    weights_format: str
    loaded: list[str] = field(default_factory=list)  # model keys set from the file
    dropped: list[str] = field(default_factory=list)  # file keys left out on purpose (source classifier)
    missing: list[str] = field(default_factory=list)  # model keys the format does not provide (left at init)
    adapted: list[str] = field(default_factory=list)  # model keys resized to the model (rel-pos tables)
    spec: str | None = None  # the KNOWN_WEIGHTS record whose file name matched, if any

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors from {self.path} ({self.weights_format} format)"]
        if self.spec:
            lines.append(f"  known weights: {self.spec} ({KNOWN_WEIGHTS[self.spec].license})")
        for label, keys in (("dropped", self.dropped), ("left at init", self.missing), ("resized", self.adapted)):
            if keys:
                lines.append(f"  {label}: {_show(keys)}")
        return "\n".join(lines)


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a weights file as a flat ``{name: tensor}``, never unpickling anything but tensors.

    ``.safetensors`` is read with safetensors; ``.pth``, ``.pyth``, ``.pt``, ``.bin``, ``.ckpt`` with
    ``torch.load(weights_only=True)``, then unwrapped from ``model_state`` / ``state_dict`` /
    ``model`` containers and a ``module.`` prefix (DDP).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist" if not path.exists()
                                else f"weights path {str(path)!r} is not a file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return unwrap_state_dict(load_file(str(path)), str(path))
    if path.suffix not in (".pth", ".pyth", ".pt", ".bin", ".ckpt"):
        raise ValueError(f"cannot read weights file {str(path)!r}: expected .safetensors, .pth, .pyth, .pt, .bin "
                         f"or .ckpt, got {path.suffix or 'no suffix'!r}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError or EOFError depending on the damage
        raise ValueError(f"cannot read weights file {str(path)!r} with torch.load(weights_only=True): {err}. "
                         "Only files of plain tensors are accepted; convert others to .safetensors.") from err
    return unwrap_state_dict(obj, str(path))


def unwrap_state_dict(obj: object, source: str = "state dict") -> dict[str, Tensor]:
    """Find the ``{name: tensor}`` inside a checkpoint container and strip a ``module.`` prefix."""
    for _ in range(4):  # containers nest at most a few levels (e.g. {"model": {"state_dict": ...}})
        if not isinstance(obj, dict):
            break
        inner = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        kind = type(obj).__name__ if not isinstance(obj, dict) else f"dict with keys {_show(list(obj))}"
        raise ValueError(f"{source} does not hold a state dict of tensors (looked inside "
                         f"{', '.join(_CONTAINER_KEYS)}); found a {kind}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def detect_format(keys: Collection[str], formats: dict[str, WeightsFormat]) -> str | None:
    """The first format whose ``detect`` accepts these keys, or ``None``."""
    return next((name for name, fmt in formats.items() if fmt.detect(keys)), None)


def load_backbone_weights(model: nn.Module, path: str | Path, weights_format: str | None = None) -> LoadReport:
    """Load a pretrained weights file into a backbone, strictly.

    Args:
        model: a backbone whose class declares ``weights_formats``.
        path: ``.safetensors`` or ``.pth``/``.pyth`` file (PySlowFast ``model_state`` containers
            and DDP ``module.`` prefixes are unwrapped), or the name of shipped weights
            (``resolve_weights_path``). A full bmvit detector state dict works
            too: its ``backbone.*`` part is taken and the rest reported as dropped.
        weights_format: one of ``model.weights_formats``; detected from the keys when ``None``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable file, unknown format, or keys/shapes that do not fit the model
            (the message names them).
    """
    formats: dict[str, WeightsFormat] | None = getattr(model, "weights_formats", None)
    if not formats:
        raise ValueError(f"{type(model).__name__} declares no weights_formats, so it cannot load pretrained weights")
    path = resolve_weights_path(path)
    state_dict = read_state_dict(path)
    spec = check_known_file(path)
    state_dict, outside = _take_backbone_part(state_dict, formats)
    fmt = _choose_format(state_dict, formats, weights_format, str(path))
    source_storages = {t.untyped_storage().data_ptr() for t in state_dict.values()}
    remapped = fmt.remap(state_dict, model)
    report = _check_and_load(model, remapped, fmt, str(path))
    report.dropped = outside + report.dropped
    # A tensor the remap made anew (not a view of a file tensor) was resized to fit the model.
    report.adapted = sorted(k for k in report.loaded if remapped[k].untyped_storage().data_ptr() not in source_storages)
    report.spec = spec.name if spec is not None else None
    return report


def _take_backbone_part(state_dict: dict[str, Tensor], formats: dict[str, WeightsFormat]) -> tuple[dict, list[str]]:
    """A bmvit detector state dict (``backbone.*``, ``proj.*``, heads): keep the backbone's part."""
    if detect_format(state_dict.keys(), formats) is not None or not any(k.startswith("backbone.") for k in state_dict):
        return state_dict, []
    inner = {k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    return inner, sorted(k for k in state_dict if not k.startswith("backbone."))


def _choose_format(state_dict: dict[str, Tensor], formats: dict[str, WeightsFormat], name: str | None,
                   path: str) -> WeightsFormat:
    if name is not None:
        if name not in formats:
            raise ValueError(f"weights_format {name!r} is not one this backbone reads; expected one of {list(formats)}")
        return formats[name]
    detected = detect_format(state_dict.keys(), formats)
    if detected is None:
        raise ValueError(f"{path} does not look like weights for this backbone: its keys match none of the formats "
                         f"{list(formats)} (first keys: {_show(list(state_dict), 6)}). A state dict of another "
                         "architecture cannot be loaded; if it is one of these formats, pass weights_format=")
    return formats[detected]


def _check_and_load(model: nn.Module, remapped: dict[str, Tensor], fmt: WeightsFormat, path: str) -> LoadReport:
    target = model.state_dict()
    unexpected = [k for k in remapped if k not in target]
    dropped = [k for k in unexpected if _matches(k, fmt.drop)]
    unexpected = [k for k in unexpected if k not in dropped]
    missing = [k for k in target if k not in remapped]
    allowed_missing = [k for k in missing if _matches(k, fmt.missing)]
    missing = [k for k in missing if k not in allowed_missing]
    problems = []
    if unexpected:
        problems.append(f"{len(unexpected)} key(s) in the file that the model does not have: {_show(unexpected)}")
    if missing:
        problems.append(f"{len(missing)} model key(s) the file does not provide: {_show(missing)}")
    mismatched = [f"{k}: model {tuple(target[k].shape)}, file {tuple(v.shape)}"
                  for k, v in remapped.items() if k in target and v.shape != target[k].shape]
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_show(mismatched)}")
    if problems:
        raise ValueError(f"{path} ({fmt.name} format) does not fit {type(model).__name__}: " + "; ".join(problems)
                         + ". Is it weights for another architecture or size?")
    loaded = [k for k in remapped if k in target]
    full = {k: remapped[k] for k in loaded} | {k: target[k] for k in allowed_missing}
    model.load_state_dict(full, strict=True)
    return LoadReport(path=path, weights_format=fmt.name, loaded=loaded, dropped=dropped, missing=allowed_missing)


OFFLINE_ENV = "BMVIT_OFFLINE"
"""Set (to anything but empty or 0), bmvit opens no network connection: every download is refused."""


class OfflineError(ValueError):
    """A download asked for while ``BMVIT_OFFLINE`` is set."""


def check_online(what: str) -> None:
    """Raise ``OfflineError`` naming ``what`` when ``BMVIT_OFFLINE`` forbids downloads."""
    if os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0"):
        raise OfflineError(f"{OFFLINE_ENV} is set: bmvit downloads nothing, and {what} would need the network "
                           f"(unset {OFFLINE_ENV}, or put the file in place by hand)")


def open_url(url: str, *, method: str = "GET", headers: dict[str, str] | None = None, timeout_s: float = 60.0):
    """The one place bmvit opens a network connection (pretrained weights; the AVA videos and list of
    ``bmvit data prepare-ava --download``), so that ``BMVIT_OFFLINE`` holds for all of them. Returns the
    ``urllib`` response (a context manager); HTTP and network errors are urllib's."""
    check_online(url)
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    return urllib.request.urlopen(request, timeout=timeout_s)


def check_known_file(path: Path) -> WeightsSpec | None:
    """The ``KNOWN_WEIGHTS`` record whose file name ``path`` has (None if none), after checking the
    file's sha256 against it: a corrupt or different file under a known name is an error."""
    spec = next((s for s in KNOWN_WEIGHTS.values() if s.file_name == path.name), None)
    if spec is not None and spec.sha256:
        _check_sha256(path, spec.sha256)
    return spec


def _check_sha256(path: Path, expected: str) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if not digest.hexdigest().startswith(expected.lower()):
        raise ValueError(f"{path} has sha256 {digest.hexdigest()}, expected one starting with {expected}: "
                         "the file is damaged or is not the one its name says")


def _matches(key: str, patterns: tuple[str, ...]) -> bool:
    return any(re.fullmatch(p, key) for p in patterns)


def _show(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")
