"""Run a trained detector on any video: ``Predictor``, ``write_predictions`` and ``predict_to_files``.

The detector comes from ``bmvit.load`` (``bmvit.checkpoint.load``); the frames from
``bmvit.data.video.FrameStream``.

A video file (anything PyAV decodes, any frame rate, size and aspect ratio) or a frame folder is
cut into key frames every ``1 / fps`` seconds. Each key frame gets a clip sampled exactly as in
training (``VideoFileSource.read_clip_at_time``): ``T`` frames at the checkpoint's stride on its
frame timeline (30 fps for AVA), centred on the key frame, clamped at the video's ends (the end
frames repeat). Frames are prepared as the training loaders prepare them: resized in uint8
(``create_transforms(..., output="uint8")``), then the uint8 batch is copied to the model's device and
normalised there (``normalize_clips``). The model scores every key-frame token (under bf16 autocast
on a CUDA device that supports it), its outputs come to the host once per batch, and ``PostProcess``
keeps the tokens with ``p(actor) > threshold``; their boxes are mapped back to the original frame
(identity for the square resize, undoing the padding for letterbox).

The video is decoded once, forward, in a background thread that feeds a bounded queue of resized
uint8 frames, so that decoding the next frames overlaps the model's forward pass. The consumer keeps
a sliding window: a frame is kept while a pending clip still needs it and dropped after, so memory
is bounded by one clip span plus the queue whatever the video's length. ``predict(...,
stream=True)`` yields key frame by key frame.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import os
import queue
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from bmvit.checkpoint import load, model_metadata_or_defaults, resolve_device
from bmvit.data.video import (
    ClipSource,
    FrameFolderSource,
    FrameStream,
    VideoFileSource,
    clip_indices,
    resample_indices,
)
from bmvit.engine import amp_dtype_for
from bmvit.inference.results import Detections
from bmvit.inference.timeline import TimelineOptions
from bmvit.inference.tracking import TrackerOptions
from bmvit.models.weights import ASSETS_DIR
from bmvit.postprocess import outputs_to_host

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv")
CPU_BATCH_SIZE, CUDA_BATCH_SIZE = 4, 16
"""Clips per forward pass when none is asked for: a GPU needs a larger batch to be kept busy."""
SHIPPED_WEIGHTS = ASSETS_DIR / "bmvit_mvit_tiny_synthetic.safetensors"
"""The tiny checkpoint of ``bmvit demo`` on the synthetic dataset (val frame-mAP 0.646, trained and measured with
the input pipeline before the uint8 hand-off; docs/benchmark_history.md#the-demo-version-by-version),
used when no weights are given (when the package ships it)."""


class VideoInputWarning(UserWarning):
    """A video was usable but not as expected (truncated, shorter than one clip)."""


def resolve_batch_size(batch_size: int | None, device: torch.device) -> int:
    """Clips per forward pass: ``batch_size`` itself, or for None 16 on CUDA and 4 elsewhere."""
    if batch_size is None:
        return CUDA_BATCH_SIZE if device.type == "cuda" else CPU_BATCH_SIZE
    try:
        value = operator.index(batch_size)  # any integer type (numpy's too), no float
    except TypeError:
        value = 0
    if isinstance(batch_size, bool) or value < 1:
        raise ValueError(f"batch_size must be >= 1 (or None: by device), got {batch_size!r}")
    return value


# ------------------------------------------------------------------------------------------------
# decoding in a background thread

_Item = TypeVar("_Item")
_END = object()  # the producer's last word when it ran out


class _Failure:
    """An exception raised in the producer thread, carried over the queue to the consumer."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _prefetch(produce: Callable[[], Iterator[_Item]], maxsize: int, poll_s: float = 0.05,
              name: str = "bmvit-decode") -> Iterator[_Item]:
    """The items of ``produce()``, computed ahead in a background thread, at most ``maxsize`` waiting.

    The producer runs while the consumer works on earlier items (PyAV's decoder and torch's resize
    release the GIL, so both really run at once). An exception in the producer is raised here, the
    same object with its message and the producer's traceback. When the consumer stops early (this
    generator closed or garbage-collected), the producer sees the stop event within ``poll_s`` of
    its next ``put`` (a blocking ``put`` would wait forever on a full queue nobody reads), closes its
    iterator (the video file with it), and the thread is joined before this generator returns.
    """
    items: queue.Queue = queue.Queue(maxsize=max(1, maxsize))
    stop = threading.Event()

    def offer(item: object) -> bool:
        """Queue ``item``; False when the consumer has gone (then nothing more is produced)."""
        while not stop.is_set():
            try:
                items.put(item, timeout=poll_s)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        iterator = None
        try:
            iterator = produce()
            for item in iterator:
                if not offer(item):
                    return
        except BaseException as err:  # noqa: BLE001 - carried to the consumer and raised there
            offer(_Failure(err))
            return
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # a generator's own finally blocks (the video file's close) run here, in this thread
        offer(_END)

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    try:
        while True:
            try:
                item = items.get(timeout=poll_s)
            except queue.Empty:
                # A producer always says _END or _Failure before it returns, unless told to stop; an
                # empty queue behind a dead thread would otherwise hang the consumer for good.
                if not thread.is_alive() and items.empty():
                    raise RuntimeError("the decoding thread stopped without finishing") from None
                continue
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()


