"""The model sections of ``bmvit bench`` on the CPU: backbones, the torchvision comparison, the matcher,
the training step and ``Predictor`` end to end.

Every model time runs interleaved with the matmul reference (``timing.time_against_matmul``), so that
its achieved FLOP/s can be given as a fraction of what this machine did meanwhile.
"""

from __future__ import annotations

import importlib
import os
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bmvit.bench.loader import training_loader
from bmvit.bench.timing import MatmulReference, time_against_matmul, time_runs


def detector_for_bench(name: str, input_size: tuple[int, int, int], checkpointing: bool = False) -> nn.Module:
    """Returns detector preset ``name`` with 80 classes (AVA's) at ``input_size``, random weights, optionally
    with activation checkpointing: the model every detector measurement of the bench runs."""
    from bmvit.models import create_model

    overrides: dict[str, Any] = {"input_size": tuple(input_size)}
    if checkpointing:
        overrides["use_checkpoint"] = True
    return create_model(name, num_classes=80, backbone_overrides=overrides)


def criterion_for_bench(num_classes: int) -> nn.Module:
    """Returns the set criterion (Hungarian matching + losses) with the default matcher and loss settings."""
    from bmvit.build import create_criterion
    from bmvit.config import LossConfig, MatcherConfig

    return create_criterion(MatcherConfig(), LossConfig(), num_classes)


def random_targets(batch: int, num_classes: int, generator: torch.Generator) -> list[dict[str, Tensor]]:
    """``batch`` targets with 1-5 actors each: ``boxes [M, 4]`` normalised cxcywh, ``labels [M, C]`` multi-hot."""
    targets = []
    for _ in range(batch):
        num = int(torch.randint(1, 6, (1,), generator=generator))
        centre = 0.2 + 0.6 * torch.rand(num, 2, generator=generator)
        size = 0.1 + 0.3 * torch.rand(num, 2, generator=generator)
        labels = torch.zeros(num, num_classes)
        for row in range(num):
            labels[row, torch.randperm(num_classes, generator=generator)[: 1 + row % 3]] = 1.0
        targets.append({"boxes": torch.cat([centre, size], dim=1), "labels": labels})
    return targets


# ---------------------------------------------------------------------------------------------------------
# backbones, and torchvision's MViTv2-S beside ours


def _forward(model: nn.Module, x: Tensor) -> None:
    model.eval()
    with torch.inference_mode():
        model(x)


def _forward_backward(model: nn.Module, x: Tensor) -> None:
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(x)
    (out if isinstance(out, Tensor) else out["pred_boxes"]).float().sum().backward()


def bench_backbone(name: str, input_size: tuple[int, int, int], repeats: int,
                   reference: MatmulReference) -> dict[str, Any]:
    """Forward and forward+backward of backbone preset ``name`` at batch 1, fp32.

    Returns:
        ``name``, ``input``, ``gmacs`` and ``params_m`` (``bmvit.flops.count_flops``), and ``forward`` /
        ``forward_backward``: each a timing dict with ``matmul_gflops``.
    """
    from bmvit.flops import count_flops
    from bmvit.models import create_backbone

    torch.manual_seed(0)
    model = create_backbone(name, input_size=input_size)
    report = count_flops(model.eval(), (1, 3, *input_size))
    x = torch.randn(1, 3, *input_size)
    forward = time_against_matmul({"ours": lambda: _forward(model, x)}, reference, repeats)["ours"]
    train = time_against_matmul({"ours": lambda: _forward_backward(model, x)}, reference, repeats)["ours"]
    return {"name": name, "input": list(input_size), "gmacs": report.gmacs, "params_m": report.params_m,
            "forward": forward, "forward_backward": train}


def backbone_from_torchvision(name: str, input_size: tuple[int, int, int],
                              comparison: dict[str, Any] | None) -> dict[str, Any] | None:
    """Our side of the torchvision comparison (``bench_torchvision``'s result) as a ``bench_backbone``
    result, so that the same model is not timed twice; None when the comparison did not time this model."""
    if comparison is None or name != "mvitv2_s" or tuple(comparison["input"]) != tuple(input_size):
        return None
    return {"name": name, "input": list(input_size), "gmacs": comparison["gmacs"],
            "forward": comparison["forward"]["ours"], "forward_backward": comparison["forward_backward"]["ours"],
            "timed_in": "torchvision"}


