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

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

# The records, the cache and the network live in the torch-free bmvit.hub (``bmvit weights list`` reads them
# without torch); they are re-exported here, where they were first defined.
from bmvit.hub import (  # noqa: F401 - re-exported
    ASSETS_DIR,
    KNOWN_WEIGHTS,
    OFFLINE_ENV,
    OfflineError,
    WeightsSpec,
    check_online,
    open_url,
    sha256_of,
)

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


# ASSETS_DIR (imported above): weights that ship inside the package; a config may name them instead of
# giving a path. Read from this module at each call, so that a test can point it elsewhere.


def resolve_weights_path(path: str | Path) -> Path:
    """The file that ``backbone_weights=path`` (or ``init_weights=``) means: ``bmvit.hub.resolve``.

    An existing path is taken as it is. A ``KNOWN_WEIGHTS`` record's name or file name resolves to the
    file shipped with the package (``bmvit/assets``), else to the cache (``$BMVIT_HOME/weights``), else is
    downloaded there (sha256 checked); an ``http(s)://`` address is downloaded into the cache too.

    Raises:
        FileNotFoundError: a path that does not exist, or a name no record has (the closest are named).
        bmvit.hub.WeightsError: the file could not be had (offline, manual download, network, sha256).
    """
    from bmvit.hub import resolve

    return resolve(path, assets_dir=ASSETS_DIR)


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


def check_known_file(path: Path) -> WeightsSpec | None:
    """The ``KNOWN_WEIGHTS`` record whose file name ``path`` has (None if none), after checking the
    file's sha256 against it: a corrupt or different file under a known name is an error."""
    spec = next((s for s in KNOWN_WEIGHTS.values() if s.file_name == path.name), None)
    if spec is not None and spec.sha256:
        _check_sha256(path, spec.sha256)
    return spec


def _check_sha256(path: Path, expected: str) -> None:
    actual = sha256_of(path)
    if not actual.startswith(expected.lower()):
        raise ValueError(f"{path} has sha256 {actual}, expected one starting with {expected}: "
                         "the file is damaged or is not the one its name says")


def _matches(key: str, patterns: tuple[str, ...]) -> bool:
    return any(re.fullmatch(p, key) for p in patterns)


def _show(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")
