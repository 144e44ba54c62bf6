"""Checkpoints: safetensors tensors plus JSON metadata, written atomically.

A model file (``model.safetensors``, ``best.safetensors``) holds the model's state dict and, in the
safetensors header, one metadata entry ``"bmvit"`` with JSON: the model config, the trained class
ids and names, input size, mean/std, the run config, metrics and the code version. Nothing is ever
unpickled. A training checkpoint (``last.safetensors``) adds the optimiser, scheduler, scaler and
RNG state so that ``--resume`` continues exactly where the run stopped.

``load`` (``bmvit.load``) is the user-facing way in: a model file (a path, the name of a detector record
of ``bmvit.hub.KNOWN_WEIGHTS``, or an ``http(s)://`` address downloaded into the cache), or a preset name
with the file that must hold it, to an eval-ready detector; ``model_metadata_or_defaults`` is what inference
reads from it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

METADATA_KEY = "bmvit"
FORMAT_VERSION = 1


def _new_file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: 0o666 less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one, never half of one.

    The file gets the mode of a plainly written one (``mkstemp`` alone would leave it 0600, unreadable
    to the rest of a shared group's cluster).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), _new_file_mode())
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage; a clone per tensor is cheap next to the write.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Atomically write ``tensors`` with ``metadata`` (JSON-serialisable) in the safetensors header."""
    header = {METADATA_KEY: json.dumps({"format_version": FORMAT_VERSION, **metadata})}
    atomic_write_bytes(path, save_safetensors_bytes(_contiguous(tensors), metadata=header))


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a bmvit safetensors file. Returns (tensors, metadata); clear errors for missing or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    data = path.read_bytes()
    try:
        tensors = load_safetensors_bytes(data)
    except (SafetensorError, ValueError) as err:
        raise ValueError(f"{path} is not a safetensors file ({err})") from None
    header_len = int.from_bytes(data[:8], "little")
    return tensors, _metadata_of_header(json.loads(data[8 : 8 + header_len]))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a bmvit safetensors file, read from its header alone (the tensors stay on disk)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    with path.open("rb") as handle:
        header_len = int.from_bytes(handle.read(8), "little")
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path} is not a safetensors file ({err})") from None
    return _metadata_of_header(header)


def _metadata_of_header(header: Any) -> dict[str, Any]:
    """bmvit's metadata in a parsed safetensors header (``{}`` for a file without), names made current."""
    raw = header.get("__metadata__", {}).get(METADATA_KEY) if isinstance(header, dict) else None
    return _with_current_names(json.loads(raw)) if raw else {}


