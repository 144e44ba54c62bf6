"""Decoding a batch's JPEG frames on the training GPU (``data.decode``), and choosing where to decode.

The default input pipeline decodes JPEG frames in the loader workers (libjpeg's DCT scaling at the size
the model needs) and hands uint8 clips to the GPU. On a node with few cores per GPU the workers cannot
keep up (BENCHMARKS.md, "An AVA epoch on one 8-GPU node"). With ``data.decode=device`` the workers only
read the files (``KeyFrameDataset(encoded_frames=True)``: ``EncodedClip`` items), and the main process:

1. decodes every frame of the batch in one call on the GPU: nvJPEG, through torchvision's
   ``torchvision.io.decode_jpeg(files, device="cuda")``;
2. runs each clip's own transform there (the dataset's ``apply_transform``: zoom, resize, crop, flip in
   uint8 on the GPU), under the item's seed (``loader.seeded_rngs``), so it draws exactly what it would
   have drawn in a worker;
3. yields ``uint8 [B, 3, T, H, W]`` clips on the device and the transformed targets, what the engine
   gets from the default pipeline: nothing downstream changes.

The clips equal the worker path's up to the decoders (nvJPEG's and libjpeg's inverse DCT and chroma
upsampling differ) and the uint8 rounding of the resize (done in float on the GPU: torch's uint8 resize
kernel is CPU-only). The targets are identical where the worker path decodes at the stored size; where it
decodes large frames smaller (DCT scaling), its crop windows round to other pixels of the smaller frame.

A frame nvJPEG refuses is decoded again by PyAV on the CPU; a frame neither decodes is a bad clip,
handled as the worker path handles one (``on_bad``): dropped from its training batch and counted in the
next clip's ``bad_clips``, or an all-zero clip with an empty target in evaluation.

``data.decode=auto`` (the default) uses the GPU only where it is measured faster: on a CUDA device, with
JPEG frame folders and torchvision's GPU decoder importable, ``compare_loaders`` times both pipelines
over the same batches at start-up and the faster one is kept (a device path that fails there is not
kept); anywhere else it decodes in the workers without measuring.

nvJPEG and memory still in use. torchvision allocates the decoded frames on the caller's current stream,
and nvJPEG (its hardware engine, and torchvision's software path too) writes them without waiting for the
work already queued on that stream. PyTorch's caching allocator hands out a block as soon as it is freed
on a stream, while kernels queued there may still read it: a decode right after a training step could
overwrite activations that step's backward has not read yet, silently. Reported with a reproduction in
pytorch/vision pull request 9606 (torchvision 0.28, torch 2.13, H100; zero corruptions once the caller's
stream is drained). Hence two rules here:

- ``nvjpeg_decoder`` drains the current stream before every call (the whole device where the allocator
  is ``cudaMallocAsync``, whose pools reuse memory across streams);
- ``DeviceDecodedBatches`` decodes and transforms each batch on a stream of its own. Blocks freed by the
  training step belong to the training stream and are never handed to an allocation on this one, so
  draining it waits only for the previous batch's transforms, and the decode still overlaps the step
  the GPU is running. The training stream waits for the batch's stream before it reads the clips.
"""

from __future__ import annotations

import copy
import gc
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor

from bmvit.data.encoded import EncodedBatch, EncodedClip
from bmvit.data.loader import seeded_rngs
from bmvit.data.video import decode_image

JpegDecoder = Callable[[list[Tensor]], list[Tensor]]
"""JPEG files (``uint8 [n]`` CPU tensors) -> their frames, ``uint8 [3, H, W]`` RGB on the decoding device.
Raises RuntimeError or ValueError when a file does not decode."""


