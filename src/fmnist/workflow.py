"""Whole jobs built from the parts: train a run, evaluate a run, run the study, predict images.

Each job reads and writes the plain files of run folders, so any step can be redone later.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from torch import nn

from . import plots
from .config import HYPER, RECORD, TrainConfig, make_config
from .data import CLASSES, FashionMNIST, stratified_split
from .device import resolve_device
from .diagnostics import check_identical, check_run
from .distributed import Dist
from .errors import FmnistError, UsageError
from .evaluate import metrics_from_logits
from .files import (
    check_out_dir,
    load_checkpoint,
    prepare_out_dir,
    read_csv,
    read_json,
    write_json,
)
from .images import load_image
from .infer import predict_logits
from .models import count_params, create_model
from .predictors import Predictor, load_predictor
from .report import write_run_report, write_study_report
from .runs import load_data, load_run_model
from .train import DivergedError, fit
from .trainer import build_model, check_trainable, trainable_problems


def split(data: FashionMNIST, cfg: TrainConfig, device: torch.device):
    """Train and validation tensors on `device`; the test set stays out of training entirely."""
    train_idx, val_idx = stratified_split(data.train_labels, cfg.val_split, cfg.seed)
    x, y = data.train_images, data.train_labels
    return ((x[train_idx].to(device), y[train_idx].to(device)),
            (x[val_idx].to(device), y[val_idx].to(device)))


class RunStart(NamedTuple):
    """A run that passed every check and has its folder: what training needs next."""

    model: nn.Module
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    run_dir: Path
    data: FashionMNIST
    dist: Dist = Dist()


def start_run(cfg: TrainConfig, out: Path, overwrite: bool = False, data: FashionMNIST | None = None,
              dist: Dist | None = None) -> RunStart:
    """Check everything that can be known to fail (model name, device, output folder, data, batch
    size, whitening), then make the run folder and its config.json: a run that cannot start
    leaves nothing. With several processes every one checks, and the first writes."""
    dist = dist or Dist()
    device = resolve_device(cfg.device)
    model = build_model(cfg, device, dist)
    check_out_dir(out, overwrite)
    data = data or load_data(cfg)
    train, val = split(data, cfg, device)
    check_trainable(model, cfg, len(train[0]), dist.world)
    dist.barrier()  # every process has checked the folder before the first one writes in it
    if dist.is_main:
        prepare_out_dir(out, overwrite)
        write_json(Path(out) / "config.json", dataclasses.asdict(cfg))
    return RunStart(model, train, val, Path(out), data, dist)


def fit_run(start: RunStart, cfg: TrainConfig, resume: dict | None = None,
            on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
    """Train a started run; a run that diverges is marked in diverged.json and the error re-raised."""
    marker = start.run_dir / "diverged.json"
    if start.dist.is_main:
        marker.unlink(missing_ok=True)  # a marker from an earlier attempt no longer applies
    try:
        return fit(start.model, start.train, start.val, cfg, start.run_dir, resume, on_epoch, start.dist)
    except DivergedError as e:
        if start.dist.is_main:
            write_json(marker, {"epoch": e.epoch, "step": e.step})
        raise


def train_run(cfg: TrainConfig, out: Path, overwrite: bool = False,
              data: FashionMNIST | None = None, dist: Dist | None = None) -> dict:
    """Train one model into the run folder `out`, then evaluate it; returns its metrics (in the
    first process; the others return {})."""
    return fit_then_evaluate(start_run(cfg, out, overwrite, data, dist), cfg)


def fit_then_evaluate(start: RunStart, cfg: TrainConfig, resume: dict | None = None) -> dict:
    """Train, then evaluate best.pt (the first process alone). A diverged run's last good
    checkpoint is still evaluated (so the report says what happened), and the error is re-raised."""
    try:
        fit_run(start, cfg, resume)
    except DivergedError:
        if start.dist.is_main and (start.run_dir / "best.pt").is_file():
            evaluate_run(start.run_dir, start.data)
        raise
    return evaluate_run(start.run_dir, start.data) if start.dist.is_main else {}


def resumed_config(saved: TrainConfig, overrides: dict) -> TrainConfig:
    """The config of a resumed run: the saved one with the fields a resume may change (where and how
    it runs, and a longer `epochs`). A longer run gets a new schedule cycle over the added epochs,
    recorded in `schedule_restarts`, instead of a stretched schedule whose rate would jump back up."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    fixed = set(overrides) - set(TrainConfig.resumable())
    if fixed:
        raise UsageError(f"cannot change {', '.join(sorted(fixed))} when resuming; start a new run instead")
    cfg = dataclasses.replace(saved, **overrides)
    if cfg.epochs < saved.epochs:
        raise UsageError(f"--epochs {cfg.epochs}: a resume can only make the run longer than its {saved.epochs} epochs")
    if cfg.epochs > saved.epochs:
        cfg = dataclasses.replace(cfg, schedule_restarts=[*saved.schedule_restarts, saved.epochs])
    return cfg


