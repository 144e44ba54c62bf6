"""CUDA checks of the MViTv2 attention path and of the detector (``pytest -m gpu -s tests/gpu/``).

On CUDA every MViT block makes one ``scaled_dot_product_attention`` call, pinned to the
memory-efficient kernel, with the relative-position bias as its mask; the projection and the heads
run in fp32 under autocast. These tests check that the numbers match the CPU, that a bf16 training
step of the full detector is finite everywhere, that the efficient kernel is the one that runs, and
that activation checkpointing does not change the gradients. What they measure is printed and, when
``BMVIT_GPU_REPORT_DIR`` is set, written there, one file per test.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

import bmvit
from bmvit.models.backbones.mvit import sdpa_backends

pytestmark = pytest.mark.gpu

BACKBONE = "mvitv2_s_det"  # 16x256 clips, 8x16x16 tokens of 768 channels
DETECTOR = "bmvit_mvitv2_s"  # that backbone with the projection and heads
CLIP = (3, 16, 256, 256)
OUTPUT_KEYS = ("pred_boxes", "pred_actor", "pred_actions")
EFFICIENT_KERNEL_MARKS = ("fmha", "efficient_attention", "mem_efficient", "memeff")


@pytest.fixture(autouse=True)
def cuda_without_tf32(request):
    """Skip without CUDA; TF32 off (``exact_fp32`` of tests/gpu/conftest.py), so that fp32 on the GPU is fp32."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    request.getfixturevalue("exact_fp32")
    yield
    torch.cuda.empty_cache()


def _report(name: str, lines: list[str]) -> None:
    text = "\n".join(lines)
    print(f"\n--- {name}\n{text}")
    directory = os.environ.get("BMVIT_GPU_REPORT_DIR")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / f"{name}.txt").write_text(text + "\n")


def _clip(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, *CLIP, generator=torch.Generator().manual_seed(seed))


