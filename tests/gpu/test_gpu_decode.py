"""JPEG frames decoded on the GPU (``data.decode=device``): nvJPEG against PyAV, the device path's clips
against the loader workers', and the start-up choice of ``data.decode=auto``.

Run by ``scripts/gpu_check.sh`` (``pytest -m gpu``); skipped without CUDA, and with the reason when
torchvision's nvJPEG decoder cannot be had. The same logic is checked on CPU, with PyAV standing in
for nvJPEG, in tests/data/test_device_decode.py.
"""

from pathlib import Path

import pytest
import torch

from bmvit.data.dataset import AVADataset
from bmvit.data.device_decode import DeviceDecodedBatches, encoded_items, nvjpeg_decoder, pyav_decoder
from bmvit.data.loader import SeededItems, ShardSampler, create_loader

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(scope="module")
def cuda_decoder():
    decoder, why = nvjpeg_decoder(torch.device("cuda"))
    if decoder is None:
        pytest.skip(why)
    return decoder


@pytest.fixture
def frames_root(tiny_frames_dataset) -> Path:
    """The tiny synthetic dataset with JPEG frame folders (tests/conftest.py): 2 train videos, 1 val, 160x120."""
    return tiny_frames_dataset


def test_nvjpeg_frames_are_within_jpeg_decoder_noise_of_pyavs(frames_root, cuda_decoder):
    files = sorted((frames_root / "frames").glob("*/*.jpg"))[:32]
    data = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in files]
    gpu = cuda_decoder(data)
    cpu = pyav_decoder("cpu")(data)
    diffs = [(g.cpu().int() - c.int()).abs() for g, c in zip(gpu, cpu, strict=True)]
    mean = max(float(d.float().mean()) for d in diffs)
    worst = max(int(d.max()) for d in diffs)
    print(f"nvJPEG vs PyAV over {len(files)} frames: worst per-frame mean |diff| {mean:.3f}, max {worst}")
    assert all(g.device.type == "cuda" and g.dtype == torch.uint8 and g.shape == c.shape for g, c in zip(gpu, cpu))
    # Decoders differ in the inverse DCT and most in chroma upsampling, at sharp colour edges: on these
    # frames torchvision's CPU decoder (libjpeg-turbo) is 1.79 grey levels from PyAV's on the worst frame
    # (max 46), and the device path fed by it 1.47 from the worker path's clips (the bound below). A wrong
    # colour order, orientation or size would be tens of levels off on average.
    assert mean < 3.0


def test_the_device_path_matches_the_worker_path_on_cuda(frames_root, cuda_decoder):
    dataset = AVADataset(frames_root, "train", source="frames", num_frames=8, stride=4, input_size=128, train=True,
                         resize="short_side", output="uint8", scale_jitter=(0.8, 1.2), hflip=0.5, color_jitter=0.3)
    items = SeededItems(dataset, seed=5)
    sampler = ShardSampler(len(items), 0, 1, shuffle=True, seed=1, batch_size=4)
    plain = create_loader(items, sampler, 4, 2, 0, torch.device("cuda"))
    encoded = encoded_items(items)
    device = DeviceDecodedBatches(create_loader(encoded, sampler, 4, 2, 0, torch.device("cuda")),
                                  encoded.dataset.apply_transform, cuda_decoder, "cuda")
    worst = 0.0
    for (clips, targets), (dclips, dtargets) in zip(plain, device, strict=True):
        assert dclips.device.type == "cuda" and dclips.dtype == torch.uint8 and dclips.shape == clips.shape
        worst = max(worst, float((dclips.cpu().int() - clips.int()).abs().float().mean()))
        for t, d in zip(targets, dtargets):
            assert torch.equal(t["boxes"], d["boxes"]) and torch.equal(t["labels"], d["labels"])
            assert t.get("colour") == d.get("colour") and t["letterbox"] == d["letterbox"]
    print(f"device path vs worker path: worst per-batch mean |diff| {worst:.3f} grey levels")
    assert worst < 2.5


def test_auto_measures_both_and_says_which(frames_root, tmp_path):
    from bmvit.build import decoding_loader
    from bmvit.config import load_config

    config = Path(__file__).resolve().parents[2] / "configs" / "synthetic_tiny.yaml"
    cfg = load_config(config, [f"data.root={frames_root}", "data.source=frames"]).data
    dataset = AVADataset(frames_root, "train", source="frames", num_frames=8, stride=4, input_size=128, train=True,
                         output="uint8")
    items = SeededItems(dataset, seed=0)
    sampler = ShardSampler(len(items), 0, 1, shuffle=True, seed=1, batch_size=2)
    loader, decoding = decoding_loader(cfg, torch.device("cuda"), items,
                                       lambda d: create_loader(d, sampler, 2, 2, 0, torch.device("cuda")),
                                       on_bad="drop", probe_batches=3)
    print(decoding.message)
    assert decoding.where in ("workers", "device") and "clips/s decoding on the device" in decoding.message
    clips, targets = next(iter(loader))
    assert clips.shape == (2, 3, 8, 128, 128) and clips.dtype == torch.uint8