def _with_current_names(metadata: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` with a renamed backbone preset in ``model_config`` under its current name, so that a file
    written before the rename compares equal to the config a run builds now (resume, ``model.init_weights``)."""
    config = metadata.get("model_config")
    if not isinstance(config, dict) or not isinstance(config.get("backbone"), str):
        return metadata
    from bmvit.models.backbones import canonical_backbone_name

    return {**metadata, "model_config": {**config, "backbone": canonical_backbone_name(config["backbone"])}}


def save_model(path: str | Path, model: torch.nn.Module, metadata: dict[str, Any]) -> None:
    """Write a model file: its state dict and metadata (must include ``model_config``)."""
    if "model_config" not in metadata:
        raise ValueError("model metadata must include 'model_config' so that the file can be loaded alone")
    save_tensors(path, model.state_dict(), {"kind": "model", **metadata})


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, param_state in state["state"].items():
        for name, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{param_id}.{name}"] = value
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, param_id, name = key.split(".", 2)
            state.setdefault(int(param_id), {})[name] = value
    for param_id, values in meta["scalars"].items():
        state.setdefault(int(param_id), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_training_state(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    progress: dict[str, Any],
    metadata: dict[str, Any],
) -> None:
    """Everything ``--resume`` needs: weights, optimiser, scheduler, scaler, RNG and progress counters."""
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    meta = {
        "kind": "training_state",
        **metadata,
        "progress": progress,
        "optimizer": opt_meta,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
    }
    save_tensors(path, tensors, meta)


def load_training_state(
    path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any
) -> dict[str, Any]:
    """Restore a training checkpoint in place; returns its metadata (with ``progress``)."""
    tensors, meta = load_tensors(path)
    if meta.get("kind") != "training_state":
        raise ValueError(f"{path} is not a training checkpoint (kind={meta.get('kind')!r}); resume needs last.safetensors")
    model.load_state_dict(_model_tensors(tensors, meta), strict=True)
    optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
    if scheduler is not None and meta.get("scheduler") is not None:
        scheduler.load_state_dict(meta["scheduler"])
    if scaler is not None and meta.get("scaler") is not None:
        scaler.load_state_dict(meta["scaler"])
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return meta


def _model_tensors(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's state dict from a model file, or from the ``model.*`` part of a training checkpoint."""
    if meta.get("kind") == "training_state":
        return {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    return tensors


def _other_classes_message(path: str | Path, file_classes: list[int], run_classes: list[int]) -> str:
    """Why a detector file trained on ``file_classes`` cannot start a run on ``run_classes``, and what to do."""
    missing = [c for c in file_classes if c not in run_classes]
    extra = [c for c in run_classes if c not in file_classes]
    if missing or extra:
        what = f"missing from the data: {missing}; in the data but not in the checkpoint: {extra}"
    else:
        what = "the same ids in another order"
    return (f"model.init_weights: {path} was trained on other action classes than this run's data has: the "
            f"checkpoint predicts {len(file_classes)} classes {file_classes or '(its metadata names none)'}, the "
            f"data has {len(run_classes)} classes {run_classes} ({what}). Its heads cannot serve these classes. "
            "Either set `model.init_weights=` (empty) to start from the backbone weights (model.backbone_weights) "
            "with new heads, or train on data with the checkpoint's classes.")


def init_from_detector(model: torch.nn.Module, path: str | Path, class_ids: list[int]) -> str:
    """Start ``model`` from every tensor of a trained detector file (backbone, projection and heads).

    Unlike pretrained *backbone* weights, the heads are kept, so the file must hold the same
    architecture and the same action classes (``class_ids``, in order) as the run; optimiser and
    schedule start afresh (to continue a run, use ``--resume``). Returns a one-line report.

    Raises:
        ValueError: not a bmvit model file, another architecture, or other classes (the message then names
            both class lists and the two ways out).
    """
    tensors, meta = load_tensors(path)
    if "model_config" not in meta:
        raise ValueError(f"model.init_weights: {path} is not a bmvit model file (no model_config in its metadata)")
    mine = model.config.to_dict()
    file_classes = [int(c) for c in meta.get("class_ids", [])]
    run_classes = [int(c) for c in class_ids]
    diff = {k: (meta["model_config"].get(k), v) for k, v in mine.items() if meta["model_config"].get(k) != v}
    # A class count that differs is a config difference too, but other classes are the cause and need their own
    # advice: the usual case is a shipped config's init_weights met by a dataset that lacks one of its classes.
    if set(diff) <= {"num_classes"} and file_classes != run_classes:
        raise ValueError(_other_classes_message(path, file_classes, run_classes))
    if meta["model_config"] != mine:
        raise ValueError(f"model.init_weights: {path} holds another architecture; (file, run) differ in {diff}")
    tensors = _model_tensors(tensors, meta)
    model.load_state_dict(tensors, strict=True)
    return f"initialised every tensor ({len(tensors)}) from the detector {path}"


def load_model(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild a detector from a bmvit model file, weights loaded strictly, in eval mode.

    The file's metadata is attached as ``model.metadata`` (class ids and names, input size,
    mean/std, the run config, metrics).
    """
    tensors, meta = load_tensors(path)
    if "model_config" not in meta:
        raise ValueError(
            f"{path} has no bmvit model metadata; it is not a bmvit model file "
            "(for pretrained backbone weights use create_model(..., backbone_weights=PATH))"
        )
    from bmvit.models import detector_class

    try:
        cls = detector_class(meta.get("model_class", "BMViT"))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    model = cls(cls.config_class.from_dict(meta["model_config"]))
    missing, unexpected = model.load_state_dict(_model_tensors(tensors, meta), strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} does not fit its own model config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.metadata = meta
    return model.to(device).eval()


# ---------------------------------------------------------------------------------------------------------
# a trained detector for inference: bmvit.load


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as ``torch.device`` reads it."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load(path: str | os.PathLike, weights: str | os.PathLike | None = None,
         device: str | torch.device = "cpu") -> torch.nn.Module:
    """A trained detector, eval-ready, with its checkpoint metadata as ``model.metadata`` (``bmvit.load``).

    Args:
        path: a bmvit model file (``model.safetensors``, ``best.safetensors``, ``last.safetensors``), the
            name of a detector record (``bmvit weights list``; e.g. ``mvit_tiny_8x128.synthetic_demo``), an
            ``http(s)://`` address of a model file (downloaded once into the cache, ``docs/weights.md``),
            or a preset name from ``bmvit.list_models()`` together with ``weights``.
        weights: with a preset name: the model file (path, record name or address) to load; it must hold
            that preset's architecture.
        device: where to put the model (``"auto"``: CUDA when available).

    Raises:
        FileNotFoundError: the file does not exist (a bare name that no record has: the closest are named).
        ValueError: a preset name without ``weights``, an unknown preset, a file of another preset, not a
            bmvit model file, a backbone-weights record, or a download that failed (``bmvit.hub.WeightsError``).
    """
    from bmvit.models import list_models

    device = resolve_device(device)
    name = os.fspath(path)
    if weights is None:
        if name in list_models() and not Path(name).exists():
            raise ValueError(f"bmvit.load({name!r}): a preset name needs weights=MODEL_FILE (for random weights use "
                             f"bmvit.create_model({name!r}))")
        return load_model(_model_file(name, "model file"), device)
    if name not in list_models():
        raise ValueError(f"bmvit.load: {name!r} is not a preset (available: {', '.join(list_models())}); "
                         "pass a model file as the first argument")
    model = load_model(_model_file(weights, "weights file"), device)
    built = _preset_of(model)
    if built != name:
        raise ValueError(f"{weights} holds a {built!r} model, not the {name!r} preset asked for")
    return model


def _preset_of(model: torch.nn.Module) -> str:
    """The preset a loaded model was made from: the training run's ``model.name`` when recorded, else
    the preset (built on the meta device: no memory, no time) with the same backbone and action head."""
    from bmvit.models import create_model, list_models

    recorded = model.metadata.get("run_config", {}).get("model", {}).get("name")
    if recorded:
        return str(recorded)
    # A preset is its backbone and its kind of action head; widths and the like are user overrides.
    mine = {k: v for k, v in model.config.to_dict().items() if k in ("backbone", "action_head")}
    for preset in list_models():
        with torch.device("meta"):
            reference = create_model(preset, num_classes=model.config.num_classes).config.to_dict()
        if all(reference.get(k) == v for k, v in mine.items()):
            return preset
    return model.config.backbone


def _model_file(path: str | os.PathLike, what: str) -> Path:
    """The local model file that ``path`` means: the path itself when it exists, else an address or a detector
    record's name, fetched through ``bmvit.hub`` (cache first, download once)."""
    from bmvit import hub

    text = os.fspath(path)
    if Path(text).exists():
        return _existing_file(text, what)
    if hub.is_url(text):
        return hub.fetch_url(text)
    bare = "/" not in text and os.sep not in text
    spec = hub.KNOWN_WEIGHTS.get(text) if bare else None
    if spec is None:
        if bare:  # a name, perhaps mistyped: say which records it could have meant
            raise FileNotFoundError(f"{what} {text} does not exist, and it is not the name of a bmvit model "
                                    f"({hub.suggestion(text, 'detector')}; `bmvit weights list` shows them)")
        return _existing_file(text, what)
    if spec.kind != "detector":
        raise ValueError(f"{text!r} names backbone weights, not a bmvit model: use bmvit.create_model(PRESET, "
                         f"backbone_weights={text!r})")
    return hub.fetch(spec)


def _existing_file(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if not path.is_file():
        raise ValueError(f"{what} {path} is not a file")
    return path


def model_metadata_or_defaults(model: torch.nn.Module) -> dict[str, Any]:
    """The model's checkpoint metadata, completed with the training defaults of ``bmvit.config`` for a
    model that has none (built with ``create_model``): 16x4 sampling at 30 fps, square resize, and the
    mean/std of its backbone weights' record (Kinetics' when it has none)."""
    from bmvit.config import DataConfig, EvalConfig
    from bmvit.models.weights import KINETICS_MEAN, KINETICS_STD, weights_normalisation

    data, evaluation = DataConfig(), EvalConfig()
    norm = weights_normalisation(model)
    mean, std = (norm.mean, norm.std) if norm is not None else (KINETICS_MEAN, KINETICS_STD)
    defaults = {"sampling_stride": data.sampling_stride, "fps": data.fps, "mean": list(mean), "std": list(std),
                "resize": data.resize, "threshold": evaluation.threshold}
    return {**defaults, **getattr(model, "metadata", {})}
