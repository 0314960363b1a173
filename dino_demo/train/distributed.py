"""Data-parallel training on PyTorch's own engine (`torch.distributed`, launched by `torchrun`).

`torchrun` starts one process per device and tells each its place through the environment
(`RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`); `process_group` joins the process
group (NCCL for CUDA devices, Gloo on CPUs) and leaves it at the end. A plain `python` run has no
`WORLD_SIZE`, no process group, and every function here is then the identity.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .. import env


@dataclass(frozen=True)
class Process:
    """This process's place: `rank` of `world_size`, and the device it trains on."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """The one process that writes logs and checkpoints."""
        return self.rank == 0


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@contextlib.contextmanager
def process_group(device: str = "cpu") -> Iterator[Process]:
    """This process's `Process`, inside the process group torchrun describes (joined here unless
    the caller already has, and left again by whoever joined it).

    `device` is "cpu" or "cuda"; under torchrun, "cuda" means the GPU of this process's
    `LOCAL_RANK`.
    """
    world_size = env.whole_number("WORLD_SIZE", 1)
    rank, local_rank = env.whole_number("RANK", 0), env.whole_number("LOCAL_RANK", 0)
    where = torch.device(device)
    if where.type == "cuda" and world_size > 1:
        where = torch.device("cuda", local_rank)
        torch.cuda.set_device(where)
    joined = False
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if where.type == "cuda" else "gloo")
        joined = True
    try:
        yield Process(rank, world_size, where)
    finally:
        if joined:
            dist.destroy_process_group()


def wrap(model: torch.nn.Module, process: Process) -> torch.nn.Module:
    """The model under DistributedDataParallel (gradients averaged over the processes in
    backward) when there are several processes; the model itself otherwise."""
    if process.world_size == 1:
        return model
    device_ids = [process.device.index] if process.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def is_main() -> bool:
    """Whether this is the main process (rank 0, or the only one)."""
    return not is_distributed() or dist.get_rank() == 0


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Run the block in the main process first and in the others once it is done (a download
    into a shared cache then happens once)."""
    if is_distributed() and not is_main():
        dist.barrier()
    yield
    if is_distributed() and is_main():
        dist.barrier()


def shard(count: int) -> range:
    """This process's share of `count` items (every world_size-th, from its rank)."""
    if not is_distributed():
        return range(count)
    return range(dist.get_rank(), count, dist.get_world_size())


def mean_over_processes(values: torch.Tensor) -> torch.Tensor:
    """The mean of `values` over all processes (a copy; `values` itself on one process)."""
    if not is_distributed():
        return values
    total = values.detach().clone()
    dist.all_reduce(total)
    return total / dist.get_world_size()


def gather(items: list) -> list:
    """Every process's `items` concatenated in rank order, on every process."""
    if not is_distributed():
        return items
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part]


def from_main(value: Any) -> Any:
    """The main process's `value`, on every process."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
