"""torch.distributed helpers: initialise from torchrun's environment, rank queries, reductions.

Launch with ``torchrun --nproc_per_node=N -m bmvit train ...``; torchrun sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT. Without them everything runs as a single process.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def init_distributed(device_type: str) -> tuple[int, int, int]:
    """Join the process group when launched by torchrun. Returns (rank, world_size, local_rank).

    NCCL on CUDA, gloo on CPU. A plain ``python -m bmvit`` run is rank 0 of 1 and starts no group.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1, 0
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return rank, world_size, local_rank


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes (a copy; the input is left alone)."""
    value = value.detach().clone()
    if is_dist():
        dist.all_reduce(value)
    return value


def reduce_dict(values: dict[str, float], average: bool = True) -> dict[str, float]:
    """Average (or sum) a dict of scalars over processes; every rank gets the result."""
    if not is_dist() or not values:
        return dict(values)
    keys = sorted(values)
    stacked = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(stacked)
    if average:
        stacked /= get_world_size()
    return dict(zip(keys, stacked.tolist()))


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's object, in rank order (a one-element list without a process group)."""
    if not is_dist():
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def cleanup() -> None:
    if is_dist():
        dist.destroy_process_group()