def _backbone(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return bmvit.create_backbone(BACKBONE, **overrides)


def _kernel_names(prof) -> list[str]:
    names = {event.name for event in prof.events() if str(event.device_type).endswith("CUDA")}
    return sorted(names or {event.name for event in prof.events()})


def _is_efficient(name: str) -> bool:
    return any(mark in name.lower() for mark in EFFICIENT_KERNEL_MARKS)


def test_fp32_tokens_match_the_cpu():
    model = _backbone().eval()
    x = _clip(1)
    torch.set_num_threads(os.cpu_count() or 1)  # the conftest fixture puts it back
    with torch.no_grad():
        on_cpu = model(x)
        model.cuda()
        on_gpu = model(x.cuda())
        model.set_attention_chunking("always")  # query chunks on CUDA too (each mask padded by SDPA)
        chunked = model(x.cuda())
    one_call_diff = (on_gpu.cpu() - on_cpu).abs().max().item()
    chunked_diff = (chunked - on_gpu).abs().max().item()
    _report("fp32_tokens_match_the_cpu", [
        f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, tokens {tuple(on_gpu.shape)}",
        f"max |token| {on_cpu.abs().max().item():.3f}",
        f"max |GPU one-call - CPU chunked| {one_call_diff:.3e}",
        f"max |GPU chunked - GPU one-call| {chunked_diff:.3e}",
    ])
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(chunked, on_gpu, atol=1e-4, rtol=1e-4)


def test_bf16_tokens_stay_near_fp32():
    """A coarse guard against a silently wrong low-precision kernel (bf16 rounding is a few per cent)."""
    model = _backbone().cuda().eval()
    x = _clip(1).cuda()
    with torch.no_grad():
        full = model(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = model(x).float()
    relative = ((low - full).norm() / full.norm()).item()
    _report("bf16_tokens_vs_fp32", [f"||bf16 - fp32|| / ||fp32|| = {relative:.3e}, "
                                    f"max |bf16 - fp32| {(low - full).abs().max().item():.3e}"])
    assert relative < 0.05


def test_bf16_autocast_train_step_is_finite_everywhere():
    torch.manual_seed(0)
    model = bmvit.create_model(DETECTOR, num_classes=80).cuda().train()
    clip = _clip(2).cuda()
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(clip)
        loss = sum(out[key].float().square().mean() for key in OUTPUT_KEYS)
    loss.backward()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    not_finite = [name for name, p in model.named_parameters() if p.grad is not None
                  and not torch.isfinite(p.grad).all()]
    _report("bf16_autocast_train_step", [
        f"device {torch.cuda.get_device_name()}, batch 2 x {CLIP}, first step (no warm-up) {seconds:.2f} s, "
        f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB",
        f"loss {loss.item():.6f}, output dtypes {[str(out[key].dtype) for key in OUTPUT_KEYS]}",
        f"parameters without gradient: {missing}", f"parameters with non-finite gradient: {not_finite}",
    ])
    assert torch.isfinite(loss)
    assert {out[key].dtype for key in OUTPUT_KEYS} == {torch.float32}  # heads in fp32
    assert not missing and not not_finite


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16"])
def test_attention_runs_on_the_memory_efficient_kernel(autocast):
    model = _backbone().cuda().train()
    x = _clip(1).cuda()
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast)
    with amp, torch.no_grad():
        calls = sdpa_backends(model, x)
    # Forward and backward (the mask needs a gradient in training), with only the efficient kernel allowed.
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
        with amp:
            model(x).float().square().mean().backward()  # warm-up: lazy initialisation out of the profile
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            with amp:
                model(x).float().square().mean().backward()
            torch.cuda.synchronize()
    names = _kernel_names(prof)
    efficient = [name for name in names if _is_efficient(name)]
    softmax = [name for name in names if "softmax" in name.lower()]
    _report(f"sdpa_kernels_{'bf16' if autocast else 'fp32'}", [
        f"device {torch.cuda.get_device_name()}, torch {torch.__version__}",
        "SDPA calls (backend, kernel dtype, q, k, mask, mask dtype, mask stride):",
        *(f"  {c.backend} {c.dtype} q{c.query} k{c.key} mask{c.mask} {c.mask_dtype} stride{c.mask_stride}"
          for c in calls),
        f"memory-efficient attention kernels: {efficient}",
        f"softmax kernels (the math path's): {softmax}",
        "all CUDA kernels:", *(f"  {name}" for name in names),
    ])
    assert len(calls) == len(model.blocks)
    assert {c.backend for c in calls} == {"EFFICIENT_ATTENTION"}
    expected_dtype = torch.bfloat16 if autocast else torch.float32
    assert {(c.dtype, c.mask_dtype) for c in calls} == {(expected_dtype, expected_dtype)}
    assert all(c.mask_stride[-1] == 1 and all(s % 8 == 0 for s in c.mask_stride[:-1]) for c in calls)
    assert any("cutlassf" in n.lower() or "fwd" in n.lower() or "forward" in n.lower() for n in efficient), efficient
    assert any("cutlassb" in n.lower() or "bwd" in n.lower() or "backward" in n.lower() for n in efficient), efficient
    assert not softmax


def test_activation_checkpointing_keeps_the_gradients():
    x = _clip(1).cuda()
    grads = []
    for use_checkpoint in (False, True):
        model = _backbone(use_checkpoint=use_checkpoint, drop_path_rate=0.1).cuda().train()
        torch.manual_seed(1)  # the same drop-path draws in both runs
        model(x).square().mean().backward()
        grads.append({name: p.grad for name, p in model.named_parameters()})
    plain, checkpointed = grads
    worst = max(((checkpointed[n] - g).abs().max() / g.abs().max().clamp_min(1e-30)).item()
                for n, g in plain.items())
    _report("activation_checkpointing", [f"largest |difference| / largest |gradient|, over parameters: {worst:.3e}"])
    for name, grad in plain.items():
        assert grad is not None and checkpointed[name] is not None, name
        scale = grad.abs().max().item()
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-4 * scale, rtol=1e-4, msg=name)
