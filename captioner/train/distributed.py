"""Processes under `torchrun`: which rank this is, its share of each epoch and of validation.

Without `torchrun` (WORLD_SIZE unset) everything here is the single-process case: rank 0 of 1,
no process group, and the gather/broadcast helpers return their input.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from captioner.device import resolve_device

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes checkpoints and logs."""
        return self.rank == 0


class Placement(NamedTuple):
    dist: Dist
    device: torch.device
    joined: bool = False  # this call joined the process group (so its caller leaves it: `leave`)


def setup_distributed(device_name: str) -> Placement:
    """Join the process group `torchrun` describes (if any) and pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    joined = world > 1 and not dist.is_initialized()
    if joined:
        use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    info = Dist(dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else Dist()
    device = resolve_device(device_name, field="train.device")
    if device.type == "cuda" and info.world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return Placement(info, device, joined)


def leave(placement: Placement) -> None:
    """Leave the process group `setup_distributed` joined, after the run's closing barrier (a
    group left to interpreter exit let gloo's threads outlive a finished rank, which then
    aborted: "terminate called without an active exception", exit -6). Only after a run that
    finished: after a failure the other ranks may never reach that barrier."""
    if placement.joined:
        dist.destroy_process_group()


def wrap_ddp(module: nn.Module, device: torch.device, dist_info: Dist) -> nn.Module:
    """`module` in DistributedDataParallel when there are several ranks, else itself."""
    if dist_info.world == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=False)


class EpochSampler(Sampler[int]):
    """This rank's share of a (seed, epoch)-seeded permutation, from batch `start_batch` on.

    The order depends on (seed, epoch) alone, so a resumed run skips exactly the batches the
    interrupted one had done.
    """

    def __init__(self, n: int, *, seed: int, epoch: int, batch_size: int, start_batch: int = 0,
                 dist_info: Dist = Dist()) -> None:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        perm = torch.randperm(n, generator=g).tolist()
        per_rank = math.ceil(n / dist_info.world)
        perm += perm[: per_rank * dist_info.world - n]  # pad so every rank gets as many items
        self.indices = perm[dist_info.rank::dist_info.world][start_batch * batch_size:]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def batches_per_epoch(n: int, batch_size: int, world: int) -> int:
    return math.ceil(math.ceil(n / world) / batch_size)


def shard(items: Sequence[T], dist_info: Dist) -> Sequence[T]:
    """Every `world`-th item, from `rank` on: this rank's share of the validation records."""
    return items[dist_info.rank::dist_info.world]


class Shard:
    """`shard` for an indexable source (image files or a feature cache), without copying it."""

    def __init__(self, source: Any, dist_info: Dist) -> None:
        self.source, self.rank, self.world = source, dist_info.rank, dist_info.world

    def __len__(self) -> int:
        return len(range(self.rank, len(self.source), self.world))

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.source[self.rank + i * self.world]


def gather_dicts(local: dict[Any, T], dist_info: Dist) -> dict[Any, T]:
    """The union of every rank's dict, on every rank."""
    if dist_info.world == 1:
        return local
    return {k: v for part in gather_objects(local, dist_info) for k, v in part.items()}


def gather_objects(local: T, dist_info: Dist) -> list[T]:
    """Every rank's `local` (picklable), in rank order, on every rank."""
    if dist_info.world == 1:
        return [local]
    parts: list[Any] = [None] * dist_info.world
    dist.all_gather_object(parts, local)
    return parts


def broadcast_floats(values: list[float], dist_info: Dist) -> list[float]:
    """Rank 0's `values` on every rank (each rank passes a list of the same length)."""
    if dist_info.world == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.broadcast(tensor, src=0)
    return tensor.tolist()


def barrier(dist_info: Dist) -> None:
    if dist_info.world > 1:
        dist.barrier()
