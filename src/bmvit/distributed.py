"""torch.distributed helpers: join torchrun's process group, rank queries, collectives on the right device.

Launch with ``torchrun --nproc_per_node=N -m bmvit train ...``; torchrun sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT. Without them everything runs as a single process and every
helper here is a no-op (or the identity).

Every tensor handed to a collective lives on ``comm_device()``: the bound CUDA device under NCCL,
which refuses CPU tensors, and the CPU under gloo. Decisions that every rank must take at the same
step (stop at a deadline, a non-finite loss, too many bad clips) go through ``all_reduce_sum`` of a
small tensor of flags, so that no rank waits for another until the group's timeout.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT_MINUTES = 120.0
"""Long enough for rank 0 to score a full AVA val set (and write its files) while the others wait."""


class DistributedSetupError(RuntimeError):
    """The process group cannot be formed as asked (no NCCL, no GPU for this rank, ...)."""


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def local_world_size() -> int:
    """Processes on this node (torchrun's LOCAL_WORLD_SIZE; 1 without torchrun)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", 1)))


def init_distributed(device_type: str, timeout_minutes: float = DEFAULT_TIMEOUT_MINUTES) -> tuple[int, int, int]:
    """Join the process group when launched by torchrun. Returns (rank, world_size, local_rank).

    NCCL on CUDA with this rank's GPU bound (``device_id``, which also lets NCCL connect eagerly),
    gloo on CPU. A plain ``python -m bmvit`` run is rank 0 of 1 and starts no group.
    """
    if not launched_by_torchrun():
        return 0, 1, 0
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if dist.is_initialized():
        return rank, world_size, local_rank
    timeout = datetime.timedelta(minutes=timeout_minutes)
    if device_type == "cuda":
        if not dist.is_nccl_available():
            raise DistributedSetupError("train.device=cuda under torchrun needs NCCL, and this torch build has none")
        if local_rank >= torch.cuda.device_count():
            raise DistributedSetupError(
                f"LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} CUDA device(s): "
                "start at most one process per GPU (torchrun --nproc_per_node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", rank=rank, world_size=world_size, timeout=timeout, device_id=device)
    else:
        dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=timeout)
    return rank, world_size, local_rank


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def comm_device() -> torch.device:
    """Where collective tensors must live: this rank's CUDA device under NCCL, else the CPU."""
    if is_dist() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """The sum over processes of ``value``, on ``value``'s device (a copy; the input is left alone).

    The reduction itself runs on ``comm_device()``; a tensor elsewhere is moved there and back.
    """
    out = value.detach().clone()
    if not is_dist():
        return out
    device = comm_device()
    moved = out.to(device)
    dist.all_reduce(moved)
    return moved.to(out.device)


def mean_over_processes(value: torch.Tensor) -> torch.Tensor:
    """The mean over processes of ``value`` (a copy on ``value``'s device; ``value``'s copy when alone).

    What DDP's gradient averaging asks of a loss normaliser: each rank divides by the same global count.
    """
    return all_reduce_sum(value) / get_world_size()


def reduce_dict(values: dict[str, Any], average: bool = True) -> dict[str, float]:
    """Average (or sum) scalars over processes; every rank gets the result as Python floats.

    Values may be floats or one-element tensors on any device: they are stacked on
    ``comm_device()`` into one tensor, so the whole dict costs one collective and one host copy.
    """
    if not values:
        return {}
    keys = sorted(values)
    device = comm_device()
    stacked = torch.stack([torch.as_tensor(values[k], dtype=torch.float64).to(device).reshape(()) for k in keys])
    stacked = mean_over_processes(stacked) if average else all_reduce_sum(stacked)
    return dict(zip(keys, stacked.tolist()))


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (a small picklable value, e.g. a metric or a decision)."""
    if not is_dist():
        return obj
    box = [obj if get_rank() == src else None]
    dist.broadcast_object_list(box, src=src, device=comm_device())
    return box[0]


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` in rank order on rank 0, None on the others (a one-element list alone).

    Detection rows go this way: only rank 0 writes and scores them, so no other rank holds them all.
    """
    if not is_dist():
        return [obj]
    gathered: list[Any] | None = [None] * get_world_size() if is_main_process() else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def cleanup() -> None:
    if is_dist():
        dist.destroy_process_group()