# nvJPEG writes the decoded frames without waiting for the work queued on the stream they were allocated
# on (src/bmvit/data/device_decode.py, module docstring). The trials below recreate what training does
# between two steps: tensors that kernels still have to read are freed on the stream, then a batch is
# decoded. The GPU is kept busy first (torch.cuda._sleep, a spin of that many clock cycles) so that those
# kernels are still queued when the decoder runs.
_BUSY_CYCLES = 100_000_000  # tens of milliseconds on any current GPU


def _clip_files(root: Path, count: int = 16) -> list[torch.Tensor]:
    paths = sorted((root / "frames").glob("*/*.jpg"))[:count]
    return [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in paths]


def _hazard_trials(decode, frame_shape: tuple[int, ...], count: int, iterations: int = 30) -> tuple[int, int]:
    """(iterations where the decoder's output took a block still to be read, iterations where a read of
    such a block returned a wrong sum)."""
    reused = corrupted = 0
    numel = 1
    for n in frame_shape:
        numel *= n
    for _ in range(iterations):
        values = list(range(1, count + 1))
        pending = [torch.full(frame_shape, v, dtype=torch.uint8, device="cuda") for v in values]
        torch.cuda.synchronize()
        freed = {t.data_ptr() for t in pending}
        torch.cuda._sleep(_BUSY_CYCLES)
        sums = [t.sum(dtype=torch.int64) for t in pending]  # queued behind the spin
        del pending  # back to the allocator while the sums above still have to read them
        outputs = decode()
        reused += any(o.data_ptr() in freed for o in outputs)
        torch.cuda.synchronize()
        corrupted += any(int(s) != v * numel for s, v in zip(sums, values))
    return reused, corrupted


def test_decoding_never_overwrites_memory_that_queued_work_still_reads(frames_root, cuda_decoder):
    from torchvision.io import ImageReadMode, decode_jpeg

    files = _clip_files(frames_root)
    shape = tuple(cuda_decoder(files[:1])[0].shape)
    # torchvision alone: its outputs do take blocks whose readers are still queued (the allocator's doing,
    # which is why this harness can catch the hazard); whether nvJPEG then corrupts them is printed.
    raw_reused, raw_corrupted = _hazard_trials(
        lambda: decode_jpeg(files, mode=ImageReadMode.RGB, device="cuda"), shape, len(files))
    ours_reused, ours_corrupted = _hazard_trials(lambda: cuda_decoder(files), shape, len(files))
    print(f"torchvision's decode_jpeg alone: {raw_reused}/30 reused a block still to be read, {raw_corrupted}/30 "
          f"corrupted; nvjpeg_decoder: {ours_reused}/30, {ours_corrupted}/30")
    assert raw_reused > 0
    assert ours_corrupted == 0


def test_a_decoded_batch_leaves_the_training_stream_running_and_its_memory_alone(frames_root, cuda_decoder):
    dataset = AVADataset(frames_root, "train", source="frames", num_frames=8, stride=4, input_size=128, train=True,
                         output="uint8", scale_jitter=(0.8, 1.2), hflip=0.5)
    encoded = encoded_items(SeededItems(dataset, seed=5))
    sampler = ShardSampler(len(encoded), 0, 1, shuffle=True, seed=1, batch_size=2)
    batch, targets = next(iter(create_loader(encoded, sampler, 2, 0, 0, torch.device("cuda"))))
    decoded = DeviceDecodedBatches([], encoded.dataset.apply_transform, cuda_decoder, "cuda")
    reference, _ = decoded.decode_batch(batch, targets)
    torch.cuda.synchronize()
    reference = reference.clone()

    # The decode overlaps the training step: it does not wait for the caller's stream...
    caller = torch.cuda.current_stream()
    torch.cuda._sleep(20 * _BUSY_CYCLES)
    clips, _ = decoded.decode_batch(batch, targets)
    still_busy = not caller.query()
    torch.cuda.synchronize()
    if torch.cuda.get_allocator_backend() == "native":  # cudaMallocAsync: the decoder drains the device
        assert still_busy
    assert torch.equal(clips, reference)

    # ...and never writes into what that stream's queued kernels have still to read.
    frames = cuda_decoder(batch.clips[0].files()[:1])[0]
    _, corrupted = _hazard_trials(lambda: [decoded.decode_batch(batch, targets)[0]], tuple(frames.shape),
                                  batch.clips[0].num_frames * len(batch))
    assert corrupted == 0