def nvjpeg_decoder(device: torch.device) -> tuple[JpegDecoder | None, str]:
    """torchvision's nvJPEG decoder for ``device``, or None and why it cannot be had.

    Needs a CUDA device and torchvision 0.19 or later (a list of files decoded in one batched call).
    """
    if device.type != "cuda":
        return None, f"the model runs on {device.type}, not on a CUDA device"
    if not torch.cuda.is_available():
        return None, "torch sees no CUDA device"
    try:
        import torchvision
        from torchvision.io import ImageReadMode, decode_jpeg
    except Exception as e:  # ImportError, or a torchvision built for another torch (RuntimeError)
        return None, f"torchvision (nvJPEG) does not import: {type(e).__name__}: {e}"
    version = tuple(int(p) for p in torchvision.__version__.split("+")[0].split(".")[:2] if p.isdigit())
    if version < (0, 19):
        return None, (f"torchvision {torchvision.__version__} decodes one JPEG per call on the GPU; "
                      "0.19 or later batches them")

    drain_device = torch.cuda.get_allocator_backend() != "native"

    def decode(files: list[Tensor]) -> list[Tensor]:
        # nvJPEG writes its output before the work queued on the current stream runs (module docstring).
        if drain_device:
            torch.cuda.synchronize(device)
        else:
            torch.cuda.current_stream(device).synchronize()
        return list(decode_jpeg(files, mode=ImageReadMode.RGB, device=device))

    return decode, f"nvJPEG (torchvision {torchvision.__version__}) on {device}"


def pyav_decoder(device: torch.device | str = "cpu") -> JpegDecoder:
    """JPEG files decoded one by one with PyAV on the CPU (as ``FrameFolderSource`` decodes a stored-size
    frame), then moved to ``device``: the fallback for frames nvJPEG refuses, and the reference in tests."""

    def decode(files: list[Tensor]) -> list[Tensor]:
        return [torch.from_numpy(decode_image(f.numpy().tobytes(), "mjpeg")).permute(2, 0, 1).to(device)
                for f in files]

    return decode


def encoded_items(items: Any) -> Any:
    """A copy of ``items`` (``loader.SeededItems`` or ``loader.EvalItems`` over a ``KeyFrameDataset``) whose
    dataset hands over clips undecoded (``encoded_frames``); ``items`` itself is left as it is."""
    out = copy.copy(items)
    out.dataset = copy.copy(items.dataset)
    out.dataset.encoded_frames = True
    return out


