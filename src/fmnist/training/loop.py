"""The training loop: the whole dataset as one tensor, index batches, a checkpoint per epoch.

    fit(build_model(cfg), train, val, cfg)   # what `fmnist train` runs, from Python

A step (`train_step`), an epoch (`train_epoch`) and validation (`validate`) are separate functions
with explicit inputs; `fit` runs them in order, hands each epoch's checkpoint to `checkpoints` (a
run folder, which decides the files) and calls `on_epoch(row)` after each epoch (a sweep reports to
its pruner there).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from fmnist import stops
from fmnist.models.forward import layout, loss_accuracy, predict_logits
from fmnist.progress import bars
from fmnist.stops import Diverged, Interrupted
from fmnist.training.augment import augment, parse_augment
from fmnist.training.config import TrainConfig
from fmnist.training.distributed import Dist
from fmnist.training.setup import Trainer, check_trainable, compile_steps, make_trainer, prepare_stem
from fmnist.training.state import EpochProgress, RunState

CHECK_EVERY = 25  # steps between finiteness checks and progress reports
AUGMENT_CHUNK = 8192  # images augmented at a time


class Checkpoints(Protocol):
    """Where a run's checkpoints go (a RunFolder): `history` after an epoch, None mid-epoch."""

    def save(self, state: dict[str, Any], history: list[dict] | None, improved: bool = False) -> None: ...


def steps_per_epoch(n: int, batch_size: int) -> int:
    return (n + batch_size - 1) // batch_size


