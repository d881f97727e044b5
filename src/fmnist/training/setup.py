"""What training runs with besides the data: the model built from the config, its optimizer,
schedule and weight average (a `Trainer`), the whitened stem, and the compiled step.

Everything here is set up before the first step; the loop itself is in train.py.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from fmnist import stops
from fmnist.errors import UsageError
from fmnist.models.forward import layout, prepare
from fmnist.models.network import create_network, resolve_network
from fmnist.models.whiten import check_whitenable, freeze_first_conv, whiten_first_conv
from fmnist.stops import StopFlag
from fmnist.training.config import TrainConfig
from fmnist.training.distributed import Dist
from fmnist.training.schedule import cycle_steps, make_optimizer, make_scheduler


@dataclasses.dataclass
class Trainer:
    """What one optimizer step needs besides the data."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    ema: AveragedModel | None = None
    label_smoothing: float = 0.0
    mixed_precision: bool = False
    stop: StopFlag = dataclasses.field(default_factory=lambda: stops.STOP)  # the process's Ctrl-C/SIGTERM
    compiled: Callable[[torch.Tensor], torch.Tensor] | None = None  # torch.compile of `model`, if asked for
    stepped: nn.Module | None = None  # what the steps run through instead of `model` (a DDP wrapper)
    dist: Dist = dataclasses.field(default_factory=Dist)  # the processes training together (one, alone)

    @property
    def step_module(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """What a training step calls: the compiled model, a wrapper, or the model itself."""
        return self.compiled or self.stepped or self.model

    @property
    def eval_module(self) -> nn.Module:
        """The weights that are validated, checkpointed and tested: the average when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def autocast(self, device: torch.device) -> torch.autocast:
        return torch.autocast(device.type, torch.bfloat16, enabled=self.mixed_precision)


def ema_update(decay: float):
    """An exponential moving average whose decay warms up as min(decay, (1 + n) / (10 + n)) after
    n updates: a plain 0.999 average of the first few hundred steps is mostly the random
    initialisation, and scores 10 % until it forgets it. Updates every tensor of a device and dtype
    in one call (AveragedModel's multi_avg_fn), not one Python call per tensor."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        if not averaged[0].is_floating_point():  # BatchNorm's batch counters: follow, don't average
            torch._foreach_copy_(averaged, current)
            return
        d = torch.clamp((1 + n) / (10 + n), max=decay).to(averaged[0].dtype)
        # The weight stays a tensor on the device: .item() would wait for the GPU at every step.
        torch._foreach_lerp_(averaged, current, [1 - d] * len(averaged))

    return update


def make_trainer(model: nn.Module, cfg: TrainConfig, steps_per_epoch: int, dist: Dist | None = None) -> Trainer:
    """The optimizer, schedule and weight average of `model`; with several processes, the steps run
    through DistributedDataParallel, which averages the gradients (BatchNorm: each process uses the
    statistics of its own share of a batch, or of the whole batch with `cfg.sync_batchnorm` on GPUs;
    the running statistics are averaged over processes at the end of every epoch)."""
    dist = dist or Dist()
    optimizer = make_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum)
    cycles = cycle_steps(cfg.epochs, cfg.schedule_restarts, steps_per_epoch)
    scheduler = (
        make_scheduler(optimizer, cfg.schedule, cycles, cfg.warmup)
        if cfg.schedule != "constant" or cfg.warmup
        else None
    )
    ema = AveragedModel(model, multi_avg_fn=ema_update(cfg.ema), use_buffers=True) if cfg.ema else None
    stepped = None
    if dist.active:
        device = next(model.parameters()).device
        stepped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
        )
    return Trainer(
        model,
        optimizer,
        scheduler,
        ema,
        cfg.label_smoothing,
        cfg.mixed_precision,
        stops.STOP,
        stepped=stepped,
        dist=dist,
    )


