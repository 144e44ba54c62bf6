"""What a long multi-GPU run needs from the trainer, checked on CPU: mid-epoch resume, unreadable
clips skipped and counted, per-rank random streams, collectives on the process group's device, and
bad settings refused in one line before any data is read."""

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from bmvit import distributed as dist_utils
from bmvit import engine, trainer
from bmvit.data import loader
from bmvit.checkpoint import load_tensors
from bmvit.config import ConfigError, load_config

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "synthetic_tiny.yaml"


def _config(root, out_dir, tiny_overrides, **extra):
    return load_config(CONFIG, tiny_overrides(root, out_dir, **extra))


def test_mid_epoch_resume_equals_an_uninterrupted_run(tiny_dataset, tmp_path, tiny_overrides, monkeypatch):
    extra = {"train.epochs": 2, "train.checkpoint_every_steps": 1, "train.log_every": 1}
    trainer.fit(_config(tiny_dataset, tmp_path / "full", tiny_overrides, **extra))

    # Kill the second run in the middle of epoch 1, two batches after a step checkpoint was written.
    original, calls = engine.prepare_batch, {"n": 0}
    batches_per_epoch = json.loads((tmp_path / "full" / "metrics.jsonl").read_text().splitlines()[0])["steps"]
    assert batches_per_epoch >= 3

    def dying(*args, **kwargs):
        calls["n"] += torch.is_grad_enabled()  # training batches only; evaluation runs in inference mode
        if calls["n"] == batches_per_epoch + 3:  # the third batch of epoch 1
            raise KeyboardInterrupt("preempted")
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "prepare_batch", dying)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(_config(tiny_dataset, tmp_path / "killed", tiny_overrides, **extra))
    monkeypatch.setattr(engine, "prepare_batch", original)
    _, meta = load_tensors(tmp_path / "killed" / "last.safetensors")
    assert (meta["progress"]["epoch"], meta["progress"]["batches_done"]) == (1, 2)

    trainer.fit(_config(tiny_dataset, tmp_path / "killed", tiny_overrides, **extra), resume=True)
    history = [json.loads(line) for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["resumed_at_batch"] == 2
    full, _ = load_tensors(tmp_path / "full" / "last.safetensors")
    resumed, _ = load_tensors(tmp_path / "killed" / "last.safetensors")
    for key in full:
        if key.startswith("model."):
            torch.testing.assert_close(resumed[key], full[key], rtol=1e-5, atol=1e-6)


def _break_frames(root: Path) -> list[str]:
    """Delete one frame and truncate another that the training split's clips read; returns their names.

    Key frame second 902 is frame 60 at 30 fps and 903 is frame 90: both are the centre of a clip."""
    video = (root / "annotations" / "ava_train_v2.2.csv").read_text().split(",", 1)[0]
    missing, corrupt = (root / "frames" / video / f"{video}_{index + 1:06d}.jpg" for index in (60, 90))
    missing.unlink()
    corrupt.write_bytes(corrupt.read_bytes()[:200])
    return [missing.name, corrupt.name]


def test_unreadable_frames_are_skipped_named_and_counted(tiny_frames_dataset, tmp_path, tiny_overrides, caplog):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(tiny_frames_dataset, root)
    names = _break_frames(root)
    extra = {"data.source": "frames", "train.epochs": 1, "data.max_bad_clips": 0.5}
    with caplog.at_level("WARNING", logger="bmvit.train"):
        final = trainer.fit(_config(root, tmp_path / "run", tiny_overrides, **extra))
    assert final["mAP"] is not None
    logged = "\n".join(r.getMessage() for r in caplog.records if "unreadable clip" in r.getMessage())
    assert all(name in logged for name in names)

    # Above the threshold the run stops with a message that says what to do.
    with pytest.raises(engine.BadDataError, match=r"could not be read \(data.max_bad_clips=0.0\).*bmvit data check"):
        trainer.fit(_config(root, tmp_path / "strict", tiny_overrides, **{**extra, "data.max_bad_clips": 0.0}))


def test_an_unreadable_item_is_replaced_by_the_next_and_reported():
    class Flaky(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, index):
            if index == 1:
                raise FileNotFoundError("video v: frame 7 is missing: v/v_000008.jpg")
            return torch.full((1,), index), {"video_id": "v", "timestamp": index}

    items = loader.SeededItems(Flaky(), seed=0)
    clip, target = items[(0, 1)]
    assert int(clip) == 2 and "v_000008.jpg" in target["bad_clips"][0]
    assert "bad_clips" not in items[(0, 2)][1]

    blank = loader.EvalItems(Flaky(), (3, 2, 4, 4))
    blank.dataset.keyframes = [type("K", (), {"video_id": "v", "timestamp": t})() for t in range(4)]
    blank.dataset.class_ids = [1, 2]
    clip, target = blank[1]
    assert clip.shape == (3, 2, 4, 4) and clip.dtype == torch.uint8 and target["bad_clips"]


def test_each_rank_and_step_gets_its_own_random_stream():
    seeds = {engine.step_seed(0, rank, epoch, batch) for rank in range(8) for epoch in range(3) for batch in range(50)}
    assert len(seeds) == 8 * 3 * 50
    assert engine.step_seed(5, 1, 2, 3) == engine.step_seed(5, 1, 2, 3)  # the same after a resume


def test_the_train_sampler_carries_the_epoch_to_persistent_workers():
    sampler = loader.ShardSampler(10, rank=0, world=2, shuffle=True, seed=1, batch_size=2)
    sampler.set_epoch(3)
    first = list(sampler)
    assert {e for e, _ in first} == {3} and len(first) == 4
    sampler.set_epoch(3, skip_batches=1)
    assert list(sampler) == first[2:]


def test_collectives_take_tensors_on_the_process_group_device(monkeypatch, tmp_path):
    seen = []
    wrapped = {name: getattr(dist, name) for name in ("all_reduce", "broadcast_object_list", "gather_object")}

    def record(name):
        def call(*args, **kwargs):
            first = args[0]
            if torch.is_tensor(first):
                seen.append((name, first.device))
            elif name == "broadcast_object_list":
                seen.append((name, kwargs["device"]))
            return wrapped[name](*args, **kwargs)
        return call

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        for name in wrapped:
            monkeypatch.setattr(dist, name, record(name))
        logs = dist_utils.reduce_dict({"loss": torch.tensor(2.0), "steps": 3})
        assert logs == {"loss": 2.0, "steps": 3.0}
        assert dist_utils.all_reduce_sum(torch.ones(2)).tolist() == [1.0, 1.0]
        assert dist_utils.broadcast_object(0.25) == 0.25
        assert dist_utils.gather_to_main([("v", 1)]) == [[("v", 1)]]
    finally:
        dist.destroy_process_group()
    assert [name for name, _ in seen] == ["all_reduce", "all_reduce", "broadcast_object_list"]
    assert all(device == torch.device("cpu") for _, device in seen)


def test_under_nccl_the_collective_device_is_this_ranks_gpu(monkeypatch):
    monkeypatch.setattr(dist_utils, "is_dist", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda *a: "nccl")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert dist_utils.comm_device() == torch.device("cuda", 3)


def test_bad_gpu_settings_fail_in_one_line_before_any_data_is_read(tmp_path, tiny_overrides, monkeypatch):
    empty = tmp_path / "no_data"  # would fail later, when the data is read: the settings must fail first
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"^train.device=cuda but this machine has no CUDA device"):
            trainer.fit(_config(empty, tmp_path / "run", tiny_overrides, **{"train.device": "cuda"}))
    with pytest.raises(ConfigError, match="train.amp must be"):
        trainer.fit(_config(empty, tmp_path / "run", tiny_overrides, **{"train.amp": "fp16"}))
    with pytest.raises(ConfigError, match="data.max_bad_clips"):
        trainer.fit(_config(empty, tmp_path / "run", tiny_overrides, **{"data.max_bad_clips": 2.0}))
    with pytest.raises(ConfigError, match="train.batch_size must be >= 1"):
        trainer.fit(_config(empty, tmp_path / "run", tiny_overrides, **{"train.batch_size": 0}))

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla V100")
    with pytest.raises(ConfigError, match="Tesla V100 does not support bfloat16; use train.amp=off"):
        engine.amp_dtype_for("bf16", torch.device("cuda", 0))
    assert engine.amp_dtype_for("auto", torch.device("cuda", 0)) is None

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "is_nccl_available", lambda: False)
    with pytest.raises(dist_utils.DistributedSetupError, match="needs NCCL"):
        dist_utils.init_distributed("cuda")
    assert not (tmp_path / "run").exists()