def open_source(source: str | os.PathLike | ClipSource, frames_fps: float = 30.0) -> ClipSource:
    """A ``ClipSource`` for a video file or an AVA-style frame folder (``<dir>/<dir>_%06d.jpg`` at
    ``frames_fps``); a ``ClipSource`` passes through."""
    if not isinstance(source, (str, os.PathLike)):
        return source
    path = Path(source)
    if path.is_dir():
        return FrameFolderSource(path, fps=frames_fps)
    if not path.exists():
        raise FileNotFoundError(f"video {path} does not exist")
    return VideoFileSource(path)


# ------------------------------------------------------------------------------------------------
# where the clips come from


@dataclass(frozen=True)
class ClipSpec:
    """How a model wants its clips, from its checkpoint's metadata.

    Attributes:
        num_frames, input_hw: the model's ``T`` and ``(H, W)``.
        stride: frames between sampled frames, counted on the ``timeline_fps`` timeline.
        timeline_fps: the frame rate strides count (AVA's frames are extracted at 30 fps).
        mean, std: input normalisation (RGB, [0, 1] scale).
        resize: ``square`` (stretch the frame) or ``letterbox`` (keep the aspect, pad).
    """

    num_frames: int
    input_hw: tuple[int, int]
    stride: int
    timeline_fps: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str

    @classmethod
    def from_model(cls, model: nn.Module) -> ClipSpec:
        meta = model_metadata_or_defaults(model)
        t, h, w = (int(v) for v in model.input_size)
        return cls(t, (h, w), int(meta["sampling_stride"]), float(meta["fps"]), tuple(meta["mean"]),
                   tuple(meta["std"]), str(meta["resize"]))

    @property
    def span_s(self) -> float:
        """Seconds one clip covers."""
        return self.num_frames * self.stride / self.timeline_fps


@dataclass(frozen=True)
class KeyFrameClip:
    """Where one key frame's clip lies in a video: no pixels, only times and frame indices.

    Not ``bmvit.data.ava.KeyFrame`` (the annotated people of a key frame in a dataset): this is a
    point of the predictor's schedule, ``keyframe_schedule``.

    Attributes:
        time_s: the key frame's time, seconds from the video's first frame.
        frame_index: the key frame's 0-based index in the video.
        clip_indices: ``int [T]`` the video frames of its clip, in order (repeated at the video's ends).
    """

    time_s: float
    frame_index: int
    clip_indices: np.ndarray


def clip_frame_indices(time_s: float, spec: ClipSpec, video_fps: float, video_frames: int) -> tuple[int, np.ndarray]:
    """``(key frame index, [T] clip frame indices)`` in a ``video_fps`` video of ``video_frames`` frames.

    The same sampling as ``read_clip_at_time(time_s, T, stride, sample_fps=timeline_fps)``: indices
    on the timeline, clamped to it (so the ends repeat), then mapped to the nearest video frames.
    """
    timeline_length = max(1, int(np.floor(video_frames * spec.timeline_fps / video_fps + 0.5)))
    center = int(np.floor(time_s * spec.timeline_fps + 0.5))
    on_timeline = clip_indices(center, spec.num_frames, spec.stride, timeline_length)
    key = resample_indices(np.array([min(max(center, 0), timeline_length - 1)]), spec.timeline_fps, video_fps,
                           video_frames)
    return int(key[0]), resample_indices(on_timeline, spec.timeline_fps, video_fps, video_frames)


