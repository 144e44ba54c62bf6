"""Export the whole single-stage detector: ONNX, TorchScript or a ``torch.export`` program.

BMViT is one network from clip to boxes: no person detector, no RoIAlign, no decoder, so the
exported graph is the complete detector. It maps

    clip [B, 3, T, H, W] float32 (resized and normalised as the checkpoint's metadata says)
      -> pred_boxes   [B, N, 4] normalised cx, cy, w, h of the key frame (after the sigmoid)
         pred_actor   [B, N, 2] logits (index 0 = actor, 1 = no-actor)
         pred_actions [B, N, C] logits

exactly as ``BMViT.forward`` (without ``token_grid``), with a dynamic batch axis. Scoring stays
outside the graph, as in ``bmvit.postprocess``: ``p_actor = softmax(pred_actor)[..., 0]``, keep
``p_actor > threshold``, ``score = p_actor * sigmoid(pred_actions)``. The checkpoint's metadata
(classes, clip sampling, mean/std, threshold) travels with the file: ONNX ``metadata_props["bmvit"]``,
or ``bmvit.json`` among the extra files of TorchScript and ``.pt2`` archives.

Every file is written under a temporary name, checked against PyTorch on random clips at batch
1 and 2 (unless asked not to), and only then renamed into place.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

OUTPUT_NAMES: tuple[str, ...] = ("pred_boxes", "pred_actor", "pred_actions")
FORMATS: dict[str, str] = {"onnx": ".onnx", "torchscript": ".pt", "export": ".pt2"}
"""Export formats and their usual file extensions (``export``: a ``torch.export`` program)."""


class DetectorGraph(nn.Module):
    """``clip [B, 3, T, H, W]`` -> ``(pred_boxes, pred_actor, pred_actions)``: the model's tensors as a tuple."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, clip: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.model(clip)
        return out["pred_boxes"], out["pred_actor"], out["pred_actions"]


@dataclass
class ExportResult:
    """What was written and how well it matches PyTorch (``max_abs_diff`` per batch size; empty if unchecked)."""

    path: Path
    format: str
    max_abs_diff: dict[int, float]


def example_clip(model: nn.Module, batch: int, seed: int = 0) -> Tensor:
    """A random normalised clip ``[batch, 3, T, H, W]`` of the model's input size."""
    generator = torch.Generator().manual_seed(seed + batch)
    return torch.randn(batch, 3, *model.input_size, generator=generator)


def export_metadata(model: nn.Module) -> dict[str, Any]:
    """The checkpoint metadata a deployment needs, plus the graph's input and outputs."""
    meta = dict(getattr(model, "metadata", {}))
    meta.pop("run_config", None)
    t, h, w = model.input_size
    meta["graph"] = {
        "input": {"clip": ["B", 3, t, h, w]},
        "outputs": {"pred_boxes": "[B, N, 4] normalised cxcywh (sigmoid applied)",
                    "pred_actor": "[B, N, 2] logits, index 0 = actor",
                    "pred_actions": "[B, N, C] logits"},
        "scoring": "p_actor = softmax(pred_actor)[..., 0]; keep p_actor > threshold; "
                   "score = p_actor * sigmoid(pred_actions)",
    }
    return meta


def check_exportable(model: nn.Module) -> None:
    """Raise ``TypeError`` unless ``model`` is a single-stage ``BMViT`` (the graph this module exports)."""
    from bmvit.models.bmvit import BMViT

    if not isinstance(model, BMViT):
        raise TypeError(f"export handles single-stage BMViT detectors; got a {type(model).__name__}")


