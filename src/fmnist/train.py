"""The training loop: the whole dataset as one tensor, Adam, cross-entropy, a checkpoint per epoch.

A run folder gets `history.csv` (one row per epoch), `last.pt` and `best.pt` (by validation
accuracy); each holds model, optimizer, config, epoch, history and the random states to resume.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .config import TrainConfig
from .errors import FmnistError, UsageError
from .files import save_checkpoint, write_csv
from .infer import layout, loss_accuracy, predict_logits

CHECK_EVERY = 25  # steps between finiteness checks and progress-bar updates


class DivergedError(FmnistError):
    """The loss became NaN or infinite."""

    def __init__(self, epoch: int, step: int):
        super().__init__(f"loss became NaN or infinite at epoch {epoch}, step {step}; "
                         "the last good checkpoint is kept (try a lower --lr)")
        self.epoch, self.step = epoch, step


class Interrupted(FmnistError):
    """Ctrl-C or SIGTERM during training; the run can be resumed from last.pt."""

    exit_code = 130

    def __init__(self, epoch: int, run_dir: Path | None):
        where = (f"; epochs 1-{epoch - 1} are saved, resume with: fmnist train --resume {run_dir}"
                 if run_dir is not None and epoch > 1 else "")
        super().__init__(f"interrupted during epoch {epoch}{where}")
        self.epoch = epoch


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Treat SIGTERM like Ctrl-C while training, so both stop the run the same way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # The fused kernel does the whole Adam update in one pass; same arithmetic as the loop version.
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)


def _state(model, optimizer, cfg, epoch, history, best, generator) -> dict[str, Any]:
    rng = {"torch": torch.get_rng_state(), "shuffle": generator.get_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "config": dataclasses.asdict(cfg), "epoch": epoch, "history": history,
            "best_val_accuracy": best, "rng": rng}


def restore(model: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator,
            state: dict[str, Any]) -> None:
    """Load a checkpoint's model, optimizer and random states (for `--resume`)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["torch"])
    generator.set_state(state["rng"]["shuffle"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])


def train_epoch(model, optimizer, images, labels, batch_size, generator, bar, epoch) -> tuple[float, float]:
    """One pass over the shuffled data; returns mean loss and accuracy over the epoch."""
    model.train()
    n = len(images)
    steps = (n + batch_size - 1) // batch_size
    order = torch.randperm(n, generator=generator).to(images.device)
    losses = torch.zeros(steps, device=images.device)
    correct = torch.zeros((), dtype=torch.long, device=images.device)
    checked = 0
    for step in range(steps):
        idx = order[step * batch_size:(step + 1) * batch_size]
        x, y = layout(model, images[idx]), labels[idx]
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
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
                            acc=f"{correct.item() / seen:.4f}", refresh=False)
            bar.update(step + 1 - bar.n)
    return losses.sum().item() / n, correct.item() / n


def _one_epoch(model, optimizer, train, val, cfg, generator, steps, epoch) -> dict:
    start = time.perf_counter()
    with tqdm(total=steps, desc=f"{cfg.model} epoch {epoch}/{cfg.epochs}", unit="step",
              disable=cfg.quiet, leave=False) as bar:
        train_loss, train_acc = train_epoch(model, optimizer, *train, cfg.batch_size, generator, bar, epoch)
    seconds = time.perf_counter() - start
    val_loss, val_acc = loss_accuracy(predict_logits(model, val[0]), val[1].cpu())
    if not cfg.quiet:
        tqdm.write(f"{cfg.model} epoch {epoch}/{cfg.epochs}: loss {train_loss:.4f} acc {train_acc:.4f} "
                   f"| val loss {val_loss:.4f} acc {val_acc:.4f} | {seconds:.1f}s")
    return {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc, "val_loss": val_loss,
            "val_accuracy": val_acc, "lr": optimizer.param_groups[0]["lr"], "seconds": seconds}


def fit(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
        cfg: TrainConfig, run_dir: Path | None = None, resume: dict[str, Any] | None = None) -> list[dict]:
    """Train `model` (already on its device) and return the history, one dict per epoch.

    With `run_dir`, writes history.csv, last.pt every epoch and best.pt when validation accuracy
    improves. With `resume` (a checkpoint dict), continues from its epoch.
    """
    images, labels = train
    if cfg.batch_size > len(images):
        raise UsageError(f"batch size {cfg.batch_size} is larger than the {len(images)} training images")
    optimizer = make_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(cfg.seed)
    history: list[dict] = []
    best = -1.0
    if resume is not None:
        restore(model, optimizer, generator, resume)
        history, best = list(resume["history"]), resume["best_val_accuracy"]
    steps = (len(images) + cfg.batch_size - 1) // cfg.batch_size
    epoch = len(history) + 1
    try:
        with sigterm_as_interrupt():
            for epoch in range(len(history) + 1, cfg.epochs + 1):
                row = _one_epoch(model, optimizer, train, val, cfg, generator, steps, epoch)
                history.append(row)
                improved = row["val_accuracy"] > best
                best = max(best, row["val_accuracy"])
                if run_dir is not None:
                    # Checkpoints are renamed into place, so an interrupt here leaves whole files.
                    state = _state(model, optimizer, cfg, epoch, history, best, generator)
                    if improved:
                        save_checkpoint(run_dir / "best.pt", state)
                    save_checkpoint(run_dir / "last.pt", state)
                    write_csv(run_dir / "history.csv", history)
    except KeyboardInterrupt:
        raise Interrupted(epoch, run_dir) from None
    return history