def keyframe_schedule(video_frames: int, video_fps: float, spec: ClipSpec, fps: float = 1.0) -> list[KeyFrameClip]:
    """Key frames every ``1 / fps`` seconds from time 0 while they fall inside the video."""
    if not fps > 0 or not math.isfinite(fps):
        raise ValueError(f"key-frame rate fps must be a positive number, got {fps}")
    duration = video_frames / video_fps
    out = []
    for k in range(max(1, int(math.ceil(duration * fps - 1e-9)))):
        t = k / fps
        key, indices = clip_frame_indices(t, spec, video_fps, video_frames)
        out.append(KeyFrameClip(t, key, indices))
    return out


@dataclass
class VideoPlan:
    """A video ready to be predicted: its source, key frames and what was noticed about it.

    ``stopped_at_frame`` is set while predicting when decoding ended before the frames the clips
    need (a truncated or corrupt file); ``notes`` collects every warning given about the video
    (also written to the JSON output).
    """

    source: ClipSource
    video_id: str
    video_fps: float
    num_frames: int
    image_size: tuple[int, int]
    keyframes: list[KeyFrameClip]
    keyframe_fps: float
    notes: list[str] = field(default_factory=list)
    stopped_at_frame: int | None = None


# ------------------------------------------------------------------------------------------------
# the predictor


