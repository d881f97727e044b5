"""Evaluate a run: the test figures of its best checkpoint (chosen on validation), its figures and
report.html; or the test figures of any loaded model, written nowhere."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fmnist.data import FashionMNIST
from fmnist.explain.methods import DEFAULT_METHOD, saliency_maps, torch_forward
from fmnist.inference.calibration import calibrate
from fmnist.inference.predictor import Predictor
from fmnist.models.forward import loss_accuracy, predict_logits
from fmnist.reports import plots
from fmnist.reports.diagnostics import check_run
from fmnist.reports.html import write_run_report
from fmnist.reports.metrics import metrics_from_logits
from fmnist.run.folder import RunFolder, split_of
from fmnist.training.config import TrainConfig


def evaluate_run(
    run: RunFolder | Path, data: FashionMNIST | None = None, data_dir: str | None = None, verify: bool | None = None
) -> dict:
    """Test metrics, figures and report.html of a run folder, from its best checkpoint. The data
    is `data`, else the run's own, else where `data_dir`/`verify` say."""
    folder = run if isinstance(run, RunFolder) else RunFolder(run)
    model, cfg, state = folder.require().load_model()
    history = folder.history()
    data = data or folder.data(cfg, data_dir, verify)
    logits = predict_logits(model, data.test_images, tta=cfg.tta, tta_shift=cfg.tta_shift)
    metrics = metrics_from_logits(logits, data.test_labels)
    val = split_of(data.train_labels, cfg)[1]
    val_logits = predict_logits(model, data.train_images[val], tta=cfg.tta, tta_shift=cfg.tta_shift)
    metrics["calibration"] = calibrate(val_logits, data.train_labels[val], logits, data.test_labels)
    # The tested checkpoint on validation as it is tested (each epoch's validation has no shifted
    # views): the figure candidates of other test-time views, ensembles among them, compare on.
    val_loss, val_accuracy = loss_accuracy(val_logits, data.train_labels[val])
    metrics["validation"] = {"accuracy": val_accuracy, "loss": val_loss, "views": "as tested"}
    metrics["best_epoch"] = int(state["epoch"])
    metrics.update(timing(history, cfg, metrics["best_epoch"]))
    metrics["diagnostics"] = check_run(cfg.model, metrics, history, folder.marked("diverged"))
    folder.write_metrics(metrics)
    temperature = metrics["calibration"]["temperature"]
    probs = (logits / temperature).softmax(1)  # what predict and serve show: calibrated
    plots.curves(history, folder.figure("curves"), cfg.model)
    plots.confusion(metrics["confusion_matrix"], folder.figure("confusion"), cfg.model)
    plots.samples(data.test_images, data.test_labels, probs, folder.figure("samples"))
    forward = torch_forward(model)
    plots.misclassified(
        data.test_images,
        data.test_labels,
        probs,
        folder.figure("misclassified"),
        explain=lambda images, target: saliency_maps(forward, images, target, DEFAULT_METHOD),
    )
    plots.top_losses(data.test_images, data.test_labels, probs, folder.figure("top_losses"))
    plots.reliability(logits, data.test_labels, temperature, folder.figure("reliability"))
    write_run_report(
        folder.record("report.html"), folder.figures(), dataclasses.asdict(cfg), metrics, metrics["diagnostics"]
    )
    return metrics


def timing(history: list[dict], cfg: TrainConfig, best_epoch: int) -> dict:
    """Training wall time (steps, augmentation and validation; not data loading or compilation),
    the compilation time, the training time by the end of the best epoch (the time to the reported
    accuracy), and when the validation accuracy first reached the target, if one was set."""
    out = {
        "train_seconds": history[-1].get("elapsed", sum(h["seconds"] for h in history)) if history else 0.0,
        "compile_seconds": sum(h.get("compile_seconds", 0.0) for h in history),
    }
    best = next((h for h in history if h["epoch"] == best_epoch and "elapsed" in h), None)
    if best is not None:
        out["best_seconds"] = best["elapsed"]
    out["time_to_accuracy"] = time_to_accuracy(history)
    if cfg.target_accuracy:
        hit = first_reaching(history, cfg.target_accuracy)
        out["target"] = {
            "val_accuracy": cfg.target_accuracy,
            "reached": hit is not None,
            "epoch": int(hit["epoch"]) if hit else None,
            "seconds": hit.get("elapsed") if hit else None,
        }
    return out


TIME_TO = (0.90, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96)  # the validation accuracies whose times a run records


def time_to_accuracy(history: list[dict], levels: tuple[float, ...] = TIME_TO) -> dict[str, float | None]:
    """Training seconds by the end of the first epoch whose validation accuracy reached each level
    (None: never reached), by the level as a percentage ("91%"): the run's time-to-accuracy."""
    return {f"{level * 100:g}%": (first_reaching(history, level) or {}).get("elapsed") for level in levels}


def first_reaching(history: list[dict], level: float) -> dict | None:
    """The first epoch's row whose validation accuracy reached `level`, or None."""
    return next((h for h in history if h["val_accuracy"] >= level), None)


def evaluate_predictor(predictor: Predictor, data: FashionMNIST) -> dict:
    """Test metrics of any loaded model (a run through ONNX Runtime, an exported file); unlike
    evaluate_run it writes nothing: a run folder's figures are its own PyTorch evaluation's."""
    return metrics_from_logits(predictor.logits(data.test_images), data.test_labels)
