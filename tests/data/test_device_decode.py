"""Decoding JPEG frames where the model runs (``data.decode``), checked on CPU.

The GPU itself is checked by tests/gpu/test_gpu_decode.py (nvJPEG against PyAV, the device path against
the worker path on CUDA). Here the decoder is PyAV on the CPU standing in for nvJPEG, so everything
else (the undecoded hand-off, the replayed augmentation, bad frames, the choice, the trainer's wiring)
must give exactly the worker path's clips, targets and losses.
"""

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bmvit import trainer
from bmvit.build import decoding_loader
from bmvit.config import ConfigError, load_config
from bmvit.data import device_decode
from bmvit.data.dataset import AVADataset, collate_fn
from bmvit.data.device_decode import DeviceDecodedBatches, compare_loaders, encoded_items, pyav_decoder
from bmvit.data.encoded import EncodedBatch, EncodedClip
from bmvit.data.loader import EvalItems, SeededItems, ShardSampler, create_loader
from bmvit.data.transforms import resize_uint8_in_float

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "synthetic_tiny.yaml"

AUGMENT = {"scale_jitter": (0.7, 1.2), "hflip": 0.5, "color_jitter": 0.3}


@pytest.fixture
def frames_root(tiny_frames_dataset) -> Path:
    """The tiny synthetic dataset with JPEG frame folders (tests/conftest.py): 2 train videos, 1 val, 160x120."""
    return tiny_frames_dataset


def _dataset(root, split="train", train=True, resize="square", **kwargs):
    return AVADataset(root, split, source="frames", num_frames=4, stride=8, input_size=64, train=train,
                      resize=resize, output="uint8", **(AUGMENT if train else {}), **kwargs)


def _pairs(items, batch_size=3, workers=0):
    """The same batches through the worker path and through the device path (PyAV on the CPU as the decoder)."""
    sampler = ShardSampler(len(items), 0, 1, shuffle=True, seed=2, batch_size=batch_size)
    plain = create_loader(items, sampler, batch_size, workers, 0)
    device = DeviceDecodedBatches(create_loader(encoded_items(items), sampler, batch_size, workers, 0),
                                  items.dataset.apply_transform, pyav_decoder("cpu"), "cpu")
    return list(zip(plain, device))