class Predictor:
    """Detect actors and their actions in videos with a trained BMViT.

    Args:
        model: a detector (``bmvit.load(...)``); its ``metadata`` gives classes, clip sampling,
            normalisation and the default threshold. A model without metadata uses the training
            defaults (16x4 at 30 fps, Kinetics mean/std, square resize, classes ``1..C``).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda:0"``, ...
        threshold: keep tokens with ``p(actor) > threshold``; default: the checkpoint's (0.3).
        max_detections: keep at most this many boxes per key frame, the most confident (None: all).
        nms_iou: 0 = no NMS (the method's default); else class-agnostic greedy NMS at this box IoU.
        batch_size: clips per forward pass; None: 16 on CUDA, 4 on a CPU.
        on_warning: called with each message about a video (truncated, too short); default:
            ``warnings.warn(message, VideoInputWarning)``.
        frames_fps: frame rate of frame-folder sources (AVA extracts frames at 30 fps).
        amp: ``"auto"`` (bf16 autocast on a CUDA device that supports it, float32 elsewhere), ``"bf16"``
            or ``"off"``. The outputs are float32 either way (see ``engine.amp_dtype_for``).
        prefetch_frames: resized frames the decoding thread may hold ready (the queue's bound); None:
            one batch of clips' worth (``batch_size * T``, at least ``2 T``); 0: decode in the calling
            thread, no background thread.
        embeddings: also give each kept box its token at the input of the model's heads (after the
            projection; ``Detections.embeddings``), an appearance feature for the tracker. It costs no
            extra forward work, only the copy of the key frame's tokens to the host.

    Attributes:
        transform: a frame list ``uint8 [N, H, W, 3]`` -> ``(uint8 [3, N, H', W'], target)``, resized as in
            training; ``model_input`` finishes it (normalisation, on the device).
        amp_dtype: the autocast dtype (``torch.bfloat16``) or None.
    """

    def __init__(self, model: nn.Module, device: str | torch.device = "auto", threshold: float | None = None,
                 max_detections: int | None = None, batch_size: int | None = None, nms_iou: float = 0.0,
                 on_warning: Callable[[str], None] | None = None, frames_fps: float = 30.0, amp: str = "auto",
                 prefetch_frames: int | None = None, embeddings: bool = False) -> None:
        from bmvit.data.transforms import create_transforms
        from bmvit.postprocess import PostProcess

        from bmvit.models.bmvit import BMViT

        if not isinstance(model, BMViT):
            raise TypeError(f"Predictor runs single-stage BMViT detectors; got a {type(model).__name__} (a two-stage "
                            "model needs person boxes from a detector and is evaluated with `bmvit eval`)")
        self.device = resolve_device(device)
        self.batch_size = resolve_batch_size(batch_size, self.device)
        self.amp_dtype = amp_dtype_for(amp, self.device, key="amp")
        if prefetch_frames is not None and prefetch_frames < 0:
            raise ValueError(f"prefetch_frames must be >= 0 (0: no decoding thread) or None, got {prefetch_frames}")
        self.model = model.to(self.device).eval()
        meta = model_metadata_or_defaults(model)
        num_classes = int(model.config.num_classes)
        self.class_ids = [int(c) for c in meta.get("class_ids", range(1, num_classes + 1))]
        self.class_names = [str(n) for n in meta.get("class_names", [f"class_{c}" for c in self.class_ids])]
        if len(self.class_ids) != num_classes:
            raise ValueError(f"the checkpoint names {len(self.class_ids)} classes but its model predicts {num_classes}")
        self.threshold = float(meta["threshold"] if threshold is None else threshold)
        self.nms_iou = float(nms_iou)
        self.postprocess = PostProcess(self.threshold, top_k=max_detections, nms_iou=self.nms_iou)
        self.spec = ClipSpec.from_model(model)
        # The loaders' uint8 pipeline: the resize is torch's uint8 kernel (much cheaper than
        # the float one on a CPU core, which the decoding thread shares), the frames stay a quarter
        # of the float size in the queue and the window, and the host-to-device copy moves uint8.
        self.transform = create_transforms(False, self.spec.input_hw, mean=self.spec.mean, std=self.spec.std,
                                           resize=self.spec.resize, output="uint8")
        self.frames_fps = frames_fps
        self.prefetch_frames = (max(2, self.batch_size) * self.spec.num_frames if prefetch_frames is None
                                else int(prefetch_frames))
        self._warn = on_warning or (lambda msg: warnings.warn(msg, VideoInputWarning, stacklevel=4))
        self.embeddings = bool(embeddings)

    # --- planning

    def plan(self, source: str | os.PathLike | ClipSource, fps: float = 1.0) -> VideoPlan:
        """Open ``source`` and list its key frames (raises a clear error for a missing or unreadable file)."""
        src = open_source(source, self.frames_fps)
        video_fps, num_frames, size = float(src.fps), int(src.num_frames), tuple(src.size)
        if num_frames < 1:
            raise ValueError(f"video {src.video_id} has no frames")
        plan = VideoPlan(src, src.video_id, video_fps, num_frames, size,
                         keyframe_schedule(num_frames, video_fps, self.spec, fps), float(fps))
        duration = num_frames / video_fps
        if duration < self.spec.span_s:
            self._note(plan, f"video {src.video_id} is {duration:.2f} s long, shorter than one clip "
                             f"({self.spec.span_s:.2f} s = {self.spec.num_frames} frames x {self.spec.stride} at "
                             f"{self.spec.timeline_fps:g} fps): its clips are padded by repeating its first and last "
                             "frames")
        return plan

    def _note(self, plan: VideoPlan, message: str) -> None:
        plan.notes.append(message)
        self._warn(message)

    # --- predicting

    def predict(self, source: str | os.PathLike | ClipSource | VideoPlan, stream: bool = False,
                fps: float = 1.0) -> list[Detections] | Iterator[Detections]:
        """Detections at key frames every ``1 / fps`` seconds of ``source``.

        Args:
            source: a video file, a frame folder, a ``ClipSource`` or a ``plan(...)`` of one.
            stream: yield key frame by key frame (bounded memory) instead of returning a list.
            fps: key frames per second (AVA annotates 1).

        Returns:
            ``Detections`` in time order (a list, or an iterator when ``stream``). Errors in opening
            the source are raised here, not at the first ``next()``.
        """
        plan = source if isinstance(source, VideoPlan) else self.plan(source, fps)
        iterator = self._run(plan)
        return iterator if stream else list(iterator)

    __call__ = predict

    def _run(self, plan: VideoPlan) -> Iterator[Detections]:
        reader = FrameStream(plan.source)
        keyframes = plan.keyframes
        wanted = np.unique(np.concatenate([k.clip_indices for k in keyframes]))
        # uses[i]: clips not yet assembled that need frame i; a frame leaves the window at zero.
        uses = Counter(i for k in keyframes for i in set(k.clip_indices.tolist()))
        window: dict[int, Tensor] = {}
        last_frame: tuple[int, Tensor] | None = None
        next_kf = 0
        batch: list[tuple[KeyFrameClip, Tensor]] = []
        frames = self._prepared_frames(reader, wanted)
        try:
            for index, frame in frames:
                window[index] = frame
                last_frame = (index, frame)
                while next_kf < len(keyframes) and int(keyframes[next_kf].clip_indices[-1]) <= index:
                    kf = keyframes[next_kf]
                    batch.append((kf, self._assemble(kf.clip_indices, window)))
                    next_kf += 1
                    for i in set(kf.clip_indices.tolist()):
                        uses[i] -= 1
                        if uses[i] == 0:
                            del window[i]
                    if len(batch) == self.batch_size:
                        yield from self._detect(batch, plan)
                        batch = []
        finally:
            # Stops and joins the decoding thread now, also when the consumer stops early, rather
            # than whenever the generator happens to be garbage-collected.
            frames.close()
        # The thread has ended: what it recorded in ``reader`` (last_index, complete, error) is final.
        last = -1
        if last_frame is not None:  # kept for padding even when no pending clip counted on it
            last = last_frame[0]
            window[last] = last_frame[1]
        while next_kf < len(keyframes) and 0 <= keyframes[next_kf].frame_index <= last:
            # Past the decoded end the clip repeats the last decoded frame, as at any video's end.
            kf = keyframes[next_kf]
            batch.append((kf, self._assemble(np.minimum(kf.clip_indices, last), window)))
            next_kf += 1
        if batch:
            yield from self._detect(batch, plan)
        skipped = len(keyframes) - next_kf
        # A stream that ends cleanly one frame short of a stated count is a rounded estimate, not damage.
        short = int(wanted[-1]) - reader.last_index
        if skipped or reader.error or (not reader.complete and short > 1):
            self._report_stop(plan, reader, skipped)
        plan.source.close()  # the metadata handle; reads reopen it

    def _report_stop(self, plan: VideoPlan, reader: FrameStream, skipped: int) -> None:
        decoded = reader.last_index + 1
        plan.stopped_at_frame = decoded
        why = f" ({reader.error})" if reader.error else ""
        if decoded == 0:
            raise ValueError(f"video {plan.video_id}: no frame could be decoded from {_where(plan.source)}{why}")
        message = (f"video {plan.video_id}: decoding stopped at frame {decoded} (t={decoded / plan.video_fps:.2f} s) "
                   f"of the {plan.num_frames} its header states{why}; truncated or corrupt file?")
        if skipped:
            message += (f" {skipped} of {len(plan.keyframes)} key frames (from t="
                        f"{plan.keyframes[-skipped].time_s:.2f} s on) were not predicted")
        self._note(plan, message)

    def _preprocess(self, rgb: np.ndarray) -> Tensor:
        """``uint8 [H, W, 3]`` -> ``uint8 [3, H', W']``, resized as in training (not yet normalised)."""
        clip, _ = self.transform(rgb[None], {})
        return clip[:, 0]

    def _prepared_frames(self, reader: FrameStream, wanted: np.ndarray) -> Iterator[tuple[int, Tensor]]:
        """``(index, uint8 [3, H', W'])`` for the ``wanted`` frames: decoded and resized in a background
        thread (``prefetch_frames`` > 0) or here. Close the iterator to stop the thread."""

        def produce() -> Iterator[tuple[int, Tensor]]:
            for index, rgb in reader.frames(wanted):
                yield index, self._preprocess(rgb)

        if self.prefetch_frames == 0:
            return produce()
        return _prefetch(produce, self.prefetch_frames)

    @staticmethod
    def _assemble(indices: np.ndarray, window: dict[int, Tensor]) -> Tensor:
        return torch.stack([window[int(i)] for i in indices], dim=1)  # [3, T, H, W]

    def _stack(self, clips: list[Tensor]) -> Tensor:
        """``[3, T, H, W]`` clips -> ``[B, 3, T, H, W]``, in page-locked memory when the model is on CUDA so
        that the copy to the device is asynchronous."""
        if self.device.type != "cuda":
            return torch.stack(clips)
        out = torch.empty((len(clips), *clips[0].shape), dtype=clips[0].dtype, pin_memory=True)
        return torch.stack(clips, out=out)

    def model_input(self, clips: Tensor) -> Tensor:
        """The model's input on its device: ``float32 [B, 3, T, H, W]`` normalised with the checkpoint's
        mean/std, from ``uint8 [B, 3, T, H, W]`` (``transform``'s clips, normalised here on the device)
        or from float clips already normalised (moved, otherwise unchanged)."""
        from bmvit.data.transforms import normalize_clips

        if self.device.type == "cuda" and clips.device.type == "cpu":
            # non_blocking only overlaps with the host from page-locked memory; the normalisation
            # that follows is queued behind the copy on the same stream.
            clips = (clips if clips.is_pinned() else clips.pin_memory()).to(self.device, non_blocking=True)
        else:
            clips = clips.to(self.device)
        return normalize_clips(clips, self.spec.mean, self.spec.std)

    def autocast(self) -> AbstractContextManager:
        """The mixed-precision context of the forward pass (``amp_dtype``), or a no-op."""
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    @torch.inference_mode()
    def forward_clips(self, clips: Tensor) -> tuple[dict[str, Any], list[dict[str, Tensor]]]:
        """Model outputs and post-processed results for a batch of clips.

        Args:
            clips: ``uint8 [B, 3, T, H, W]`` resized by ``transform`` (normalised on the device), or
                ``float32 [B, 3, T, H, W]`` already normalised; on any device.

        Returns:
            ``(outputs, results)``: the model's outputs on the host, floating tensors as float32
            (``pred_boxes [B, N, 4]``, ``pred_actor [B, N, 2]``, ``pred_actions [B, N, C]``, ...; with
            ``embeddings`` also ``head_tokens [B, N, D]``), and ``PostProcess``'s ``B`` results, computed
            on the host from those (with ``embeddings``, each with ``embeddings [K, D]`` of its kept tokens).
        """
        inputs = self.model_input(clips)
        with self.autocast(), self._head_tokens() as captured:
            outputs = self.model(inputs)
        if captured:
            outputs["head_tokens"] = captured[0]
        # One copy to the host per output for the whole batch (each one waits for the device), and
        # float32 before PostProcess whatever the autocast dtype.
        outputs = outputs_to_host(outputs)
        results = self.postprocess(outputs)
        if "head_tokens" in outputs:
            for b, result in enumerate(results):
                result["embeddings"] = outputs["head_tokens"][b, result["token_indices"]]
        return outputs, results

    @contextmanager
    def _head_tokens(self) -> Iterator[list[Tensor]]:
        """With ``embeddings``: a list that receives the candidate tokens ``[B, N, D]`` the model's heads
        are given (a forward hook reads them; the model itself is not changed). Otherwise an empty list."""
        captured: list[Tensor] = []
        if not self.embeddings:
            yield captured
            return
        handle = self.model.heads.register_forward_hook(lambda _module, args, _out: captured.append(args[0].detach()))
        try:
            yield captured
        finally:
            handle.remove()

    def _detect(self, batch: list[tuple[KeyFrameClip, Tensor]], plan: VideoPlan) -> list[Detections]:
        _, results = self.forward_clips(self._stack([clip for _, clip in batch]))
        return [self.to_detections(result, kf, plan) for (kf, _), result in zip(batch, results)]

    def to_detections(self, result: dict[str, Tensor], keyframe: KeyFrameClip, plan: VideoPlan) -> Detections:
        """One ``PostProcess`` result -> ``Detections`` with boxes on the original frame."""
        boxes_norm = self.boxes_to_frame(result["boxes_xyxy"].float().cpu(), plan.image_size)
        h, w = plan.image_size
        return Detections(
            video_id=plan.video_id,
            timestamp=float(keyframe.time_s),
            frame_index=int(keyframe.frame_index),
            image_size=(int(h), int(w)),
            boxes_xyxy=boxes_norm * torch.tensor([w, h, w, h], dtype=torch.float32),
            boxes_xyxy_norm=boxes_norm,
            actor_scores=result["actor_scores"].float().cpu(),
            action_scores=result["action_scores"].float().cpu(),
            class_ids=self.class_ids,
            class_names=self.class_names,
            token_indices=result["token_indices"].cpu(),
            embeddings=result["embeddings"].float().cpu() if "embeddings" in result else None,
        )

    def boxes_to_frame(self, boxes_xyxy: Tensor, image_size: tuple[int, int]) -> Tensor:
        """Normalised boxes of the model input ``[..., 4]`` -> normalised to the original frame, clamped
        (the letterbox or the short-side crop undone, as ``data.resize`` made the input)."""
        from bmvit.data.transforms import input_geometry

        geometry = input_geometry(self.spec.resize, image_size, self.spec.input_hw)
        return boxes_xyxy.clamp(0.0, 1.0) if geometry is None else geometry.boxes_to_original(boxes_xyxy)


