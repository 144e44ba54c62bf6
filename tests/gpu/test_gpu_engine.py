"""The training step on a CUDA device: matcher and criterion equal to the CPU's, the uint8 hand-off
normalised on the GPU, a step of the engine with non-blocking copies, and NCCL collectives.

Run by ``scripts/gpu_check.sh`` (``pytest -m gpu``); skipped without CUDA."""

import pytest
import torch

from bmvit.data.transforms import normalize_clips
from bmvit.engine import StepContext, prepare_batch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.usefixtures("exact_fp32"),  # tests/gpu/conftest.py
]


def _outputs_and_targets(device, batch=4, tokens=256, classes=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    outputs = {
        "pred_boxes": torch.rand(batch, tokens, 4, generator=g) * 0.5 + 0.25,
        "pred_actor": torch.randn(batch, tokens, 2, generator=g),
        "pred_actions": torch.randn(batch, tokens, classes, generator=g),
    }
    targets = []
    for b in range(batch):
        people = b + 1
        centres = torch.rand(people, 2, generator=g) * 0.6 + 0.2
        sizes = torch.rand(people, 2, generator=g) * 0.2 + 0.05
        labels = (torch.rand(people, classes, generator=g) > 0.95).float()
        labels[:, 0] = 1.0
        targets.append({"boxes": torch.cat([centres, sizes], 1), "labels": labels})
    move = lambda t: {k: v.to(device) for k, v in t.items()}  # noqa: E731
    return {**move(outputs), "token_grid": (1, 16, 16)}, [move(t) for t in targets]


def test_matcher_and_criterion_equal_on_gpu_and_cpu():
    from bmvit.build import create_criterion
    from bmvit.config import LossConfig, MatcherConfig

    criterion = create_criterion(MatcherConfig(cost_center=1.0), LossConfig(o2m_weight=0.5), 80)
    cpu_out, cpu_tgt = _outputs_and_targets("cpu")
    gpu_out, gpu_tgt = _outputs_and_targets("cuda")
    for (p_cpu, t_cpu), (p_gpu, t_gpu) in zip(criterion.matcher(cpu_out, cpu_tgt), criterion.matcher(gpu_out, gpu_tgt)):
        assert torch.equal(p_cpu, p_gpu) and torch.equal(t_cpu, t_gpu)
    cpu_losses = criterion(cpu_out, cpu_tgt)
    gpu_losses = criterion.to("cuda")(gpu_out, gpu_tgt)
    for key, value in cpu_losses.items():
        if torch.is_tensor(value) and value.numel() == 1:
            torch.testing.assert_close(gpu_losses[key].cpu(), value, rtol=1e-5, atol=1e-6, msg=key)


def test_uint8_clips_normalise_on_the_gpu_as_on_the_cpu():
    g = torch.Generator().manual_seed(1)
    clips = torch.randint(0, 256, (3, 3, 4, 32, 32), dtype=torch.uint8, generator=g)
    colours = [(1.2, 0.8, 1.1, 0.0), None, (0.9, 1.3, 0.7, 0.0)]
    mean, std = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)
    cpu = normalize_clips(clips, mean, std, colours)
    gpu = normalize_clips(clips.cuda(), mean, std, colours)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)


def test_a_bf16_engine_step_on_pinned_uint8_batches():
    from bmvit.build import create_criterion, create_optimizer
    from bmvit.config import LossConfig, MatcherConfig, OptimConfig
    from bmvit.models import create_model

    model = create_model("bmvit_mvit_tiny", num_classes=80).cuda()
    criterion = create_criterion(MatcherConfig(), LossConfig(), 80).cuda()
    optimizer = create_optimizer(model, OptimConfig())
    assert optimizer.defaults.get("fused") is True  # the fused AdamW kernel on CUDA
    t, h, w = model.input_size
    clips = torch.randint(0, 256, (2, 3, t, h, w), dtype=torch.uint8).pin_memory()
    _, targets = _outputs_and_targets("cpu", batch=2)
    for target in targets:
        target.update(video_id="v", timestamp=902)
    ctx = StepContext(device=torch.device("cuda"), amp_dtype=torch.bfloat16)
    clips, targets = prepare_batch(clips, targets, ctx)
    assert clips.is_cuda and clips.dtype == torch.float32 and targets[0]["boxes"].is_cuda
    with torch.autocast("cuda", dtype=torch.bfloat16):
        outputs = model(clips)
    assert outputs["pred_boxes"].dtype == torch.float32  # projection and heads run in fp32
    losses = criterion({k: v.float() if torch.is_tensor(v) else v for k, v in outputs.items()}, targets)
    losses["loss"].backward()
    optimizer.step()
    assert torch.isfinite(losses["loss"]).item()


def test_nccl_collectives_take_cuda_tensors(tmp_path):
    import torch.distributed as dist

    from bmvit import distributed as dist_utils

    if not dist.is_nccl_available():
        pytest.skip("this torch build has no NCCL")
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1,
                            device_id=torch.device("cuda", 0))
    try:
        assert dist_utils.comm_device() == torch.device("cuda", 0)
        # The call that crashed every NCCL run at the end of epoch 0: a dict of floats and device tensors.
        logs = dist_utils.reduce_dict({"loss": torch.tensor(2.0, device="cuda"), "grad_norm": 0.5})
        assert logs == {"grad_norm": 0.5, "loss": 2.0}
        assert dist_utils.broadcast_object({"mAP": 0.3}) == {"mAP": 0.3}
        assert dist_utils.gather_to_main([("v", 902)]) == [[("v", 902)]]
        assert dist_utils.all_reduce_sum(torch.ones(3)).tolist() == [1.0, 1.0, 1.0]
    finally:
        dist.destroy_process_group()