def check_checkpoint_matches(state: dict, saved: TrainConfig, path: Path) -> None:
    """A checkpoint resumes only the run it belongs to: every value that shapes training equal."""
    try:
        trained = make_config(state.get("config", {}))
    except UsageError as e:
        raise FmnistError(f"{path} holds a config this fmnist cannot read ({e})") from None
    differ = [k for k in TrainConfig.fields_of(HYPER, RECORD) if getattr(trained, k) != getattr(saved, k)]
    if differ:
        k = differ[0]
        raise FmnistError(f"{path} was trained with {k}={getattr(trained, k)!r} but the run's config.json "
                          f"says {getattr(saved, k)!r}: it is not this run's checkpoint")


def resume_run(run_dir: Path, overrides: dict | None = None, dist: Dist | None = None) -> dict:
    """Continue a run from its last.pt (after Ctrl-C, SIGTERM or a crash), then evaluate it.

    With the same seed on the same machine the result equals an uninterrupted run.
    `overrides` may raise `epochs` or change where and how quietly it runs, nothing else.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FmnistError(f"run folder {run_dir} does not exist")
    saved = make_config(read_json(run_dir / "config.json"))
    cfg = resumed_config(saved, overrides or {})
    state = load_checkpoint(run_dir / "last.pt")
    check_checkpoint_matches(state, saved, run_dir / "last.pt")
    dist = dist or Dist()
    device = resolve_device(cfg.device)
    data = load_data(cfg)
    train, val = split(data, cfg, device)
    model = build_model(cfg, device, dist)  # its weights come from the checkpoint
    check_trainable(model, cfg, len(train[0]), dist.world)
    dist.barrier()
    if dist.is_main:
        write_json(run_dir / "config.json", dataclasses.asdict(cfg))
    return fit_then_evaluate(RunStart(model, train, val, run_dir, data, dist), cfg, resume=state)


def evaluate_run(run_dir: Path, data: FashionMNIST | None = None) -> dict:
    """Test metrics, figures and report.html of a run folder, from its best checkpoint."""
    run_dir = Path(run_dir)
    model, cfg = load_run_model(run_dir)
    history = read_csv(run_dir / "history.csv")
    data = data or load_data(cfg)
    logits = predict_logits(model, data.test_images, tta=cfg.tta, tta_shift=cfg.tta_shift)
    metrics = metrics_from_logits(logits, data.test_labels)
    metrics["best_epoch"] = int(load_checkpoint(run_dir / "best.pt")["epoch"])
    metrics.update(timing(history, cfg, metrics["best_epoch"]))
    diverged = read_json(run_dir / "diverged.json") if (run_dir / "diverged.json").is_file() else None
    metrics["diagnostics"] = check_run(cfg.model, metrics, history, diverged)
    write_json(run_dir / "metrics.json", metrics)
    probs = logits.softmax(1)
    plots.curves(history, run_dir / "curves.png", cfg.model)
    plots.confusion(metrics["confusion_matrix"], run_dir / "confusion.png", cfg.model)
    plots.samples(data.test_images, data.test_labels, probs, run_dir / "samples.png")
    plots.misclassified(data.test_images, data.test_labels, probs, run_dir / "misclassified.png")
    write_run_report(run_dir, dataclasses.asdict(cfg), metrics, metrics["diagnostics"])
    return metrics


def timing(history: list[dict], cfg: TrainConfig, best_epoch: int) -> dict:
    """Training wall time (steps, augmentation and validation; not data loading or compilation),
    the compilation time, the training time by the end of the best epoch (the time to the reported
    accuracy), and when the validation accuracy first reached the target, if one was set."""
    out = {"train_seconds": history[-1].get("elapsed", sum(h["seconds"] for h in history)) if history else 0.0,
           "compile_seconds": sum(h.get("compile_seconds", 0.0) for h in history)}
    best = next((h for h in history if h["epoch"] == best_epoch and "elapsed" in h), None)
    if best is not None:
        out["best_seconds"] = best["elapsed"]
    if cfg.target_accuracy:
        hit = next((h for h in history if h["val_accuracy"] >= cfg.target_accuracy), None)
        out["target"] = {"val_accuracy": cfg.target_accuracy, "reached": hit is not None,
                         "epoch": int(hit["epoch"]) if hit else None, "seconds": hit.get("elapsed") if hit else None}
    return out


def summarize(run_dir: Path) -> dict:
    """One model's row of summary.json, read from its run folder."""
    cfg = read_json(run_dir / "config.json")
    metrics = read_json(run_dir / "metrics.json")
    history = read_csv(run_dir / "history.csv")
    best = next(h for h in history if h["epoch"] == metrics["best_epoch"])
    return {"name": cfg["model"], "params": count_params(create_model(cfg["model"])),
            "epochs": len(history), "batch_size": cfg["batch_size"],
            "train_accuracy": best["train_accuracy"], "val_accuracy": best["val_accuracy"],
            "test_accuracy": metrics["test_accuracy"], "test_loss": metrics["test_loss"],
            "train_seconds": metrics["train_seconds"],  # timing()'s, validation included
            "best_epoch": metrics["best_epoch"],
            "run_dir": str(run_dir)}


