"""`fmnist export`: a run's tested model (best.pt, with its test-time views) as an ONNX file and a
JSON description beside it, written only after every check of inference/onnx_export.py passes."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from fmnist import __version__
from fmnist.data import CLASSES, FashionMNIST
from fmnist.errors import FmnistError
from fmnist.files import atomic_path, write_json
from fmnist.inference.onnx_export import FORMAT, PREPROCESSING, check_exported, sha256_of, sidecar_path, to_onnx
from fmnist.inference.onnx_runtime import INPUT, OUTPUT
from fmnist.models import count_params
from fmnist.run.folder import BEST, RunFolder
from fmnist.run.tracking import track_export


def check_out(run: RunFolder, out: Path) -> None:
    """Refuse an --out that is not a new or replaceable .onnx file, or that is one of the run's own files."""
    if out.is_dir():
        raise FmnistError(f"--out {out} is a folder; give a file name such as {out / 'model.onnx'}")
    if run.is_own_file(out) or run.is_own_file(sidecar_path(out)):
        raise FmnistError(f"--out {out} is one of the run's own files; give another FILE.onnx")
    if out.suffix != ".onnx":
        raise FmnistError(f"--out {out}: give a file name ending in .onnx")
    if not out.parent.is_dir():
        raise FmnistError(f"cannot write {out}: folder {out.parent} does not exist")


def export_run(
    run_dir: Path,
    out: Path | None = None,
    data: FashionMNIST | None = None,
    data_dir: str | None = None,
    verify: bool | None = None,
) -> dict:
    """Write RUN_DIR's tested model as ONNX (default RUN_DIR/model.onnx) and its JSON description
    beside it (FILE.onnx.json); returns that description. Nothing is written unless every check
    passes. The checks run on the run's test images (found as `data_dir`/`verify` say, where given)."""
    import onnx

    run = RunFolder(run_dir).require()
    out = Path(out) if out is not None else run.export_path()
    check_out(run, out)
    model, cfg, _ = run.load_model()
    metrics = run.metrics() or {}
    source = {
        "run": str(run.path),
        "checkpoint": BEST,
        "checkpoint_sha256": sha256_of(run.file(BEST)),
        "model": cfg.model,
        "parameters": count_params(model),
        "test_accuracy": metrics.get("test_accuracy"),
        "best_epoch": metrics.get("best_epoch"),
    }
    tta = {"flip": cfg.tta, "shift": cfg.tta_shift}
    calibration = calibration_of(metrics)
    meta = {"classes": list(CLASSES), "source": source, "tta": tta, "calibration": calibration}
    proto = to_onnx(copy.deepcopy(model), cfg, meta)
    data = data or run.data(cfg, data_dir, verify)
    checks = check_exported(proto, model, cfg, data.test_images)
    if out.parent.resolve() == run.path.resolve():  # inside the run: its files, removed with it
        run.record(out.name)
        run.record(sidecar_path(out).name)
    try:
        with atomic_path(out) as tmp:
            onnx.save(proto, str(tmp))
    except OSError as e:
        raise FmnistError(f"cannot write {out}: {e.strerror}") from None
    description = describe(proto, out, tta, source, checks) | {"calibration": calibration}
    try:
        write_json(sidecar_path(out), description)
    except OSError as e:
        out.unlink(missing_ok=True)  # no model without its description
        raise FmnistError(f"cannot write {sidecar_path(out)}: {e.strerror}") from None
    track_export(run, out)  # joins the run's MLflow run, where it was tracked
    return description


def calibration_of(metrics: dict) -> dict:
    """What an exported file says of its calibration: the graph answers raw logits, as /infer does."""
    cal = metrics.get("calibration") or {}
    return {
        "temperature": cal.get("temperature", 1.0),
        "use": "softmax(logits / temperature): the calibrated probabilities (fitted on the validation split)",
        "ece_before": cal.get("ece_before"),
        "ece_after": cal.get("ece_after"),
    }


def describe(proto, out: Path, tta: dict, source: dict, checks: dict) -> dict:
    """The JSON description written beside an exported file."""
    import onnx
    import onnxscript

    return {
        "format": FORMAT,
        "file": out.name,
        "sha256": sha256_of(out),
        "classes": list(CLASSES),
        "input": {"name": INPUT, "shape": ["batch", 1, 28, 28], "dtype": "float32", "range": [0.0, 1.0]},
        "output": {
            "name": OUTPUT,
            "shape": ["batch", 10],
            "dtype": "float32",
            "meaning": "logits (their softmax gives the probabilities)",
        },
        "preprocessing": PREPROCESSING,
        "test_time_augmentation": tta,
        "source": source,
        "opset": max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        "versions": {
            "fmnist": __version__,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxscript": onnxscript.__version__,
        },
        "checks": checks,
    }
