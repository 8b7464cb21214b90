"""Training on several processes, devices and machines with ``torch.distributed`` under ``torchrun``.

``torchrun --nproc-per-node N 02_train.py CONFIG...`` (and ``--nnodes``/``--rdzv-endpoint`` for
several machines that share the output folder) starts N processes per machine; each is a *rank*
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE`` from torchrun's environment).
Each rank gets its own device: ``cuda:<LOCAL_RANK mod the GPU count>`` (several ranks may share
a GPU), or the CPU with its share of the cores. Two ways to use them (``train.distributed``):

* ``folds`` (default): the folds of every experiment of the run are dealt out to the ranks, one
  whole fold per rank at a time: one to each rank first, then a free rank takes the next
  unclaimed fold (:func:`claim_work`; one process per fold or seed per GPU: BirdCLEF 2021 2nd,
  2022 1st). Every fold is trained exactly as in a sequential run; rank 0 merges the folds when
  all are done.
* ``ddp``: every fold is trained by all ranks together with ``DistributedDataParallel`` (TheoViel
  BirdCLEF 2024: ``torchrun --nproc_per_node=4 main.py``): each step's batch of
  ``batch_size x WORLD_SIZE`` windows is shared out, validation recordings too (probabilities
  gathered on every rank, so that every rank takes the same early-stopping decisions); rank 0
  writes every artifact. For models too big or too slow for one device (CNN14, EfficientNet).

The process group is ``cpu:gloo,cuda:nccl`` when CUDA is there (object collectives and barriers
go through gloo, so ranks sharing a GPU never open NCCL; DDP's gradients go through NCCL), else
``gloo``. Outside torchrun everything here is a no-op (one rank).
"""
from __future__ import annotations

import os
import uuid
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from ..core.device import get_device, n_cpus
from ..core.errors import ConfigError
from ..core.utils import end_with_parent
from ..training.ddp import Ranks, broadcast

TIMEOUT = timedelta(days=7)
"""How long a rank waits for the others (a rank that trains its last fold while the others wait
at the merge): torch's default (30 min for gloo) would stop runs whose folds take longer."""


def setup(device_name: str = "auto") -> tuple[Ranks, torch.device]:
    """Join torchrun's process group (once per process; nothing outside torchrun) and choose this
    rank's device for ``train.device`` ``device_name``: with several ranks, ``auto``/``cuda`` is
    ``cuda:<local_rank mod GPU count>`` and the CPU gets :func:`rank_threads` threads per rank; each rank ends when torchrun's agent dies (:func:`lib.core.utils.end_with_parent`).
    Returns ``(Ranks, torch.device)``. Raises ``ConfigError`` for an explicit ``cuda:<k>`` device
    under torchrun (each rank chooses its own) or ``cuda`` where there is none."""
    ranks = Ranks.from_env()
    if ranks.world == 1:
        return ranks, get_device(device_name)
    if device_name.startswith("cuda:"):
        raise ConfigError(f"train.device {device_name!r}: under torchrun each rank uses cuda:<LOCAL_RANK>; "
                          f"set train.device to auto or cuda")
    cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    if device_name == "cuda" and not cuda:
        raise ConfigError("train.device 'cuda': CUDA is not available on this machine")
    if not dist.is_initialized():
        end_with_parent()  # torchrun starts each rank in a session of its own: a kill -9 would leave it
        dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo", timeout=TIMEOUT)
    if not cuda:
        torch.set_num_threads(rank_threads(ranks.local_world))
        return ranks, torch.device("cpu")
    device = get_device(f"cuda:{ranks.local_rank % torch.cuda.device_count()}")
    torch.cuda.set_device(device)
    return ranks, device


def rank_threads(local_world: int) -> int:
    """The CPU threads of each of ``local_world`` ranks on this machine: the user's
    ``OMP_NUM_THREADS`` where torchrun cannot have set it (it sets 1 when it starts several
    processes on a machine and the variable is unset; a user's 1 then reads the same), else the
    cores (:func:`lib.core.device.n_cpus`, which follows ``taskset``) shared out, at least 1 (two
    launchers of one rank each on one machine share its cores only when the user says so)."""
    given = os.environ.get("OMP_NUM_THREADS", "").strip()
    if given.isdigit() and int(given) > 0 and not (local_world > 1 and given == "1"):
        return int(given)
    return max(1, n_cpus() // local_world)


def finish(ranks: Ranks) -> None:
    """Wait for every rank, then leave the process group (so that no rank exits while another
    still talks to it: gloo aborts a process that exits with the group open)."""
    if ranks.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def claims_folder(out_root: Path, ranks: Ranks) -> Path | None:
    """A new, empty folder for one launch's claims (:func:`claim_work`), made by rank 0 under
    ``<output>/.claims/`` and named to every rank; ``None`` with one rank. Other launches'
    folders are left alone (they may be running on the same output folder; a killed launch's
    folder holds a few empty files, and the launch that ends removes its own)."""
    if ranks.world == 1:
        return None
    folder = None
    if ranks.main:
        folder = out_root / ".claims" / uuid.uuid4().hex
        folder.mkdir(parents=True)
    return broadcast(folder, ranks)


def claim_work(tasks: list, folder: Path | None, rank: int = 0, world: int = 1):
    """The tasks rank ``rank`` of ``world`` takes, one at a time, when it is free. The first round
    is dealt: task ``k`` < ``world`` is rank ``k``'s, so every rank starts with a task of its own
    however late it gets here (a rank held up for a second would otherwise find every short fold
    taken). After that every rank goes through the other tasks in order and takes one by creating
    its claim file in ``folder`` (:func:`claims_folder`) with ``O_CREAT | O_EXCL``, which exactly
    one rank wins, also across machines that share the output folder: a rank that finishes early
    takes the next unclaimed task, so 5 folds on 2 ranks keep both busy until the last one starts
    (dynamic dealing). ``folder`` ``None`` (one rank): every task."""
    for k, task in enumerate(tasks):
        if folder is not None:
            if k < world and k != rank:
                continue  # another rank's task of the first round
            try:
                os.close(os.open(folder / str(k), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
        yield task