def check_study(configs: list[TrainConfig], n_train: int) -> None:
    """Refuse, in one line and before any training, settings that do not apply to every model."""
    problems = [p for cfg in configs for p in trainable_problems(create_model(cfg.model), cfg, n_train)]
    if problems:  # each once: a batch size too large for the data is the same for every model
        raise UsageError("; ".join(dict.fromkeys(problems)) + " (choose other --models or settings)")


def run_study(models: list[str], base: TrainConfig, out: Path, overwrite: bool = False) -> dict:
    """Train and evaluate each model under the same settings, then compare them in a report."""
    for name in models:
        create_model(name)  # reject unknown names before hours of training
    resolve_device(base.device)
    check_out_dir(out, overwrite)
    data = load_data(base)
    n_train = len(stratified_split(data.train_labels, base.val_split, base.seed)[0])
    check_study([dataclasses.replace(base, model=name) for name in models], n_train)
    out = prepare_out_dir(out, overwrite)
    rows, metrics, histories, failures = [], {}, {}, []
    for name in models:
        cfg = dataclasses.replace(base, model=name)
        try:
            train_run(cfg, out / name, overwrite=True, data=data)
        except DivergedError as e:
            failures.append(f"{name}: {e}")
            if not (out / name / "metrics.json").is_file():
                continue
        rows.append(summarize(out / name))
        metrics[name] = read_json(out / name / "metrics.json")
        histories[name] = read_csv(out / name / "history.csv")
    flags = failures + [f for m in metrics.values() for f in m["diagnostics"]] + check_identical(metrics)
    summary = {"models": rows, "diagnostics": flags,
               "settings": {k: v for k, v in dataclasses.asdict(base).items() if k != "model"}}
    write_json(out / "summary.json", summary)
    if rows:
        plots.compare_curves(histories, out / "val_curves.png")
        plots.compare_f1({n: [m["classification_report"][c]["f1-score"] for c in CLASSES]
                          for n, m in metrics.items()}, out / "f1.png")
    write_study_report(out, rows, metrics, flags)
    return summary


def predict_files(source: Path, paths: list[Path], top_k: int = 3, backend: str | None = None) -> list[dict]:
    """Top-k classes for each image file, from a run folder or an exported .onnx file (with the
    run's own test-time augmentation, what its test accuracy was measured with); a file that
    cannot be read gets an `error` instead."""
    predictor = load_predictor(source, backend)
    results, images, where = [], [], []
    for path in paths:
        try:
            images.append(load_image(path))
            where.append(len(results))
            results.append({"file": str(path)})
        except FmnistError as e:
            results.append({"file": str(path), "error": str(e)})
    if images:
        top = predictor.probabilities(torch.stack(images)).topk(min(top_k, len(CLASSES)), dim=1)
        for i, (p, c) in zip(where, zip(top.values.tolist(), top.indices.tolist())):
            results[i]["predictions"] = [{"class": CLASSES[k], "probability": v} for v, k in zip(p, c)]
    return results


def evaluate_predictor(predictor: Predictor, data: FashionMNIST) -> dict:
    """Test metrics of any loaded model (a run through ONNX Runtime, an exported file); unlike
    evaluate_run it writes nothing: a run folder's figures are its own PyTorch evaluation's."""
    return metrics_from_logits(predictor.logits(data.test_images), data.test_labels)
