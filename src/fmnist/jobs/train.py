"""Train a run, or resume one: every check first, then the run folder, then training, then the
test evaluation of the checkpoint chosen on validation.

    train_run(make_config({"model": "deep_cnn"}), Path("runs/deep"))
    resume_run(Path("runs/deep"), {"epochs": 20})
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from fmnist.clock import process_seconds
from fmnist.data import FashionMNIST
from fmnist.device import resolve_device
from fmnist.errors import UsageError
from fmnist.jobs.evaluate import evaluate_run
from fmnist.models.ensemble import is_ensemble
from fmnist.run.folder import RunFolder, load_data, split_of
from fmnist.run.tracking import check_tracking, track_run
from fmnist.stops import Diverged
from fmnist.training.config import RUN, TrainConfig
from fmnist.training.distributed import Dist
from fmnist.training.loop import fit, target_reached
from fmnist.training.setup import build_model, check_trainable


def split(data: FashionMNIST, cfg: TrainConfig, device: torch.device):
    """Train and validation tensors on `device`, without the excluded training images; the test set
    stays out of training entirely."""
    train_idx, val_idx = split_of(data.train_labels, cfg)
    x, y = data.train_images, data.train_labels
    return ((x[train_idx].to(device), y[train_idx].to(device)), (x[val_idx].to(device), y[val_idx].to(device)))


class Prepared(NamedTuple):
    """A run that passed every check and has its folder: what training needs next."""

    model: nn.Module
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    folder: RunFolder
    data: FashionMNIST
    dist: Dist = Dist()


def checked_model(cfg: TrainConfig, dist: Dist | None = None) -> tuple[nn.Module, torch.device]:
    """The first checks of a run that is to train: its device and tracking, then its model, built
    (initialised from the seed) on that device."""
    device = resolve_device(cfg.device)
    check_tracking(cfg.track)
    return build_model(cfg, device, dist), device


def start_run(
    cfg: TrainConfig, out: Path, overwrite: bool = False, data: FashionMNIST | None = None, dist: Dist | None = None
) -> Prepared:
    """Check everything that can be known to fail (model name, device, output folder, data, batch
    size, whitening), then make the run folder and its config.json: a run that cannot start
    leaves nothing. With several processes every one checks, and the first writes."""
    dist = dist or Dist()
    if cfg.members > 1:  # train_run makes such a run; a sweep's trial is one network
        raise UsageError(f"members={cfg.members}: a run of several members is made by fmnist train, not here")
    folder = RunFolder(out)
    model, device = checked_model(cfg, dist)
    folder.check_new(overwrite)
    data = data or load_data(cfg)
    train, val = split(data, cfg, device)
    check_trainable(model, cfg, len(train[0]), dist.world)
    dist.barrier()  # every process has checked the folder before the first one writes in it
    if dist.is_main:
        folder.start(cfg, overwrite)
    return Prepared(model, train, val, folder, data, dist)


def fit_run(
    run: Prepared, cfg: TrainConfig, resume: dict | None = None, on_epoch: Callable[[dict], None] | None = None
) -> list[dict]:
    """Train a prepared run; a run that diverges is marked so and the stop re-raised."""
    if run.dist.is_main:
        run.folder.clear_mark("diverged")  # a mark from an earlier attempt no longer applies
    try:
        return fit(run.model, run.train, run.val, cfg, run.folder, resume, on_epoch, run.dist)
    except Diverged as e:
        if run.dist.is_main:
            run.folder.mark("diverged", {"epoch": e.epoch, "step": e.step})
        raise


def fit_then_evaluate(run: Prepared, cfg: TrainConfig, resume: dict | None = None, phases: bool = False) -> dict:
    """Train, then evaluate best.pt and log the run where `cfg.track` says (the first process
    alone). A diverged run's last good checkpoint is still evaluated (so the report says what
    happened), and the stop re-raised. With `phases` (a process that trains this one run), the
    metrics record where the command's time went."""
    before = process_seconds()  # interpreter, imports, data loading and checks, the model
    try:
        fit_run(run, cfg, resume)
    except Diverged as e:
        if not run.folder.has_checkpoint():
            raise Diverged(e.epoch, e.step, kept=False) from None
        if run.dist.is_main:
            evaluate_run(run.folder, run.data)
            track_run(run.folder, cfg, diverged=True)
        raise
    if not run.dist.is_main:
        return {}
    start = time.perf_counter()
    metrics = evaluate_run(run.folder, run.data)
    if phases and before is not None:
        evaluation = time.perf_counter() - start  # the test set, calibration, figures, report
        training, command = metrics["train_seconds"] + metrics["compile_seconds"], process_seconds()
        metrics["phases"] = {
            "before_training": before,
            "training": training,
            "evaluation": evaluation,
            "command": command,
            # the rest: the stem's whitening, the weight average's and compiler's set-up, checkpoints
            "other": command - before - training - evaluation,
        }
        run.folder.write_metrics(metrics)
    track_run(run.folder, cfg)  # where --track says: MLflow, after the run's own files are complete
    return metrics