def build_model(cfg: TrainConfig, device: torch.device | str = "cpu", dist: Dist | None = None) -> nn.Module:
    """The model `cfg` names, initialised from `cfg.seed`, on `device` in the memory layout it
    trains in: with `fit`, the same config gives the same weights from the CLI and from Python.
    With `cfg.sync_batchnorm` in a distributed run, its BatchNorm layers become SyncBatchNorm."""
    torch.manual_seed(cfg.seed)
    model = create_network(resolve_network(cfg))  # a file or class named in Python is read here
    if cfg.sync_batchnorm and dist is not None and dist.active:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return prepare(model, torch.device(device))


def trainable_problems(model: nn.Module, cfg: TrainConfig, n_train: int, world: int = 1) -> list[str]:
    """What can be known to fail before any training: a batch larger than the data, a batch too
    small to give each of `world` processes an image, a stem that cannot be whitened, SyncBatchNorm
    without CUDA."""
    problems = []
    if cfg.batch_size > n_train:
        problems.append(f"batch size {cfg.batch_size} is larger than the {n_train} training images")
    last = n_train % cfg.batch_size or cfg.batch_size
    if world > 1 and min(cfg.batch_size, last) < world:
        problems.append(
            f"{world} processes need at least {world} images in every batch (batch size "
            f"{cfg.batch_size}, last batch {last}): change --batch-size"
        )
    if cfg.sync_batchnorm and next(model.parameters()).device.type != "cuda":
        problems.append(
            "--sync-batchnorm needs CUDA (NCCL); on CPUs each process normalises with the "
            "statistics of its own share of a batch"
        )
    if cfg.whiten:
        try:
            check_whitenable(model)
        except ValueError as e:
            problems.append(f"--whiten: {cfg.model}: {e}")
    return problems


def check_trainable(model: nn.Module, cfg: TrainConfig, n_train: int, world: int = 1) -> None:
    problems = trainable_problems(model, cfg, n_train, world)
    if problems:
        raise UsageError("; ".join(problems))


def prepare_stem(model: nn.Module, images: torch.Tensor, cfg: TrainConfig, resumed: bool) -> None:
    """With `cfg.whiten`, set the first convolution to whitening filters of `images` (a resumed run
    has them in its checkpoint) and freeze it, before the optimizer and the average take the model."""
    if cfg.whiten:
        if not resumed:
            whiten_first_conv(model, images)
        freeze_first_conv(model)


def compile_steps(trainer: Trainer, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    """Compile the training model and run a forward and backward pass at each batch size an epoch
    uses, so no compilation falls inside the timed epochs; then restore the weights, BatchNorm
    statistics and random state, so training starts exactly where it would have. Returns the
    seconds this took. If compilation fails (no C++ compiler, say), warns and trains eagerly."""
    start = time.perf_counter()
    model = trainer.model
    # Static shapes: a graph for the full batches and one for the last, smaller batch.
    trainer.compiled = torch.compile(trainer.stepped or model, dynamic=False)
    snapshot, rng = copy.deepcopy(model.state_dict()), torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if images.is_cuda else None  # dropout on the GPU draws there
    try:
        for size in sorted({batch_size, len(images) % batch_size or batch_size}):
            with trainer.autocast(images.device):
                logits = trainer.compiled(layout(model, images[:size]))
            F.cross_entropy(logits.float(), labels[:size]).backward()
    except Exception as e:  # torch reports a missing compiler or backend in many exception types
        trainer.compiled = None
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        tqdm.write(f"warning: --compile: compilation failed, training without it ({reason})", file=sys.stderr)
    model.zero_grad(set_to_none=True)
    model.load_state_dict(snapshot)
    torch.set_rng_state(rng)
    if cuda_rng is not None:
        torch.cuda.set_rng_state_all(cuda_rng)
    if images.is_cuda:
        torch.cuda.synchronize(images.device)
    return time.perf_counter() - start