def test_a_small_dev_shm_is_an_error_at_start_with_the_numbers(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(64 * 2**20, 0, 64 * 2**20))
    loader.check_shared_memory(0, 8, (3, 16, 256, 256), shm=str(tmp_path))  # no workers: nothing to check
    with pytest.raises(RuntimeError, match=r"has 64 MiB free.*need about 192 MiB.*--shm-size"):
        loader.check_shared_memory(2, 8, (3, 16, 256, 256), shm=str(tmp_path))


def test_default_workers_share_this_nodes_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert loader.default_num_workers(-1) == 2
    assert loader.default_num_workers(5) == 5
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    assert loader.default_num_workers(-1) == 1


def test_a_global_batch_is_shared_by_the_processes_or_refused_in_one_line(tmp_path, tiny_overrides):
    from bmvit.config import TrainConfig

    assert trainer.per_process_batch(TrainConfig(batch_size=8), world=4) == 8  # 0 = batch_size as given
    assert trainer.per_process_batch(TrainConfig(global_batch_size=64), world=8) == 8
    assert trainer.per_process_batch(TrainConfig(global_batch_size=64, grad_accum=2), world=4) == 8
    with pytest.raises(ConfigError, match=r"^train.global_batch_size=64 is not divisible by 3 process\(es\)"):
        trainer.per_process_batch(TrainConfig(global_batch_size=64), world=3)
    # Refused before any data is read: the root does not even exist.
    overrides = {"train.global_batch_size": 3, "train.grad_accum": 2}
    with pytest.raises(ConfigError, match="choose a multiple of 2"):
        trainer.fit(_config(tmp_path / "no_data", tmp_path / "run", tiny_overrides, **overrides))