def epoch_data(images: torch.Tensor, cfg: TrainConfig, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The epoch's shuffle order and (augmented) images, both drawn from `generator` alone, so a
    resumed epoch redraws exactly the same ones."""
    order = torch.randperm(len(images), generator=generator).to(images.device)
    names = parse_augment(cfg.augment)
    if names:  # in chunks, to bound the memory of the index tensors
        images = torch.cat(
            [augment(c, names, generator, cfg.crop_pad, cfg.erase_p) for c in images.split(AUGMENT_CHUNK)]
        )
    return order, images


def train_step(trainer: Trainer, x: torch.Tensor, y: torch.Tensor, batch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch (schedule and weight average included); returns the mean
    loss of `x` and its logits, detached. With several processes `x` is this process's share of a
    batch of `batch` images: its loss is scaled so that DDP's average of the gradients is the
    gradient of the whole batch's mean loss, as one process would compute it."""
    with trainer.autocast(x.device):
        logits = trainer.step_module(x)
        if trainer.dist.active:
            total = F.cross_entropy(logits.float(), y, label_smoothing=trainer.label_smoothing, reduction="sum")
            loss, objective = total / len(y), total * (trainer.dist.world / batch)
        else:
            loss = objective = F.cross_entropy(logits.float(), y, label_smoothing=trainer.label_smoothing)
    trainer.optimizer.zero_grad(set_to_none=True)
    objective.backward()
    trainer.optimizer.step()
    if trainer.scheduler is not None:
        trainer.scheduler.step()
    if trainer.ema is not None:
        trainer.ema.update_parameters(trainer.model)
    return loss.detach(), logits.detach()


def train_epoch(
    trainer: Trainer,
    images: torch.Tensor,
    labels: torch.Tensor,
    order: torch.Tensor,
    batch_size: int,
    *,
    epoch: int = 0,
    progress: EpochProgress | None = None,
    report: Callable[[int, int, float, int, int], None] | None = None,
) -> EpochProgress:
    """Steps over `images` in `order` from `progress.step` on (a stopped epoch goes on where it
    stopped). Returns the progress, whose step is short of the end when a stop was asked for.
    Every CHECK_EVERY steps the losses are checked (Diverged names `epoch` and the step) and
    `report(step, steps, loss_sum, correct, seen)` is called, if given. With several processes each
    takes its share of every batch, all stop at the same step, and the returned figures are the
    sums over all of them."""
    model, dist = trainer.model, trainer.dist
    model.train()
    progress = progress or EpochProgress()
    n = len(images)
    steps = steps_per_epoch(n, batch_size)
    losses = torch.zeros(steps, device=images.device)  # this process's loss sums, step by step
    correct = torch.zeros((), dtype=torch.long, device=images.device)
    checked = progress.step

    def so_far(step: int) -> EpochProgress:
        """The epoch's figures up to `step`, over every process (a resumed epoch's earlier steps
        are in `progress` already)."""
        total, right = dist.all_reduce_sum(losses.clone()), dist.all_reduce_sum(correct.clone())
        if progress.losses is not None:
            total[: progress.step] = progress.losses[: progress.step].to(images.device)
        return EpochProgress(step, total.cpu(), progress.correct + int(right))

    for step in range(progress.step, steps):
        if dist.any(trainer.stop.set, images.device):
            return so_far(step)
        idx = order[step * batch_size : (step + 1) * batch_size]
        mine = dist.shard(idx)
        y = labels[mine]
        loss, logits = train_step(trainer, layout(model, images[mine]), y, len(idx))
        losses[step] = loss * len(mine)
        correct += (logits.argmax(1) == y).sum()
        if (step + 1) % CHECK_EVERY == 0 or step + 1 == steps:
            checked = check_finite(losses, checked, step + 1, epoch)
            if report is not None:
                seen = min(n, (step + 1) * batch_size) // dist.world
                report(step + 1, steps, losses[: step + 1].sum().item(), progress.correct + correct.item(), seen)
    return so_far(steps)


def check_finite(losses: torch.Tensor, start: int, end: int, epoch: int) -> int:
    """Raise Diverged at the first step in [start, end) whose loss is not finite; returns `end`."""
    window = losses[start:end]
    if not torch.isfinite(window).all():
        raise Diverged(epoch, start + int((~torch.isfinite(window)).nonzero()[0]) + 1)
    return end


def validate(trainer: Trainer, images: torch.Tensor, labels: torch.Tensor, tta: bool) -> tuple[float, float]:
    """Validation loss and accuracy of the weights that are checkpointed; with several processes
    each scores its share of the images and the sums are added up, so every image counts once."""
    dist = trainer.dist
    if not dist.active:
        return loss_accuracy(predict_logits(trainer.eval_module, images, tta=tta), labels.cpu())
    mine = dist.shard(torch.arange(len(images), device=images.device))
    logits, y = predict_logits(trainer.eval_module, images[mine], tta=tta), labels[mine].cpu()
    sums = torch.tensor(
        [F.cross_entropy(logits, y, reduction="sum").item(), (logits.argmax(1) == y).sum().item(), len(y)],
        dtype=torch.float64,
        device=images.device,
    )
    loss_sum, right, count = dist.all_reduce_sum(sums).tolist()
    return loss_sum / count, right / count


def train_with_bar(
    trainer: Trainer,
    images: torch.Tensor,
    labels: torch.Tensor,
    order: torch.Tensor,
    cfg: TrainConfig,
    run: RunState,
) -> EpochProgress:
    """train_epoch of the run's next epoch with a progress bar on a terminal (the main process's)."""
    steps = steps_per_epoch(len(images), cfg.batch_size)
    show = bars(cfg.quiet) and trainer.dist.is_main
    start = run.progress.step if run.progress else 0
    desc = f"{cfg.model} epoch {run.next_epoch}/{cfg.epochs}"
    with tqdm(total=steps, initial=start, unit="step", leave=False, desc=desc, disable=not show) as bar:

        def report(done, total, loss_sum, correct, seen):
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}", refresh=False)
            bar.update(done - bar.n)

        return train_epoch(
            trainer,
            images,
            labels,
            order,
            cfg.batch_size,
            epoch=run.next_epoch,
            progress=run.progress,
            report=report if not bar.disable else None,
        )


