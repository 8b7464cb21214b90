"""The collectives of a fold trained by several ranks together (``train.distributed: ddp``) and of
ranks that share out folds: this process's :class:`Ranks`, objects broadcast and gathered, flags
and sums reduced, batches and validation recordings sharded, seeds per rank. With one rank
(outside torchrun) every function here is a no-op. Joining the process group:
:mod:`lib.runs.distributed`."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from ..core.errors import ConfigError


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of a run: ``rank`` of ``world`` in all,
    ``local_rank`` of ``local_world`` on this machine. One rank (the default) outside torchrun."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def main(self) -> bool:
        """Whether this is rank 0, the one that writes shared artifacts and prints summaries."""
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "Ranks":
        """The ranks torchrun set in the environment (one rank when it did not)."""
        get = lambda k, d: int(os.environ.get(k, d))  # noqa: E731
        world = get("WORLD_SIZE", 1)
        return cls(get("RANK", 0), world, get("LOCAL_RANK", 0), get("LOCAL_WORLD_SIZE", world))


def check_ddp(ranks: Ranks, device: torch.device, sync_bn: bool) -> None:
    """Raise ``ConfigError`` when DDP cannot run as asked: two ranks on one GPU (NCCL refuses
    it; use fewer processes per machine or ``train.distributed: folds``), or ``train.sync_bn``
    on the CPU (``SyncBatchNorm`` needs CUDA)."""
    if device.type == "cuda" and ranks.local_world > torch.cuda.device_count():
        raise ConfigError(f"train.distributed ddp: {ranks.local_world} processes on this machine but "
                          f"{torch.cuda.device_count()} GPU(s); DDP needs one GPU per process "
                          f"(use --nproc-per-node {torch.cuda.device_count()}, or train.distributed: folds)")
    if sync_bn and device.type != "cuda":
        raise ConfigError("train.sync_bn: SyncBatchNorm needs CUDA devices; set it to false on the CPU")


def broadcast(obj, ranks: Ranks):
    """Rank 0's ``obj`` on every rank (any picklable object); ``obj`` itself with one rank."""
    if ranks.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj, ranks: Ranks) -> list:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` with one rank)."""
    if ranks.world == 1:
        return [obj]
    out = [None] * ranks.world
    dist.all_gather_object(out, obj)
    return out


def all_true(flag: bool, ranks: Ranks, device) -> bool:
    """Whether ``flag`` is true on every rank (``flag`` with one rank)."""
    if ranks.world == 1:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def all_sum(values: list, ranks: Ranks, device) -> list[float]:
    """The sums over the ranks of ``values`` (numbers or 0-d tensors), as floats."""
    t = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in values])
    if ranks.world > 1:
        dist.all_reduce(t)
    return t.tolist()


def shard(items: np.ndarray, ranks: Ranks) -> np.ndarray:
    """This rank's contiguous share of ``items`` (``np.array_split``: sizes differ by at most one)."""
    return np.array_split(items, ranks.world)[ranks.rank] if ranks.world > 1 else items


def broadcast_buffers(module: torch.nn.Module, ranks: Ranks) -> None:
    """Give every rank rank 0's buffers of ``module`` (BatchNorm statistics, which each rank
    updates from its own share of the batches), so that every rank validates the same model."""
    if ranks.world > 1:
        for b in module.buffers():
            dist.broadcast(b.data, src=0)


def rank_seed(seed: int, ranks: Ranks, *more: int) -> int:
    """A seed of its own for each rank (``seed`` itself on rank 0, so one rank draws as a
    sequential run): rank 0 keeps ``seed``, rank r > 0 gets a number from
    ``np.random.SeedSequence((seed, r, *more))``."""
    if ranks.rank == 0 and not more:
        return seed
    return int(np.random.SeedSequence((seed, ranks.rank, *more)).generate_state(1)[0])
