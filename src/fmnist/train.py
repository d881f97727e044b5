"""The training loop: the whole dataset as one tensor, index batches, a checkpoint per epoch.

    fit(build_model(cfg), train, val, cfg)   # what `fmnist train` runs, from Python

A step (`train_step`), an epoch (`train_epoch`), validation (`validate`) and checkpointing
(`run_state.save_run`) are separate functions with explicit inputs; `fit` runs them in order and
calls `on_epoch(row)` after each epoch (a sweep reports to its pruner there). A run folder gets
`history.csv` (one row per epoch), `last.pt` and `best.pt` (by validation accuracy).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .augment import augment, parse_augment
from .config import TrainConfig
from .distributed import Dist
from .errors import FmnistError
from .infer import layout, loss_accuracy, predict_logits
from .interrupt import Interrupted
from .progress import bars
from .run_state import EpochProgress, RunState, save_run
from .trainer import Trainer, check_trainable, compile_steps, make_trainer, prepare_stem

CHECK_EVERY = 25  # steps between finiteness checks and progress reports
AUGMENT_CHUNK = 8192  # images augmented at a time


class DivergedError(FmnistError):
    """The loss became NaN or infinite."""

    def __init__(self, epoch: int, step: int):
        super().__init__(f"loss became NaN or infinite at epoch {epoch}, step {step}; "
                         "the last good checkpoint is kept (try a lower --lr)")
        self.epoch, self.step = epoch, step


def steps_per_epoch(n: int, batch_size: int) -> int:
    return (n + batch_size - 1) // batch_size


def epoch_data(images: torch.Tensor, cfg: TrainConfig, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The epoch's shuffle order and (augmented) images, both drawn from `generator` alone, so a
    resumed epoch redraws exactly the same ones."""
    order = torch.randperm(len(images), generator=generator).to(images.device)
    names = parse_augment(cfg.augment)
    if names:  # in chunks, to bound the memory of the index tensors
        images = torch.cat([augment(c, names, generator, cfg.crop_pad, cfg.erase_p)
                            for c in images.split(AUGMENT_CHUNK)])
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