def _where(source: ClipSource) -> str:
    return str(getattr(source, "path", None) or getattr(source, "folder", source.video_id))


# ------------------------------------------------------------------------------------------------
# files


def write_predictions(predictor: Predictor, source: str | os.PathLike | ClipSource, out_dir: str | os.PathLike,
                      render: bool = False, fps: float = 1.0, max_rows_per_keyframe: int | None = 50,
                      time_offset: float = 0.0, progress: bool = False, tracker: TrackerOptions | None = None,
                      timeline: TimelineOptions | None = None, timeline_png: bool = True) -> dict[str, Path]:
    """Predict and track one video and write its files under ``out_dir``.

    - ``<id>.csv``: AVA detections (the official 8 columns, no track id);
    - ``<id>.json``: every key frame's boxes with their scores and ``track_id``, and the timeline's segments;
    - ``<id>_tracks.csv``: one row per box with its track id and top actions (``tracking.write_tracks_csv``);
    - ``<id>_timeline.csv`` and, with ``timeline_png``, ``<id>_timeline.png``: each track's actions as
      time intervals (``timeline``);
    - with ``render``, ``<id>_annotated.mp4``: boxes labelled with track id and current actions.

    Track ids come from ``tracking.ActorTracker`` with ``tracker`` (default ``TrackerOptions()``); its
    appearance term needs ``Predictor(embeddings=True)``. Every file is written whole and renamed into
    place, only after the video has been predicted, so no partial file looks complete. Returns labels
    -> written paths.
    """
    import json

    from bmvit.checkpoint import atomic_write_bytes
    from bmvit.data.ava import write_ava_csv
    from bmvit.inference.timeline import build_timeline, plot_timeline, write_timeline_csv
    from bmvit.inference.tracking import track_detections, write_tracks_csv

    plan = predictor.plan(source, fps)
    if render and not isinstance(plan.source, VideoFileSource):
        raise ValueError(f"rendering needs a video file; {_where(plan.source)} is a frame folder")
    out_dir = Path(out_dir)
    detections = []
    for det in _progress(predictor.predict(plan, stream=True), progress, len(plan.keyframes), plan.video_id,
                         "keyframe"):
        detections.append(det)
    tracker, timeline = tracker or TrackerOptions(), timeline or TimelineOptions()
    detections = track_detections(detections, tracker)
    duration = plan.num_frames / plan.video_fps
    segments = build_timeline(detections, timeline, keyframe_fps=fps, duration_s=duration)
    rows = [row for det in detections for row in det.to_ava_rows(max_rows_per_keyframe, time_offset)]
    written: dict[str, Path] = {}
    csv_path = out_dir / f"{plan.video_id}.csv"
    write_ava_csv(csv_path, rows)
    written["detections CSV"] = csv_path
    json_path = out_dir / f"{plan.video_id}.json"
    record = _video_record(predictor, plan, detections, max_rows_per_keyframe, time_offset)
    record["tracking"] = dataclasses.asdict(tracker)
    record["timeline"] = {**dataclasses.asdict(timeline), "segments": [dataclasses.asdict(s) for s in segments]}
    atomic_write_bytes(json_path, json.dumps(record).encode())
    written["detections JSON"] = json_path
    written["tracks CSV"] = write_tracks_csv(out_dir / f"{plan.video_id}_tracks.csv", detections)
    written["timeline CSV"] = write_timeline_csv(out_dir / f"{plan.video_id}_timeline.csv", plan.video_id, segments)
    if timeline_png:
        written["timeline PNG"] = plot_timeline(segments, out_dir / f"{plan.video_id}_timeline.png", duration_s=duration,
                                                class_names=predictor.class_names, title=plan.video_id)
    if render:
        from bmvit.inference.render import render_video

        video_path = out_dir / f"{plan.video_id}_annotated.mp4"
        bar = _progress(None, progress, plan.num_frames, f"{plan.video_id} render", "frame")
        render_video(plan.source.path, detections, video_path, keyframe_fps=fps, on_frame=bar.update if bar else None,
                     segments=segments)
        if bar:
            bar.close()
        written["annotated video"] = video_path
    return written


