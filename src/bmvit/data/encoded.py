"""Clips whose frames are still JPEG files: what loader workers hand over when the device decodes them.

With ``data.decode=device`` a worker reads a clip's T JPEG files without decoding them
(``FrameFolderSource.read_encoded``) and hands over an ``EncodedClip``: the files laid end to end in one
uint8 tensor, so that the loader passes them through shared memory as it passes decoded clips, and can
pin them for the copy to the GPU. ``data.device_decode.DeviceDecodedBatches`` decodes a whole batch of
them in one call on the device and runs each clip's transform there.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor


@dataclass
class EncodedClip:
    """A clip of T JPEG files, undecoded.

    Attributes:
        data: ``uint8 [N]``, the T files one after another (N: their total size in bytes).
        lengths: ``int64 [T]``, each file's size, in clip order.
        stored_size: (H, W) of the stored frames, from the JPEG headers.
        seed: the item's augmentation seed (set by ``loader.SeededItems``); the transform runs under it
            where the frames are decoded, so it draws what it would have drawn in the worker. None: the
            transform draws nothing (evaluation).
    """

    data: Tensor
    lengths: Tensor
    stored_size: tuple[int, int]
    seed: int | None = None

    @classmethod
    def from_files(cls, files: list[bytes], stored_size: tuple[int, int]) -> EncodedClip:
        """An ``EncodedClip`` holding ``files`` (the JPEG files' bytes, in clip order)."""
        data = torch.from_numpy(np.frombuffer(b"".join(files), dtype=np.uint8).copy())
        return cls(data, torch.tensor([len(f) for f in files], dtype=torch.int64), tuple(stored_size))

    @property
    def num_frames(self) -> int:
        return int(self.lengths.numel())

    def files(self) -> list[Tensor]:
        """The T files as ``uint8 [n_t]`` tensors (views of ``data``), what JPEG decoders take."""
        return list(torch.split(self.data, self.lengths.tolist()))

    def pin_memory(self) -> EncodedClip:
        return replace(self, data=self.data.pin_memory())


@dataclass
class EncodedBatch:
    """A loader batch of clips still to decode: ``EncodedClip`` items, or finished ``uint8 [3, T, H, W]``
    clips (``loader.EvalItems``' stand-in for a clip that could not be read), in batch order."""

    clips: list[EncodedClip | Tensor]

    def __len__(self) -> int:
        return len(self.clips)

    def pin_memory(self) -> EncodedBatch:
        # The DataLoader's pin-memory thread calls this (it pins what has a pin_memory method).
        return EncodedBatch([c.pin_memory() for c in self.clips])


__all__ = ["EncodedBatch", "EncodedClip"]