def run_epoch(
    trainer: Trainer,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    cfg: TrainConfig,
    run: RunState,
) -> dict[str, Any] | None:
    """Train the run's next epoch (or finish a stopped one), then validate; its history row, or
    None when a stop was asked for part-way (`run.progress` then says where)."""
    images, labels = train
    epoch, steps = run.next_epoch, steps_per_epoch(len(images), cfg.batch_size)
    run.begin_epoch()
    start = time.perf_counter()
    order, epoch_images = epoch_data(images, cfg, run.generator)
    run.progress = train_with_bar(trainer, epoch_images, labels, order, cfg, run)
    seconds = time.perf_counter() - start
    if run.progress.step < steps:
        run.elapsed += seconds  # kept with the checkpoint: a resumed run's time-to-accuracy counts it
        return None
    for module in {id(m): m for m in (trainer.model, trainer.eval_module)}.values():
        trainer.dist.average_buffers(module)  # BatchNorm's running statistics: the mean over processes
    val_loss, val_acc = validate(trainer, *val, cfg.tta)
    run.elapsed += time.perf_counter() - start
    n = len(images)
    return {
        "epoch": epoch,
        "train_loss": run.progress.loss_sum / n,
        "train_accuracy": run.progress.correct / n,
        "val_loss": val_loss,
        "val_accuracy": val_acc,
        "lr": trainer.optimizer.param_groups[0]["lr"],
        "seconds": seconds,
        "elapsed": run.elapsed,
        "compile_seconds": run.compile_seconds,
    }


def target_reached(history: list[dict], cfg: TrainConfig) -> bool:
    return bool(history and cfg.target_accuracy and history[-1]["val_accuracy"] >= cfg.target_accuracy)


def print_epoch(row: dict, cfg: TrainConfig, dist: Dist) -> None:
    if not cfg.quiet and dist.is_main:
        tqdm.write(
            f"{cfg.model} epoch {row['epoch']}/{cfg.epochs}: loss {row['train_loss']:.4f} "
            f"acc {row['train_accuracy']:.4f} | val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.4f} "
            f"| {row['seconds']:.1f}s"
        )


def fit(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    cfg: TrainConfig,
    checkpoints: Checkpoints | None = None,
    resume: dict[str, Any] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    dist: Dist | None = None,
) -> list[dict]:
    """Train `model` (already on its device) and return the history, one dict per epoch.

    With `checkpoints` (a run folder), saves a checkpoint after every epoch and, on Ctrl-C or
    SIGTERM, at the step reached (then raises Interrupted). With `resume` (a checkpoint dict),
    continues from where it stopped. Stops early once validation accuracy reaches
    `cfg.target_accuracy` (when set). `on_epoch(row)` runs after each epoch is saved. With `dist`
    (several processes, from torchrun), each trains its share of every batch and only the first
    saves.
    """
    dist = dist or Dist()
    saving = checkpoints if dist.is_main else None
    with stops.STOP.catching():  # from here a signal is a stop at the next step, compiling included
        trainer, run = start_training(model, train, cfg, resume, dist)
        while run.next_epoch <= cfg.epochs and not target_reached(run.history, cfg):
            row = run_epoch(trainer, train, val, cfg, run)
            if row is None:  # stopped by a signal part-way: save that step, then say so
                if saving is not None:
                    saving.save(run.checkpoint(trainer, cfg), None)
                raise Interrupted(trainer.stop.signum or signal.SIGINT, run.next_epoch, run.progress.step, saving)
            improved = run.record(row)
            print_epoch(row, cfg, dist)
            if saving is not None:
                saving.save(run.checkpoint(trainer, cfg), run.history, improved)
            if on_epoch is not None:
                on_epoch(row)
    return run.history


def start_training(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    cfg: TrainConfig,
    resume: dict[str, Any] | None,
    dist: Dist,
) -> tuple[Trainer, RunState]:
    """The trainer and the run's state, fresh or restored from `resume`, with the stem whitened
    and the steps compiled where the config asks."""
    images, labels = train
    check_trainable(model, cfg, len(images), dist.world)
    if resume is None:  # dropout and anything else drawn from torch's global generator (its own per process)
        torch.manual_seed(cfg.seed + dist.rank)
    start = time.perf_counter()
    prepare_stem(model, images, cfg, resumed=resume is not None)
    setup_seconds = time.perf_counter() - start  # the whitening counts as training time
    trainer = make_trainer(model, cfg, steps_per_epoch(len(images), cfg.batch_size), dist)
    run = RunState.restore(resume, trainer) if resume is not None else RunState.start(cfg.seed)
    if not run.history:
        run.elapsed = setup_seconds
    if cfg.compile:
        run.compile_seconds = compile_steps(trainer, images, labels, cfg.batch_size)
    return trainer, run