def export_model(model: nn.Module, path: str | os.PathLike, fmt: str = "onnx", verify: bool = True,
                 atol: float = 1e-4, opset: int = 17) -> ExportResult:
    """Export ``model`` (a ``BMViT``, eval mode, CPU) to ``path`` in format ``fmt`` (see ``FORMATS``).

    With ``verify``, the exported file is run (ONNX: in onnxruntime) on random clips at batch 1 and 2
    and must match PyTorch within ``atol`` (absolute, plus the same relative); otherwise nothing is
    left at ``path`` and a ``RuntimeError`` says by how much it differs.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {sorted(FORMATS)}")
    check_exportable(model)
    model = model.to("cpu").eval()
    graph = DetectorGraph(model).eval()
    path = Path(path)
    if fmt == "export" and path.suffix != ".pt2":
        raise ValueError(f"a torch.export archive must be named *.pt2 (torch.export.load refuses others), got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name keeps the extension: torch.export.save and load insist on .pt2.
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{FORMATS[fmt]}")
    try:
        if fmt == "onnx":
            _write_onnx(graph, tmp, opset)
        elif fmt == "torchscript":
            _write_torchscript(graph, tmp)
        else:
            _write_program(graph, tmp)
        diffs = _verify(graph, tmp, fmt, atol) if verify else {}
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(path, fmt, diffs)


def _write_onnx(graph: DetectorGraph, path: Path, opset: int) -> None:
    import onnx

    dynamic = {name: {0: "batch"} for name in ("clip", *OUTPUT_NAMES)}
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of the dynamo one, which needs onnxscript.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)  # strided slices stay
        try:
            torch.onnx.export(graph, (example_clip(graph.model, 1),), str(path), input_names=["clip"],
                              output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic, opset_version=opset,
                              dynamo=False)
        except Exception as err:  # the exporter's errors carry a whole graph dump: keep the first line
            first = str(err).strip().splitlines()[0][:400] if str(err).strip() else ""
            raise RuntimeError(f"torch.onnx.export could not export {type(graph.model).__name__} "
                               f"({type(err).__name__}: {first})") from err
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "bmvit", json.dumps(export_metadata(graph.model))
    onnx.save(proto, str(path))


def _write_torchscript(graph: DetectorGraph, path: Path) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(graph, (example_clip(graph.model, 1),), check_trace=False)
        try:
            torch.jit.save(traced, str(path), _extra_files={"bmvit.json": json.dumps(export_metadata(graph.model))})
        except RuntimeError as err:  # e.g. a traced autograd.Function (a Python call) cannot be serialised
            first = str(err).strip().splitlines()[0][:400] if str(err).strip() else ""
            raise RuntimeError(f"TorchScript could not save the traced {type(graph.model).__name__} ({first})") from err


def _write_program(graph: DetectorGraph, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        program = torch.export.export(graph, (example_clip(graph.model, 2),), dynamic_shapes={"clip": {0: batch}})
    torch.export.save(program, str(path), extra_files={"bmvit.json": json.dumps(export_metadata(graph.model))})


def load_exported(path: str | os.PathLike, fmt: str):
    """A callable ``clip (numpy or tensor) -> list of numpy outputs`` for an exported file."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda clip: session.run(list(OUTPUT_NAMES), {"clip": np.asarray(clip, dtype=np.float32)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load, kept for TorchScript files
        module = torch.jit.load(str(path)) if fmt == "torchscript" else torch.export.load(str(path)).module()

    def run(clip):
        with torch.no_grad():
            return [t.numpy() for t in module(torch.as_tensor(clip))]

    return run


def _verify(graph: DetectorGraph, path: Path, fmt: str, atol: float) -> dict[int, float]:
    run = load_exported(path, fmt)
    diffs: dict[int, float] = {}
    for batch in (1, 2):
        clip = example_clip(graph.model, batch)
        with torch.no_grad():
            expected = [t.numpy() for t in graph(clip)]
        try:
            got = run(clip.numpy())
        except Exception as err:  # onnxruntime and torch.jit raise their own types
            raise RuntimeError(f"the exported {fmt} model fails at batch {batch} ({type(err).__name__}: "
                               f"{str(err)[:300]}); nothing was written to the destination") from None
        diffs[batch] = max(float(np.abs(g - e).max()) for g, e in zip(got, expected))
        bad = [name for name, g, e in zip(OUTPUT_NAMES, got, expected)
               if g.shape != e.shape or not np.allclose(g, e, atol=atol, rtol=atol)]
        if bad:
            raise RuntimeError(f"the exported {fmt} model differs from PyTorch at batch {batch} in {bad} "
                               f"(max abs diff {diffs[batch]:.3g}, allowed {atol:g}); nothing was written to the "
                               "destination")
    return diffs


__all__ = ["DetectorGraph", "ExportResult", "FORMATS", "OUTPUT_NAMES", "check_exportable", "example_clip",
           "export_metadata", "export_model", "load_exported"]
