"""Checkpoints: safetensors tensors plus JSON metadata, written atomically.

A model file (``model.safetensors``, ``best.safetensors``) holds the model's state dict and, in the
safetensors header, one metadata entry ``"bmvit"`` with JSON: the model config, the trained class
ids and names, input size, mean/std, the run config, metrics and the code version. Nothing is ever
unpickled. A training checkpoint (``last.safetensors``) adds the optimiser, scheduler, scaler and
RNG state so that ``--resume`` continues exactly where the run stopped.
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
    header = json.loads(data[8 : 8 + header_len])
    raw = header.get("__metadata__", {}).get(METADATA_KEY)
    metadata = json.loads(raw) if raw else {}
    return tensors, metadata


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


def init_from_detector(model: torch.nn.Module, path: str | Path, class_ids: list[int]) -> str:
    """Start ``model`` from every tensor of a trained detector file (backbone, projection and heads).

    Unlike pretrained *backbone* weights, the heads are kept, so the file must hold the same
    architecture and the same action classes (``class_ids``, in order) as the run; optimiser and
    schedule start afresh (to continue a run, use ``--resume``). Returns a one-line report.

    Raises:
        ValueError: not a bmvit model file, another architecture, or other classes.
    """
    tensors, meta = load_tensors(path)
    if "model_config" not in meta:
        raise ValueError(f"model.init_weights: {path} is not a bmvit model file (no model_config in its metadata)")
    mine = model.config.to_dict()
    if meta["model_config"] != mine:
        diff = {k: (meta["model_config"].get(k), v) for k, v in mine.items() if meta["model_config"].get(k) != v}
        raise ValueError(f"model.init_weights: {path} holds another architecture; (file, run) differ in {diff}")
    if list(meta.get("class_ids", [])) != list(class_ids):
        raise ValueError(f"model.init_weights: {path} predicts classes {meta.get('class_ids')}, the run trains "
                         f"{list(class_ids)}; for new classes start from its backbone (model.backbone_weights)")
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
    model_class = meta.get("model_class", "BMViT")
    if model_class == "TwoStageMViT":
        from bmvit.models.twostage import TwoStageConfig, TwoStageMViT

        model = TwoStageMViT(TwoStageConfig.from_dict(meta["model_config"]))
    elif model_class == "BMViT":
        from bmvit.models.bmvit import BMViT, BMViTConfig

        model = BMViT(BMViTConfig.from_dict(meta["model_config"]))
    else:
        raise ValueError(f"{path} holds a {model_class!r} model, which this version of bmvit cannot build")
    missing, unexpected = model.load_state_dict(_model_tensors(tensors, meta), strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} does not fit its own model config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.metadata = meta
    return model.to(device).eval()
