"""Training on several processes, GPUs or machines, as launched by `torchrun`. The only module
that knows about ranks: it reads what torchrun sets in the environment once (`init`), and the
loop asks it (`Dist`) which share of a batch is its own, what to add up across processes, and
whether it is the one process that writes files.

    torchrun --nproc-per-node 2 -m fmnist train resnet_fast --out runs/two

Without torchrun (or with one process) `Dist()` is a world of one and every call is a no-op.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch

from fmnist.device import cores
from fmnist.errors import UsageError

TIMEOUT_SECONDS = 120  # a collective that waits longer means a process died: fail, don't hang


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    restarts: int = 0  # how often torchrun restarted the processes (elastic runs)

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This process's contiguous share of a batch; the shares of all processes, in rank order,
        are the batch itself."""
        return indices.tensor_split(self.world)[self.rank] if self.active else indices

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over processes, in place (on the process group's device)."""
        if self.active:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether `flag` is set in any process: a stop asked of one is a stop for all, at the same step."""
        if not self.active:
            return flag
        t = torch.tensor([int(flag)], device=device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def average_buffers(self, module: torch.nn.Module) -> None:
        """Make BatchNorm's running statistics the mean over processes (each saw its own shards)."""
        if not self.active:
            return
        for buf in module.buffers():
            if buf.is_floating_point():
                torch.distributed.all_reduce(buf, op=torch.distributed.ReduceOp.SUM)
                buf.div_(self.world)

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def where(self) -> str:
        return f"[process {self.rank} of {self.world}] " if self.active else ""


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def from_environment() -> Dist:
    """What torchrun says this process is (a world of one without it)."""
    return Dist(
        _env_int("RANK", 0),
        _env_int("WORLD_SIZE", 1),
        _env_int("LOCAL_RANK", 0),
        _env_int("TORCHELASTIC_RESTART_COUNT", 0),
    )


def init(device: str) -> tuple[Dist, str]:
    """Join the process group torchrun set up: gloo on CPUs, NCCL on CUDA (one GPU per process on
    each machine). Returns the world and the device this process trains on. On CPUs each process
    gets its share of the cores."""
    dist = from_environment()
    if not dist.active:
        return dist, device
    if torch.distributed.is_initialized():
        return dist, device
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        if torch.cuda.device_count() <= dist.local_rank:
            raise UsageError(
                f"process {dist.rank} needs CUDA device {dist.local_rank}, this machine has "
                f"{torch.cuda.device_count()}: start fewer processes per machine"
            )
        device = f"cuda:{dist.local_rank}"
        torch.cuda.set_device(dist.local_rank)
    else:
        per_machine = max(1, _env_int("LOCAL_WORLD_SIZE", dist.world))
        torch.set_num_threads(max(1, cores() // per_machine))
        device = "cpu"
    timeout = datetime.timedelta(seconds=TIMEOUT_SECONDS)
    # The store torchrun's agent keeps (or process 0's without an agent), under a prefix of this
    # attempt's own: without it, processes restarted by `--max-restarts` can read the addresses
    # of the processes they replace and fail to connect (torch 2.13, gloo).
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = torch.distributed.TCPStore(
        os.environ.get("MASTER_ADDR", "127.0.0.1"),
        _env_int("MASTER_PORT", 29500),
        dist.world,
        is_master=dist.is_main and not agent,
        timeout=timeout,
    )
    store = torch.distributed.PrefixStore(f"fmnist/attempt-{dist.restarts}", store)
    torch.distributed.init_process_group(
        "nccl" if cuda else "gloo", store=store, rank=dist.rank, world_size=dist.world, timeout=timeout
    )
    return dist, device


def is_group_failure(e: BaseException) -> bool:
    """Whether an error is the process group reporting a lost or failed peer (or a timeout)."""
    names = {c.__name__ for c in type(e).__mro__}
    text = str(e)
    return bool(names & {"DistBackendError", "DistNetworkError", "DistError"}) or any(
        s in text
        for s in (
            "Connection closed by peer",
            "Connection reset by peer",
            "Timed out",
            "timed out",
            "Broken pipe",
            "NCCL error",
            "Gloo",
        )
    )


def shutdown() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