def bench_torchvision(repeats: int, quick: bool, reference: MatmulReference) -> dict[str, Any] | None:
    """torchvision's ``mvit_v2_s`` and our ``mvitv2_s`` with the same (perturbed random) weights, interleaved.

    Returns None when torchvision does not import. ``max_abs_diff`` compares the final-norm tokens
    (class token dropped); the two implementations agree to float rounding. ``forward`` and
    ``forward_backward`` each hold an ``ours`` and a ``torchvision`` timing dict.
    """
    try:
        # Optional and never a dependency: torchvision lives in a separate environment (docs/design.md#evaluation).
        tv_mvit = importlib.import_module("torchvision.models.video.mvit")
    except ImportError:
        return None
    from bmvit.flops import count_flops
    from bmvit.models import create_backbone
    from bmvit.models.backbones.mvit import remap_torchvision

    torch.manual_seed(0)
    theirs, ours, input_size = _torchvision_pair(tv_mvit, create_backbone, quick)
    with torch.no_grad():
        for p in theirs.parameters():  # torchvision's zero biases and unit norms would hide a swapped weight
            p.add_(torch.randn_like(p) * 0.02)
    state = {k: v for k, v in remap_torchvision(theirs.state_dict(), ours).items() if not k.startswith("head.")}
    ours.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, *input_size)
    captured: dict[str, Tensor] = {}
    hook = theirs.norm.register_forward_hook(lambda _m, _i, out: captured.__setitem__("tokens", out))
    _forward(theirs, x)
    hook.remove()
    with torch.inference_mode():
        diff = (ours.eval()(x).flatten(1, 3) - captured["tokens"][:, 1:]).abs().max().item()
    forward = time_against_matmul({"ours": lambda: _forward(ours, x), "torchvision": lambda: _forward(theirs, x)},
                                  reference, repeats)
    train = time_against_matmul({"ours": lambda: _forward_backward(ours, x),
                                 "torchvision": lambda: _forward_backward(theirs, x)}, reference, repeats)
    return {"models": ["torchvision mvit_v2_s", "ours mvitv2_s"] if not quick else ["torchvision tiny MViT", "ours"],
            "input": list(input_size), "torchvision_version": importlib.import_module("torchvision").__version__,
            "gmacs": count_flops(ours.eval(), (1, 3, *input_size)).gmacs,
            "gmacs_torchvision": count_flops(theirs.eval(), (1, 3, *input_size)).gmacs, "max_abs_diff": diff,
            "forward": forward, "forward_backward": train}


def _torchvision_pair(tv_mvit, create_backbone, quick: bool) -> tuple[nn.Module, nn.Module, tuple[int, int, int]]:
    """(torchvision model, our backbone with the same architecture, input size)."""
    if not quick:
        return tv_mvit.mvit_v2_s(), create_backbone("mvitv2_s"), (16, 224, 224)
    # Five blocks in four stages at 8x40x40 (as tests/fixtures/make_torchvision_mvit_fixture.py).
    heads, dims_in, dims_out = [1, 2, 2, 4, 8], [8, 8, 16, 16, 32], [8, 16, 16, 32, 64]
    stride_q = [[1, 1, 1], [1, 2, 2], [1, 1, 1], [1, 2, 2], [1, 2, 2]]
    stride_kv = [[1, 4, 4], [1, 2, 2], [1, 2, 2], [1, 1, 1], [1, 1, 1]]
    blocks = [tv_mvit.MSBlockConfig(num_heads=h, input_channels=ci, output_channels=co, kernel_q=[3, 3, 3],
                                    kernel_kv=[3, 3, 3], stride_q=sq, stride_kv=skv)
              for h, ci, co, sq, skv in zip(heads, dims_in, dims_out, stride_q, stride_kv)]
    theirs = tv_mvit.MViT(spatial_size=(40, 40), temporal_size=8, block_setting=blocks, residual_pool=True,
                          residual_with_cls_embed=False, rel_pos_embed=True, proj_after_attn=True, num_classes=5)
    ours = create_backbone("mvit_tiny", input_size=(8, 40, 40), depths=(1, 2, 1, 1), embed_dim=8, num_heads=1,
                           adaptive_kv_stride=(1, 4, 4))
    return theirs, ours, (8, 40, 40)


# ---------------------------------------------------------------------------------------------------------
# the criterion and the training step


