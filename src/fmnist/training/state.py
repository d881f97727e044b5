"""Where a run is: its history, best validation accuracy, random generators and, when it was stopped
mid-epoch, how far that epoch got. One object that writes itself into a checkpoint and reads itself
back (with the trainer's weights, optimizer, schedule and average), so a resumed run goes on from
exactly where it stopped.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from fmnist.training.config import TrainConfig
from fmnist.training.setup import Trainer


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


@dataclasses.dataclass
class RunState:
    generator: torch.Generator  # draws every epoch's shuffle and augmentation
    history: list[dict] = dataclasses.field(default_factory=list)
    best_val_accuracy: float = -1.0
    elapsed: float = 0.0  # training seconds so far: setup, steps, augmentation, validation
    compile_seconds: float = 0.0  # to be recorded with the next epoch
    progress: EpochProgress | None = None  # an epoch stopped part-way, to finish first
    epoch_start: torch.Tensor | None = None  # the generator's state when that epoch began

    @classmethod
    def start(cls, seed: int, setup_seconds: float = 0.0) -> RunState:
        return cls(torch.Generator().manual_seed(seed), elapsed=setup_seconds)

    @property
    def next_epoch(self) -> int:
        return len(self.history) + 1

    def begin_epoch(self) -> None:
        """Mark the epoch's start: a resumed epoch redraws its order and augmentation from here."""
        if self.progress is not None and self.epoch_start is not None:
            self.generator.set_state(self.epoch_start)
        self.epoch_start = self.generator.get_state()

    def record(self, row: dict) -> bool:
        """Add a finished epoch's row; returns whether its validation accuracy is a new best."""
        self.history.append(row)
        self.progress, self.compile_seconds = None, 0.0
        improved = row["val_accuracy"] > self.best_val_accuracy
        self.best_val_accuracy = max(self.best_val_accuracy, row["val_accuracy"])
        return improved

    def checkpoint(self, trainer: Trainer, cfg: TrainConfig) -> dict[str, Any]:
        """The checkpoint dict: weights (the average's where there is one), optimizer, schedule,
        config, history and random states; with a part-way epoch, where it stopped."""
        rng = {"torch": torch.get_rng_state(), "shuffle": self.generator.get_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        stopped = self.progress is not None
        state = {
            "model": trainer.eval_module.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "config": dataclasses.asdict(cfg),
            "epoch": self.next_epoch if stopped else len(self.history),
            "history": self.history,
            "best_val_accuracy": self.best_val_accuracy,
            "rng": rng,
        }
        if trainer.scheduler is not None:
            state["scheduler"] = trainer.scheduler.state_dict()
        if trainer.ema is not None:
            state["train_model"] = trainer.model.state_dict()
            state["ema_steps"] = trainer.ema.n_averaged
        if stopped:  # `epoch` is the one in progress
            p = self.progress
            state["partial"] = {"step": p.step, "losses": p.losses, "correct": p.correct}
            state["partial_generator"] = self.epoch_start
            state["partial_elapsed"] = self.elapsed  # the stopped epoch's seconds so far count too
        return state

    @classmethod
    def restore(cls, state: dict[str, Any], trainer: Trainer) -> RunState:
        """Load a checkpoint's weights, optimizer, schedule and random states into `trainer` (for a
        resume) and return the run's state at that point."""
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
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        generator = torch.Generator()
        generator.set_state(state["rng"]["shuffle"])
        history = list(state["history"])
        run = cls(generator, history, state["best_val_accuracy"], history[-1]["elapsed"] if history else 0.0)
        if "partial" in state:
            run.progress = EpochProgress(**state["partial"])
            run.epoch_start = state["partial_generator"]
            run.elapsed = state.get("partial_elapsed", run.elapsed)
        return run