def _progress(iterable, enabled: bool, total: int, desc: str, unit: str):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=True)


def _video_record(predictor: Predictor, plan: VideoPlan, detections: list[Detections], max_rows: int | None,
                  time_offset: float) -> dict[str, Any]:
    spec = predictor.spec
    return {
        "video_id": plan.video_id,
        "source": _where(plan.source),
        "video_fps": plan.video_fps,
        "num_frames": plan.num_frames,
        "stopped_at_s": None if plan.stopped_at_frame is None else plan.stopped_at_frame / plan.video_fps,
        "image_size": list(plan.image_size),
        "keyframe_fps": plan.keyframe_fps,
        "clip": {"num_frames": spec.num_frames, "stride": spec.stride, "timeline_fps": spec.timeline_fps,
                 "span_s": spec.span_s, "input_size": list(spec.input_hw), "resize": spec.resize},
        "threshold": predictor.threshold,
        "nms_iou": predictor.nms_iou,
        "csv": {"max_rows_per_keyframe": max_rows, "time_offset": time_offset,
                "format": "video_id,second,x1,y1,x2,y2,action_id,score (boxes normalised)"},
        "class_ids": predictor.class_ids,
        "class_names": predictor.class_names,
        "warnings": list(plan.notes),
        "keyframes": [det.to_dict(include_classes=False) for det in detections],
    }