def train_run(
    cfg: TrainConfig,
    out: Path,
    overwrite: bool = False,
    data: FashionMNIST | None = None,
    dist: Dist | None = None,
    phases: bool = False,
) -> dict:
    """Train one model into the run folder `out`, then evaluate it; returns its metrics (in the
    first process; the others return {}). `phases`: see fit_then_evaluate. With `cfg.members` > 1,
    that many networks one after another, combined into an ensemble run (jobs/ensemble.py)."""
    if cfg.members > 1:
        from fmnist.jobs.ensemble import train_ensemble

        if dist is not None and dist.active:
            raise UsageError("--members trains its networks one after another, not under torchrun")
        return train_ensemble(cfg, out, overwrite, data)
    return fit_then_evaluate(start_run(cfg, out, overwrite, data, dist), cfg, phases=phases)


def resumed_config(saved: TrainConfig, overrides: dict) -> TrainConfig:
    """The config of a resumed run: the saved one with the fields a resume may change (where and how
    it runs, and a longer `epochs`). A longer run gets a new schedule cycle over the added epochs,
    recorded in `schedule_restarts`, instead of a stretched schedule whose rate would jump back up."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    fixed = set(overrides) - set(TrainConfig.resumable())
    if fixed:
        raise UsageError(f"cannot change {', '.join(sorted(fixed))} when resuming; start a new run instead")
    if overrides.get("epochs", saved.epochs) < saved.epochs:  # before the config checks its restarts
        raise UsageError(
            f"--epochs {overrides['epochs']}: a resume can only make the run longer than its {saved.epochs} epochs"
        )
    cfg = dataclasses.replace(saved, **overrides)
    if cfg.epochs > saved.epochs:
        cfg = dataclasses.replace(cfg, schedule_restarts=[*saved.schedule_restarts, saved.epochs])
    return cfg


def resume_run(run_dir: Path, overrides: dict | None = None, dist: Dist | None = None) -> dict:
    """Continue a run from its last.pt (after Ctrl-C, SIGTERM or a crash), then evaluate it.

    With the same seed on the same machine the result equals an uninterrupted run. `overrides`
    may raise `epochs` or change where and how quietly it runs, nothing else; a longer config
    becomes the run's with its first checkpoint, so a stop at any moment leaves a resumable run.
    """
    folder = RunFolder(run_dir).require()
    saved = folder.read_config()
    if is_ensemble(saved.network):
        raise UsageError(f"{folder.path} is an ensemble: it is made from its members, not trained; nothing to resume")
    if saved.members > 1:  # members still to train, or to combine
        from fmnist.jobs.ensemble import finish_ensemble

        given = {k: v for k, v in (overrides or {}).items() if v is not None}
        if set(given) - set(TrainConfig.fields_of(RUN)):
            raise UsageError("a run of several members resumes as it was (only where and how quietly it runs)")
        cfg = dataclasses.replace(saved, **given)
        return finish_ensemble(folder, cfg, folder.data(cfg))
    saved, state = folder.resumable_config()
    cfg = resumed_config(saved, overrides or {})
    if cfg.epochs > saved.epochs and target_reached(state["history"], saved):
        raise UsageError(
            f"{folder} stopped at its target accuracy {saved.target_accuracy} after epoch "
            f"{len(state['history'])}: more epochs would stop there too; start a new run instead"
        )
    dist = dist or Dist()
    device = resolve_device(cfg.device)
    check_tracking(cfg.track)
    data = folder.data(cfg)
    train, val = split(data, cfg, device)
    model = build_model(cfg, device, dist)  # its weights come from the checkpoint
    check_trainable(model, cfg, len(train[0]), dist.world)
    dist.barrier()
    if cfg != saved:
        folder.lengthen(cfg)
    return fit_then_evaluate(Prepared(model, train, val, folder, data, dist), cfg, resume=state)