def train_epoch(trainer: Trainer, images: torch.Tensor, labels: torch.Tensor, order: torch.Tensor,
                batch_size: int, *, epoch: int = 0, progress: EpochProgress | None = None,
                report: Callable[[int, int, float, int, int], None] | None = None) -> EpochProgress:
    """Steps over `images` in `order` from `progress.step` on (a stopped epoch goes on where it
    stopped). Returns the progress, whose step is short of the end when a stop was asked for.
    Every CHECK_EVERY steps the losses are checked (DivergedError names `epoch` and the step) and
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
            total[:progress.step] = progress.losses[:progress.step].to(images.device)
        return EpochProgress(step, total.cpu(), progress.correct + int(right))

    for step in range(progress.step, steps):
        if dist.any(trainer.stop.set, images.device):
            return so_far(step)
        idx = order[step * batch_size:(step + 1) * batch_size]
        mine = dist.shard(idx)
        y = labels[mine]
        loss, logits = train_step(trainer, layout(model, images[mine]), y, len(idx))
        losses[step] = loss * len(mine)
        correct += (logits.argmax(1) == y).sum()
        if (step + 1) % CHECK_EVERY == 0 or step + 1 == steps:
            window = losses[checked:step + 1]
            if not torch.isfinite(window).all():
                bad = checked + int((~torch.isfinite(window)).nonzero()[0])
                raise DivergedError(epoch, bad + 1)
            checked = step + 1
            if report is not None:
                report(step + 1, steps, losses[:step + 1].sum().item(), progress.correct + correct.item(),
                       min(n, (step + 1) * batch_size) // dist.world)
    return so_far(steps)


def validate(trainer: Trainer, images: torch.Tensor, labels: torch.Tensor, tta: bool) -> tuple[float, float]:
    """Validation loss and accuracy of the weights that are checkpointed; with several processes
    each scores its share of the images and the sums are added up, so every image counts once."""
    dist = trainer.dist
    if not dist.active:
        return loss_accuracy(predict_logits(trainer.eval_module, images, tta=tta), labels.cpu())
    mine = dist.shard(torch.arange(len(images), device=images.device))
    logits, y = predict_logits(trainer.eval_module, images[mine], tta=tta), labels[mine].cpu()
    sums = torch.tensor([F.cross_entropy(logits, y, reduction="sum").item(), (logits.argmax(1) == y).sum().item(),
                         len(y)], dtype=torch.float64, device=images.device)
    loss_sum, right, count = dist.all_reduce_sum(sums).tolist()
    return loss_sum / count, right / count


def run_epoch(trainer: Trainer, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
              cfg: TrainConfig, run: RunState) -> dict[str, Any] | None:
    """Train the run's next epoch (or finish a stopped one), then validate; its history row, or
    None when a stop was asked for part-way (`run.progress` then says where)."""
    images, labels = train
    epoch, steps = run.next_epoch, steps_per_epoch(len(images), cfg.batch_size)
    run.begin_epoch()
    start = time.perf_counter()
    order, epoch_images = epoch_data(images, cfg, run.generator)
    show = bars(cfg.quiet) and trainer.dist.is_main
    with tqdm(total=steps, initial=run.progress.step if run.progress else 0, unit="step", leave=False,
              desc=f"{cfg.model} epoch {epoch}/{cfg.epochs}", disable=not show) as bar:
        def report(done, total, loss_sum, correct, seen):
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}", refresh=False)
            bar.update(done - bar.n)

        run.progress = train_epoch(trainer, epoch_images, labels, order, cfg.batch_size, epoch=epoch,
                                   progress=run.progress, report=report if not bar.disable else None)
    seconds = time.perf_counter() - start
    if run.progress.step < steps:
        return None
    for module in {id(m): m for m in (trainer.model, trainer.eval_module)}.values():
        trainer.dist.average_buffers(module)  # BatchNorm's running statistics: the mean over processes
    val_loss, val_acc = validate(trainer, *val, cfg.tta)
    run.elapsed += time.perf_counter() - start
    n = len(images)
    return {"epoch": epoch, "train_loss": run.progress.loss_sum / n, "train_accuracy": run.progress.correct / n,
            "val_loss": val_loss, "val_accuracy": val_acc, "lr": trainer.optimizer.param_groups[0]["lr"],
            "seconds": seconds, "elapsed": run.elapsed, "compile_seconds": run.compile_seconds}


def target_reached(history: list[dict], cfg: TrainConfig) -> bool:
    return bool(history and cfg.target_accuracy and history[-1]["val_accuracy"] >= cfg.target_accuracy)


def print_epoch(row: dict, cfg: TrainConfig, dist: Dist) -> None:
    if not cfg.quiet and dist.is_main:
        tqdm.write(f"{cfg.model} epoch {row['epoch']}/{cfg.epochs}: loss {row['train_loss']:.4f} "
                   f"acc {row['train_accuracy']:.4f} | val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.4f} "
                   f"| {row['seconds']:.1f}s")


def fit(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
        cfg: TrainConfig, run_dir: Path | None = None, resume: dict[str, Any] | None = None,
        on_epoch: Callable[[dict], None] | None = None, dist: Dist | None = None) -> list[dict]:
    """Train `model` (already on its device) and return the history, one dict per epoch.

    With `run_dir`, writes history.csv, last.pt every epoch and best.pt when validation accuracy
    improves; on Ctrl-C or SIGTERM, last.pt at the step reached. With `resume` (a checkpoint
    dict), continues from where it stopped. Stops early once validation accuracy reaches
    `cfg.target_accuracy` (when set). `on_epoch(row)` runs after each epoch is saved. With `dist`
    (several processes, from torchrun), each trains its share of every batch and only the first
    writes files.
    """
    dist = dist or Dist()
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
    with trainer.stop.installed():
        while run.next_epoch <= cfg.epochs and not target_reached(run.history, cfg):
            row = run_epoch(trainer, train, val, cfg, run)
            if row is None:  # stopped by a signal part-way: save that step, then say so
                if run_dir is not None and dist.is_main:
                    save_run(run_dir, trainer, cfg, run)
                raise Interrupted(run.next_epoch, run.progress.step, run_dir if dist.is_main else None)
            improved = run.record(row)
            print_epoch(row, cfg, dist)
            if run_dir is not None and dist.is_main:
                save_run(run_dir, trainer, cfg, run, improved)
            if on_epoch is not None:
                on_epoch(row)
    return run.history