def predict_to_files(weights_path: str | os.PathLike, video_path: str | os.PathLike, out_dir: str | os.PathLike,
                     render: bool = False, **kwargs: Any) -> dict[str, Path]:
    """Load ``weights_path``, predict ``video_path`` and write its files under ``out_dir``.

    Keyword arguments go to ``write_predictions`` (``fps``, ``max_rows_per_keyframe``, ``time_offset``,
    ``progress``, ``tracker``, ``timeline``, ``timeline_png``) or to ``Predictor`` (``device``, ``threshold``,
    ``max_detections``, ``batch_size``, ``nms_iou``, ``on_warning``, ``frames_fps``, ``amp``, ``prefetch_frames``,
    ``embeddings``; default: on when ``tracker`` uses appearance).
    """
    predictor_keys = {"device", "threshold", "max_detections", "batch_size", "nms_iou", "on_warning", "frames_fps",
                      "amp", "prefetch_frames", "embeddings"}
    tracker = kwargs.get("tracker") or TrackerOptions()
    kwargs.setdefault("embeddings", tracker.appearance_weight > 0)
    predictor = Predictor(load(weights_path), **{k: v for k, v in kwargs.items() if k in predictor_keys})
    return write_predictions(predictor, video_path, out_dir, render=render,
                             **{k: v for k, v in kwargs.items() if k not in predictor_keys})


__all__ = [
    "ClipSpec",
    "KeyFrameClip",
    "Predictor",
    "SHIPPED_WEIGHTS",
    "VideoInputWarning",
    "VideoPlan",
    "clip_frame_indices",
    "keyframe_schedule",
    "open_source",
    "predict_to_files",
    "resolve_batch_size",
    "write_predictions",
]