class DeviceDecodedBatches:
    """Batches of a loader whose dataset has ``encoded_frames``, decoded and transformed on ``device``.

    Iterates like the loader it wraps and yields ``(uint8 [B, 3, T, H, W] on device, targets)``; a batch
    that is already a tensor passes through. ``len`` and other attributes are the loader's.

    Args:
        loader: yields ``(EncodedBatch, raw targets)`` (``dataset.collate_fn`` of encoded items).
        apply_transform: the dataset's ``KeyFrameDataset.apply_transform`` (raw clip ``[T, H, W, 3]`` and raw
            target -> ``(uint8 [3, T, h, w], target)``).
        decoder: a ``JpegDecoder`` producing frames on ``device`` (``nvjpeg_decoder``).
        fallback: decodes what ``decoder`` refuses, one file at a time (default: ``pyav_decoder(device)``).
        on_bad: a clip whose frames do not decode: ``"drop"`` it from the batch (training; its error is
            added to the next clip's ``bad_clips``, as ``loader.SeededItems`` records a skipped item) or
            replace it by zeros with an empty target (``"zero"``, evaluation, as ``loader.EvalItems``).
    """

    def __init__(
        self,
        loader: Iterable,
        apply_transform: Callable[[Tensor, dict], tuple[Tensor, dict]],
        decoder: JpegDecoder,
        device: torch.device | str,
        *,
        fallback: JpegDecoder | None = None,
        on_bad: str = "drop",
    ) -> None:
        if on_bad not in ("drop", "zero"):
            raise ValueError(f"DeviceDecodedBatches: on_bad must be 'drop' or 'zero', got {on_bad!r}")
        self.loader, self.apply_transform, self.decoder = loader, apply_transform, decoder
        self.device = torch.device(device)
        self.fallback = fallback if fallback is not None else pyav_decoder(self.device)
        self.on_bad = on_bad
        # The batches' own stream (module docstring); made on first use, so that a wrapper built on a
        # CPU-only machine or pickled never touches CUDA.
        self._stream: torch.cuda.Stream | None = None

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[tuple[Tensor, list[dict]]]:
        for clips, targets in self.loader:
            if isinstance(clips, EncodedBatch):
                clips, targets = self.decode_batch(clips, targets)
            yield clips, targets

    def decode_batch(self, batch: EncodedBatch, targets: Sequence[dict]) -> tuple[Tensor, list[dict]]:
        """One batch: ``uint8 [B', 3, T, H, W]`` on the device (B' = B less dropped clips) and its targets.

        On CUDA the work runs on the batches' own stream; the current stream waits for it before any later
        use of the clips, so the caller uses them as it would any tensor of its stream."""
        if self.device.type != "cuda":
            return self._decode_batch(batch, targets)
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        caller = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self._stream):
            clips, out_targets = self._decode_batch(batch, targets)
        caller.wait_stream(self._stream)
        # Freed later on the caller's stream: the allocator must not reuse the block before that stream's
        # kernels have read it.
        clips.record_stream(caller)
        return clips, out_targets

    def _decode_batch(self, batch: EncodedBatch, targets: Sequence[dict]) -> tuple[Tensor, list[dict]]:
        encoded = [c for c in batch.clips if isinstance(c, EncodedClip)]
        frames = self._decode([f for c in encoded for f in c.files()])
        out_clips: list[Tensor] = []
        out_targets: list[dict] = []
        pending_errors: list[str] = []  # dropped clips' errors, for the next kept clip's bad_clips
        bad: list[str] = []
        cursor = 0
        for clip, target in zip(batch.clips, targets):
            if not isinstance(clip, EncodedClip):
                out_clips.append(clip.to(self.device, non_blocking=True))
                out_targets.append(target)
                continue
            clip_frames, cursor = frames[cursor : cursor + clip.num_frames], cursor + clip.num_frames
            errors = [e for e in clip_frames if isinstance(e, str)]
            if errors:
                message = f"key frame {target.get('video_id')},{target.get('timestamp')}: {errors[0]}"
                bad.append(message)
                if self.on_bad == "drop":
                    pending_errors.append(message)
                    continue
                out_clips.append(None)  # a zero clip of the batch's shape, filled in below
                out_targets.append(_empty_target(target, message))
                continue
            stacked = torch.stack(clip_frames)  # [T, 3, H, W]
            seeded = seeded_rngs(clip.seed) if clip.seed is not None else nullcontext()
            with seeded:
                # The transform takes a raw clip [T, H, W, 3]; this view costs nothing and its first step
                # permutes it back.
                out, target = self.apply_transform(stacked.permute(0, 2, 3, 1), target)
            if pending_errors:
                target = dict(target, bad_clips=list(target.get("bad_clips", [])) + pending_errors)
                pending_errors = []
            out_clips.append(out)
            out_targets.append(target)
        shaped = [c for c in out_clips if c is not None]
        if not shaped:
            raise RuntimeError(f"no clip of a batch of {len(batch)} could be decoded: {bad[:3]}")
        if pending_errors:  # the batch's last clips were dropped: the last kept one carries their errors
            last = out_targets[-1]
            out_targets[-1] = dict(last, bad_clips=list(last.get("bad_clips", [])) + pending_errors)
        filled = [c if c is not None else torch.zeros_like(shaped[0]) for c in out_clips]
        return torch.stack(filled), out_targets

    def _decode(self, files: list[Tensor]) -> list[Tensor | str]:
        """Each file's frame on the device, or a string saying why it did not decode."""
        if not files:
            return []
        try:
            return self.decoder(files)
        except (RuntimeError, ValueError):
            pass  # one bad file fails the whole batched call: find it
        out: list[Tensor | str] = []
        for f in files:
            try:
                out.append(self.decoder([f])[0])
                continue
            except (RuntimeError, ValueError) as e:
                device_error = str(e).splitlines()[0] if str(e) else type(e).__name__
            try:
                out.append(self.fallback([f])[0])
            except (RuntimeError, ValueError) as e:
                out.append(f"a frame decodes neither on {self.device} ({device_error}) nor with PyAV ({e})")
        return out