def bench_matcher(repeats: int, batch: int = 8, num_tokens: int = 256, num_classes: int = 80) -> dict[str, Any]:
    """Matching alone, and the criterion (matching + losses, forward and backward to the outputs), per batch.

    Returns:
        ``batch``, ``num_tokens``, ``num_classes``, ``num_actors`` and the timing dicts ``match`` and
        ``criterion``.
    """
    generator = torch.Generator().manual_seed(0)
    outputs = {"pred_boxes": (0.25 + 0.5 * torch.rand(batch, num_tokens, 4, generator=generator)).requires_grad_(),
               "pred_actor": torch.randn(batch, num_tokens, 2, generator=generator).requires_grad_(),
               "pred_actions": torch.randn(batch, num_tokens, num_classes, generator=generator).requires_grad_()}
    targets = random_targets(batch, num_classes, generator)
    criterion = criterion_for_bench(num_classes)
    match = time_runs(lambda: criterion.match(outputs, targets), repeats * 3)
    full = time_runs(lambda: criterion(outputs, targets)["loss"].backward(), repeats * 3)
    return {"batch": batch, "num_tokens": num_tokens, "num_classes": num_classes,
            "num_actors": sum(len(t["boxes"]) for t in targets), "match": match.to_dict(), "criterion": full.to_dict()}


def bench_step(name: str, input_size: tuple[int, int, int], repeats: int, reference: MatmulReference,
               dataset_root: str | os.PathLike | None = None) -> dict[str, Any]:
    """Training steps at batch 1: forward, criterion, backward, AdamW step; the criterion is timed inside.

    With ``dataset_root`` (a synthetic dataset), steps on clips from a 2-worker ``DataLoader`` run
    interleaved with the steps on a fixed clip: equal times mean that loading is hidden behind compute.

    Returns:
        ``name``, ``input``, ``gmacs``, the timing dicts ``step`` (and ``step_with_loader``) with
        ``matmul_gflops``, and ``criterion_median_s``.
    """
    from bmvit.build import create_optimizer
    from bmvit.config import OptimConfig
    from bmvit.flops import count_flops

    torch.manual_seed(0)
    model = detector_for_bench(name, input_size)
    gmacs = count_flops(model, (1, 3, *input_size)).gmacs
    model.train()
    criterion = criterion_for_bench(80)
    optimizer = create_optimizer(model, OptimConfig())
    criterion_s: list[float] = []

    def step(clips: Tensor, targets: list[dict[str, Tensor]]) -> None:
        outputs = model(clips)
        start = time.perf_counter()
        losses = criterion(outputs, targets)
        criterion_s.append(time.perf_counter() - start)
        losses["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    clips = torch.randn(1, 3, *input_size)
    targets = random_targets(1, 80, torch.Generator().manual_seed(0))
    fns = {"step": lambda: step(clips, targets)}
    if dataset_root is not None:
        batches = iter(training_loader(dataset_root, "video", 2, input_size[0], input_size[1], repeats + 1))

        def loaded_step() -> None:
            clips, targets = next(batches)
            # The synthetic dataset has fewer classes than the model: its labels fill the first columns.
            step(clips, [{"boxes": t["boxes"], "labels": F.pad(t["labels"], (0, 80 - t["labels"].shape[1]))}
                         for t in targets])

        fns["step_with_loader"] = loaded_step
    timings = time_against_matmul(fns, reference, repeats)
    # The warm-up calls (one per function) come first in criterion_s: only the timed steps count.
    return {"name": name, "input": list(input_size), "gmacs": gmacs, **timings,
            "criterion_median_s": statistics.median(criterion_s[len(fns):])}


# ---------------------------------------------------------------------------------------------------------
# inference end to end


def bench_predict(name: str, input_size: tuple[int, int, int], video: str | os.PathLike,
                  reference: MatmulReference) -> dict[str, Any]:
    """``Predictor.predict`` on ``video`` at one key frame per second, batch 1, interleaved with one
    forward pass of the same detector and the matmul reference (after a warm-up forward).

    Returns:
        ``name``, ``input``, ``keyframes``, ``seconds`` (the whole video), ``keyframes_per_s`` and
        ``forward_s`` (one forward pass).
    """
    from bmvit.inference.predictor import Predictor

    torch.manual_seed(0)
    predictor = Predictor(detector_for_bench(name, input_size), device="cpu", batch_size=1,
                          on_warning=lambda _m: None)
    clip = torch.randn(1, 3, *input_size)
    predictor.forward_clips(clip)
    keyframes: list[int] = []
    timings = time_against_matmul({"predict": lambda: keyframes.append(len(predictor.predict(video, fps=1.0))),
                                   "forward": lambda: predictor.forward_clips(clip)}, reference, 1, warmup=0)
    seconds = timings["predict"]["median_s"]
    return {"name": name, "input": list(input_size), "keyframes": keyframes[0], "seconds": seconds,
            "keyframes_per_s": keyframes[0] / seconds, "forward_s": timings["forward"]["median_s"]}


__all__ = ["backbone_from_torchvision", "bench_backbone", "bench_matcher", "bench_predict", "bench_step",
           "bench_torchvision", "criterion_for_bench", "detector_for_bench", "random_targets"]
