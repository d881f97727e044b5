"""The training loop: the whole dataset as one tensor, index batches, a checkpoint per epoch.

The study's plain Adam and cross-entropy by default; the config adds schedules, other optimizers,
label smoothing, augmentation, a whitened first layer, a weight average, bf16 autocast and
compilation. A run folder gets `history.csv` (one row per epoch), `last.pt` and `best.pt` (by
validation accuracy); each holds the weights, optimizer, schedule, config, epoch, history and the
random states to resume.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from .augment import augment, parse_augment
from .config import TrainConfig
from .errors import FmnistError, UsageError
from .files import save_checkpoint, write_csv
from .infer import layout, loss_accuracy, predict_logits, prepare
from .interrupt import Interrupted, StopFlag
from .models import create_model
from .models.whiten import check_whitenable, freeze_first_conv, whiten_first_conv
from .progress import bars
from .schedule import cycle_steps, make_optimizer, make_scheduler

CHECK_EVERY = 25  # steps between finiteness checks and progress-bar updates
AUGMENT_CHUNK = 8192  # images augmented at a time


class DivergedError(FmnistError):
    """The loss became NaN or infinite."""

    def __init__(self, epoch: int, step: int):
        super().__init__(f"loss became NaN or infinite at epoch {epoch}, step {step}; "
                         "the last good checkpoint is kept (try a lower --lr)")
        self.epoch, self.step = epoch, step


@dataclasses.dataclass
class Trainer:
    """What one optimizer step needs besides the data."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    ema: AveragedModel | None = None
    label_smoothing: float = 0.0
    mixed_precision: bool = False
    stop: StopFlag = dataclasses.field(default_factory=StopFlag)
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None  # compiled model for the steps

    def step_model(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return self.forward or self.model

    def autocast(self, device: torch.device) -> torch.autocast:
        return torch.autocast(device.type, torch.bfloat16, enabled=self.mixed_precision)

    def evaluated(self) -> nn.Module:
        """The weights that are validated, checkpointed and tested: the average when there is one."""
        return self.ema.module if self.ema is not None else self.model


@dataclasses.dataclass
class EpochProgress:
    """How far an epoch got: the step to continue from, each step's summed loss (kept per step, so
    a resumed epoch adds them up in the same order) and the count of correct predictions."""

    step: int = 0
    losses: torch.Tensor | None = None
    correct: int = 0

    @property
    def loss_sum(self) -> float:
        return self.losses.sum().item()


def ema_update(decay: float):
    """An exponential moving average whose decay warms up as min(decay, (1 + n) / (10 + n)) after
    n updates: a plain 0.999 average of the first few hundred steps is mostly the random
    initialisation, and scores 10 % until it forgets it."""
    def update(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        if not averaged.is_floating_point():  # BatchNorm's batch counter: follow, don't average
            return current
        d = torch.clamp((1 + n) / (10 + n), max=decay).to(averaged.dtype)
        return averaged.lerp(current, 1 - d)

    return update


def make_trainer(model: nn.Module, cfg: TrainConfig, steps_per_epoch: int) -> Trainer:
    optimizer = make_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum)
    cycles = cycle_steps(cfg.epochs, cfg.schedule_restarts, steps_per_epoch)
    scheduler = (make_scheduler(optimizer, cfg.schedule, cycles, cfg.warmup)
                 if cfg.schedule != "constant" or cfg.warmup else None)
    ema = AveragedModel(model, avg_fn=ema_update(cfg.ema), use_buffers=True) if cfg.ema else None
    return Trainer(model, optimizer, scheduler, ema, cfg.label_smoothing, cfg.mixed_precision, StopFlag())


def compile_steps(trainer: Trainer, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    """Compile the training model and run a forward and backward pass at each batch size an epoch
    uses, so no compilation falls inside the timed epochs; then restore the weights, BatchNorm
    statistics and random state, so training starts exactly where it would have. Returns the
    seconds this took. If compilation fails (no C++ compiler, say), warns and trains eagerly."""
    start = time.perf_counter()
    model = trainer.model
    # Static shapes: a graph for the full batches and one for the last, smaller batch.
    trainer.forward = torch.compile(model, dynamic=False)
    snapshot, rng = copy.deepcopy(model.state_dict()), torch.get_rng_state()
    try:
        for size in sorted({batch_size, len(images) % batch_size or batch_size}):
            with trainer.autocast(images.device):
                logits = trainer.forward(layout(model, images[:size]))
            F.cross_entropy(logits.float(), labels[:size]).backward()
    except Exception as e:  # torch reports a missing compiler or backend in many exception types
        trainer.forward = None
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        tqdm.write(f"warning: --compile: compilation failed, training without it ({reason})", file=sys.stderr)
    model.zero_grad(set_to_none=True)
    model.load_state_dict(snapshot)
    torch.set_rng_state(rng)
    if images.is_cuda:
        torch.cuda.synchronize(images.device)
    return time.perf_counter() - start


def _state(trainer: Trainer, cfg, epoch, history, best, generator, progress=None) -> dict[str, Any]:
    rng = {"torch": torch.get_rng_state(), "shuffle": generator.get_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    state = {"model": trainer.evaluated().state_dict(), "optimizer": trainer.optimizer.state_dict(),
             "config": dataclasses.asdict(cfg), "epoch": epoch, "history": history,
             "best_val_accuracy": best, "rng": rng}
    if trainer.scheduler is not None:
        state["scheduler"] = trainer.scheduler.state_dict()
    if trainer.ema is not None:
        state["train_model"] = trainer.model.state_dict()
        state["ema_steps"] = trainer.ema.n_averaged
    if progress is not None:  # stopped mid-epoch: `epoch` is the one in progress
        state["partial"] = {"step": progress.step, "losses": progress.losses, "correct": progress.correct}
    return state


def restore(trainer: Trainer, generator: torch.Generator, state: dict[str, Any]) -> EpochProgress | None:
    """Load a checkpoint's weights, optimizer, schedule and random states (for `--resume`);
    returns where an interrupted epoch stopped, if it did."""
    if trainer.ema is not None:
        trainer.model.load_state_dict(state["train_model"])
        trainer.ema.module.load_state_dict(state["model"])
        trainer.ema.n_averaged.copy_(state["ema_steps"])
    else:
        trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    if trainer.scheduler is not None:
        sched = trainer.scheduler
        sched.load_state_dict(state["scheduler"])
        # The rate of the next step comes from this run's schedule, which differs from the saved
        # one where a resume made the run longer (a new cycle starts there).
        for group, base, factor in zip(trainer.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas):
            group["lr"] = base * factor(sched.last_epoch)
    torch.set_rng_state(state["rng"]["torch"])
    generator.set_state(state["rng"]["shuffle"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return EpochProgress(**state["partial"]) if "partial" in state else None


def epoch_data(images: torch.Tensor, cfg: TrainConfig, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The epoch's shuffle order and (augmented) images, both drawn from `generator` alone, so a
    resumed epoch redraws exactly the same ones."""
    order = torch.randperm(len(images), generator=generator).to(images.device)
    names = parse_augment(cfg.augment)
    if names:  # in chunks, to bound the memory of the index tensors
        images = torch.cat([augment(c, names, generator, cfg.crop_pad, cfg.erase_p)
                            for c in images.split(AUGMENT_CHUNK)])
    return order, images


def train_epoch(trainer: Trainer, images, labels, order, batch_size, bar, epoch,
                progress: EpochProgress | None = None) -> EpochProgress:
    """Steps over the shuffled data from `progress.step` on; returns the progress, whose step is
    short of the end when a stop was asked for."""
    model, optimizer, forward = trainer.model, trainer.optimizer, trainer.step_model()
    model.train()
    progress = progress or EpochProgress()
    n = len(images)
    steps = (n + batch_size - 1) // batch_size
    losses = torch.zeros(steps, device=images.device)
    if progress.losses is not None:
        losses[:progress.step] = progress.losses[:progress.step].to(images.device)
    correct = torch.zeros((), dtype=torch.long, device=images.device)
    checked = first = progress.step
    autocast = trainer.autocast(images.device)
    for step in range(first, steps):
        if trainer.stop.set:
            return EpochProgress(step, losses.cpu(), progress.correct + int(correct))
        idx = order[step * batch_size:(step + 1) * batch_size]
        x, y = layout(model, images[idx]), labels[idx]
        with autocast:
            logits = forward(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=trainer.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if trainer.scheduler is not None:
            trainer.scheduler.step()
        if trainer.ema is not None:
            trainer.ema.update_parameters(model)
        losses[step] = loss.detach() * len(idx)
        correct += (logits.detach().argmax(1) == y).sum()
        if (step + 1) % CHECK_EVERY == 0 or step + 1 == steps:
            window = losses[checked:step + 1]
            if not torch.isfinite(window).all():
                bad = checked + int((~torch.isfinite(window)).nonzero()[0])
                raise DivergedError(epoch, bad + 1)
            checked = step + 1
            seen = min(n, (step + 1) * batch_size)
            bar.set_postfix(loss=f"{losses[:step + 1].sum().item() / seen:.4f}",
                            acc=f"{(progress.correct + correct.item()) / seen:.4f}", refresh=False)
            bar.update(step + 1 - bar.n)
    return EpochProgress(steps, losses.cpu(), progress.correct + int(correct))


def build_model(cfg: TrainConfig, device: torch.device | str = "cpu") -> nn.Module:
    """The model `cfg` names, initialised from `cfg.seed`, on `device` in the memory layout it
    trains in: with `fit`, the same config gives the same weights from the CLI and from Python."""
    torch.manual_seed(cfg.seed)
    return prepare(create_model(cfg.model), torch.device(device))


def trainable_problems(model: nn.Module, cfg: TrainConfig, n_train: int) -> list[str]:
    """What can be known to fail before any training: a batch larger than the data, a stem that
    cannot be whitened."""
    problems = []
    if cfg.batch_size > n_train:
        problems.append(f"batch size {cfg.batch_size} is larger than the {n_train} training images")
    if cfg.whiten:
        try:
            check_whitenable(model)
        except ValueError as e:
            problems.append(f"--whiten: {cfg.model}: {e}")
    return problems


def check_trainable(model: nn.Module, cfg: TrainConfig, n_train: int) -> None:
    problems = trainable_problems(model, cfg, n_train)
    if problems:
        raise UsageError("; ".join(problems))


def validate(trainer: Trainer, images: torch.Tensor, labels: torch.Tensor, tta: bool) -> tuple[float, float]:
    return loss_accuracy(predict_logits(trainer.evaluated(), images, tta=tta), labels.cpu())


def fit(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
        cfg: TrainConfig, run_dir: Path | None = None, resume: dict[str, Any] | None = None) -> list[dict]:
    """Train `model` (already on its device) and return the history, one dict per epoch.

    With `run_dir`, writes history.csv, last.pt every epoch and best.pt when validation accuracy
    improves; on Ctrl-C or SIGTERM, last.pt at the step reached. With `resume` (a checkpoint
    dict), continues from where it stopped. Stops early once validation accuracy reaches
    `cfg.target_accuracy` (when set).
    """
    images, labels = train
    n = len(images)
    check_trainable(model, cfg, n)
    steps = (n + cfg.batch_size - 1) // cfg.batch_size
    if resume is None:  # dropout and anything else drawn from torch's global generator
        torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    if cfg.whiten:  # before the optimizer and the average are made, which take the frozen stem as is
        if resume is None:
            whiten_first_conv(model, images)
        freeze_first_conv(model)
    setup_seconds = time.perf_counter() - start
    trainer = make_trainer(model, cfg, steps)
    generator = torch.Generator().manual_seed(cfg.seed)
    history: list[dict] = []
    best, progress = -1.0, None
    if resume is not None:
        progress = restore(trainer, generator, resume)
        history, best = list(resume["history"]), resume["best_val_accuracy"]
    if progress is not None:  # redraw the interrupted epoch from its starting state
        generator.set_state(resume["partial_generator"])
    elapsed = history[-1]["elapsed"] if history else setup_seconds
    compile_seconds = compile_steps(trainer, images, labels, cfg.batch_size) if cfg.compile else 0.0
    with trainer.stop.installed():
        for epoch in range(len(history) + 1, cfg.epochs + 1):
            if history and cfg.target_accuracy and history[-1]["val_accuracy"] >= cfg.target_accuracy:
                break
            epoch_start_rng = generator.get_state()
            start = time.perf_counter()
            order, epoch_images = epoch_data(images, cfg, generator)
            with tqdm(total=steps, initial=progress.step if progress else 0, unit="step", leave=False,
                      desc=f"{cfg.model} epoch {epoch}/{cfg.epochs}", disable=not bars(cfg.quiet)) as bar:
                progress = train_epoch(trainer, epoch_images, labels, order, cfg.batch_size, bar, epoch, progress)
            seconds = time.perf_counter() - start
            if progress.step < steps:  # stopped by a signal
                if run_dir is not None:
                    state = _state(trainer, cfg, epoch, history, best, generator, progress)
                    state["partial_generator"] = epoch_start_rng
                    save_checkpoint(run_dir / "last.pt", state)
                raise Interrupted(epoch, progress.step, run_dir)
            val_loss, val_acc = validate(trainer, *val, cfg.tta)
            elapsed += time.perf_counter() - start
            row = {"epoch": epoch, "train_loss": progress.loss_sum / n, "train_accuracy": progress.correct / n,
                   "val_loss": val_loss, "val_accuracy": val_acc, "lr": trainer.optimizer.param_groups[0]["lr"],
                   "seconds": seconds, "elapsed": elapsed, "compile_seconds": compile_seconds}
            progress, compile_seconds = None, 0.0
            history.append(row)
            if not cfg.quiet:
                tqdm.write(f"{cfg.model} epoch {epoch}/{cfg.epochs}: loss {row['train_loss']:.4f} "
                           f"acc {row['train_accuracy']:.4f} | val loss {val_loss:.4f} acc {val_acc:.4f} "
                           f"| {seconds:.1f}s")
            improved = val_acc > best
            best = max(best, val_acc)
            if run_dir is not None:
                # Checkpoints are renamed into place, so an interrupt here leaves whole files.
                state = _state(trainer, cfg, epoch, history, best, generator)
                if improved:
                    save_checkpoint(run_dir / "best.pt", state)
                save_checkpoint(run_dir / "last.pt", state)
                write_csv(run_dir / "history.csv", history)
    return history