def _empty_target(target: dict, message: str) -> dict:
    """What ``loader.EvalItems`` gives a clip that cannot be read: no people, the error in ``bad_clips``."""
    labels = target.get("labels")
    num_classes = int(labels.shape[-1]) if labels is not None and getattr(labels, "ndim", 0) == 2 else 0
    return {"video_id": target.get("video_id"), "timestamp": target.get("timestamp"), "bad_clips": [message],
            "boxes": torch.zeros(0, 4), "labels": torch.zeros(0, num_classes)}


def loader_rate(batches: Iterable[tuple[Tensor, list[dict]]], num_batches: int, device: torch.device) -> float:
    """Clips/s that ``batches`` deliver onto ``device``, over ``num_batches`` batches after the first (whose
    wait includes the workers' start-up); each batch's clips are on the device, synchronised, before the
    next is taken. Fewer batches than asked for: measured over those there are."""
    iterator = iter(batches)
    clips, _ = next(iterator)
    _to_device(clips, device)
    start, count = time.perf_counter(), 0
    for _, (clips, _targets) in zip(range(num_batches), iterator):
        _to_device(clips, device)
        count += int(clips.shape[0])
    elapsed = time.perf_counter() - start
    return count / elapsed if elapsed > 0 and count else 0.0


def _to_device(clips: Tensor, device: torch.device) -> None:
    clips.to(device, non_blocking=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare_loaders(make: dict[str, Callable[[], Iterable]], num_batches: int, device: torch.device,
                    combine: Callable[[Tensor], Tensor] | None = None,
                    may_fail: Sequence[str] = ()) -> tuple[str, dict[str, float], dict[str, str]]:
    """The faster of several ways to load the same batches, each one's clips/s (``loader_rate``), and why
    those that failed did.

    ``make`` maps a name to a function returning a fresh loader; each is made, measured and dropped in
    turn (its workers end before the next starts). ``combine`` sums the rates over processes (distributed
    training), so that every process makes the same choice. A tie keeps the first name.

    A loader named in ``may_fail`` that raises while measured gets the rate ``-inf`` (so it is chosen by
    no process, whichever process it failed on) and its error in the third result; any other error is
    raised, and so is a RuntimeError naming the errors when no loader could be measured.
    """
    names = list(make)
    measured_rates = []
    errors: dict[str, str] = {}
    for name in names:
        try:
            measured_rates.append(loader_rate(make[name](), num_batches, device))
        except Exception as e:  # an optional path (the GPU decoder) failing is a measurement: it is slower
            if name not in may_fail:
                raise
            errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
            measured_rates.append(float("-inf"))
        gc.collect()  # the measured loader's workers end here, not while the next one is measured
    rates = torch.tensor(measured_rates, dtype=torch.float64)
    if combine is not None:
        rates = combine(rates)
    if not bool(torch.isfinite(rates).any()):
        raise RuntimeError(f"no loader could be measured: {errors}")
    measured = {name: float(rate) for name, rate in zip(names, rates.tolist())}
    return names[int(torch.argmax(rates))], measured, errors


__all__ = [
    "DeviceDecodedBatches",
    "JpegDecoder",
    "compare_loaders",
    "encoded_items",
    "loader_rate",
    "nvjpeg_decoder",
    "pyav_decoder",
]