def _assert_same_targets(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if torch.is_tensor(value):
            assert torch.equal(value, b[key]), key
        else:
            assert value == b[key], key


@pytest.mark.parametrize("resize,workers", [("square", 0), ("short_side", 0), ("letterbox", 0), ("short_side", 2)])
def test_the_device_path_gives_the_worker_paths_clips_and_targets(frames_root, resize, workers):
    """Two workers: the item's seed travels with its undecoded clip from the worker process."""
    items = SeededItems(_dataset(frames_root, resize=resize), seed=11)
    pairs = _pairs(items, workers=workers)
    assert len(pairs) == 2  # 6 training key frames, batches of 3
    jittered = 0
    for (clips, targets), (dclips, dtargets) in pairs:
        assert dclips.dtype == torch.uint8 and dclips.shape == clips.shape == (3, 3, 4, 64, 64)
        assert torch.equal(clips, dclips)  # same decoder, same draws, same CPU kernels: bit-equal
        for t, d in zip(targets, dtargets):
            _assert_same_targets(t, d)
            jittered += "colour" in t
    assert jittered > 0  # the augmentation was on and replayed, not skipped


def test_evaluation_items_have_no_seed_and_match_too(frames_root):
    items = EvalItems(_dataset(frames_root, "val", train=False, resize="letterbox"), (3, 4, 64, 64))
    sampler = ShardSampler(len(items), 0, 1, shuffle=False)
    plain = list(create_loader(items, sampler, 4, 0, 0))
    encoded = encoded_items(items)
    device = list(DeviceDecodedBatches(create_loader(encoded, sampler, 4, 0, 0), encoded.dataset.apply_transform,
                                       pyav_decoder("cpu"), "cpu", on_bad="zero"))
    for (clips, targets), (dclips, dtargets) in zip(plain, device, strict=True):
        assert torch.equal(clips, dclips)
        for t, d in zip(targets, dtargets):
            assert t["letterbox"] == d["letterbox"]
            _assert_same_targets(t, d)


def test_workers_hand_over_the_files_undecoded_with_their_seed(frames_root):
    items = encoded_items(SeededItems(_dataset(frames_root), seed=11))
    clip, target = items[(0, 5)]
    assert isinstance(clip, EncodedClip) and clip.num_frames == 4 and clip.stored_size == (120, 160)
    assert clip.seed == hash((11, 0, 5)) % (2**31)
    files = clip.files()
    assert all(bytes(f[:2].tolist()) == b"\xff\xd8" for f in files)  # JPEG start-of-image
    assert "boxes_xyxy" in target and "boxes" not in target  # the transform has not run
    batch, targets = collate_fn([items[(0, 5)], items[(0, 6)]])
    assert isinstance(batch, EncodedBatch) and len(batch) == 2 and len(targets) == 2


def test_a_truncated_frame_is_found_in_the_worker_and_skipped_as_before(frames_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(frames_root, root)
    dataset = _dataset(root)
    index = 0
    path = Path(dataset.source(dataset.keyframes[index].video_id).frame_path(int(dataset.frame_indices(index)[1])))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"key frame .*: video .* frame \d+ .*no JPEG end marker; truncated"):
        encoded_items(SeededItems(dataset, seed=0)).dataset.read_encoded(index)
    clip, target = encoded_items(SeededItems(dataset, seed=0))[(0, index)]
    assert isinstance(clip, EncodedClip) and "no JPEG end marker" in target["bad_clips"][0]


class _RefusingDecoder:
    """A decoder that refuses the files in ``bad`` (by their bytes), as nvJPEG refuses a damaged file."""

    def __init__(self, bad: set[bytes]) -> None:
        self.bad, self.calls = bad, []
        self.inner = pyav_decoder("cpu")

    def __call__(self, files):
        self.calls.append(len(files))
        if any(f.numpy().tobytes() in self.bad for f in files):
            raise RuntimeError("nvjpegDecodeBatched failed: NVJPEG_STATUS_BAD_JPEG")
        return self.inner(files)


def _batch_of(root, n=3, seed=3):
    items = encoded_items(SeededItems(_dataset(root), seed=seed))
    return items, collate_fn([items[(0, i)] for i in range(n)])


def test_a_frame_the_device_refuses_is_decoded_by_pyav_instead(frames_root):
    items, (batch, targets) = _batch_of(frames_root)
    refused = batch.clips[1].files()[2].numpy().tobytes()
    decoder = _RefusingDecoder({refused})
    clips, out = DeviceDecodedBatches([], items.dataset.apply_transform, decoder, "cpu").decode_batch(batch, targets)
    reference, _ = DeviceDecodedBatches([], items.dataset.apply_transform, pyav_decoder("cpu"), "cpu").decode_batch(
        batch, targets)
    assert torch.equal(clips, reference)
    assert decoder.calls[0] == 12 and decoder.calls[1:] == [1] * 12  # the batch, then file by file
    assert not any(t.get("bad_clips") for t in out)


def test_a_clip_no_decoder_reads_is_dropped_in_training_and_zeroed_in_evaluation(frames_root):
    items, (batch, targets) = _batch_of(frames_root)
    refused = batch.clips[0].files()[1].numpy().tobytes()

    def fallback(files):
        raise ValueError("cannot decode (corrupt or truncated image?)")

    kwargs = {"fallback": fallback}
    drop = DeviceDecodedBatches([], items.dataset.apply_transform, _RefusingDecoder({refused}), "cpu", **kwargs)
    clips, out = drop.decode_batch(batch, targets)
    assert clips.shape[0] == 2 and len(out) == 2
    assert out[0]["video_id"] == targets[1]["video_id"] and out[0]["timestamp"] == targets[1]["timestamp"]
    (message,) = out[0]["bad_clips"]
    assert message.startswith(f"key frame {targets[0]['video_id']},{targets[0]['timestamp']}: a frame decodes "
                              "neither on cpu (nvjpegDecodeBatched failed: NVJPEG_STATUS_BAD_JPEG) nor with PyAV")

    zero = DeviceDecodedBatches([], items.dataset.apply_transform, _RefusingDecoder({refused}), "cpu",
                                on_bad="zero", **kwargs)
    clips, out = zero.decode_batch(batch, targets)
    assert clips.shape[0] == 3 and not clips[0].any() and clips[1].any()
    assert out[0]["bad_clips"] and out[0]["boxes"].shape == (0, 4) and out[0]["labels"].shape[0] == 0


def test_uint8_resize_off_the_cpu_is_within_a_grey_level_of_the_cpu_kernel():
    torch.manual_seed(0)
    clip = torch.randint(0, 256, (4, 3, 120, 160), dtype=torch.uint8)
    for size, antialias in (((64, 64), True), ((90, 120), True), ((240, 320), False)):
        cpu = torch.nn.functional.interpolate(clip, size=size, mode="bilinear", align_corners=False,
                                              antialias=antialias)
        other = resize_uint8_in_float(clip, size, antialias)
        assert other.dtype == torch.uint8 and other.shape == cpu.shape
        assert (other.int() - cpu.int()).abs().max() <= 1


class _Timed:
    """A fake loader of ``n`` batches of 4 clips, each taking ``delay`` seconds."""

    def __init__(self, delay: float, n: int = 6) -> None:
        self.delay, self.n = delay, n

    def __iter__(self):
        for _ in range(self.n):
            time.sleep(self.delay)
            yield torch.zeros(4, 3, 2, 8, 8, dtype=torch.uint8), [{}] * 4


class _Failing:
    """A fake loader whose first batch raises, as a GPU decoder that does not work would."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __iter__(self):
        raise self.error
        yield  # a generator, as a loader's iterator is


def test_the_faster_loader_is_chosen_and_both_rates_are_reported():
    chosen, rates, errors = compare_loaders({"workers": lambda: _Timed(0.05), "device": lambda: _Timed(0.005)}, 4,
                                            torch.device("cpu"))
    assert chosen == "device" and rates["device"] > 3 * rates["workers"] > 0 and errors == {}
    chosen, _, _ = compare_loaders({"workers": lambda: _Timed(0.005), "device": lambda: _Timed(0.05)}, 4,
                                   torch.device("cpu"))
    assert chosen == "workers"
    # Summed over processes: the choice follows the sums, whatever this process measured.
    others = lambda r: r * torch.tensor([1.0, 100.0], dtype=r.dtype)  # noqa: E731 - the other processes' sums
    chosen, rates, _ = compare_loaders({"workers": lambda: _Timed(0.005), "device": lambda: _Timed(0.05)}, 4,
                                       torch.device("cpu"), combine=others)
    assert chosen == "device"


def test_a_loader_that_may_fail_and_fails_is_not_chosen_on_any_process():
    broken = TypeError("nvjpeg: bad state\nmore")
    fast_but_broken = {"workers": lambda: _Timed(0.02), "device": lambda: _Failing(broken)}
    chosen, rates, errors = compare_loaders(fast_but_broken, 3, torch.device("cpu"), may_fail=("device",))
    assert chosen == "workers" and rates["device"] == float("-inf") and rates["workers"] > 0
    assert errors == {"device": "TypeError: nvjpeg: bad state"}
    # It failed on another process: the sums carry -inf here too, so this process does not choose it either.
    other_failed = lambda r: r + torch.tensor([10.0, float("-inf")], dtype=r.dtype)  # noqa: E731
    chosen, rates, errors = compare_loaders({"workers": lambda: _Timed(0.02), "device": lambda: _Timed(0.001)}, 3,
                                            torch.device("cpu"), combine=other_failed, may_fail=("device",))
    assert chosen == "workers" and rates["device"] == float("-inf") and errors == {}
    # A loader not allowed to fail raises; so does a comparison where nothing could be measured.
    with pytest.raises(OSError, match="disk"):
        compare_loaders({"workers": lambda: _Failing(OSError("disk")), "device": lambda: _Timed(0.001)}, 3,
                        torch.device("cpu"), may_fail=("device",))
    with pytest.raises(RuntimeError, match="no loader could be measured.*TypeError"):
        compare_loaders({"device": lambda: _Failing(TypeError("x"))}, 3, torch.device("cpu"), may_fail=("device",))


def test_auto_decodes_in_the_workers_when_the_device_path_fails_while_measured(frames_root, monkeypatch):
    """A GPU decoder that imports but does not work (a broken libnvjpeg, say) must not stop a default run.
    The model is on the CPU here, with the stand-in decoder offered regardless, as in the trainer tests."""

    def broken(device):
        def decode(files):
            raise TypeError("nvjpeg handle is not initialised")
        return decode, "a broken nvJPEG"

    cfg = load_config(CONFIG, [f"data.root={frames_root}", "data.source=frames"]).data
    items = SeededItems(_dataset(frames_root), seed=0)
    sampler = ShardSampler(len(items), 0, 1, shuffle=True, seed=2, batch_size=2)
    monkeypatch.setattr(device_decode, "nvjpeg_decoder", broken)
    loader, decoding = decoding_loader(cfg, torch.device("cpu"), items,
                                       lambda d: create_loader(d, sampler, 2, 0, 0), on_bad="drop", probe_batches=2)
    assert decoding.where == "workers" and decoding.message.startswith(
        "data.decode=auto: decoding on the device (a broken nvJPEG) failed while measured (TypeError: nvjpeg "
        "handle is not initialised); decoding in the loader workers, ")
    clips, targets = next(iter(loader))
    assert clips.shape == (2, 3, 4, 64, 64) and clips.dtype == torch.uint8
    # Asked for explicitly, the device path is not second-guessed: its error surfaces.
    cfg.decode = "device"
    loader, decoding = decoding_loader(cfg, torch.device("cpu"), items,
                                       lambda d: create_loader(d, sampler, 2, 0, 0), on_bad="drop")
    with pytest.raises(TypeError, match="not initialised"):
        next(iter(loader))


def test_without_a_gpu_auto_decodes_in_the_workers_and_device_is_refused(frames_root, monkeypatch):
    cfg = load_config(CONFIG, [f"data.root={frames_root}", "data.source=frames"]).data
    items = SeededItems(_dataset(frames_root), seed=0)
    made = []

    def make(d):
        made.append(d)
        return d

    loader, decoding = decoding_loader(cfg, torch.device("cpu"), items, make, on_bad="drop")
    assert loader is items and decoding.where == "workers" and decoding.message == ""  # a CPU run: no choice
    # On a GPU without torchvision's decoder (none here), auto decodes in the workers and says why.
    monkeypatch.setattr(device_decode, "nvjpeg_decoder", lambda device: (None, "torchvision does not import"))
    loader, decoding = decoding_loader(cfg, torch.device("cuda"), items, make, on_bad="drop")
    assert loader is items and decoding.message == ("frames decoded in the loader workers (data.decode=auto: "
                                                    "torchvision does not import)")
    monkeypatch.undo()
    cfg.decode = "device"
    with pytest.raises(ConfigError, match="data.decode=device cannot be used: the model runs on cpu"):
        decoding_loader(cfg, torch.device("cpu"), items, make, on_bad="drop")
    cfg.source = "video"
    with pytest.raises(ConfigError, match=r"data.decode=device cannot be used: .*video files \(data.source=video\)"):
        decoding_loader(cfg, torch.device("cuda"), items, make, on_bad="drop")
    cfg.decode = "bogus"
    with pytest.raises(ConfigError, match="data.decode must be auto, cpu or device"):
        cfg.validate()


def _standin(device):
    return pyav_decoder(device), "PyAV on the CPU, standing in for nvJPEG"


def test_training_decoding_on_the_device_equals_decoding_in_the_workers(frames_root, tmp_path, tiny_overrides,
                                                                         monkeypatch, capsys):
    """The whole trainer through the device path (PyAV standing in for nvJPEG): the same losses and mAP."""
    monkeypatch.setattr(device_decode, "nvjpeg_decoder", _standin)
    extra = {"data.source": "frames", "train.epochs": 1, "data.scale_jitter": "[0.8, 1.1]", "data.color_jitter": 0.2,
             "train.log_every": 1}
    runs = {}
    for decode in ("cpu", "device", "auto"):
        out = tmp_path / decode
        trainer.fit(load_config(CONFIG, tiny_overrides(frames_root, out, **extra, **{"data.decode": decode})))
        runs[decode] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    printed = capsys.readouterr().out
    assert "decoded on the device by PyAV on the CPU, standing in for nvJPEG (data.decode=device)" in printed
    assert "(data.decode=cpu)" in printed
    assert "data.decode=auto: " in printed and "clips/s decoding on the device" in printed

    def losses(records):
        return [(r.get("loss"), r.get("mAP")) for r in records]

    assert losses(runs["device"]) == losses(runs["cpu"])
    assert any(r.get("mAP") is not None for r in runs["cpu"])
    assert losses(runs["auto"]) == losses(runs["cpu"])  # whichever it chose, the same numbers


def test_a_resumed_auto_run_decodes_where_the_run_it_continues_did(frames_root, tmp_path, tiny_overrides,
                                                                   monkeypatch, capsys):
    """data.decode=auto measures at start-up; a resumed run must not measure again and switch decoders."""
    from bmvit.checkpoint import read_metadata

    monkeypatch.setattr(device_decode, "nvjpeg_decoder", _standin)
    monkeypatch.setattr(device_decode, "compare_loaders", lambda make, *a, **k: ("device", {"workers": 1.0,
                                                                                            "device": 2.0}, {}))
    out = tmp_path / "run"
    extra = {"data.source": "frames", "train.epochs": 1, "train.eval_every": 5}
    trainer.fit(load_config(CONFIG, tiny_overrides(frames_root, out, **extra)))
    assert read_metadata(out / "last.safetensors")["progress"]["decoding"] == "device"
    assert "1.0 in the loader workers" in capsys.readouterr().out

    def must_not_measure(*args, **kwargs):
        raise AssertionError("a resumed run measured again")

    monkeypatch.setattr(device_decode, "compare_loaders", must_not_measure)
    trainer.fit(load_config(CONFIG, tiny_overrides(frames_root, out, **{**extra, "train.epochs": 2})), resume=True)
    printed = capsys.readouterr().out
    assert "decoded on the device by PyAV on the CPU, standing in for nvJPEG (data.decode=auto, as in the run this " \
        "one resumes)" in printed
